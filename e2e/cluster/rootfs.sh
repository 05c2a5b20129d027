#!/usr/bin/env bash
# Assemble the root filesystem of one mesh image: its binaries, exactly the shared libraries
# `ldd` lists for them (and the ELF loader), a minimal /etc and /tmp, and for the cni image
# Debian's iptables. Used by images.sh (no Docker) and by the Dockerfile at the repository
# root (`docker build`), so that both make the same images.
#
#   e2e/cluster/rootfs.sh IMAGE BIN_DIR DEST
#
# IMAGE: istiod | ztunnel | cni | waypoint | mesh-echo. BIN_DIR holds the built binaries; DEST
# (created, must not exist or be empty) becomes the image's /. Prints the image's entrypoint
# as JSON on stdout. STRIP=0 keeps debug info (default: strip --strip-debug).
# Needs: ldd (libc-bin), strip (binutils), and for the cni image iptables (xtables-nft-multi).
set -euo pipefail

die() {
	echo "rootfs.sh: $*" >&2
	exit 1
}
(($# == 3)) || die "usage: rootfs.sh IMAGE BIN_DIR DEST"
IMAGE=$1 BIN_DIR=$2 ROOT=$3
STRIP=${STRIP:-1}

# add_file SRC [DEST]: copy SRC (following symlinks) to DEST (default: the same path).
add_file() {
	local src=$1 dest=${2:-$1}
	mkdir -p "$ROOT$(dirname "$dest")"
	cp -L --preserve=mode "$src" "$ROOT$dest"
}

# add_libs ELF...: every library ldd lists for the ELF files, and the loader, under the path
# ldd prints: /lib64/ld-linux-x86-64.so.2 (the binaries' PT_INTERP) and
# /lib/x86_64-linux-gnu/*, which the loader searches by default (there is no ld.so.cache).
add_libs() {
	local f lib out
	for f in "$@"; do
		out=$(ldd "$f" 2>&1) || continue # "not a dynamic executable": nothing to add
		if grep -q 'not found' <<<"$out"; then
			die "ldd $f: missing libraries: $(grep 'not found' <<<"$out" | head -n 3)"
		fi
		# "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)", "/lib64/ld-linux-x86-64.so.2 (0x...)";
		# linux-vdso.so.1 has no file.
		while read -r lib; do
			[[ -e $ROOT$lib ]] || add_file "$lib"
		done < <(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$out")
	done
}

# add_bin NAME: BIN_DIR/NAME as /usr/local/bin/NAME, with its libraries.
add_bin() {
	local src=$BIN_DIR/$1 dest=/usr/local/bin/$1
	[[ -x $src ]] || die "missing binary $src"
	add_file "$src" "$dest"
	if [[ $STRIP == 1 ]] && command -v strip >/dev/null; then strip --strip-debug "$ROOT$dest"; fi
	add_libs "$src"
}

# add_base: what a program expects of / beyond its libraries. The kubelet mounts /etc/hosts,
# /etc/resolv.conf and /etc/hostname.
add_base() {
	mkdir -p "$ROOT/etc" "$ROOT/tmp" "$ROOT/var/run" "$ROOT/proc" "$ROOT/sys" "$ROOT/dev"
	chmod 1777 "$ROOT/tmp"
	printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' >"$ROOT/etc/passwd"
	printf 'root:x:0:\nnogroup:x:65534:\n' >"$ROOT/etc/group"
	printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$ROOT/etc/nsswitch.conf"
}

# add_iptables: Debian's nft-backed iptables under the names the cni-agent execs
# (iptables-save/-restore, ip6tables-save/-restore; crates/cni/src/agent/rules.rs).
add_iptables() {
	local multi name mod_dir libxt xt_dir
	multi=$(readlink -f /usr/sbin/xtables-nft-multi 2>/dev/null || true)
	[[ -x $multi ]] || die "the cni image needs iptables (xtables-nft-multi): apt-get install iptables"
	add_file "$multi" /usr/sbin/xtables-nft-multi
	add_libs "$multi"
	for name in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
		ln -sf xtables-nft-multi "$ROOT/usr/sbin/$name"
	done
	# Match and target extensions are dlopen'ed (ldd does not list them) from the directory
	# compiled into libxtables (/usr/lib/<triplet>/xtables on Debian), which is not the one
	# beside the library as ldd names it on a merged-/usr system (/lib/<triplet>): the image
	# has no /lib -> /usr/lib link, so they go to the compiled-in path.
	libxt=$(ldd "$multi" | awk '/libxtables/ { print $3 }')
	mod_dir=$(readlink -f "$(dirname "$libxt")/xtables")
	[[ -d $mod_dir ]] || die "no iptables extension directory at $mod_dir"
	xt_dir=$(strings -a "$libxt" | grep -m1 -E '^/[^ ]*/xtables$' || true)
	xt_dir=${xt_dir:-$mod_dir}
	mkdir -p "$ROOT$xt_dir"
	cp -L "$mod_dir"/*.so "$ROOT$xt_dir/"
	add_libs "$mod_dir"/*.so
	# Protocol and service names ("-p tcp").
	for name in /etc/protocols /etc/services /etc/ethertypes; do
		[[ ! -f $name ]] || add_file "$name"
	done
}

[[ ! -e $ROOT ]] || [[ -z $(ls -A "$ROOT") ]] || die "$ROOT exists and is not empty"
mkdir -p "$ROOT"
add_base
case $IMAGE in
cni)
	add_bin cni-agent
	# The agent copies mesh-cni, found beside itself, into the node's CNI bin directory, where
	# the container runtime runs it on the node: there it uses the node's glibc.
	add_bin mesh-cni
	add_iptables
	echo '["/usr/local/bin/cni-agent"]'
	;;
istiod | ztunnel | waypoint | mesh-echo)
	add_bin "$IMAGE"
	echo "[\"/usr/local/bin/$IMAGE\"]"
	;;
*) die "unknown image '$IMAGE' (istiod ztunnel cni waypoint mesh-echo)" ;;
esac
