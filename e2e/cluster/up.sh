#!/usr/bin/env bash
# Bring up a single-node Kubernetes cluster from the upstream binaries build.sh caches:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd (+ Debian's runc),
# kubelet and kube-proxy, run as background processes of this machine (no systemd, no Docker).
#
#   e2e/cluster/up.sh          (root) then: export KUBECONFIG=/var/lib/ambient-mesh-cluster/kubeconfig
#   e2e/cluster/down.sh        stops it and removes everything it made
#
# Idempotent: a component whose process is alive is left alone, files that exist are reused,
# so running it again on a running cluster only checks it. After a failure, run down.sh.
# Layout, addresses and overrides: lib.sh and README.md beside this file.
#
# Steps: host prep (Debian packages, CNI plugins, sysctls, rshared /, node IP on a dummy
# interface) -> PKI and kubeconfigs (openssl) -> etcd -> kube-apiserver (wait /readyz) ->
# kube-controller-manager -> kube-scheduler -> containerd (+ image import) -> bridge CNI
# config -> kubelet (wait Node Ready) -> kube-proxy -> wait for the default ServiceAccount.
set -Eeuo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
# shellcheck source=lib.sh
source "$SCRIPT_DIR/lib.sh"

T0=${EPOCHREALTIME/./}
STEP=startup
elapsed() { # seconds since the start, with one decimal
	local us=$((${EPOCHREALTIME/./} - T0))
	printf '%d.%d' $((us / 1000000)) $((us / 100000 % 10))
}
log() { printf '[up %5ss] %s\n' "$(elapsed)" "$*"; }
die() {
	printf '[up %5ss] ERROR: %s\n' "$(elapsed)" "$*" >&2
	exit 1
}
on_err() {
	local rc=$? line=${BASH_LINENO[0]}
	[[ $BASHPID == "$$" ]] || exit "$rc"
	printf '[up] ERROR: step "%s" failed (exit %d, up.sh line %d). Logs: %s. Clean up with %s\n' \
		"$STEP" "$rc" "$line" "$LOG_DIR" "$SCRIPT_DIR/down.sh" >&2
	exit "$rc"
}
trap on_err ERR

[[ $(id -u) == 0 ]] || die "run as root"

# ===================================================================== host prep
STEP="host prep: packages"
# Debian packages the cluster needs at run time (also listed in scripts/deps-debian.txt).
HOST_PACKAGES=(runc containernetworking-plugins iptables conntrack openssl jq curl gcc libc6-dev binutils)
missing=()
for p in "${HOST_PACKAGES[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	log "installing Debian packages: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

STEP="host prep: upstream binaries"
need_build=()
for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl; do
	[[ -x $K8S_BIN_DIR/$b ]] || need_build+=(k8s)
