#!/usr/bin/env bash
# Tear down the cluster up.sh made, in reverse order, and remove everything it left on the
# host: pods and their containers, network namespaces, mounts, cgroups, iptables chains, the
# CNI config, cni0, the node IP's dummy interface, changed sysctls, and the work dir.
#
#   e2e/cluster/down.sh            (root)
#
# Works after a partial or failed up.sh, and on a host with nothing to clean (idempotent):
# every step checks what is there and carries on when a step fails; the exit status is
# non-zero only when something could not be removed.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$SCRIPT_DIR/lib.sh"

T0=${EPOCHREALTIME/./}
elapsed() {
	local us=$((${EPOCHREALTIME/./} - T0))
	printf '%d.%d' $((us / 1000000)) $((us / 100000 % 10))
}
log() { printf '[down %5ss] %s\n' "$(elapsed)" "$*"; }
PROBLEMS=()
problem() {
	printf '[down] WARNING: %s\n' "$*" >&2
	PROBLEMS+=("$*")
}

[[ $(id -u) == 0 ]] || {
	echo "down.sh: run as root" >&2
	exit 1
}

# ------------------------------------------------------------------ kube-proxy, kubelet
log "stopping kube-proxy and the kubelet"
# The kubelet before the pods go, so that it does not restart them.
stop_procs 15 kube-proxy kubelet

# ------------------------------------------------------------------ pods (through the CRI)
# Removing the sandboxes through containerd runs the CNI DEL for each (veth, IP lease, portmap
# rules) and unmounts its netns. If containerd is not running but its state is there (a crash,
# an interrupted up.sh), start it again for this: it recovers the sandboxes from its metadata.
if [[ -z $(pid_of containerd) && -f $CONF_DIR/containerd.toml && -d $CLUSTER_DIR/containerd ]] &&
	[[ -n $(shim_pids) || -n $(pod_pids) || -d $RUN_DIR/containerd ]]; then
	log "containerd is not running: starting it to remove the pods"
	mkdir -p "$PID_DIR" "$LOG_DIR"
	setsid "$CONTAINERD_BIN_DIR/containerd" --config "$CONF_DIR/containerd.toml" \
		>>"$LOG_DIR/containerd.log" 2>&1 </dev/null &
	echo $! >"$PID_DIR/containerd.pid"
	echo containerd >"$PID_DIR/containerd.exe"
	for _ in $(seq 1 50); do
		containerd_running && break
		sleep 0.2
	done
fi
if containerd_running; then
	if sandboxes=$(crictl_ pods -q 2>/dev/null); then
		n=$(grep -c . <<<"$sandboxes" || true)
		log "removing $n pod sandboxes through the CRI"
		if ((n)); then
			# shellcheck disable=SC2086
			crictl_ --timeout 60s stopp $sandboxes >/dev/null 2>&1 || true
			crictl_ --timeout 60s rmp -fa >/dev/null 2>&1 || log "crictl rmp -fa failed: killing the pods' processes instead"
		fi
	else
		log "crictl cannot list the pods: killing the pods' processes instead"
	fi
fi
log "stopping containerd"
stop_procs 15 containerd

# ------------------------------------------------------------------ what survived containerd
# Container processes (in the pods' cgroups) and shims outlive containerd; kill them by pid.
kill_leftovers() {
	local i pids
	for i in 1 2 3 4 5 6 7 8 9 10; do
		pids=$(
			pod_pids
			shim_pids
		)
		[[ -n $pids ]] || return 0
		((i > 1)) || log "killing leftover pod and shim processes: ${pids//$'\n'/ }"
		# shellcheck disable=SC2086
		kill -KILL $pids 2>/dev/null || true
		sleep 0.3
	done
	problem "processes survive in the pods' cgroups: $(pod_pids | tr '\n' ' ')"
}
# Before killing them, note the network namespaces they are in, to delete those below.
leftover_netns_inodes=$(for p in $(pod_pids); do stat -L -c %i "/proc/$p/ns/net" 2>/dev/null; done | sort -u)
kill_leftovers

# ------------------------------------------------------------------ control plane
log "stopping the control plane"
stop_procs 10 kube-scheduler kube-controller-manager
stop_procs 15 kube-apiserver
stop_procs 10 etcd

