#!/usr/bin/env bash
# Print the Gateway API CRDs of one release, taken from the Go module sigs.k8s.io/gateway-api
# (downloaded through the Go module proxy into the module cache when absent). They are not kept
# in this repository.
#
#   gateway-api-crds.sh [--version v1.4.1] [--channel standard|experimental] [--into DIR]
#
# Without --into, the CRDs go to stdout as one multi-document YAML stream:
#   charts/base/scripts/gateway-api-crds.sh | kubectl apply --server-side -f -
# With --into DIR, each CRD file is copied into DIR (for the base chart's gatewayAPI.install=true:
#   charts/base/scripts/gateway-api-crds.sh --into charts/base/files/gateway-api).
#
# Environment: GATEWAY_API_VERSION (default v1.4.1), GOMODCACHE and GOPROXY as go uses them.
# Needs: go.
set -euo pipefail

version=${GATEWAY_API_VERSION:-v1.4.1}
channel=standard
into=

die() {
	echo "gateway-api-crds: $*" >&2
	exit 1
}

while (($#)); do
	case $1 in
	--version) version=${2:?--version needs a value}; shift ;;
	--channel) channel=${2:?--channel needs a value}; shift ;;
	--into) into=${2:?--into needs a directory}; shift ;;
	-h | --help)
		sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*) die "unknown argument '$1' (see --help)" ;;
	esac
	shift
done
case $channel in standard | experimental) ;; *) die "--channel: standard or experimental, not '$channel'" ;; esac
[[ $version == v* ]] || die "--version: a module version such as v1.4.1, not '$version'"
command -v go >/dev/null || die "go is not on PATH: it fetches sigs.k8s.io/gateway-api@$version from the Go module proxy"

# Outside any module, so that no go.mod or go.sum is touched.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
info=$(cd "$scratch" && GOTOOLCHAIN=local go mod download -json "sigs.k8s.io/gateway-api@$version") ||
	die "go mod download sigs.k8s.io/gateway-api@$version failed: $(sed -n 's/.*"Error": "\(.*\)".*/\1/p' <<<"$info")"
dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' <<<"$info")
[[ -n $dir && -d $dir ]] || die "go mod download printed no module directory for sigs.k8s.io/gateway-api@$version"
crd_dir=$dir/config/crd/$channel
shopt -s nullglob
files=("$crd_dir"/*.yaml)
((${#files[@]})) || die "no CRDs in $crd_dir"

if [[ -n $into ]]; then
	mkdir -p "$into"
	for f in "${files[@]}"; do
		install -m 0644 "$f" "$into/${f##*/}"
	done
	echo "gateway-api-crds: copied ${#files[@]} CRDs of sigs.k8s.io/gateway-api@$version ($channel) into $into" >&2
else
	for f in "${files[@]}"; do
		echo "---"
		echo "# Source: sigs.k8s.io/gateway-api@$version config/crd/$channel/${f##*/}"
		sed '1{/^---[[:space:]]*$/d}' "$f"
	done
fi
