#!/usr/bin/env bash
# Lint and render every Helm chart of the mesh, then check what a cluster would receive.
#
#   charts/test.sh            (from anywhere; exit status 0 when every check passes)
#
# For each chart (base, istiod, cni, ztunnel, and the umbrella chart ambient): `helm lint
# --strict` with the defaults and with each values file of its ci/ directory, and `helm template`
# of the same combinations; plus the Gateway API CRDs rendered from the Go module (base chart,
# gatewayAPI.install=true), global overrides, and values that must be refused (schema errors,
# wrong namespace, missing Gateway API files) with the expected message. The rendered manifests
# are parsed and checked by tests/check_rendered.py.
#
# Works on a copy of the charts in a temporary directory: nothing is written into the repository.
#
# Needs: helm (the pinned build from `e2e/cluster/build.sh helm`, or $HELM), python3 with PyYAML
# (Debian: python3-yaml), go (fetches sigs.k8s.io/gateway-api through the Go module proxy, or
# reads it from the module cache).
# Environment: HELM (helm binary), KUBE_VERSION (default v1.36.3), KEEP_OUTPUT=1 (keep and print
# the directory of rendered manifests).
set -euo pipefail

CHARTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$CHARTS_DIR/.." && pwd)
KUBE_VERSION=${KUBE_VERSION:-v1.36.3}
NS=istio-system

log() { printf '[charts] %s\n' "$*"; }
die() {
	printf '[charts] ERROR: %s\n' "$*" >&2
	exit 1
}

# ------------------------------------------------------------------ tools
find_helm() {
	if [[ -n ${HELM:-} ]]; then
		[[ -x $HELM ]] || die "HELM=$HELM is not an executable"
		echo "$HELM"
		return
	fi
	local dir=
	if [[ -x $REPO_ROOT/e2e/cluster/build.sh ]]; then
		dir=$("$REPO_ROOT/e2e/cluster/build.sh" --print-env | sed -n 's/^HELM_BIN_DIR=//p')
	fi
	if [[ -n $dir && -x $dir/helm ]]; then
		echo "$dir/helm"
	elif command -v helm >/dev/null; then
		command -v helm
	else
		die "helm is missing: build the pinned version with 'e2e/cluster/build.sh helm' (or set HELM)"
	fi
}
HELM=$(find_helm)
python3 -c 'import yaml' 2>/dev/null ||
	die "python3 with PyYAML is needed to check the rendered manifests (Debian: apt-get install python3-yaml)"
command -v go >/dev/null ||
	die "go is needed: the Gateway API CRDs are rendered from the Go module sigs.k8s.io/gateway-api"
log "helm $("$HELM" version --short), Kubernetes $KUBE_VERSION"

WORK=$(mktemp -d)
if [[ ${KEEP_OUTPUT:-0} == 1 ]]; then
	trap 'log "rendered manifests kept in $WORK/out"' EXIT
else
	trap 'rm -rf "$WORK"' EXIT
fi
OUT=$WORK/out
mkdir -p "$OUT" "$WORK/charts"
for c in base istiod cni ztunnel ambient; do
	cp -r "$CHARTS_DIR/$c" "$WORK/charts/$c"
done
C=$WORK/charts
# The umbrella chart's dependencies, packaged afresh from the sibling directories.
rm -rf "$C/ambient/charts" "$C/ambient/Chart.lock"
"$HELM" dependency build "$C/ambient" >/dev/null

FAILED=0
failed() {
	printf '[charts] FAIL: %s\n' "$*" >&2
	FAILED=$((FAILED + 1))
}