# ------------------------------------------------------------------ mounts, netns, cgroups
# Pod network namespaces: containerd names them cni-<uuid> under /var/run/netns. Ours are the
# ones a leftover pod process was in, or those whose eth0 has an address in the pod CIDR
# (other users of /var/run/netns, such as the mesh's netns test harness, use other names).
ours_netns() {
	local f ino
	for f in /var/run/netns/cni-*; do
		[[ -e $f ]] || continue
		ino=$(stat -L -c %i "$f" 2>/dev/null || true)
		if [[ -n $ino ]] && grep -qxF "$ino" <<<"$leftover_netns_inodes"; then
			echo "$f"
		elif ip -n "${f##*/}" -4 -o addr show 2>/dev/null | awk '{ print $4 }' | grep -q "^${CLUSTER_CIDR%.*.*/*}\."; then
			echo "$f"
		fi
	done
}
for f in $(ours_netns); do
	log "removing network namespace $f"
	umount "$f" 2>/dev/null || umount -l "$f" 2>/dev/null || true
	rm -f "$f" || problem "cannot remove $f"
done

# Every mount under the work dir (kubelet volumes, containerd's overlay rootfs and shm,
# sandbox netns bind mounts), deepest first.
unmount_under() {
	local dir=$1 m i
	for i in 1 2 3; do
		mapfile -t mounts < <(findmnt -rn -o TARGET | grep -E "^$dir(/|$)" | sort -r)
		((${#mounts[@]})) || return 0
		((i > 1)) || log "unmounting ${#mounts[@]} mounts under $dir"
		for m in "${mounts[@]}"; do
			m=$(printf '%b' "$m") # findmnt -r escapes spaces and such as \x20
			umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
		done
	done
	problem "mounts remain under $dir: $(findmnt -rn -o TARGET | grep -E "^$dir(/|$)" | head -3 | tr '\n' ' ')"
}
unmount_under "$CLUSTER_DIR"

# The pods' cgroups (cgroupfs driver: /kubepods in each v1 hierarchy), deepest first.
for d in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
	[[ -d $d ]] || continue
	find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
	[[ ! -d $d ]] || problem "cannot remove cgroup $d"
done

# ------------------------------------------------------------------ iptables
log "removing iptables rules"
# kube-proxy's own cleanup: its KUBE-* chains in iptables (and nftables/ipvs if any).
if [[ -x $K8S_BIN_DIR/kube-proxy ]]; then
	"$K8S_BIN_DIR/kube-proxy" --cleanup >/tmp/ambient-mesh-kube-proxy-cleanup.log 2>&1 ||
		log "kube-proxy --cleanup failed (/tmp/ambient-mesh-kube-proxy-cleanup.log); removing its chains below"
fi

# delete_chains CMD TABLE REGEX: remove the rules that jump to chains matching REGEX, then
# flush and delete those chains (the kubelet's KUBE-KUBELET-CANARY, KUBE-IPTABLES-HINT, ...).
delete_chains() {
	local ipt=$1 table=$2 re=$3 save chains rule c
	save=$("$ipt-save" -t "$table" 2>/dev/null) || return 0
	chains=$(sed -nE "s/^:($re) .*/\1/p" <<<"$save")
	[[ -n $chains ]] || return 0
	# Rules in any chain that jump to one of them ("-A CHAIN ... -j TARGET").
	while read -r rule; do
		[[ -n $rule ]] || continue
		eval "$ipt -t $table -D ${rule#-A }" 2>/dev/null || true
	done < <(grep -E -- "^-A .* -j ($re)( |$)" <<<"$save" || true)
	for c in $chains; do $ipt -t "$table" -F "$c" 2>/dev/null || true; done
	for c in $chains; do $ipt -t "$table" -X "$c" 2>/dev/null || problem "cannot delete $ipt -t $table chain $c"; done
}
for ipt in iptables ip6tables; do
	command -v $ipt-save >/dev/null || continue
	for table in filter nat mangle raw; do
		delete_chains $ipt $table 'KUBE-[A-Z0-9-]*'
	done
	# The portmap plugin's per-pod chains carry our network name in their comment; its shared
	# CNI-HOSTPORT-* chains go once nothing else is in them.
	save=$($ipt-save -t nat 2>/dev/null || true)
	ours=$({ grep -E -- "^-A CNI-DN-[0-9a-f]+ .*$CNI_NETWORK" <<<"$save" || true; } | awk '{ print $2 }' | sort -u | paste -sd'|' -)
	[[ -z $ours ]] || delete_chains $ipt nat "$ours"
	save=$($ipt-save -t nat 2>/dev/null || true)
	if ! grep -qE -- '^-A CNI-(HOSTPORT-DNAT|HOSTPORT-SETMARK|HOSTPORT-MASQ) ' <<<"$save"; then
		delete_chains $ipt nat 'CNI-HOSTPORT-[A-Z]*'
	fi
done
# iptables-nft leaves its (now empty) tables behind: delete those that did not exist before
# up.sh and hold no rule.
if command -v nft >/dev/null && [[ -f $HOST_STATE_DIR/nft-tables.orig ]]; then
	while read -r _ fam name; do
		[[ -n $name ]] || continue
		grep -qxF "table $fam $name" "$HOST_STATE_DIR/nft-tables.orig" && continue
		if ! nft list table "$fam" "$name" 2>/dev/null | grep -qE '^\s+(ip|ip6|meta|counter|jump|goto|tcp|udp|ct|mark|iifname|oifname|fib|socket|return|accept|drop|dnat|snat|masquerade)'; then
			nft delete table "$fam" "$name" 2>/dev/null || true
		fi
	done < <(nft list tables 2>/dev/null)
fi

# ------------------------------------------------------------------ host networking and files
if ip link show "$CNI_BRIDGE" >/dev/null 2>&1; then
	log "removing $CNI_BRIDGE"
	ip link delete "$CNI_BRIDGE" || problem "cannot delete $CNI_BRIDGE"
fi
if [[ -f $HOST_STATE_DIR/created-default-route ]]; then
	ip route del default dev "$NODE_IFACE" 2>/dev/null || true
fi
if [[ -f $HOST_STATE_DIR/created-iface ]] && ip link show "$NODE_IFACE" >/dev/null 2>&1; then
	log "removing $NODE_IFACE ($NODE_IP)"
	ip link delete "$NODE_IFACE" || problem "cannot delete $NODE_IFACE"
elif ip addr show dev "$NODE_IFACE" 2>/dev/null | grep -qF " $NODE_IP/"; then
	ip addr del "$NODE_IP/32" dev "$NODE_IFACE" 2>/dev/null || true
fi
rm -f "$CNI_CONF_FILE" "$CNI_CONF_FILE.tmp"
# The kubelet's symlinks to the pod logs under the work dir.
for l in /var/log/containers/*.log; do
	[[ -L $l && $(readlink "$l") == "$CLUSTER_DIR/"* ]] && rm -f "$l"
done

# Hard-coded paths outside the work dir: gone if the first up.sh made them, else only ours.
rm -f /var/lib/cni/results/"$CNI_NETWORK"-* 2>/dev/null || true
if [[ -f $HOST_STATE_DIR/paths.orig ]]; then
	for p in /run/containerd /var/lib/cni /var/lib/kubelet /var/log/containers "$CNI_CONF_DIR" /etc/cni; do
		[[ -e $p ]] || continue
		! grep -qxF "$p" "$HOST_STATE_DIR/paths.orig" || continue
		if findmnt -rn -o TARGET | grep -qE "^$p(/|$)"; then
			problem "mounts remain under $p: not removing it"
		else
			rm -rf --one-file-system "$p" || problem "cannot remove $p"
		fi
	done
fi

if [[ -f $HOST_STATE_DIR/sysctl.orig ]]; then
	while IFS='=' read -r k v; do
		[[ -n $k ]] || continue
		[[ $(sysctl -n "$k" 2>/dev/null) == "$v" ]] || sysctl -qw "$k=$v" 2>/dev/null || problem "cannot restore sysctl $k=$v"
	done <"$HOST_STATE_DIR/sysctl.orig"
fi

# ------------------------------------------------------------------ the work dir
if [[ -d $CLUSTER_DIR ]]; then
	# Never rm -rf across a mount that is still there.
	if findmnt -rn -o TARGET | grep -qE "^$CLUSTER_DIR(/|$)"; then
		problem "mounts remain under $CLUSTER_DIR: not removing it"
	else
		log "removing $CLUSTER_DIR"
		rm -rf --one-file-system "$CLUSTER_DIR" || problem "cannot remove $CLUSTER_DIR"
	fi
fi

if ((${#PROBLEMS[@]})); then
	log "done with ${#PROBLEMS[@]} problem(s):"
	printf '  - %s\n' "${PROBLEMS[@]}"
	exit 1
fi
log "cluster down"