done
[[ -x $ETCD_BIN_DIR/etcd ]] || need_build+=(etcd)
for b in containerd containerd-shim-runc-v2 ctr; do [[ -x $CONTAINERD_BIN_DIR/$b ]] || need_build+=(containerd); done
[[ -x $CRICTL_BIN_DIR/crictl ]] || need_build+=(crictl)
if ((${#need_build[@]})); then
	mapfile -t need_build < <(printf '%s\n' "${need_build[@]}" | sort -u)
	log "building missing upstream binaries: ${need_build[*]} (cold: up to an hour)"
	"$SCRIPT_DIR/build.sh" "${need_build[@]}"
fi

STEP="host prep: work dir"
mkdir -p "$CLUSTER_DIR" "$PKI_DIR" "$CONF_DIR" "$LOG_DIR" "$PID_DIR" "$HOST_STATE_DIR" "$RUN_DIR" "$KUBELET_ROOT"
chmod 700 "$PKI_DIR"
# The values this cluster uses, for down.sh and the scripts that run against it.
cat >"$CLUSTER_DIR/cluster.env" <<EOF
# Written by up.sh: the settings of this cluster (read back by lib.sh).
NODE_NAME=$NODE_NAME
NODE_IFACE=$NODE_IFACE
NODE_IP=$NODE_IP
APISERVER_PORT=$APISERVER_PORT
ETCD_CLIENT_PORT=$ETCD_CLIENT_PORT
ETCD_PEER_PORT=$ETCD_PEER_PORT
SERVICE_CIDR=$SERVICE_CIDR
SERVICE_IP=$SERVICE_IP
CLUSTER_CIDR=$CLUSTER_CIDR
POD_CIDR=$POD_CIDR
CNI_BRIDGE=$CNI_BRIDGE
PAUSE_IMAGE=$PAUSE_IMAGE
IMAGE_REPO=$IMAGE_REPO
IMAGES_DIR=$IMAGES_DIR
EOF

# Paths outside the work dir that containerd, the kubelet and libcni hard-code (shim sockets in
# /run/containerd/s, the CNI result cache, the device-plugin socket, log symlinks): down.sh
# removes those that did not exist before the first up.sh.
if [[ ! -f $HOST_STATE_DIR/paths.orig ]]; then
	for p in /run/containerd /var/lib/cni /var/lib/kubelet /var/log/containers "$CNI_CONF_DIR" /etc/cni; do
		[[ ! -e $p ]] || echo "$p"
	done >"$HOST_STATE_DIR/paths.orig"
fi

STEP="host prep: cgroups"
for c in cpu cpuacct cpuset memory pids devices freezer; do
	[[ -d /sys/fs/cgroup/$c ]] || [[ -f /sys/fs/cgroup/cgroup.controllers ]] ||
		die "cgroup controller $c is not mounted under /sys/fs/cgroup"
done

STEP="host prep: CNI plugins"
# Debian installs the reference plugins in /usr/lib/cni; containerd (and the mesh's cni-agent,
# which hostPath-mounts it) use /opt/cni/bin.
mkdir -p "$CNI_BIN_DIR" "$CNI_CONF_DIR"
for p in bridge host-local loopback portmap; do
	[[ -x /usr/lib/cni/$p ]] || die "/usr/lib/cni/$p is missing (apt-get install containernetworking-plugins)"
done
for p in /usr/lib/cni/*; do
	cmp -s "$p" "$CNI_BIN_DIR/${p##*/}" || cp -f "$p" "$CNI_BIN_DIR/"
done

STEP="host prep: sysctls"
# Record the first values of everything this cluster (or its kubelet and kube-proxy) may
# change, once, so down.sh can put them back.
SYSCTLS=(net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables
	vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
	kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.conf.all.route_localnet)
[[ -d /proc/sys/net/bridge ]] || modprobe br_netfilter 2>/dev/null || true
if [[ ! -f $HOST_STATE_DIR/sysctl.orig ]]; then
	for k in "${SYSCTLS[@]}"; do
		v=$(sysctl -n "$k" 2>/dev/null) && echo "$k=$v"
	done >"$HOST_STATE_DIR/sysctl.orig"
fi
sysctl -qw net.ipv4.ip_forward=1
if [[ -d /proc/sys/net/bridge ]]; then
	# Pod-to-pod traffic on cni0 must traverse iptables for Service NAT replies.
	sysctl -qw net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1
else
	log "WARNING: br_netfilter is not available: pod-to-service traffic between pods on the bridge may fail"
fi

STEP="host prep: mount propagation"
# hostPath mounts of /var/run/netns (cni-agent) and Bidirectional mounts need a shared root.
[[ $(findmnt -no PROPAGATION /) == shared ]] || mount --make-rshared /

STEP="host prep: node IP"
# A node IP of our own on a dummy interface: not loopback (the kubelet refuses it), reachable
# from pods through cni0, and independent of the machine's uplink.
if ! ip link show "$NODE_IFACE" >/dev/null 2>&1; then
	# Kernels without CONFIG_DUMMY (this CI VM's, for one) get a veth pair whose peer stays
	# in the host namespace, unused: with both ends up it has carrier, like a dummy.
	if ! ip link add "$NODE_IFACE" type dummy 2>/dev/null; then
		ip link add "$NODE_IFACE" type veth peer name "$NODE_IFACE-peer"
		ip link set "$NODE_IFACE-peer" up
	fi
	touch "$HOST_STATE_DIR/created-iface"
fi
ip addr show dev "$NODE_IFACE" | grep -qF " $NODE_IP/" || ip addr add "$NODE_IP/32" dev "$NODE_IFACE"
ip link set "$NODE_IFACE" up
# kube-apiserver and the kubelet want a default route to pick addresses; add one through the
# dummy interface only if the machine has none.
if [[ -z $(ip -4 route show default) ]]; then
	ip route add default dev "$NODE_IFACE"
	touch "$HOST_STATE_DIR/created-default-route"
fi
# iptables-nft tables present before the cluster: down.sh deletes only the others, when empty.
[[ -f $HOST_STATE_DIR/nft-tables.orig ]] || nft list tables >"$HOST_STATE_DIR/nft-tables.orig" 2>/dev/null || true

STEP="host prep: capabilities"
# Some sandboxed machines (this CI VM) drop CAP_SYS_RESOURCE from root's bounding set: nobody
# may then lower an oom_score_adj. runc fails every pod sandbox ("failed to update
# /proc/self/oom_score_adj: Permission denied", seen by the kubelet as "can't get final
# child's PID from pipe: EOF") because the CRI asks -998 for pause. There containerd must
# clamp scores to its own (restrict_oom_score_adj) and the kubelet and kube-proxy must not try
# -999 for themselves.
cap_bnd=$(awk '/^CapBnd:/ { print $2 }' /proc/self/status)
if (((16#$cap_bnd >> 24) & 1)); then
	RESTRICT_OOM=false OWN_OOM_SCORE_ADJ=-999
else
	log "no CAP_SYS_RESOURCE in the bounding set: restricting oom_score_adj (containerd restrict_oom_score_adj)"
	RESTRICT_OOM=true OWN_OOM_SCORE_ADJ=0
fi

# ===================================================================== PKI
STEP="PKI"
# One cluster CA signs the serving and client certificates (kcm signs CSRs with it too); a
# separate front-proxy CA signs the aggregation-layer client. ECDSA P-256 keys (an RSA key
# takes up to half a second on a loaded 2-core machine; there are eleven), one-year leaves.
gen_key() { [[ -f $1 ]] || openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
gen_ca() { # NAME CN
	local n=$1
	[[ -f $PKI_DIR/$n.crt ]] && return
	gen_key "$PKI_DIR/$n.key"
	openssl req -x509 -new -key "$PKI_DIR/$n.key" -subj "/CN=$2" -days 3650 -sha256 \
		-addext "basicConstraints=critical,CA:TRUE" \
		-addext "keyUsage=critical,digitalSignature,keyCertSign,cRLSign" \
		-out "$PKI_DIR/$n.crt" 2>/dev/null
}
gen_cert() { # NAME CA SUBJECT KIND(client|server|both) [SANS]
	local n=$1 ca=$2 subj=$3 kind=$4 sans=${5:-} eku
	[[ -f $PKI_DIR/$n.crt ]] && return
	case $kind in
	client) eku=clientAuth ;;
	server) eku=serverAuth ;;
	both) eku=serverAuth,clientAuth ;;
	esac
	gen_key "$PKI_DIR/$n.key"
	{
		echo "basicConstraints=critical,CA:FALSE"
		echo "keyUsage=critical,digitalSignature"
		echo "extendedKeyUsage=$eku"
		[[ -z $sans ]] || echo "subjectAltName=$sans"
	} >"$PKI_DIR/$n.ext"
	openssl req -new -key "$PKI_DIR/$n.key" -subj "$subj" -out "$PKI_DIR/$n.csr" 2>/dev/null
	openssl x509 -req -in "$PKI_DIR/$n.csr" -CA "$PKI_DIR/$ca.crt" -CAkey "$PKI_DIR/$ca.key" \
		-set_serial "0x$(openssl rand -hex 16)" -days 365 -sha256 -extfile "$PKI_DIR/$n.ext" \
		-out "$PKI_DIR/$n.crt" 2>/dev/null
	rm -f "$PKI_DIR/$n.csr" "$PKI_DIR/$n.ext"
}
gen_ca ca ambient-mesh-cluster-ca
gen_ca front-proxy-ca ambient-mesh-cluster-front-proxy-ca
gen_cert apiserver ca "/CN=kube-apiserver" server \
	"DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,DNS:$NODE_NAME,IP:$SERVICE_IP,IP:$NODE_IP,IP:127.0.0.1"
gen_cert apiserver-kubelet-client ca "/O=system:masters/CN=kube-apiserver-kubelet-client" client
gen_cert admin ca "/O=system:masters/CN=kubernetes-admin" client
gen_cert kube-controller-manager ca "/CN=system:kube-controller-manager" client
gen_cert kube-scheduler ca "/CN=system:kube-scheduler" client
gen_cert kube-proxy ca "/CN=system:kube-proxy" client
gen_cert kubelet ca "/O=system:nodes/CN=system:node:$NODE_NAME" client
gen_cert kubelet-serving ca "/CN=$NODE_NAME" server "DNS:$NODE_NAME,IP:$NODE_IP"
gen_cert front-proxy-client front-proxy-ca "/CN=front-proxy-client" client
# ServiceAccount token signing key pair: RSA 2048 (RS256 tokens, what every client expects).
[[ -f $PKI_DIR/sa.key ]] || openssl genrsa -out "$PKI_DIR/sa.key" 2048 2>/dev/null
[[ -f $PKI_DIR/sa.pub ]] || openssl rsa -in "$PKI_DIR/sa.key" -pubout -out "$PKI_DIR/sa.pub" 2>/dev/null

STEP="kubeconfigs"
write_kubeconfig() { # FILE CERT_NAME USER
	local f=$1 c=$2 u=$3
	[[ -f $f ]] && return
	umask 077
	cat >"$f" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: ambient-mesh
  cluster:
    server: $APISERVER_URL
    certificate-authority-data: $(base64 -w0 "$PKI_DIR/ca.crt")
users:
- name: $u
  user:
    client-certificate-data: $(base64 -w0 "$PKI_DIR/$c.crt")
    client-key-data: $(base64 -w0 "$PKI_DIR/$c.key")
contexts:
- name: $u@ambient-mesh
  context: {cluster: ambient-mesh, user: $u}
current-context: $u@ambient-mesh
EOF
	umask 022
}
write_kubeconfig "$KUBECONFIG_ADMIN" admin kubernetes-admin
write_kubeconfig "$CONF_DIR/kube-controller-manager.kubeconfig" kube-controller-manager system:kube-controller-manager
write_kubeconfig "$CONF_DIR/kube-scheduler.kubeconfig" kube-scheduler system:kube-scheduler
write_kubeconfig "$CONF_DIR/kubelet.kubeconfig" kubelet "system:node:$NODE_NAME"
write_kubeconfig "$CONF_DIR/kube-proxy.kubeconfig" kube-proxy system:kube-proxy
export KUBECONFIG=$KUBECONFIG_ADMIN

# write_if_changed FILE < content: replace FILE only when the content differs. kube-proxy
# exits when its config file is rewritten ("content of the proxy server's configuration file
# was updated"), so a second up.sh on a running cluster must leave identical files alone.
write_if_changed() {
	local f=$1
	cat >"$f.new"
	if cmp -s "$f.new" "$f"; then rm -f "$f.new"; else mv -f "$f.new" "$f"; fi
}

# ===================================================================== processes
# start_proc NAME BINARY ARGS...: run in its own session, log to $LOG_DIR/NAME.log, pid in
# $PID_DIR/NAME.pid. Left alone when already running.
start_proc() {
	local name=$1 bin=$2 pid
	shift 2
	pid=$(pid_of "$name")
	if [[ -n $pid ]]; then
		log "$name is already running (pid $pid)"
		return
	fi
	[[ -x $bin ]] || die "$name: no executable $bin"
	printf '\n===== %s starting %s\n' "$(date -Is)" "$name" >>"$LOG_DIR/$name.log"
	# setsid: no controlling terminal, not killed with this script's process group. Without job
	# control the child is no group leader, so setsid execs in place and $! is the daemon.
	setsid "$bin" "$@" >>"$LOG_DIR/$name.log" 2>&1 </dev/null &
	echo $! >"$PID_DIR/$name.pid"
	basename "$bin" >"$PID_DIR/$name.exe"
	log "started $name (pid $!, log $LOG_DIR/$name.log)"
}

# wait_for NAME TIMEOUT DESCRIPTION CMD...: poll CMD every 0.5 s; fail early if NAME died.
wait_for() {
	local name=$1 timeout=$2 desc=$3 deadline
	shift 3
	deadline=$((SECONDS + timeout))
	until "$@" >/dev/null 2>&1; do
		if [[ -z $(pid_of "$name") ]]; then
			tail -n 30 "$LOG_DIR/$name.log" >&2 || true
			die "$name exited while waiting for $desc (log above: $LOG_DIR/$name.log)"
		fi
		if ((SECONDS >= deadline)); then
			tail -n 30 "$LOG_DIR/$name.log" >&2 || true
			die "timed out after ${timeout}s waiting for $desc (log above: $LOG_DIR/$name.log)"
		fi
		sleep 0.5
	done
	log "$desc: ok"
}

port_free_or_ours() { # PORT NAME: nothing but NAME's process listens on PORT
	local port=$1 name=$2 line
	line=$(ss -Hltnp "sport = :$port" 2>/dev/null | head -n1)
	[[ -z $line ]] && return 0
	local pid
	pid=$(pid_of "$name")
	[[ -n $pid && $line == *"pid=$pid,"* ]] && return 0
	die "port $port (for $name) is in use by another process: $line"
}

# ----------------------------------------------------------------- etcd
STEP="etcd"
port_free_or_ours "$ETCD_CLIENT_PORT" etcd
port_free_or_ours "$ETCD_PEER_PORT" etcd
mkdir -p "$CLUSTER_DIR/etcd" && chmod 700 "$CLUSTER_DIR/etcd"
# Plain HTTP on loopback only. --unsafe-no-fsync: a throwaway test cluster on a shared disk.
start_proc etcd "$ETCD_BIN_DIR/etcd" \
	--name=default --data-dir="$CLUSTER_DIR/etcd" \
	--listen-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" \
	--advertise-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" \
	--listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
	--initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
	--initial-cluster="default=http://127.0.0.1:$ETCD_PEER_PORT" \
	--listen-metrics-urls="" \
	--unsafe-no-fsync --snapshot-count=10000 --quota-backend-bytes=$((2 * 1024 * 1024 * 1024)) \
	--log-level=warn
wait_for etcd 30 "etcd /health" curl -fsS "http://127.0.0.1:$ETCD_CLIENT_PORT/health"

# ----------------------------------------------------------------- kube-apiserver
STEP="kube-apiserver"
port_free_or_ours "$APISERVER_PORT" kube-apiserver
start_proc kube-apiserver "$K8S_BIN_DIR/kube-apiserver" \
	--etcd-servers="http://127.0.0.1:$ETCD_CLIENT_PORT" \
	--bind-address="$NODE_IP" --advertise-address="$NODE_IP" --secure-port="$APISERVER_PORT" \
	--tls-cert-file="$PKI_DIR/apiserver.crt" --tls-private-key-file="$PKI_DIR/apiserver.key" \
	--client-ca-file="$PKI_DIR/ca.crt" \
	--service-cluster-ip-range="$SERVICE_CIDR" \
	--service-account-issuer=https://kubernetes.default.svc.cluster.local \
	--service-account-key-file="$PKI_DIR/sa.pub" \
	--service-account-signing-key-file="$PKI_DIR/sa.key" \
	--authorization-mode=Node,RBAC \
	--enable-admission-plugins=NodeRestriction \
	--allow-privileged=true \
	--kubelet-client-certificate="$PKI_DIR/apiserver-kubelet-client.crt" \
	--kubelet-client-key="$PKI_DIR/apiserver-kubelet-client.key" \
	--kubelet-certificate-authority="$PKI_DIR/ca.crt" \
	--kubelet-preferred-address-types=InternalIP,Hostname \
	--requestheader-client-ca-file="$PKI_DIR/front-proxy-ca.crt" \
	--requestheader-allowed-names=front-proxy-client \
	--requestheader-username-headers=X-Remote-User \
	--requestheader-group-headers=X-Remote-Group \
	--requestheader-extra-headers-prefix=X-Remote-Extra- \
	--proxy-client-cert-file="$PKI_DIR/front-proxy-client.crt" \
	--proxy-client-key-file="$PKI_DIR/front-proxy-client.key" \
	--enable-aggregator-routing=true \
	--profiling=false \
	--v=1
wait_for kube-apiserver 90 "kube-apiserver /readyz" kubectl get --raw=/readyz

# ----------------------------------------------------------------- controller manager, scheduler
STEP="kube-controller-manager"
start_proc kube-controller-manager "$K8S_BIN_DIR/kube-controller-manager" \
	--kubeconfig="$CONF_DIR/kube-controller-manager.kubeconfig" \
	--authentication-kubeconfig="$CONF_DIR/kube-controller-manager.kubeconfig" \
	--authorization-kubeconfig="$CONF_DIR/kube-controller-manager.kubeconfig" \
	--bind-address=127.0.0.1 \
	--leader-elect=false \
	--use-service-account-credentials=true \
	--service-account-private-key-file="$PKI_DIR/sa.key" \
	--root-ca-file="$PKI_DIR/ca.crt" \
	--cluster-signing-cert-file="$PKI_DIR/ca.crt" --cluster-signing-key-file="$PKI_DIR/ca.key" \
	--allocate-node-cidrs=true --cluster-cidr="$CLUSTER_CIDR" --node-cidr-mask-size=24 \
	--service-cluster-ip-range="$SERVICE_CIDR" \
	--profiling=false \
	--v=1

STEP="kube-scheduler"
start_proc kube-scheduler "$K8S_BIN_DIR/kube-scheduler" \
	--kubeconfig="$CONF_DIR/kube-scheduler.kubeconfig" \
	--authentication-kubeconfig="$CONF_DIR/kube-scheduler.kubeconfig" \
	--authorization-kubeconfig="$CONF_DIR/kube-scheduler.kubeconfig" \
	--bind-address=127.0.0.1 \
	--leader-elect=false \
	--profiling=false \
	--v=1

# ----------------------------------------------------------------- containerd
STEP="containerd"
RUNC=$(command -v runc) || die "runc is not installed"
mkdir -p "$CLUSTER_DIR/containerd" "$RUN_DIR/containerd"
# Config version 3 (containerd 2.x). Root, state and sockets under the work dir; NRI off (it
# would listen on /var/run/nri); runc from Debian with cgroupfs (the kubelet's driver on this
# cgroup v1 host); the sandbox image is ours, pinned, so nothing is ever pulled for it.
write_if_changed "$CONF_DIR/containerd.toml" <<EOF
version = 3
root = '$CLUSTER_DIR/containerd'
state = '$RUN_DIR/containerd'

[grpc]
  address = '$CONTAINERD_SOCK'

[ttrpc]
  address = '$RUN_DIR/containerd.sock.ttrpc'

[debug]
  level = 'info'

[plugins]
  [plugins.'io.containerd.internal.v1.opt']
    path = '$CLUSTER_DIR/containerd-opt'
  [plugins.'io.containerd.nri.v1.nri']
    disable = true
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = '$PAUSE_IMAGE'
  [plugins.'io.containerd.cri.v1.runtime']
    enable_selinux = false
    restrict_oom_score_adj = $RESTRICT_OOM
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = 'io.containerd.runc.v2'
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = '$RUNC'
          Root = '$RUN_DIR/runc'
          SystemdCgroup = false
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ['$CNI_BIN_DIR']
      conf_dir = '$CNI_CONF_DIR'
      max_conf_num = 1
  [plugins.'io.containerd.grpc.v1.cri']
    stream_server_address = '127.0.0.1'
    stream_server_port = '0'
EOF
printf 'runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 30\n' "$CONTAINERD_SOCK" "$CONTAINERD_SOCK" >"$CONF_DIR/crictl.yaml"
# containerd finds containerd-shim-runc-v2 on PATH (lib.sh puts $CONTAINERD_BIN_DIR there).
start_proc containerd "$CONTAINERD_BIN_DIR/containerd" \
	--config "$CONF_DIR/containerd.toml"
wait_for containerd 30 "containerd API" ctr_ version

STEP="images"
# The pause image is required (the sandbox of every pod); the mesh images are imported when
# `make images` has built them. ctr import is idempotent (same digest: nothing to do).
pause_archive=$IMAGES_DIR/$(image_archive_name "$PAUSE_IMAGE")
if [[ ! -f $pause_archive ]]; then
	log "building the pause image ($pause_archive)"
	IMAGES_DIR=$IMAGES_DIR "$SCRIPT_DIR/images.sh" --no-import pause
fi
mesh_tag=$(workspace_version "$REPO_ROOT/Cargo.toml")
have=$(ctr_ images ls -q 2>/dev/null)
import_pids=()
for ref in "$PAUSE_IMAGE" $(for i in "${MESH_IMAGES[@]}"; do echo "$IMAGE_REPO/$i:$mesh_tag"; done); do
	f=$IMAGES_DIR/$(image_archive_name "$ref")
	if grep -qxF "$ref" <<<"$have"; then
		continue
	elif [[ -f $f ]]; then
		import_archive "$f" & # in parallel: unpacking is most of the time
		import_pids+=($!)
	else
		log "no archive for $ref ($f): run 'make images' to build the mesh images"
	fi
done
for p in "${import_pids[@]}"; do wait "$p" || die "importing the images failed (see above)"; done
crictl_ inspecti "$PAUSE_IMAGE" >/dev/null || die "the CRI does not see $PAUSE_IMAGE after the import"

# ----------------------------------------------------------------- CNI
STEP="CNI config"
# One bridge network: cni0 is the pods' gateway; host-local hands out the node's pod CIDR
# (kcm allocates the first /24 of the cluster CIDR to the first node; checked below). No
# ipMasq: pods only talk to each other and to this host (kube-proxy masquerades what needs it).
# host-local keeps its leases under the work dir.
write_if_changed "$CONF_DIR/$CNI_NETWORK.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$CNI_NETWORK",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$CNI_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$CLUSTER_DIR/cni-ipam",
        "ranges": [[{ "subnet": "$POD_CIDR" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
EOF
# Written aside, then copied in one go: containerd reloads on every write in $CNI_CONF_DIR.
# Keep the installed file (and so a mesh-cni entry the cni-agent chained in) if the kubelet
# is running.
if [[ ! -f $CNI_CONF_FILE ]] || [[ -z $(pid_of kubelet) ]]; then
	cp -f "$CONF_DIR/$CNI_NETWORK.conflist" "$CNI_CONF_DIR/.$CNI_NETWORK.tmp"
	mv -f "$CNI_CONF_DIR/.$CNI_NETWORK.tmp" "$CNI_CONF_FILE"
fi
other_conf=$(find "$CNI_CONF_DIR" -maxdepth 1 \( -name '*.conf' -o -name '*.conflist' -o -name '*.json' \) ! -path "$CNI_CONF_FILE" | sort | head -n1)
if [[ -n $other_conf && $other_conf < $CNI_CONF_FILE ]]; then
	log "WARNING: $other_conf sorts before $CNI_CONF_FILE: containerd will use it instead"
fi

# ----------------------------------------------------------------- kubelet
STEP="kubelet"
mkdir -p "$CLUSTER_DIR/pod-logs"
write_if_changed "$CONF_DIR/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# cgroup v1 host: 1.35+ refuses to start on v1 unless told otherwise.
failCgroupV1: false
cgroupDriver: cgroupfs
failSwapOn: false
oomScoreAdj: $OWN_OOM_SCORE_ADJ
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
imageServiceEndpoint: unix://$CONTAINERD_SOCK
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: $PKI_DIR/kubelet-serving.crt
tlsPrivateKeyFile: $PKI_DIR/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI_DIR/ca.crt}
authorization:
  mode: Webhook
clusterDomain: cluster.local
# No CoreDNS: ClusterFirst pods fall back to the host's resolv.conf.
clusterDNS: []
resolvConf: /etc/resolv.conf
podLogsDir: $CLUSTER_DIR/pod-logs
# A shared CI disk: no evictions for disk, and never garbage-collect images (they were
# imported, not pulled, and cannot be pulled back).
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%"
  nodefs.inodesFree: "1%"
  imagefs.available: "1%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
maxPods: 110
rotateCertificates: false
serverTLSBootstrap: false
EOF
start_proc kubelet "$K8S_BIN_DIR/kubelet" \
	--config="$CONF_DIR/kubelet.yaml" \
	--kubeconfig="$CONF_DIR/kubelet.kubeconfig" \
	--root-dir="$KUBELET_ROOT" \
	--hostname-override="$NODE_NAME" \
	--node-ip="$NODE_IP" \
	--v=1
wait_for kubelet 60 "node $NODE_NAME registered" kubectl get node "$NODE_NAME"
node_cidr=$(kubectl get node "$NODE_NAME" -o jsonpath='{.spec.podCIDR}')
if [[ -n $node_cidr && $node_cidr != "$POD_CIDR" ]]; then
	log "WARNING: kcm gave $NODE_NAME podCIDR $node_cidr, the CNI config uses $POD_CIDR"
fi
node_ready() { [[ $(kubectl get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}') == True ]]; }
wait_for kubelet 120 "node $NODE_NAME Ready" node_ready
READY_AT=$(elapsed)

# ----------------------------------------------------------------- kube-proxy
STEP="kube-proxy"
write_if_changed "$CONF_DIR/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: $CONF_DIR/kube-proxy.kubeconfig
mode: iptables
oomScoreAdj: $OWN_OOM_SCORE_ADJ
hostnameOverride: $NODE_NAME
clusterCIDR: $CLUSTER_CIDR
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# NodePorts on the node IP only (not on the machine's uplink, not on localhost, which would
# need route_localnet).
nodePortAddresses: ["$NODE_IP/32"]
# Leave the host's conntrack sysctls alone.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF
start_proc kube-proxy "$K8S_BIN_DIR/kube-proxy" --config="$CONF_DIR/kube-proxy.yaml" --v=1
wait_for kube-proxy 60 "kube-proxy /healthz" curl -fsS http://127.0.0.1:10256/healthz
# The first sync has programmed kubernetes.default when its ClusterIP has a KUBE-SVC chain.
svc_synced() { iptables-save -t nat | grep -q -- "-d $SERVICE_IP/32 .*-j KUBE-SVC-"; }
wait_for kube-proxy 60 "kube-proxy rules for $SERVICE_IP" svc_synced

STEP="default ServiceAccount"
wait_for kube-controller-manager 60 "default ServiceAccount" kubectl -n default get serviceaccount default

log "cluster up: node Ready at ${READY_AT}s, everything at $(elapsed)s; RSS of the cluster's processes: $(cluster_rss_mib) MiB"
kubectl get nodes -o wide
echo
echo "export KUBECONFIG=$KUBECONFIG_ADMIN"
echo "export PATH=$K8S_BIN_DIR:$HELM_BIN_DIR:\$PATH"
