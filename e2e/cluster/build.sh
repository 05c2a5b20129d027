#!/usr/bin/env bash
# Build the upstream binaries of the local Kubernetes cluster from Go modules, into a cache
# keyed by version. A warm machine skips every binary whose file exists and whose stamp
# matches; a cold one builds it (about an hour on 2 cores, almost all of it Kubernetes).
#
#   e2e/cluster/build.sh [COMPONENT...]   build (and verify) k8s etcd containerd crictl helm fortio
#   e2e/cluster/build.sh --print-env      print the bin dirs as shell assignments, build nothing
#                                         (eval "$(e2e/cluster/build.sh --print-env)")
#
# Versions come from versions.env beside this file. Layout under ${MESH_CACHE}:
#   k8s/<v>/bin/{kube-apiserver,kube-controller-manager,kube-scheduler,kubelet,kube-proxy,kubectl}
#   etcd/<v>/bin/etcd     containerd/<v>/bin/{containerd,containerd-shim-runc-v2,ctr}
#   helm/<v>/bin/helm     fortio/<v>/bin/fortio     crictl/<v>/bin/crictl
#   <component>/<v>/stamps/<binary>   what the binary was built from (compared on each run)
#   <component>/<v>/build-info.txt    versions, Go, build times
#   wrappers/<component>-<v>/         the generated wrapper module (go.mod.in, go.mod, go.sum)
#   go/mod, go/build                  GOMODCACHE and GOCACHE, kept across clones
#
# Every go command runs under `nice -n 19` (and ionice idle) with -p=1, so that other
# builds on the machine keep most of the CPU. Needs: go (GOTOOLCHAIN=local is forced), the
# Go module proxy, and write access to ${MESH_CACHE}. Runs no cluster.
set -Eeuo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VERSIONS_FILE=${VERSIONS_FILE:-$SCRIPT_DIR/versions.env}
MESH_CACHE=${MESH_CACHE:-/var/cache/ambient-mesh}
# Bump when the build recipe (flags, tags, layout) changes: every stamp then mismatches.
RECIPE=1
ALL_COMPONENTS=(etcd containerd crictl helm fortio k8s)

STEP="startup"
log() { printf '[cluster-build %(%H:%M:%S)T] %s\n' -1 "$*"; }
die() {
	printf '[cluster-build %(%H:%M:%S)T] ERROR: %s\n' -1 "$*" >&2
	exit 1
}
on_err() {
	local rc=$? line=${BASH_LINENO[0]}
	# A failing $(...) reports through the command that used it; stay quiet in the subshell.
	[[ $BASHPID == "$$" ]] || exit "$rc"
	printf '[cluster-build %(%H:%M:%S)T] ERROR: step "%s" failed (exit %d, build.sh line %d)\n' \
		-1 "$STEP" "$rc" "$line" >&2
	exit "$rc"
}
trap on_err ERR

