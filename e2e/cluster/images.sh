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
# for them (and the ELF loader), plus a minimal /etc and /tmp (rootfs.sh, shared with the
# Dockerfile): the Rust binaries are linked dynamically against glibc, so the image needs no
# base. The cni image also carries Debian's iptables (xtables-nft-multi with the
# iptables-save/-restore and ip6tables-save/-restore names, its libraries and extension
# modules): the cni-agent execs those in pod namespaces (crates/cni/src/agent/rules.rs).
# The pause image is upstream's build/pause/linux/pause.c from the k8s.io/kubernetes module,
# linked with `gcc -static`. Every image is checked by running its binaries in a chroot.
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
#   MESH_CACHE     the build cache (default: /var/cache/ambient-mesh)
#   CLUSTER_DIR    the local cluster whose containerd gets the images (see up.sh)
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
MESH_CACHE=${MESH_CACHE:-/var/cache/ambient-mesh}
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

# ------------------------------------------------------------------ rootfs
# The mesh images' root filesystems come from rootfs.sh, which the Dockerfile uses too.

# build_pause ROOTFS: upstream's pause.c from the Kubernetes module, static.
build_pause() {
	local root=$1 src
	src=$(k8s_module_dir)/build/pause/linux/pause.c
	mkdir -p "$root"
	[[ -f $src ]] || die "no $src"
	command -v gcc >/dev/null || die "gcc is needed for the pause image (apt-get install gcc libc6-dev)"
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
	if [[ $img == pause ]]; then
		build_pause "$root"
		ep='["/pause"]'
	else
		ep=$(STRIP=$STRIP "$SCRIPT_DIR/rootfs.sh" "$img" "$MESH_BIN_DIR" "$root") ||
			die "$img: rootfs.sh failed (binaries from MESH_BIN_DIR=$MESH_BIN_DIR; run 'make images')"
	fi
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
		# Rules like the agent's: the match and target extensions (mark, tcp, REDIRECT) load.
		local rules='*nat\n:MESH_CHECK - [0:0]\n-A MESH_CHECK -m mark --mark 0x539/0xfff -j RETURN\n-A MESH_CHECK -p tcp -m tcp --dport 15008 -j RETURN\n-A MESH_CHECK -p tcp -j REDIRECT --to-ports 15006\nCOMMIT\n'
		local v
		for v in iptables ip6tables; do
			printf '%b' "$rules" | unshare -n chroot "$root" "/usr/sbin/$v-restore" ||
				die "cni: $v-restore cannot load the agent's match and target extensions in its rootfs"
		done
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
		ctr_ images ls -q 2>/dev/null | { grep -F -e "$IMAGE_REPO/" -e "$PAUSE_IMAGE" || true; } | sed 's/^/  in containerd: /'
	else
		log "the local cluster's containerd is not running: not importing (up.sh imports $IMAGES_DIR/*.oci.tar)"
	fi
fi
