#!/usr/bin/env bash
# Smoke test of a cluster brought up by up.sh (with the images of `make images` imported):
#  1. a mesh-echo server pod (imagePullPolicy Never) reaches Running;
#  2. kubectl exec into it (the CRI streaming path) and kubectl port-forward to it both work;
#  3. a second pod reaches the first through a ClusterIP Service (HTTP and TCP), which needs
#     the bridge CNI, kube-proxy's iptables rules and the pod-to-pod path through cni0;
#  4. a pod reaches the API server through kubernetes.default's ClusterIP;
#  5. every mesh image runs its binaries in a pod (and the cni image its iptables).
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

# A namespace left by an earlier run (possibly still terminating) goes first.
kubectl delete namespace "$NS" --ignore-not-found --wait=true --timeout=120s >/dev/null
kubectl create namespace "$NS" >/dev/null
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
# run_client NAME ARGS...: a one-shot mesh-echo client pod; sets PHASE and LOGS.
run_client() {
	local name=$1
	shift
	kubectl -n "$NS" delete pod "$name" --ignore-not-found --wait=true >/dev/null
	kubectl -n "$NS" run "$name" --image="$IMAGE" --image-pull-policy=Never --restart=Never \
		--command -- /usr/local/bin/mesh-echo client "$@" >/dev/null
	PHASE=
	for _ in $(seq 1 120); do
		PHASE=$(kubectl -n "$NS" get pod "$name" -o jsonpath='{.status.phase}')
		[[ $PHASE == Succeeded || $PHASE == Failed ]] && break
		sleep 0.5
	done
	LOGS=$(kubectl -n "$NS" logs "$name" 2>&1 || true)
}
run_client client-http http "http://$svc_ip/"
echo "$LOGS"
[[ $PHASE == Succeeded ]] || fail "client-http: phase $PHASE"
run_client client-tcp tcp "$svc_ip:9000" --message "hello through kube-proxy"
echo "$LOGS"
[[ $PHASE == Succeeded ]] || fail "client-tcp: phase $PHASE"

log "pod -> kubernetes.default ($SERVICE_IP:443)"
# No shell or curl in the images: the API server answers the mesh-echo TCP client's plain-text
# request on its TLS port with a 400 (and the client exits 1 as the echo differs), which still
# proves the DNAT to $NODE_IP:$APISERVER_PORT and the way back.
run_client client-api tcp "$SERVICE_IP:443" --message "$(printf 'GET / HTTP/1.0\r\n\r\n')"
grep -q "HTTP/1.0 400 Bad Request" <<<"$LOGS" || fail "no answer from the API server through $SERVICE_IP:443: $LOGS"
echo "  answered: HTTP/1.0 400 Bad Request (Client sent an HTTP request to an HTTPS server)"

log "every mesh image runs in a pod"
# check_image NAME IMAGE COMMAND_JSON [SECURITY_CONTEXT_JSON]: a one-shot pod must succeed.
check_image() {
	local name=$1 image=$2 cmd=$3 sc=${4:-"{}"} phase=
	kubectl -n "$NS" run "$name" --image="$image" --restart=Never --overrides="$(
		printf '{"spec":{"restartPolicy":"Never","containers":[{"name":"c","image":"%s","imagePullPolicy":"Never","command":%s,"securityContext":%s}]}}' \
			"$image" "$cmd" "$sc"
	)" >/dev/null
	for _ in $(seq 1 120); do
		phase=$(kubectl -n "$NS" get pod "$name" -o jsonpath='{.status.phase}')
		[[ $phase == Succeeded || $phase == Failed ]] && break
		sleep 0.5
	done
	[[ $phase == Succeeded ]] || fail "$name ($image $cmd): phase $phase: $(kubectl -n "$NS" logs "$name" 2>&1 | tail -n 5)"
	echo "  $image $cmd: ok $(kubectl -n "$NS" logs "$name" 2>&1 | head -n 1)"
}
repo=${IMAGE_REPO#docker.io/}
for img in istiod ztunnel waypoint mesh-echo; do
	check_image "img-$img" "$repo/$img:$TAG" "[\"/usr/local/bin/$img\",\"--version\"]"
done
check_image img-cni-agent "$repo/cni:$TAG" '["/usr/local/bin/cni-agent","--version"]'
check_image img-mesh-cni "$repo/cni:$TAG" '["/usr/local/bin/mesh-cni","--version"]'
# The cni-agent runs iptables-save/-restore in pod namespaces: the image's own iptables must
# work in a container (with NET_ADMIN, as the agent has).
for t in iptables-save ip6tables-save; do
	check_image "img-cni-$t" "$repo/cni:$TAG" "[\"/usr/sbin/$t\",\"-t\",\"nat\"]" '{"capabilities":{"add":["NET_ADMIN"]}}'
done

log "OK"
