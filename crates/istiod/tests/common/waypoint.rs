//! Manifests of a namespace served by a waypoint: the Gateway, its Service and pod, and a
//! `reviews` service with two versions.

/// The namespace `demo`, enrolled, with `istio.io/use-waypoint: <use_waypoint>` when given.
pub fn namespace(use_waypoint: Option<&str>) -> String {
    let label = use_waypoint
        .map(|w| format!(", istio.io/use-waypoint: {w}"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Namespace\n\
         metadata: {{name: demo, labels: {{istio.io/dataplane-mode: ambient{label}}}}}\n---\n"
    )
}

/// A waypoint Gateway `name` in demo, with extra labels (a YAML flow mapping body).
pub fn gateway(name: &str, labels: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
         metadata: {{name: {name}, namespace: demo, labels: {{{labels}}}}}\n\
         spec:\n  gatewayClassName: istio-waypoint\n  listeners: [{{name: mesh, port: 15008, protocol: HBONE}}]\n---\n"
    )
}

/// The waypoint's Service and one pod behind it.
pub fn waypoint_deployment(name: &str, ip: &str, pod_ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\n\
         metadata: {{name: {name}, namespace: demo, labels: {{gateway.networking.k8s.io/gateway-name: {name}}}}}\n\
         spec: {{clusterIP: {ip}, selector: {{gateway.networking.k8s.io/gateway-name: {name}}}, ports: [{{name: mesh, port: 15008}}]}}\n---\n\
         apiVersion: v1\nkind: Pod\n\
         metadata: {{name: {name}-0, namespace: demo, labels: {{gateway.networking.k8s.io/gateway-name: {name}}}}}\n\
         spec: {{nodeName: node-a, serviceAccountName: {name}, containers: [{{name: proxy, image: waypoint}}]}}\n\
         status: {{phase: Running, podIP: {pod_ip}}}\n---\n"
    )
}

/// A Service `name` selecting `app: <app>` on port 9080 (named http) → 8080; `labels` and
/// `annotations` are YAML flow mapping bodies.
pub fn service(name: &str, app: &str, ip: &str, labels: &str, annotations: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\n\
         metadata: {{name: {name}, namespace: demo, labels: {{{labels}}}, annotations: {{{annotations}}}}}\n\
         spec: {{clusterIP: {ip}, selector: {{app: {app}}}, ports: [{{name: http, port: 9080, targetPort: 8080}}, {{name: grpc-api, port: 9090}}]}}\n---\n"
    )
}

/// A running pod of demo with `app: <app>` and extra labels.
pub fn pod(name: &str, app: &str, ip: &str, labels: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\n\
         metadata: {{name: {name}, namespace: demo, labels: {{app: {app}{labels}}}}}\n\
         spec: {{nodeName: node-a, serviceAccountName: {app}, containers: [{{name: app, image: app}}]}}\n\
         status: {{phase: Running, podIP: {ip}}}\n---\n"
    )
}

/// The standard mesh: demo bound (namespace label) to the waypoint `waypoint`, the services
/// reviews, reviews-v1 and reviews-v2 with one pod each.
pub fn mesh() -> String {
    gateway("waypoint", "") + &mesh_without_gateway()
}

/// [`mesh`] without the waypoint's Gateway.
pub fn mesh_without_gateway() -> String {
    [
        namespace(Some("waypoint")),
        waypoint_deployment("waypoint", "10.96.0.100", "10.0.0.100"),
        service("reviews", "reviews", "10.96.0.10", "", ""),
        service("reviews-v1", "reviews-v1", "10.96.0.11", "", ""),
        service("reviews-v2", "reviews-v2", "10.96.0.12", "", ""),
        pod("reviews-0", "reviews", "10.0.0.10", ""),
        pod("reviews-v1-0", "reviews-v1", "10.0.0.11", ""),
        pod("reviews-v2-0", "reviews-v2", "10.0.0.12", ""),
    ]
    .concat()
}

/// An HTTPRoute for the Service reviews: 90/10 between v1 and v2 for `/`, everything with
/// `x-user: jason` under `/api` to v2, and `/health` exactly to v1.
pub const SPLIT_ROUTE: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews, namespace: demo}
spec:
  parentRefs: [{group: \"\", kind: Service, name: reviews, port: 9080}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs:
    - {name: reviews-v1, port: 9080, weight: 90}
    - {name: reviews-v2, port: 9080, weight: 10}
  - matches:
    - path: {type: PathPrefix, value: /api}
      headers: [{name: x-user, value: jason}]
    backendRefs: [{name: reviews-v2, port: 9080}]
  - matches: [{path: {type: Exact, value: /health}}]
    backendRefs: [{name: reviews-v1, port: 9080}]
---
";
