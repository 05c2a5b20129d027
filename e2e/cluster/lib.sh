# Shared by up.sh, down.sh and images.sh (sourced, not run): the cluster's layout, addresses
# and a few helpers. Every value can be overridden from the environment; up.sh records the
# ones it used in $CLUSTER_DIR/cluster.env, and down.sh reads that file back, so a cluster
# brought up with overrides is torn down with the same values.
# shellcheck shell=bash disable=SC2034

LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MESH_CACHE=${MESH_CACHE:-/var/cache/ambient-mesh}

# ---------------------------------------------------------------- layout
# Everything the cluster writes lives under CLUSTER_DIR (down.sh removes it), except what the
# node's conventions fix elsewhere: /etc/cni/net.d/<our conflist>, /opt/cni/bin (the plugins),
# /var/run/netns/cni-* (pod network namespaces, made by containerd), /var/log/containers
# (symlinks the kubelet makes), cgroups under /kubepods, and host networking (mesh0, cni0,
# iptables chains, a few sysctls).
CLUSTER_DIR=${CLUSTER_DIR:-/var/lib/ambient-mesh-cluster}
if [[ -r $CLUSTER_DIR/cluster.env && -z ${CLUSTER_ENV_LOADED:-} ]]; then
	# shellcheck disable=SC1091
	source "$CLUSTER_DIR/cluster.env"
	CLUSTER_ENV_LOADED=1
fi
PKI_DIR=$CLUSTER_DIR/pki
CONF_DIR=$CLUSTER_DIR/config
LOG_DIR=$CLUSTER_DIR/logs
PID_DIR=$CLUSTER_DIR/pids
HOST_STATE_DIR=$CLUSTER_DIR/host # what host prep changed, for down.sh to undo
RUN_DIR=$CLUSTER_DIR/run         # sockets and containerd's state
CONTAINERD_SOCK=$RUN_DIR/containerd.sock
KUBELET_ROOT=$CLUSTER_DIR/kubelet
KUBECONFIG_ADMIN=$CLUSTER_DIR/kubeconfig

# ---------------------------------------------------------------- network
NODE_NAME=${NODE_NAME:-mesh-node}
# The node IP lives on a dummy interface of its own, so nothing depends on the machine's
# uplink: the API server, the kubelet and NodePorts listen there only.
NODE_IFACE=${NODE_IFACE:-mesh0}
NODE_IP=${NODE_IP:-10.250.0.1}
APISERVER_PORT=${APISERVER_PORT:-6443}
ETCD_CLIENT_PORT=${ETCD_CLIENT_PORT:-2379}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-2380}
SERVICE_CIDR=${SERVICE_CIDR:-10.96.0.0/16}
SERVICE_IP=${SERVICE_IP:-10.96.0.1} # the first service IP: kubernetes.default
CLUSTER_CIDR=${CLUSTER_CIDR:-10.244.0.0/16}
POD_CIDR=${POD_CIDR:-10.244.0.0/24} # what kcm gives the first (only) node
CNI_BRIDGE=${CNI_BRIDGE:-cni0}
CNI_NETWORK=ambient-mesh-cluster
CNI_CONF_DIR=/etc/cni/net.d
CNI_BIN_DIR=/opt/cni/bin
CNI_CONF_FILE=$CNI_CONF_DIR/10-$CNI_NETWORK.conflist
APISERVER_URL=https://$NODE_IP:$APISERVER_PORT

# ---------------------------------------------------------------- binaries and images
# shellcheck source=versions.env
source "$LIB_DIR/versions.env"
eval "$("$LIB_DIR/build.sh" --print-env)"
PATH=$K8S_BIN_DIR:$ETCD_BIN_DIR:$CONTAINERD_BIN_DIR:$CRICTL_BIN_DIR:$PATH
CTR_BIN=$CONTAINERD_BIN_DIR/ctr
# ctr against this cluster's containerd, in the CRI's namespace.
ctr_() { "$CTR_BIN" --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }
PAUSE_IMAGE=${PAUSE_IMAGE:-docker.io/ambient-mesh/pause:$PAUSE_VERSION}
IMAGE_REPO=${IMAGE_REPO:-docker.io/ambient-mesh}
IMAGES_DIR=${IMAGES_DIR:-$MESH_CACHE/images}
MESH_IMAGES=(istiod ztunnel cni waypoint mesh-echo)

# workspace_version CARGO_TOML: the version of [workspace.package].
workspace_version() {
	awk '/^\[/ { s = ($0 == "[workspace.package]") } s && $1 == "version" { gsub(/"/, "", $3); print $3; exit }' "$1"
}