usage() { sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

[[ -r $VERSIONS_FILE ]] || die "cannot read $VERSIONS_FILE"
# shellcheck source=versions.env
source "$VERSIONS_FILE"
for v in K8S_VERSION K8S_BINARIES ETCD_VERSION CONTAINERD_VERSION CRICTL_VERSION HELM_VERSION FORTIO_VERSION; do
	[[ -n ${!v:-} ]] || die "$v is not set in $VERSIONS_FILE"
done
[[ $K8S_VERSION =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] || die "K8S_VERSION=$K8S_VERSION is not v1.MINOR.PATCH"
K8S_MINOR=${BASH_REMATCH[1]}
# Every staging module (k8s.io/api, client-go, ...) is published as v0.<minor>.<patch>.
K8S_STAGING_VERSION=v0.${BASH_REMATCH[1]}.${BASH_REMATCH[2]}

K8S_DIR=$MESH_CACHE/k8s/$K8S_VERSION
ETCD_DIR=$MESH_CACHE/etcd/$ETCD_VERSION
CONTAINERD_DIR=$MESH_CACHE/containerd/$CONTAINERD_VERSION
HELM_DIR=$MESH_CACHE/helm/$HELM_VERSION
FORTIO_DIR=$MESH_CACHE/fortio/$FORTIO_VERSION
CRICTL_DIR=$MESH_CACHE/crictl/$CRICTL_VERSION

print_env() {
	cat <<EOF
K8S_BIN_DIR=$K8S_DIR/bin
ETCD_BIN_DIR=$ETCD_DIR/bin
CONTAINERD_BIN_DIR=$CONTAINERD_DIR/bin
HELM_BIN_DIR=$HELM_DIR/bin
FORTIO_BIN_DIR=$FORTIO_DIR/bin
CRICTL_BIN_DIR=$CRICTL_DIR/bin
CLUSTER_BIN_PATH=$K8S_DIR/bin:$ETCD_DIR/bin:$CONTAINERD_DIR/bin:$CRICTL_DIR/bin:$HELM_DIR/bin:$FORTIO_DIR/bin
EOF
}

components=()
while (($#)); do
	case $1 in
	-h | --help) usage; exit 0 ;;
	--print-env) print_env; exit 0 ;;
	k8s | etcd | containerd | crictl | helm | fortio) components+=("$1") ;;
	*) die "unknown argument '$1' (components: ${ALL_COMPONENTS[*]}; or --print-env)" ;;
	esac
	shift
