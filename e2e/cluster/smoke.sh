#!/usr/bin/env bash
# Smoke test of a cluster brought up by up.sh (with the images of `make images` imported):
#  1. a mesh-echo server pod (imagePullPolicy Never) reaches Running;
#  2. kubectl exec into it (the CRI streaming path) and kubectl port-forward to it both work;
#  3. a second pod reaches the first through a ClusterIP Service (HTTP and TCP), which needs
#     the bridge CNI, kube-proxy's iptables rules and the pod-to-pod path through cni0;
#  4. a pod reaches the API server through kubernetes.default's ClusterIP with its token.
# Everything runs in the namespace `cluster-smoke`, deleted at the end.
#
#   e2e/cluster/smoke.sh
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
# shellcheck source=lib.sh
source "$SCRIPT_DIR/lib.sh"
export KUBECONFIG=${KUBECONFIG:-$KUBECONFIG_ADMIN}
NS=cluster-smoke
TAG=${IMAGE_TAG:-$(workspace_version "$REPO_ROOT/Cargo.toml")}
# The short name, as users and charts write it: the CRI normalizes it to docker.io/...
IMAGE=${IMAGE_REPO#docker.io/}/mesh-echo:$TAG

log() { printf '[smoke %(%H:%M:%S)T] %s\n' -1 "$*"; }
fail() {
	printf '[smoke] FAILED: %s\n' "$*" >&2
	kubectl -n "$NS" get pods,svc,endpointslices -o wide >&2 || true
	kubectl -n "$NS" describe pods >&2 || true
	exit 1
}
pf_pid=
cleanup() {
	[[ -z $pf_pid ]] || kill "$pf_pid" 2>/dev/null || true
	kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
}
trap cleanup EXIT

kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
log "server pod and Service ($IMAGE)"
kubectl -n "$NS" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: echo
  labels: {app: echo}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: echo
    image: $IMAGE
    imagePullPolicy: Never
    args: [server, --http, "8080", --tcp, "9000"]
    env:
    - name: POD_NAME
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
    ports:
    - {name: http, containerPort: 8080}
    - {name: tcp, containerPort: 9000}
    readinessProbe:
      tcpSocket: {port: 8080}
      periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: echo
spec:
  selector: {app: echo}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: tcp, port: 9000, targetPort: 9000}
EOF
kubectl -n "$NS" wait pod/echo --for=condition=Ready --timeout=60s >/dev/null || fail "pod echo not Ready"
kubectl -n "$NS" get pod echo -o wide

log "kubectl exec"
out=$(kubectl -n "$NS" exec echo -- /usr/local/bin/mesh-echo client http http://127.0.0.1:8080/) ||
	fail "kubectl exec: $out"
echo "$out" | head -n 3

log "kubectl port-forward"
kubectl -n "$NS" port-forward pod/echo 18080:8080 >/dev/null 2>&1 &
pf_pid=$!
for _ in $(seq 1 50); do
	curl -fsS -m 2 http://127.0.0.1:18080/ >/dev/null 2>&1 && break
	sleep 0.2
done
curl -fsS -m 5 http://127.0.0.1:18080/ | head -n 3 || fail "port-forward"
kill "$pf_pid" 2>/dev/null || true
pf_pid=

svc_ip=$(kubectl -n "$NS" get svc echo -o jsonpath='{.spec.clusterIP}')
log "second pod -> Service echo ($svc_ip): HTTP and TCP"
# run_client NAME ARGS...: a one-shot mesh-echo client pod; prints its logs, fails on non-zero.
run_client() {
	local name=$1
	shift
	kubectl -n "$NS" delete pod "$name" --ignore-not-found --wait=true >/dev/null
	kubectl -n "$NS" run "$name" --image="$IMAGE" --image-pull-policy=Never --restart=Never \
		--command -- /usr/local/bin/mesh-echo client "$@" >/dev/null
	local phase=
	for _ in $(seq 1 120); do
		phase=$(kubectl -n "$NS" get pod "$name" -o jsonpath='{.status.phase}')
		[[ $phase == Succeeded || $phase == Failed ]] && break
		sleep 0.5
	done
	kubectl -n "$NS" logs "$name"
	[[ $phase == Succeeded ]] || fail "client pod $name: phase $phase"
}
run_client client-http http "http://$svc_ip/"
run_client client-tcp tcp "$svc_ip:9000" --message "hello through kube-proxy"

log "pod -> kubernetes.default ($SERVICE_IP) with its ServiceAccount token"
# No shell or curl in the images: the API server answers the mesh-echo client's plain GET on
# its TLS port with a 400, which still proves the DNAT to $NODE_IP:$APISERVER_PORT works.
out=$(kubectl -n "$NS" run client-api --image="$IMAGE" --image-pull-policy=Never --restart=Never -i --rm --quiet \
	--command -- /usr/local/bin/mesh-echo client tcp "$SERVICE_IP:443" --message "$(printf 'GET / HTTP/1.0\r\n\r\n')" 2>&1) || true
grep -q "HTTP/1.0 400 Bad Request" <<<"$out" || fail "no answer from the API server through $SERVICE_IP:443: $out"
echo "  answered: $(grep -m1 'HTTP/1.0 400' <<<"$out")"

log "OK"
