use super::*;
use crate::objects::{AuthorizationAction, MtlsMode};

#[test]
fn multi_document_file_yields_typed_objects() {
    let parsed = parse_manifests(
        r#"
apiVersion: v1
kind: Namespace
metadata:
  name: demo
  labels: {istio.io/dataplane-mode: ambient}
---
apiVersion: v1
kind: Pod
metadata:
  name: web-0
  namespace: demo
  labels: {app: web}
  unknownField: tolerated
spec:
  nodeName: node-a
  serviceAccountName: web
  containers: [{name: web, image: x, ports: [{name: http, containerPort: 8080}]}]
status:
  podIP: 10.0.0.5
---
# an empty document is skipped
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: 10.96.0.10
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ignored}
"#,
    );
    assert_eq!(parsed.errors, vec![]);
    assert_eq!(parsed.ignored, vec!["apps/v1/Deployment".to_string()]);
    let keys: Vec<String> = parsed.objects.iter().map(|o| o.key().to_string()).collect();
    assert_eq!(
        keys,
        ["Namespace demo", "Pod demo/web-0", "Service default/web"]
    );
    let Object::Pod(pod) = &parsed.objects[1] else {
        panic!("expected a pod")
    };
    assert_eq!(pod.metadata.uid.as_deref(), Some("demo/web-0"));
    let status = pod.status.as_ref().expect("status");
    assert_eq!(status.pod_ip.as_deref(), Some("10.0.0.5"));
}

#[test]
fn security_objects_parse_with_istio_field_names() {
    let parsed = parse_manifests(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-ext, namespace: demo}
spec:
  action: DENY
  selector: {matchLabels: {app: web}}
  rules:
  - from: [{source: {notPrincipals: ["*"], ipBlocks: ["10.0.0.0/8"]}}]
    to: [{operation: {ports: ["8080"], methods: ["GET"]}}]
    when: [{key: source.ip, values: ["1.2.3.4"]}]
---
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: strict, namespace: demo}
spec:
  mtls: {mode: STRICT}
  portLevelMtls:
    8080: {mode: PERMISSIVE}
"#,
    );
    assert_eq!(parsed.errors, vec![]);
    let Object::AuthorizationPolicy(ap) = &parsed.objects[0] else {
        panic!("expected a policy")
    };
    assert_eq!(ap.spec.action, AuthorizationAction::Deny);
    let rule = &ap.spec.rules[0];
    assert_eq!(rule.from[0].source.not_principals, ["*"]);
    assert_eq!(rule.from[0].source.ip_blocks, ["10.0.0.0/8"]);
    assert_eq!(rule.to[0].operation.methods, ["GET"]);
    assert_eq!(rule.when[0].key, "source.ip");
    let Object::PeerAuthentication(pa) = &parsed.objects[1] else {
        panic!("expected a peer authentication")
    };
    assert_eq!(pa.spec.mode(), MtlsMode::Strict);
    assert_eq!(pa.spec.port_level_mtls[&8080].mode, MtlsMode::Permissive);
}

#[test]
fn gateway_api_objects_parse() {
    let parsed = parse_manifests(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: demo, labels: {istio.io/waypoint-for: service}}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: demo}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 80}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /api}, method: GET}]
    filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x, value: y}]}}]
    backendRefs: [{name: web-v2, port: 80, weight: 90}]
    timeouts: {request: 2s}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: rpc, namespace: demo}
spec:
  parentRefs: [{name: waypoint}]
  rules: [{matches: [{method: {service: echo.Echo, method: Say}}], backendRefs: [{name: echo, port: 9000}]}]
"#,
    );
    assert_eq!(parsed.errors, vec![]);
    let [
        Object::Gateway(gw),
        Object::HttpRoute(hr),
        Object::GrpcRoute(gr),
    ] = parsed.objects.as_slice()
    else {
        panic!("unexpected objects: {:?}", parsed.objects)
    };
    assert_eq!(gw.spec.gateway_class_name, "istio-waypoint");
    assert_eq!(gw.spec.listeners[0].port, 15008);
    let rule = &hr.spec.rules[0];
    assert_eq!(
        rule.matches[0]
            .path
            .as_ref()
            .and_then(|p| p.value.as_deref()),
        Some("/api")
    );
    assert_eq!(rule.backend_refs[0].weight, Some(90));
    assert_eq!(
        rule.filters[0]
            .request_header_modifier
            .as_ref()
            .map(|m| m.set.len()),
        Some(1)
    );
    let method = gr.spec.rules[0].matches[0].method.as_ref().expect("method");
    assert_eq!(method.service.as_deref(), Some("echo.Echo"));
}