# ------------------------------------------------------------------ lint + render
CHARTS=(base istiod cni ztunnel ambient)
for chart in "${CHARTS[@]}"; do
	for values in "$C/$chart"/ci/*-values.yaml; do
		name=$(basename "$values" -values.yaml)
		if ! lint=$("$HELM" lint --strict "$C/$chart" -n "$NS" --kube-version "$KUBE_VERSION" -f "$values" 2>&1); then
			failed "helm lint $chart -f ci/$(basename "$values"):"$'\n'"$lint"
		fi
		if ! "$HELM" template "$chart" "$C/$chart" -n "$NS" --kube-version "$KUBE_VERSION" -f "$values" \
			>"$OUT/$chart-$name.yaml" 2>"$WORK/err"; then
			failed "helm template $chart -f ci/$(basename "$values"): $(cat "$WORK/err")"
		fi
	done
done

# render CASE CHART ARGS...: one more combination, checked by name in check_rendered.py.
render() {
	local case=$1 chart=$2
	shift 2
	if ! "$HELM" template "$chart" "$C/$chart" -n "$NS" --kube-version "$KUBE_VERSION" "$@" \
		>"$OUT/$case.yaml" 2>"$WORK/err"; then
		failed "helm template $chart $* ($case): $(cat "$WORK/err")"
	fi
}

# The istio-waypoint GatewayClass, when the API server serves the Gateway API.
render ambient-gatewayclass ambient --api-versions gateway.networking.k8s.io/v1/GatewayClass
# Global overrides reach every subchart.
render ambient-global ambient --set global.hub=registry.example.com/mesh --set global.tag=1.0.0-dev \
	--set 'global.imagePullSecrets[0].name=regcred' --set global.trustDomain=mesh.example

# The Gateway API CRDs from the Go module, into the copy of the base chart.
if crd_log=$("$C/base/scripts/gateway-api-crds.sh" --into "$C/base/files/gateway-api" 2>&1); then
	render base-gatewayapi base --set gatewayAPI.install=true
	"$HELM" lint --strict "$C/base" -n "$NS" --kube-version "$KUBE_VERSION" --set gatewayAPI.install=true >/dev/null 2>&1 ||
		failed "helm lint base --set gatewayAPI.install=true"
	rm -f "$C/base/files/gateway-api"/*.yaml
else
	failed "base/scripts/gateway-api-crds.sh: $crd_log"
fi

# refuse DESCRIPTION MESSAGE CHART ARGS...: rendering must fail and say MESSAGE.
refuse() {
	local what=$1 message=$2 chart=$3
	shift 3
	if "$HELM" template "$chart" "$C/$chart" --kube-version "$KUBE_VERSION" "$@" >/dev/null 2>"$WORK/err"; then
		failed "$what: rendered, but must be refused"
	elif ! grep -qF -- "$message" "$WORK/err"; then
		failed "$what: refused without saying '$message': $(cat "$WORK/err")"
	fi
}
refuse "istiod outside global.istioNamespace" 'global.istioNamespace is "istio-system"' istiod -n default
refuse "Gateway API without its CRD files" "files/gateway-api/ of the base chart holds no CRDs" base -n "$NS" \
	--set gatewayAPI.install=true
refuse "unknown top-level value" "additional properties 'replicas' not allowed" istiod -n "$NS" --set replicas=3
refuse "unknown value through the umbrella chart" "additional properties 'bogus' not allowed" ambient -n "$NS" \
	--set istiod.bogus=1
refuse "unknown CA mode" "/ca/mode" istiod -n "$NS" --set ca.mode=vault
refuse "bad log format" "/logFormat" ztunnel -n "$NS" --set logFormat=xml
refuse "relative host path" "/cniConfDir" cni -n "$NS" --set cniConfDir=etc/cni
refuse "short token lifetime" "/token/expirationSeconds" ztunnel -n "$NS" --set token.expirationSeconds=60
refuse "unknown global" "additional properties 'hubb' not allowed" ambient -n "$NS" --set global.hubb=x

# ------------------------------------------------------------------ checks
if ! python3 "$CHARTS_DIR/tests/check_rendered.py" "$OUT"; then
	FAILED=$((FAILED + 1))
fi

if ((FAILED)); then
	die "$FAILED chart check(s) failed"
fi
log "every chart lints and renders; rendered manifests pass their checks"
