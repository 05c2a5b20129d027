#!/usr/bin/env bash
# Run the Kubernetes end-to-end suite (e2e/tests/kubernetes.rs) on a cluster this script creates
# and always removes afterwards, also when something fails.
#
#   e2e/run-k8s.sh local   the single-node cluster of upstream components (e2e/cluster; root):
#                          build.sh (cached), cargo build, images.sh, up.sh, the suite, down.sh
#   e2e/run-k8s.sh kind    a kind cluster (one control plane, two workers): docker build of the
#                          images from the Dockerfile, kind load, the suite, kind delete
#
# Environment: CARGO_TARGET_DIR (default /var/cache/ambient-mesh/target for local, ./target for
# kind), MESH_E2E_ARTIFACTS (logs gathered on failure; default $TMPDIR/ambient-mesh-k8s-e2e/<time>),
# KIND_CLUSTER_NAME (default ambient-mesh-e2e), KEEP_CLUSTER=1 (leave the cluster up to look at
# it; remove it yourself with `make cluster-down` or `kind delete cluster`). Extra arguments after
# the mode go to the test binary (e.g. `-- --nocapture` is already given).
set -Eeuo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
mode=${1:-}
shift || true

log() { printf '[run-k8s %(%H:%M:%S)T] %s\n' -1 "$*"; }
die() {
	printf '[run-k8s %(%H:%M:%S)T] ERROR: %s\n' -1 "$*" >&2
	exit 1
}
need() { command -v "$1" >/dev/null || die "$1 is not on PATH: $2"; }

export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
export MESH_E2E_ARTIFACTS=${MESH_E2E_ARTIFACTS:-${TMPDIR:-/tmp}/ambient-mesh-k8s-e2e/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$MESH_E2E_ARTIFACTS"
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
[[ -n $VERSION ]] || die "no workspace version in Cargo.toml"
started=$SECONDS

# The suite is a test binary of its own (test = false: `cargo test --workspace` skips it).
run_suite() {
	log "running the suite (artifacts: $MESH_E2E_ARTIFACTS)"
	# The panic message is the report; a backtrace of the test harness adds nothing.
	RUST_BACKTRACE=0 cargo test -p e2e --test kubernetes -- --nocapture "$@"
}

case $mode in
local)
	[[ $EUID -eq 0 ]] || die "the local cluster needs root"
	export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/ambient-mesh/target}
	log "upstream Kubernetes components (cached after the first build)"
	e2e/cluster/build.sh etcd containerd crictl helm k8s
	eval "$(e2e/cluster/build.sh --print-env)"
	log "mesh binaries, the suite, the images"
	cargo build --workspace --bins
	cargo test -p e2e --test kubernetes --no-run
	MESH_BIN_DIR=$CARGO_TARGET_DIR/debug e2e/cluster/images.sh

	cluster_dir=${CLUSTER_DIR:-/var/lib/ambient-mesh-cluster}
	cleanup() {
		local rc=$?
		trap - EXIT INT TERM
		if ((rc != 0)) && [[ -d $cluster_dir/logs ]]; then
			cp -a "$cluster_dir/logs" "$MESH_E2E_ARTIFACTS/cluster-logs" 2>/dev/null || true
			log "cluster component logs copied to $MESH_E2E_ARTIFACTS/cluster-logs"
		fi
		if [[ ${KEEP_CLUSTER:-} == 1 ]]; then
			log "KEEP_CLUSTER=1: the cluster stays up (make cluster-down removes it)"
		else
			log "tearing the cluster down"
			e2e/cluster/down.sh || { ((rc != 0)) || rc=1; }
		fi
		log "done in $((SECONDS - started))s, exit $rc"
		exit "$rc"
	}
	trap cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	e2e/cluster/up.sh
	export KUBECONFIG=$cluster_dir/kubeconfig
	export PATH=$K8S_BIN_DIR:$HELM_BIN_DIR:$PATH
	export MESH_E2E_CLUSTER=local MESH_E2E_NODE_EXEC=host MESH_BIN_DIR=$CARGO_TARGET_DIR/debug
	run_suite "$@"
	;;
kind)
	need kind "https://kind.sigs.k8s.io"
	need docker "kind runs its nodes as Docker containers"
	need kubectl "the suite describes failing pods with it"
	need helm "the suite installs the charts with it"
	need go "charts/base/scripts/gateway-api-crds.sh takes the Gateway API CRDs from the Go module"
	export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
	name=${KIND_CLUSTER_NAME:-ambient-mesh-e2e}
	kubeconfig=$MESH_E2E_ARTIFACTS/kubeconfig
	cleanup() {
		local rc=$?
		trap - EXIT INT TERM
		if ((rc != 0)); then
			kind export logs --name "$name" "$MESH_E2E_ARTIFACTS/kind-logs" >/dev/null 2>&1 || true
		fi
		if [[ ${KEEP_CLUSTER:-} == 1 ]]; then
			log "KEEP_CLUSTER=1: kind cluster $name stays up"
		else
			kind delete cluster --name "$name" || { ((rc != 0)) || rc=1; }
		fi
		log "done in $((SECONDS - started))s, exit $rc"
		exit "$rc"
	}
	trap cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	cat >"$MESH_E2E_ARTIFACTS/kind.yaml" <<-EOF
		kind: Cluster
		apiVersion: kind.x-k8s.io/v1alpha4
		nodes:
		  - role: control-plane
		  - role: worker
		  - role: worker
	EOF
	log "creating kind cluster $name"
	kind create cluster --name "$name" --config "$MESH_E2E_ARTIFACTS/kind.yaml" \
		--kubeconfig "$kubeconfig" --wait 180s
	for image in istiod ztunnel cni waypoint mesh-echo; do
		ref=docker.io/ambient-mesh/$image:$VERSION
		log "docker build --target $image -t $ref"
		DOCKER_BUILDKIT=1 docker build --target "$image" -t "$ref" .
		kind load docker-image --name "$name" "$ref"
	done
	log "meshctl and the suite"
	cargo build -p meshctl --bin meshctl
	export KUBECONFIG=$kubeconfig
	export MESH_E2E_CLUSTER=kind MESH_E2E_NODE_EXEC='docker exec {node}' MESH_BIN_DIR=$CARGO_TARGET_DIR/debug
	run_suite "$@"
	;;
*)
	sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
	exit 2
	;;
esac