done
((${#components[@]})) || components=("${ALL_COMPONENTS[@]}")

# ---------------------------------------------------------------- Go environment
STEP="check Go"
command -v go >/dev/null || die "go is not on PATH (the machine's Go 1.26 is expected in /usr/local/go/bin)"
mkdir -p "$MESH_CACHE/go/mod" "$MESH_CACHE/go/build" "$MESH_CACHE/go/scratch" "$MESH_CACHE/wrappers" 2>/dev/null &&
	[[ -w $MESH_CACHE ]] || die "cannot write to MESH_CACHE=$MESH_CACHE (run as root or set MESH_CACHE)"
export GOTOOLCHAIN=local GOWORK=off GO111MODULE=on CGO_ENABLED=0
export GOMODCACHE=$MESH_CACHE/go/mod GOCACHE=$MESH_CACHE/go/build
# -p=1: one package at a time. -modcacherw: a plain rm -rf can clear the cache.
export GOFLAGS="-p=1 -trimpath -buildvcs=false -modcacherw"
GO_VERSION=$(go env GOVERSION)

NICE=(nice -n 19)
if command -v ionice >/dev/null && ionice -c 3 true 2>/dev/null; then NICE+=(ionice -c 3); fi
gocmd() { "${NICE[@]}" go "$@"; }

# One build per machine at a time; a second caller waits.
exec 9>"$MESH_CACHE/.cluster-build.lock"
if ! flock -n 9; then
	log "another build.sh holds $MESH_CACHE/.cluster-build.lock; waiting"
	flock 9
fi

TIMES=()
fmt_secs() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

# field NAME < `go list -m -json` output
json_field() { sed -n 's/^[[:space:]]*"'"$1"'": "\(.*\)",\{0,1\}$/\1/p' | head -n1; }

# mod_info MODULE VERSION: sets MOD_GOMOD (path of its go.mod in the module cache) and MOD_TIME.
mod_info() {
	local json
	json=$(cd "$MESH_CACHE/go/scratch" && gocmd list -m -json "$1@$2" 2>&1) ||
		die "cannot resolve $1@$2 through the Go module proxy (GOPROXY=$(go env GOPROXY)): $json"
	MOD_GOMOD=$(json_field GoMod <<<"$json")
	MOD_TIME=$(json_field Time <<<"$json")
	[[ -f $MOD_GOMOD ]] || die "no go.mod for $1@$2 in the module cache: $json"
}

# ------------------------------------------------------- wrapper module generation
# gen_wrapper NAME MODULE VERSION KIND PKG...
# Writes $MESH_CACHE/wrappers/NAME-VERSION/go.mod requiring MODULE@VERSION with the PKGs as tool
# directives (so tidy keeps them), then tidies it. From the upstream go.mod it copies what only
# the main module honours: the go line (it sets the GODEBUG defaults), godebug, exclude, and
# replaces that point at other modules. Relative replaces are dropped, except that KIND=k8s turns
# each `k8s.io/X => ./staging/src/k8s.io/X` into `k8s.io/X => k8s.io/X v0.N.P`.
# Sets WRAPPER_DIR.
gen_wrapper() {
	local name=$1 module=$2 version=$3 kind=$4
	shift 4
	local pkgs=("$@")
	STEP="$name: generate wrapper module"
	mod_info "$module" "$version"
	WRAPPER_DIR=$MESH_CACHE/wrappers/$name-$version
	mkdir -p "$WRAPPER_DIR"

	local parsed
	parsed=$(awk '
		function emit(kind, body) {
			gsub(/^[ \t]+|[ \t]+$/, "", body)
			if (body != "") print kind "\t" body
		}
		{ sub(/\/\/.*/, "") }
		blk != "" { if ($0 ~ /^[ \t]*\)/) { blk = ""; next } emit(blk, $0); next }
		/^(godebug|replace|exclude)[ \t]*\(/ { blk = $0; sub(/[ \t]*\(.*/, "", blk); next }
		/^go[ \t]/ { emit("go", $2); next }
		/^(godebug|replace|exclude)[ \t]/ { k = $1; sub(/^[a-z]+[ \t]+/, ""); emit(k, $0); next }
	' "$MOD_GOMOD")

	local go_line="" godebug=() excludes=() replaces=() dropped=0 staged=0 kind_ body lhs rhs
	while IFS=$'\t' read -r kind_ body; do
		case $kind_ in
		go) go_line=$body ;;
		godebug) godebug+=("$body") ;;
		exclude) excludes+=("$body") ;;
		replace)
			lhs=${body%%=>*} rhs=${body#*=>}
			lhs=${lhs%"${lhs##*[![:space:]]}"} rhs=${rhs#"${rhs%%[![:space:]]*}"}
			if [[ $rhs == ./* || $rhs == ../* || $rhs == /* ]]; then
				if [[ $kind == k8s && $rhs == "./staging/src/$lhs" ]]; then
					replaces+=("$lhs => $lhs $K8S_STAGING_VERSION")
					staged=$((staged + 1))
				else
					dropped=$((dropped + 1))
				fi
			else
				replaces+=("$body")
			fi
			;;
		esac
	done <<<"$parsed"
	[[ -n $go_line ]] || die "$module@$version: no go line in $MOD_GOMOD"
	if [[ $kind == k8s ]] && ((staged < 20)); then
		die "$module@$version: found only $staged './staging/' replaces in $MOD_GOMOD; the wrapper recipe needs updating"
	fi

	local tmp=$WRAPPER_DIR/go.mod.in.tmp x
	{
		echo "// Generated by e2e/cluster/build.sh from $module@$version's go.mod; do not edit."
		echo "module ambient-mesh.local/cluster-build/$name"
		echo
		echo "go $go_line"
		for x in "${godebug[@]}"; do echo "godebug $x"; done
		echo
		echo "require $module $version"
		if ((${#replaces[@]})); then
			echo
			echo "replace ("
			for x in "${replaces[@]}"; do printf '\t%s\n' "$x"; done
			echo ")"
		fi
		if ((${#excludes[@]})); then
			echo
			echo "exclude ("
			for x in "${excludes[@]}"; do printf '\t%s\n' "$x"; done
			echo ")"
		fi
		echo
		echo "tool ("
		for x in "${pkgs[@]}"; do printf '\t%s\n' "$x"; done
		echo ")"
	} >"$tmp"

	if [[ -f $WRAPPER_DIR/go.sum && -f $WRAPPER_DIR/go.mod && -f $WRAPPER_DIR/.tidy-ok ]] &&
		cmp -s "$tmp" "$WRAPPER_DIR/go.mod.in"; then
		rm -f "$tmp"
		log "$name: wrapper module $WRAPPER_DIR is up to date"
		return
	fi
	mv -f "$tmp" "$WRAPPER_DIR/go.mod.in"
	cp "$WRAPPER_DIR/go.mod.in" "$WRAPPER_DIR/go.mod"
	rm -f "$WRAPPER_DIR/go.sum" "$WRAPPER_DIR/.tidy-ok"
	log "$name: wrapper for $module@$version (go $go_line${godebug:+, godebug ${godebug[*]}}, ${#replaces[@]} replaces, $dropped relative replaces dropped)"
	STEP="$name: go mod tidy (downloads the dependencies)"
	log "$name: go mod tidy in $WRAPPER_DIR (downloads modules; may take minutes on a cold cache)"
	local t0=$SECONDS
	(cd "$WRAPPER_DIR" && gocmd mod tidy) ||
		die "$name: 'go mod tidy' failed in $WRAPPER_DIR; see the go output above (a module the proxy refuses with 403 or 404? go line $go_line newer than $GO_VERSION?)"
	touch "$WRAPPER_DIR/.tidy-ok"
	TIMES+=("$name: wrapper + module download  $(fmt_secs $((SECONDS - t0)))")
}

# ------------------------------------------------------------------------ building
# build_bin NAME COMPONENT_DIR BINARY PKG TAGS LDFLAGS: go build -o one binary from WRAPPER_DIR.
build_bin() {
	local name=$1 cdir=$2 bin=$3 pkg=$4 tags=$5 ldflags=$6
	local out=$cdir/bin/$bin stamp=$cdir/stamps/$bin
	local key="recipe=$RECIPE go=$GO_VERSION cgo=$CGO_ENABLED goflags=$GOFLAGS pkg=$pkg tags=$tags ldflags=$ldflags wrapper=$(sha256sum <"$WRAPPER_DIR/go.mod.in" | cut -c1-16)"
	mkdir -p "$cdir/bin" "$cdir/stamps"
	if [[ -x $out && -f $stamp ]] && [[ $(<"$stamp") == "$key" ]]; then
		log "$name: $bin is up to date ($out)"
		return
	fi
	STEP="$name: go build $bin"
	log "$name: building $bin from $pkg (nice 19, -p=1) ..."
	local t0=$SECONDS
	rm -f "$stamp"
	(cd "$WRAPPER_DIR" && gocmd build -o "$out.tmp" ${tags:+-tags "$tags"} -ldflags "$ldflags" "$pkg") ||
		{
			rm -f "$out.tmp"
			die "$name: go build of $pkg failed (wrapper module: $WRAPPER_DIR)"
		}
	mv -f "$out.tmp" "$out"
	printf '%s\n' "$key" >"$stamp"
	local dt=$((SECONDS - t0))
	log "$name: built $bin in $(fmt_secs $dt) ($(du -h "$out" | cut -f1))"
	TIMES+=("$name: $bin  $(fmt_secs $dt)")
	BUILD_INFO_TIMES+=("$bin=$(fmt_secs $dt)")
}

write_build_info() { # DIR LINES...
	local dir=$1
	shift
	{
		printf '%s\n' "$@"
		echo "go=$GO_VERSION"
		echo "recipe=$RECIPE"
		echo "updated=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
		if ((${#BUILD_INFO_TIMES[@]})); then echo "last_build_times=${BUILD_INFO_TIMES[*]}"; fi
	} >"$dir/build-info.txt"
}

# verify EXPECTED CMD...: run a version command, require EXPECTED in its output.
verify() {
	local expected=$1 out
	shift
	STEP="verify $(basename "$1")"
	out=$("$@" 2>&1) || die "'$*' failed: $out"
	grep -qF -- "$expected" <<<"$out" || die "'$*' does not report '$expected'; it printed: $out"
	log "  ok  $(basename "$1") ${*:2} -> $(grep -F -m1 -- "$expected" <<<"$out" | cut -c1-150)"
}

build_etcd() {
	BUILD_INFO_TIMES=()
	log "== etcd $ETCD_VERSION -> $ETCD_DIR/bin"
	gen_wrapper etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION" plain go.etcd.io/etcd/server/v3
	build_bin etcd "$ETCD_DIR" etcd go.etcd.io/etcd/server/v3 "" \
		"-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=${ETCD_GIT_SHA:-gomod-$ETCD_VERSION}"
	write_build_info "$ETCD_DIR" "etcd=$ETCD_VERSION"
	verify "etcd Version: ${ETCD_VERSION#v}" "$ETCD_DIR/bin/etcd" --version
}

build_containerd() {
	BUILD_INFO_TIMES=()
	local m=github.com/containerd/containerd/v2
	log "== containerd $CONTAINERD_VERSION -> $CONTAINERD_DIR/bin"
	gen_wrapper containerd "$m" "$CONTAINERD_VERSION" plain \
		"$m/cmd/containerd" "$m/cmd/containerd-shim-runc-v2" "$m/cmd/ctr"
	# As upstream's Makefile: version stamping, urfave_cli_no_docs, and no_grpc for the shim.
	# CGO_ENABLED=0 leaves out only the btrfs snapshotter (overlayfs is what the cluster uses).
	local ld="-s -w -X $m/version.Version=$CONTAINERD_VERSION -X $m/version.Revision=${CONTAINERD_REVISION:-} -X $m/version.Package=$m"
	build_bin containerd "$CONTAINERD_DIR" containerd "$m/cmd/containerd" urfave_cli_no_docs "$ld"
	build_bin containerd "$CONTAINERD_DIR" containerd-shim-runc-v2 "$m/cmd/containerd-shim-runc-v2" "urfave_cli_no_docs no_grpc" "$ld"
	build_bin containerd "$CONTAINERD_DIR" ctr "$m/cmd/ctr" urfave_cli_no_docs "$ld"
	write_build_info "$CONTAINERD_DIR" "containerd=$CONTAINERD_VERSION"
	verify "containerd $m $CONTAINERD_VERSION" "$CONTAINERD_DIR/bin/containerd" --version
	verify "$CONTAINERD_VERSION" "$CONTAINERD_DIR/bin/containerd-shim-runc-v2" -v
	verify "ctr $m $CONTAINERD_VERSION" "$CONTAINERD_DIR/bin/ctr" --version
}

build_crictl() {
	BUILD_INFO_TIMES=()
	local m=sigs.k8s.io/cri-tools
	log "== crictl $CRICTL_VERSION -> $CRICTL_DIR/bin"
	# crictl talks CRI to containerd: e2e/cluster/down.sh uses it to stop and remove pod
	# sandboxes (so the CNI DEL runs) before it stops containerd.
	gen_wrapper crictl "$m" "$CRICTL_VERSION" plain "$m/cmd/crictl"
	build_bin crictl "$CRICTL_DIR" crictl "$m/cmd/crictl" "" "-s -w -X $m/pkg/version.Version=$CRICTL_VERSION"
	write_build_info "$CRICTL_DIR" "crictl=$CRICTL_VERSION"
	verify "${CRICTL_VERSION}" "$CRICTL_DIR/bin/crictl" --version
}

build_helm() {
	BUILD_INFO_TIMES=()
	log "== helm $HELM_VERSION -> $HELM_DIR/bin"
	gen_wrapper helm helm.sh/helm/v3 "$HELM_VERSION" plain helm.sh/helm/v3/cmd/helm
	# Helm's Makefile derives its default KubeVersion (offline `helm template`) from client-go.
	local cg
	cg=$(awk '$1 == "k8s.io/client-go" { print $2; exit }' "$MOD_GOMOD")
	[[ $cg =~ ^v0\.([0-9]+)\. ]] || die "helm $HELM_VERSION: cannot find the k8s.io/client-go version in $MOD_GOMOD"
	local kmin=${BASH_REMATCH[1]} v=helm.sh/helm/v3
	build_bin helm "$HELM_DIR" helm $v/cmd/helm "" \
		"-s -w -X $v/internal/version.version=$HELM_VERSION -X $v/internal/version.gitCommit=${HELM_GIT_COMMIT:-} -X $v/internal/version.gitTreeState=clean -X $v/pkg/lint/rules.k8sVersionMajor=1 -X $v/pkg/lint/rules.k8sVersionMinor=$kmin -X $v/pkg/chartutil.k8sVersionMajor=1 -X $v/pkg/chartutil.k8sVersionMinor=$kmin"
	write_build_info "$HELM_DIR" "helm=$HELM_VERSION"
	verify "Version:\"$HELM_VERSION\"" "$HELM_DIR/bin/helm" version
}

build_fortio() {
	BUILD_INFO_TIMES=()
	log "== fortio $FORTIO_VERSION -> $FORTIO_DIR/bin"
	# fortio reads its own version from the build info, where it is a dependency here.
	gen_wrapper fortio fortio.org/fortio "$FORTIO_VERSION" plain fortio.org/fortio
	build_bin fortio "$FORTIO_DIR" fortio fortio.org/fortio "" "-s -w"
	write_build_info "$FORTIO_DIR" "fortio=$FORTIO_VERSION"
	verify "${FORTIO_VERSION#v}" "$FORTIO_DIR/bin/fortio" version
}

build_k8s() {
	BUILD_INFO_TIMES=()
	log "== kubernetes $K8S_VERSION ($K8S_BINARIES; staging modules at $K8S_STAGING_VERSION) -> $K8S_DIR/bin"
	local pkgs=() b
	for b in $K8S_BINARIES; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
	gen_wrapper k8s k8s.io/kubernetes "$K8S_VERSION" k8s "${pkgs[@]}"
	# As hack/lib/version.sh: stamp both version packages so /version and --version report the
	# release (unstamped they say v0.0.0-master). buildDate is the tag's time (SOURCE_DATE_EPOCH
	# style), which keeps the flags, and so the stamps, stable.
	local ld="-s -w" p k val
	for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		for k in gitVersion=$K8S_VERSION gitMajor=1 gitMinor=$K8S_MINOR gitCommit=${K8S_GIT_COMMIT:-} \
			gitTreeState=clean buildDate=$MOD_TIME; do
			ld+=" -X $p.$k"
		done
	done
	for b in $K8S_BINARIES; do
		build_bin k8s "$K8S_DIR" "$b" "k8s.io/kubernetes/cmd/$b" "" "$ld"
	done
	write_build_info "$K8S_DIR" "kubernetes=$K8S_VERSION" "staging=$K8S_STAGING_VERSION" "binaries=$K8S_BINARIES"
	for b in $K8S_BINARIES; do
		case $b in
		kubectl) verify "Client Version: $K8S_VERSION" "$K8S_DIR/bin/kubectl" version --client ;;
		*) verify "Kubernetes $K8S_VERSION" "$K8S_DIR/bin/$b" --version ;;
		esac
	done
}

T0=$SECONDS
log "building ${components[*]} with $GO_VERSION into $MESH_CACHE (versions from $VERSIONS_FILE)"
log "GOMODCACHE=$GOMODCACHE GOCACHE=$GOCACHE GOFLAGS='$GOFLAGS' CGO_ENABLED=0 GOTOOLCHAIN=local, under: ${NICE[*]}"
for c in "${components[@]}"; do
	"build_$c"
done

STEP="summary"
log "done in $(fmt_secs $((SECONDS - T0)))"
if ((${#TIMES[@]})); then
	log "build times this run:"
	for x in "${TIMES[@]}"; do log "  $x"; done
else
	log "nothing to build: every binary was up to date"
fi
print_env | sed 's/^/  /'