#[test]
fn yaml_syntax_error_fails_the_whole_file() {
    let parsed = parse_manifests("apiVersion: v1\nkind: Pod\nmetadata: {name: [unclosed\n");
    assert!(parsed.objects.is_empty());
    assert_eq!(parsed.errors.len(), 1);
    assert_eq!(parsed.errors[0].document, None);
    assert!(
        parsed.errors[0].reason.starts_with("invalid YAML"),
        "{:?}",
        parsed.errors
    );
}

#[test]
fn invalid_document_names_its_object_and_spares_the_others() {
    let parsed = parse_manifests(
        r#"
apiVersion: v1
kind: Service
metadata: {name: bad, namespace: demo}
spec: {ports: [{port: not-a-number}]}
---
apiVersion: v1
kind: Namespace
metadata: {name: good}
---
kind: Pod
metadata: {name: no-version}
---
apiVersion: security.istio.io/v2
kind: AuthorizationPolicy
metadata: {name: future}
---
apiVersion: v1
kind: Pod
metadata: {namespace: demo}
"#,
    );
    let keys: Vec<String> = parsed.objects.iter().map(|o| o.key().to_string()).collect();
    assert_eq!(keys, ["Namespace good"]);
    let labels: Vec<Option<String>> = parsed.errors.iter().map(|e| e.object_label()).collect();
    assert_eq!(
        labels,
        [
            Some("Service demo/bad".to_string()),
            Some("document #3".to_string()),
            Some("AuthorizationPolicy default/future".to_string()),
            Some("document #5".to_string()),
        ]
    );
    assert!(
        parsed.errors[0].reason.contains("invalid"),
        "{:?}",
        parsed.errors[0]
    );
    assert!(
        parsed.errors[2]
            .reason
            .contains("unsupported version \"v2\"")
    );
    assert!(parsed.errors[3].reason.contains("no metadata.name"));
}

#[test]
fn list_items_and_nulls_are_accepted() {
    let parsed = parse_manifests(
        r#"
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Namespace
  metadata: {name: a, labels: null}
- apiVersion: security.istio.io/v1
  kind: AuthorizationPolicy
  metadata: {name: p, namespace: a}
  spec:
    rules:
    - from: null
"#,
    );
    assert_eq!(parsed.errors, vec![]);
    assert_eq!(parsed.objects.len(), 2);
}

#[test]
fn nodes_and_gateway_classes_are_cluster_scoped() {
    let parsed = parse_manifests(
        r#"
apiVersion: v1
kind: Node
metadata: {name: node-1, labels: {topology.kubernetes.io/zone: z1}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: istio-waypoint}
spec: {controllerName: istio.io/mesh-controller}
"#,
    );
    assert_eq!(parsed.errors, vec![]);
    let keys: Vec<String> = parsed.objects.iter().map(|o| o.key().to_string()).collect();
    assert_eq!(keys, ["Node node-1", "GatewayClass istio-waypoint"]);
    assert_eq!(parsed.objects[1].metadata().namespace, None);
}

#[test]
fn api_objects_convert_like_documents() {
    let obj = parse_object(serde_json::json!({
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {"name": "strict", "namespace": "demo", "labels": null},
        "spec": {"mtls": {"mode": "STRICT"}},
    }))
    .expect("valid")
    .expect("a kind the mesh reads");
    let Object::PeerAuthentication(pa) = obj else {
        panic!("not a PeerAuthentication: {obj:?}");
    };
    assert_eq!(pa.spec.mode(), MtlsMode::Strict);

    let err = parse_object(serde_json::json!({
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {"namespace": "demo"},
    }))
    .expect_err("nameless");
    assert_eq!(err, "PeerAuthentication has no metadata.name");
    let ignored = parse_object(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
    }));
    assert_eq!(ignored, Ok(None));
    assert_eq!(
        parse_object(serde_json::json!({"metadata": {}})),
        Err("missing apiVersion or kind".to_string())
    );
}
