#!/usr/bin/env bash
# Build the container images of the mesh (and the pause image of the local cluster) as OCI
# image archives, without Docker, a registry or a base image, and import them into the local
# cluster's containerd when it is running.
#
#   e2e/cluster/images.sh [--no-import] [IMAGE...]
#
# IMAGE is one of: pause istiod ztunnel cni waypoint mesh-echo (default: all of them).
# `make images` builds the Rust binaries first, then runs this script.
#
# Each image is a single layer holding the binaries, exactly the shared libraries `ldd` lists
# for them (and the ELF loader), plus a minimal /etc and /tmp: the Rust binaries are linked
# dynamically against glibc, so the image needs no base. The cni image also carries Debian's
# iptables (xtables-nft-multi with the iptables-save/-restore and ip6tables-save/-restore
# names, its libraries and extension modules): the cni-agent execs those in pod namespaces
# (crates/cni/src/agent/rules.rs). The pause image is upstream's build/pause/linux/pause.c
# from the k8s.io/kubernetes module, linked with `gcc -static`.
#
# The archive is a hand-written OCI image layout (oci-layout, index.json, blobs/sha256/...)
# in a tar: the manifest entry of index.json carries `io.containerd.image.name` (the full
# name `ctr images import` uses) and `org.opencontainers.image.ref.name` (the tag).
#
# Environment:
#   MESH_BIN_DIR   the Rust binaries (default: $CARGO_TARGET_DIR/debug, or
#                  /var/cache/ambient-mesh/target/debug)
#   IMAGES_DIR     where the archives go (default: /var/cache/ambient-mesh/images)
#   IMAGE_REPO     repository prefix (default: docker.io/ambient-mesh)
#   IMAGE_TAG      tag of the mesh images (default: the workspace version in Cargo.toml)
#   STRIP=0        keep debug info in the binaries (default: strip --strip-debug)
#   CLUSTER_DIR    the local cluster whose containerd gets the images (see up.sh)
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
MESH_CACHE=${MESH_CACHE:-/var/cache/ambient-mesh}
# shellcheck source=versions.env
source "$SCRIPT_DIR/versions.env"
# shellcheck source=lib.sh
source "$SCRIPT_DIR/lib.sh"

MESH_BIN_DIR=${MESH_BIN_DIR:-${CARGO_TARGET_DIR:-$MESH_CACHE/target}/debug}
IMAGES_DIR=${IMAGES_DIR:-$MESH_CACHE/images}
IMAGE_REPO=${IMAGE_REPO:-docker.io/ambient-mesh}
IMAGE_TAG=${IMAGE_TAG:-$(workspace_version "$REPO_ROOT/Cargo.toml")}
STRIP=${STRIP:-1}
ALL_IMAGES=(pause istiod ztunnel cni waypoint mesh-echo)

log() { printf '[images %(%H:%M:%S)T] %s\n' -1 "$*"; }
die() {
	printf '[images %(%H:%M:%S)T] ERROR: %s\n' -1 "$*" >&2
	exit 1
}

do_import=1
images=()
while (($#)); do
	case $1 in
	--no-import) do_import=0 ;;
	-h | --help)
		sed -n '2,31p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
		exit 0
		;;
	pause | istiod | ztunnel | cni | waypoint | mesh-echo) images+=("$1") ;;
	*) die "unknown argument '$1' (images: ${ALL_IMAGES[*]})" ;;
	esac
	shift