# image_archive_name REF: docker.io/ambient-mesh/istiod:0.1.0 -> ambient-mesh-istiod-0.1.0.oci.tar
image_archive_name() {
	local r=${1#*/}
	r=${r//\//-}
	echo "${r/:/-}.oci.tar"
}

# crictl against this cluster's containerd (up.sh writes the config file it reads).
crictl_() {
	local conf=()
	[[ ! -f $CONF_DIR/crictl.yaml ]] || conf=(--config "$CONF_DIR/crictl.yaml")
	crictl "${conf[@]}" --runtime-endpoint "unix://$CONTAINERD_SOCK" --image-endpoint "unix://$CONTAINERD_SOCK" "$@"
}

containerd_running() { [[ -S $CONTAINERD_SOCK ]] && timeout 10 "$CTR_BIN" --address "$CONTAINERD_SOCK" version >/dev/null 2>&1; }

cri_image_id() { crictl_ inspecti -o json "$1" 2>/dev/null | jq -r '.status.id // empty' 2>/dev/null || true; }

# import_archive FILE: into containerd's k8s.io namespace (unpacked for overlayfs, the CRI's
# snapshotter), under the name in the archive's io.containerd.image.name annotation. A rebuilt
# image takes the name over; the previous one, nameless now, is removed unless a container
# still uses it (the CRI's image ID is the digest of the image config).
import_archive() {
	local out ref="" old="" new="" man i
	if man=$(tar -xOf "$1" index.json 2>/dev/null); then
		ref=$(jq -r '.manifests[0].annotations["io.containerd.image.name"] // empty' <<<"$man")
		man=$(jq -r '.manifests[0].digest' <<<"$man")
		new=$(tar -xOf "$1" "blobs/sha256/${man#sha256:}" 2>/dev/null | jq -r '.config.digest' 2>/dev/null || true)
	fi
	[[ -z $ref ]] || old=$(cri_image_id "$ref")
	out=$(timeout 300 "$CTR_BIN" --address "$CONTAINERD_SOCK" --namespace k8s.io images import --platform linux/amd64 "$1" 2>&1) || {
		printf 'ctr images import %s failed:\n%s\n' "$1" "$out" >&2
		return 1
	}
	if [[ -n $old && -n $new && $old != "$new" ]]; then
		# The CRI learns of the import through an event: wait for it to show the new image.
		for i in $(seq 1 50); do
			[[ $(cri_image_id "$ref") == "$new" ]] && break
			sleep 0.1
		done
		crictl_ rmi "$old" >/dev/null 2>&1 || true
	fi
	printf '[images] imported %s\n' "$(basename "$1")"
}

# ---------------------------------------------------------------- processes
# pid_of NAME: the pid in $PID_DIR/NAME.pid if that process is alive and still runs the
# binary we started (guards against a recycled pid); prints nothing otherwise.
pid_of() {
	local f=$PID_DIR/$1.pid pid exe
	[[ -f $f ]] || return 0
	pid=$(<"$f")
	[[ $pid =~ ^[0-9]+$ ]] && alive "$pid" || return 0
	exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
	[[ ${exe##*/} == "$(cat "$PID_DIR/$1.exe" 2>/dev/null)" ]] && echo "$pid"
	return 0
}

# alive PID: the process exists and is not a zombie (PID 1 on some machines reaps orphans only
# every second or so, and our daemons are orphans once up.sh has exited).
alive() {
	local st
	st=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
	[[ -n $st && $st != Z ]]
}

# stop_procs TIMEOUT NAME...: SIGTERM to all of them at once, SIGKILL to those still alive
# after TIMEOUT seconds.
stop_procs() {
	local t=$1 name pid i running t0=${EPOCHREALTIME/./}
	shift
	local -A pids=()
	for name in "$@"; do
		pid=$(pid_of "$name")
		if [[ -n $pid ]]; then
			pids[$name]=$pid
			kill -TERM "$pid" 2>/dev/null || true
		fi
	done
	for ((i = 0; i < t * 10; i++)); do
		running=0
		for pid in "${pids[@]}"; do ! alive "$pid" || running=1; done
		((running)) || break
		sleep 0.1
	done
	for name in "${!pids[@]}"; do
		pid=${pids[$name]}
		if alive "$pid"; then
			echo "  $name (pid $pid) did not stop in ${t}s: SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
		fi
		echo "  stopped $name (pid $pid) in $(((${EPOCHREALTIME/./} - t0) / 1000)) ms"
	done
	for name in "$@"; do rm -f "$PID_DIR/$name.pid" "$PID_DIR/$name.exe"; done
}

# cluster_pids: the components, containerd's shims (found by our socket in their command
# line) and every process in the pods' cgroups.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy)
cluster_pids() {
	local c p
	for c in "${COMPONENTS[@]}"; do pid_of "$c"; done
	shim_pids
	pod_pids
}
shim_pids() {
	local p
	for p in /proc/[0-9]*; do
		[[ -r $p/cmdline ]] || continue
		# The shim's command line: containerd-shim-runc-v2 -namespace k8s.io -id ... -address SOCK
		tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -q -- "containerd-shim.* -address $CONTAINERD_SOCK\( \|$\)" &&
			echo "${p#/proc/}"
	done
	return 0
}
pod_pids() { # processes of the pods: the kubelet puts them under /kubepods (cgroupfs driver)
	local d=/sys/fs/cgroup/pids/kubepods
	[[ -d $d ]] || d=/sys/fs/cgroup/kubepods
	[[ -d $d ]] || return 0
	find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -un
}
cluster_rss_mib() {
	local kb=0 p v
	for p in $(cluster_pids | sort -u); do
		v=$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null) && kb=$((kb + ${v:-0}))
	done
	echo $((kb / 1024))
}
