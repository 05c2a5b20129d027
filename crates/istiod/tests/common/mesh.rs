//! The configuration the integration tests serve.

pub const NAMESPACE: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: demo, labels: {istio.io/dataplane-mode: ambient}}\n";

/// A running pod of namespace demo.
pub fn pod(name: &str, sa: &str, node: &str, ip: &str, version: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: demo, labels: {{app: web, version: {version}}}}}\n\
         spec:\n  nodeName: {node}\n  serviceAccountName: {sa}\n  containers: [{{name: app, image: app, ports: [{{name: http, containerPort: 8080}}]}}]\n\
         status: {{phase: Running, podIP: {ip}}}\n"
    )
}

pub const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: demo}\n\
    spec: {clusterIP: 10.96.0.10, selector: {app: web}, ports: [{port: 80, targetPort: http}]}\n";

pub const POLICIES: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
    metadata: {name: allow-demo, namespace: demo}\n\
    spec: {selector: {matchLabels: {app: web}}, rules: [{from: [{source: {namespaces: [demo]}}]}]}\n\
    ---\n\
    apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
    metadata: {name: default, namespace: demo}\nspec: {mtls: {mode: STRICT}}\n";

/// The standard files: a namespace, two pods on two nodes, a service and policies.
pub fn files() -> Vec<(&'static str, String)> {
    vec![
        ("namespace.yaml", NAMESPACE.to_string()),
        (
            "web-0.yaml",
            pod("web-0", "web", "node-a", "10.0.1.5", "v1"),
        ),
        (
            "web-1.yaml",
            pod("web-1", "web-b", "node-b", "10.0.2.5", "v1"),
        ),
        ("service.yaml", SERVICE.to_string()),
        ("policies.yaml", POLICIES.to_string()),
    ]
}