done
((${#images[@]})) || images=("${ALL_IMAGES[@]}")

[[ -n $IMAGE_TAG ]] || die "cannot read the workspace version from $REPO_ROOT/Cargo.toml; set IMAGE_TAG"
mkdir -p "$IMAGES_DIR"
WORK=$(mktemp -d "$IMAGES_DIR/.build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# ------------------------------------------------------------------ rootfs helpers

# add_file ROOTFS SRC [DEST]: copy SRC (following symlinks) to DEST (default: the same path).
add_file() {
	local root=$1 src=$2 dest=${3:-$2}
	mkdir -p "$root$(dirname "$dest")"
	cp -L --preserve=mode "$src" "$root$dest"
}

# add_libs ROOTFS ELF...: copy every library ldd lists for the ELF files, and the loader,
# under the path ldd prints (so /lib64/ld-linux-x86-64.so.2, the PT_INTERP of the binaries,
# and /lib/x86_64-linux-gnu/*, a directory the loader searches without an ld.so.cache).
add_libs() {
	local root=$1 f lib
	shift
	for f in "$@"; do
		# Lines: "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)";
		# linux-vdso has no file. A static binary prints "not a dynamic executable" (exit 1).
		ldd "$f" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' |
			while read -r lib; do
				[[ -e $root$lib ]] || add_file "$root" "$lib"
			done
		if ldd "$f" 2>&1 | grep -q 'not found'; then
			die "ldd $f: a library is missing on this machine: $(ldd "$f" 2>&1 | grep 'not found' | head -3)"
		fi
	done
}

# add_bin ROOTFS SRC DEST: the binary (stripped of debug info unless STRIP=0) and its libraries.
add_bin() {
	local root=$1 src=$2 dest=$3
	[[ -x $src ]] || die "missing binary $src (run 'cargo build --workspace --bins' or 'make images'; MESH_BIN_DIR=$MESH_BIN_DIR)"
	add_file "$root" "$src" "$dest"
	if [[ $STRIP == 1 ]] && command -v strip >/dev/null; then strip --strip-debug "$root$dest"; fi
	add_libs "$root" "$src"
}

# add_base ROOTFS: what a program expects of / beyond its libraries: /tmp, users, NSS order.
# /etc/hosts, /etc/resolv.conf and /etc/hostname are mounted by the kubelet.
add_base() {
	local root=$1
	mkdir -p "$root/etc" "$root/tmp" "$root/var/run" "$root/proc" "$root/sys" "$root/dev"
	chmod 1777 "$root/tmp"
	printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' >"$root/etc/passwd"
	printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
	printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$root/etc/nsswitch.conf"
}

# add_iptables ROOTFS: Debian's nft-backed iptables under the names the cni-agent execs.
add_iptables() {
	local root=$1 multi name mod_dir
	multi=$(readlink -f /usr/sbin/xtables-nft-multi 2>/dev/null || true)
	[[ -x $multi ]] || die "the cni image needs Debian's iptables (xtables-nft-multi); apt-get install iptables"
	add_file "$root" "$multi" /usr/sbin/xtables-nft-multi
	add_libs "$root" "$multi"
	for name in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore \
		iptables-nft iptables-nft-save iptables-nft-restore ip6tables-nft ip6tables-nft-save ip6tables-nft-restore; do
		ln -sf xtables-nft-multi "$root/usr/sbin/$name"
	done
	# Match and target extensions are dlopen'ed from here (ldd does not list them).
	mod_dir=$(dirname "$(ldd "$multi" | awk '/libxtables/ { print $3 }')")/xtables
	[[ -d $mod_dir ]] || die "no iptables extension directory at $mod_dir"
	mkdir -p "$root$mod_dir"
	cp -L "$mod_dir"/*.so "$root$mod_dir/"
	add_libs "$root" "$mod_dir"/*.so
	# Protocol and service names for "-p tcp" and friends.
	for name in /etc/protocols /etc/services /etc/ethertypes; do
		[[ -f $name ]] && add_file "$root" "$name"
	done
	return 0
}

# build_pause ROOTFS: upstream's pause.c from the Kubernetes module, static.
build_pause() {
	local root=$1 src
	src=$(k8s_module_dir)/build/pause/linux/pause.c
	[[ -f $src ]] || die "no $src"
	command -v gcc >/dev/null || die "gcc is needed for the pause image (apt-get install gcc libc6-dev)"
	mkdir -p "$root"
	# As build/pause/Makefile: -Os -Wall -Werror -static, VERSION compiled in.
	gcc -Os -Wall -Werror -static -DVERSION="v${PAUSE_VERSION}-ambient-mesh" -o "$root/pause" "$src"
	strip "$root/pause"
}

# The Kubernetes module (for pause.c): from the module cache build.sh fills, downloaded if absent.
k8s_module_dir() {
	local d=$MESH_CACHE/go/mod/k8s.io/kubernetes@$K8S_VERSION
	if [[ ! -d $d ]]; then
		command -v go >/dev/null || die "no $d and no go to download it"
		log "downloading k8s.io/kubernetes@$K8S_VERSION into $MESH_CACHE/go/mod (for pause.c)"
		(cd "$WORK" && GOTOOLCHAIN=local GOFLAGS=-modcacherw GOMODCACHE=$MESH_CACHE/go/mod \
			go mod download k8s.io/kubernetes@"$K8S_VERSION") >&2
	fi
	echo "$d"
}

# ------------------------------------------------------------------ OCI layout

sha256() { sha256sum "$1" | cut -d' ' -f1; }
fsize() { stat -c %s "$1"; }

# put_blob LAYOUT FILE: move FILE into blobs/sha256/<digest>; prints the digest (hex).
put_blob() {
	local layout=$1 f=$2 d
	d=$(sha256 "$f")
	mv -f "$f" "$layout/blobs/sha256/$d"
	echo "$d"
}

# write_image NAME ROOTFS ENTRYPOINT_JSON OUT: one-layer OCI layout of ROOTFS, as a tar at OUT.
write_image() {
	local ref=$1 root=$2 entrypoint=$3 out=$4
	local tag=${ref##*:} layout=$WORK/layout-$RANDOM
	mkdir -p "$layout/blobs/sha256"

	# The layer: reproducible (sorted, fixed owner and mtime, no atime/ctime pax headers).
	local tarf=$WORK/layer.tar
	tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 --format=posix \
		--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
		-C "$root" -cf "$tarf" .
	local diff_id
	diff_id=$(sha256 "$tarf")
	gzip -n -6 "$tarf"
	local layer_size layer_digest
	layer_size=$(fsize "$tarf.gz")
	layer_digest=$(put_blob "$layout" "$tarf.gz")

	local cfg=$WORK/config.json
	jq -n --argjson ep "$entrypoint" --arg diff "sha256:$diff_id" --arg ref "$ref" --arg ver "$tag" '{
		created: "1970-01-01T00:00:00Z",
		architecture: "amd64",
		os: "linux",
		config: {
			Entrypoint: $ep,
			Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
			WorkingDir: "/",
			Labels: {
				"org.opencontainers.image.ref.name": $ref,
				"org.opencontainers.image.version": $ver,
				"org.opencontainers.image.source": "https://github.com/ambient-mesh/ambient-mesh"
			}
		},
		rootfs: { type: "layers", diff_ids: [$diff] },
		history: [{ created: "1970-01-01T00:00:00Z", created_by: "e2e/cluster/images.sh" }]
	}' >"$cfg"
	local cfg_size cfg_digest
	cfg_size=$(fsize "$cfg")
	cfg_digest=$(put_blob "$layout" "$cfg")

	local man=$WORK/manifest.json
	jq -n --arg cd "sha256:$cfg_digest" --argjson cs "$cfg_size" \
		--arg ld "sha256:$layer_digest" --argjson ls "$layer_size" '{
		schemaVersion: 2,
		mediaType: "application/vnd.oci.image.manifest.v1+json",
		config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: $cd, size: $cs },
		layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: $ld, size: $ls }]
	}' >"$man"
	local man_size man_digest
	man_size=$(fsize "$man")
	man_digest=$(put_blob "$layout" "$man")

	printf '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
	jq -n --arg md "sha256:$man_digest" --argjson ms "$man_size" --arg ref "$ref" --arg tag "$tag" '{
		schemaVersion: 2,
		mediaType: "application/vnd.oci.image.index.v1+json",
		manifests: [{
			mediaType: "application/vnd.oci.image.manifest.v1+json",
			digest: $md, size: $ms,
			platform: { architecture: "amd64", os: "linux" },
			annotations: {
				"io.containerd.image.name": $ref,
				"org.opencontainers.image.ref.name": $tag
			}
		}]
	}' >"$layout/index.json"

	tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$layout" \
		-cf "$out.tmp" oci-layout index.json blobs
	mv -f "$out.tmp" "$out"
	rm -rf "$layout"
	log "  $ref -> $out ($(du -h "$out" | cut -f1), layer sha256:${layer_digest:0:12})"
}

# ------------------------------------------------------------------ the images

# image_ref IMAGE: the full name of an image (the pause image has its own version).
image_ref() {
	case $1 in
	pause) echo "$PAUSE_IMAGE" ;;
	*) echo "$IMAGE_REPO/$1:$IMAGE_TAG" ;;
	esac
}

build_image() {
	local img=$1 root=$WORK/rootfs-$1 ref out ep
	ref=$(image_ref "$img")
	out=$IMAGES_DIR/$(image_archive_name "$ref")
	rm -rf "$root"
	mkdir -p "$root"
	case $img in
	pause)
		build_pause "$root"
		ep='["/pause"]'
		;;
	cni)
		add_base "$root"
		add_bin "$root" "$MESH_BIN_DIR/cni-agent" /usr/local/bin/cni-agent
		# The agent copies mesh-cni, found beside itself, into the node's CNI bin dir, where
		# the container runtime runs it on the node: it must run with the node's glibc.
		add_bin "$root" "$MESH_BIN_DIR/mesh-cni" /usr/local/bin/mesh-cni
		add_iptables "$root"
		ep='["/usr/local/bin/cni-agent"]'
		;;
	istiod | ztunnel | waypoint | mesh-echo)
		add_base "$root"
		add_bin "$root" "$MESH_BIN_DIR/$img" "/usr/local/bin/$img"
		ep="[\"/usr/local/bin/$img\"]"
		;;
	esac
	smoke_test "$img" "$root"
	write_image "$ref" "$root" "$ep" "$out"
	rm -rf "$root"
	BUILT+=("$out")
}

# smoke_test IMAGE ROOTFS: the binaries run from the image's own files alone (chroot).
smoke_test() {
	local img=$1 root=$2
	case $img in
	pause) "$root/pause" -v >/dev/null 2>&1 || die "pause: the static binary does not run" ;;
	cni)
		chroot "$root" /usr/local/bin/cni-agent --version >/dev/null || die "cni: cni-agent does not run in its rootfs"
		# iptables-save in an empty network namespace: the loader, libraries and nft backend work.
		unshare -n chroot "$root" /usr/sbin/iptables-save -t nat >/dev/null ||
			die "cni: iptables-save does not run in its rootfs"
		unshare -n chroot "$root" /usr/sbin/ip6tables-save -t nat >/dev/null ||
			die "cni: ip6tables-save does not run in its rootfs"
		;;
	*) chroot "$root" "/usr/local/bin/$img" --version >/dev/null || die "$img: the binary does not run in its rootfs" ;;
	esac
}

T0=$SECONDS
BUILT=()
log "building ${images[*]} (tag $IMAGE_TAG, binaries from $MESH_BIN_DIR) into $IMAGES_DIR"
for img in "${images[@]}"; do
	build_image "$img"
done
log "built ${#BUILT[@]} image archives in $((SECONDS - T0))s"

if ((do_import)); then
	if containerd_running; then
		for f in "${BUILT[@]}"; do import_archive "$f"; done
		"$CTR" images ls -q | grep -F -e "$IMAGE_REPO/" -e "$PAUSE_IMAGE" | sed 's/^/  imported: /'
	else
		log "the local cluster's containerd is not running: not importing (up.sh imports $IMAGES_DIR/*.oci.tar)"
	fi
fi
