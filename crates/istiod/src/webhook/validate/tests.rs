use super::*;
use mesh_config::{Object, Snapshot};

fn policy(yaml: &str) -> AuthorizationPolicy {
    let doc = format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p, namespace: demo}}\n{yaml}"
    );
    let snap = Snapshot::from_yaml("p.yaml", &doc);
    assert!(snap.issues.is_empty(), "{:?}", snap.issues);
    snap.authorization_policies()
        .next()
        .cloned()
        .expect("one policy")
}

fn peer_auth(yaml: &str) -> PeerAuthentication {
    let doc = format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: p, namespace: demo}}\n{yaml}"
    );
    match Snapshot::from_yaml("p.yaml", &doc)
        .objects
        .into_values()
        .next()
    {
        Some(Object::PeerAuthentication(pa)) => std::sync::Arc::unwrap_or_clone(pa),
        other => panic!("not a PeerAuthentication: {other:?}"),
    }
}

#[test]
fn valid_policies_pass() {
    for spec in [
        "spec: {}",
        "spec: {action: DENY, rules: [{}]}",
        "spec:\n  selector: {matchLabels: {app: web}}\n  rules:\n  - from: [{source: {principals: [\"cluster.local/ns/demo/sa/*\"], ipBlocks: [10.0.0.0/8, \"::1\"]}}]\n    to: [{operation: {ports: [\"8080\"], methods: [GET]}}]\n    when: [{key: destination.port, values: [\"80\"]}]",
        "spec:\n  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]\n  rules: [{to: [{operation: {paths: [/api/*]}}]}]",
        "spec: {action: CUSTOM, provider: {name: ext-authz}, rules: [{}]}",
    ] {
        assert_eq!(
            authorization_policy(&policy(spec)),
            Vec::<String>::new(),
            "{spec}"
        );
    }
}

#[test]
fn meaningless_values_are_named() {
    let ap = policy(
        "spec:\n  rules:\n  - from: [{source: {principals: [\"a*b\"], ipBlocks: [10.0.0.300]}}, {source: {}}]\n    to: [{operation: {ports: [\"0\", \"http\"]}}]\n    when: [{key: \"request.headers[x]\"}]",
    );
    assert_eq!(
        authorization_policy(&ap),
        [
            "rules[0].from[0].source.principals: \"a*b\" may use * only as a prefix, a suffix or the whole value",
            "rules[0].from[0].source.ipBlocks: \"10.0.0.300\" is not an IP address or CIDR",
            "rules[0].from[1].source must not be empty",
            "rules[0].to[0].operation.ports: \"0\" is not a port (1-65535)",
            "rules[0].to[0].operation.ports: \"http\" is not a port (1-65535)",
            "rules[0].when[0]: condition on \"request.headers[x]\" needs values or notValues",
        ]
    );
}

#[test]
fn conflicting_fields_are_refused() {
    let ap = policy(
        "spec:\n  selector: {matchLabels: {app: web}}\n  targetRef: {kind: Service, group: \"\", name: web}\n  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: wp, namespace: other}]",
    );
    assert_eq!(
        authorization_policy(&ap),
        [
            "only one of targetRef and targetRefs may be set",
            "only one of selector and targetRef(s) may be set",
            "targetRef #2: namespace \"other\" differs from the policy's (\"demo\"); cross-namespace references are not allowed",
        ]
    );
    assert_eq!(
        authorization_policy(&policy("spec: {action: CUSTOM}")),
        ["action CUSTOM needs a provider"]
    );
    assert_eq!(
        authorization_policy(&policy("spec: {action: DENY, provider: {name: x}}")),
        ["provider is only valid with action CUSTOM, not Deny"]
    );
    assert_eq!(
        authorization_policy(&policy("spec: {targetRefs: [{kind: Pod, name: x}]}")),
        [
            "targetRef #1: kind \"Pod\" is not supported (Gateway, GatewayClass, Service or ServiceEntry)"
        ]
    );
    assert_eq!(
        authorization_policy(&policy("spec: {targetRefs: [{kind: Gateway, name: x}]}")),
        ["targetRef #1: group of a Gateway must be \"gateway.networking.k8s.io\", not \"\""]
    );
}

#[test]
fn peer_authentication_port_rules() {
    assert!(peer_authentication(&peer_auth("spec: {mtls: {mode: STRICT}}")).is_empty());
    assert!(
        peer_authentication(&peer_auth(
            "spec: {selector: {matchLabels: {app: web}}, portLevelMtls: {\"8080\": {mode: DISABLE}}}"
        ))
        .is_empty()
    );
    assert_eq!(
        peer_authentication(&peer_auth(
            "spec: {portLevelMtls: {\"0\": {mode: DISABLE}}}"
        )),
        [
            "portLevelMtls requires a selector with at least one label",
            "portLevelMtls: 0 is not a port (1-65535)",
        ]
    );
}
