use serde_json::json;

use super::*;

fn admission(operation: &str, object: Value) -> Vec<u8> {
    let kind = object["kind"]
        .as_str()
        .unwrap_or("AuthorizationPolicy")
        .to_string();
    let plural = format!("{}s", kind.to_lowercase()).replace("policys", "policies");
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "security.istio.io", "version": "v1", "kind": kind},
            "resource": {"group": "security.istio.io", "version": "v1", "resource": plural},
            "name": object["metadata"]["name"],
            "namespace": "demo",
            "operation": operation,
            "userInfo": {"username": "admin"},
            "object": object,
            "oldObject": null,
            "dryRun": false,
        }
    }))
    .expect("json")
}

fn respond(body: &[u8], current: &Snapshot) -> Value {
    let review = review(body, &ModelConfig::default(), current).expect("a review");
    serde_json::to_value(review).expect("json")
}

fn policy(spec: Value) -> Value {
    json!({
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "p"},
        "spec": spec,
    })
}

#[test]
fn a_valid_policy_is_allowed_with_the_request_uid() {
    let body = admission(
        "CREATE",
        policy(
            json!({"action": "DENY", "rules": [{"from": [{"source": {"namespaces": ["other"]}}]}]}),
        ),
    );
    let out = respond(&body, &Snapshot::default());
    assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(out["kind"], "AdmissionReview");
    assert_eq!(
        out["response"]["uid"],
        "705ab4f5-6393-11e8-b7cc-42010a800002"
    );
    assert_eq!(out["response"]["allowed"], true);
    assert!(out["response"].get("warnings").is_none(), "{out}");
}

#[test]
fn an_invalid_policy_is_denied_with_every_reason() {
    let body = admission(
        "UPDATE",
        policy(
            json!({"rules": [{"to": [{"operation": {"ports": ["99999"]}}], "when": [{"key": "source.ip"}]}]}),
        ),
    );
    let out = respond(&body, &Snapshot::default());
    assert_eq!(out["response"]["allowed"], false);
    assert_eq!(out["response"]["status"]["code"], 400);
    assert_eq!(
        out["response"]["status"]["message"],
        "AuthorizationPolicy demo/p is invalid: rules[0].to[0].operation.ports: \"99999\" is not \
         a port (1-65535); rules[0].when[0]: condition on \"source.ip\" needs values or notValues"
    );
}

#[test]
fn an_unreadable_object_is_denied_with_the_parser_reason() {
    let body = admission("CREATE", policy(json!({"action": "SOMETIMES"})));
    let out = respond(&body, &Snapshot::default());
    assert_eq!(out["response"]["allowed"], false);
    let message = out["response"]["status"]["message"]
        .as_str()
        .expect("message");
    assert!(
        message.starts_with("AuthorizationPolicy demo/p is invalid: invalid object:")
            && message.contains("SOMETIMES"),
        "{message}"
    );
}

#[test]
fn what_ztunnel_cannot_enforce_comes_back_as_warnings() {
    let body = admission(
        "CREATE",
        policy(json!({"rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]})),
    );
    let out = respond(&body, &Snapshot::default());
    assert_eq!(out["response"]["allowed"], true);
    let warnings = out["response"]["warnings"].as_array().expect("warnings");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0]
            .as_str()
            .is_some_and(|w| w.contains("L7 attributes")),
        "{warnings:?}"
    );
}

#[test]
fn peer_authentications_are_checked_against_the_current_configuration() {
    let current = Snapshot::from_yaml(
        "pa.yaml",
        r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: first, namespace: demo, creationTimestamp: "2024-01-01T00:00:00Z"}
spec: {mtls: {mode: STRICT}}
"#,
    );
    let second = json!({
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {"name": "second", "creationTimestamp": "2025-01-01T00:00:00Z"},
        "spec": {"mtls": {"mode": "PERMISSIVE"}},
    });
    let out = respond(&admission("CREATE", second), &current);
    assert_eq!(out["response"]["allowed"], true);
    let warnings = out["response"]["warnings"].as_array().expect("warnings");
    assert!(
        warnings[0]
            .as_str()
            .is_some_and(|w| w.contains("PeerAuthentication demo/first is older")),
        "{warnings:?}"
    );

    let bad = json!({
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {"name": "ports"},
        "spec": {"portLevelMtls": {"8080": {"mode": "DISABLE"}}},
    });
    let out = respond(&admission("CREATE", bad), &current);
    assert_eq!(out["response"]["allowed"], false);
    assert_eq!(
        out["response"]["status"]["message"],
        "PeerAuthentication demo/ports is invalid: portLevelMtls requires a selector with at \
         least one label"
    );
}

#[test]
fn deletions_and_other_kinds_are_allowed() {
    let mut body: Value =
        serde_json::from_slice(&admission("DELETE", policy(json!({"action": "SOMETIMES"}))))
            .expect("json");
    let out = respond(
        &serde_json::to_vec(&body).expect("json"),
        &Snapshot::default(),
    );
    assert_eq!(out["response"]["allowed"], true);

    body["request"]["operation"] = "CREATE".into();
    body["request"]["kind"] =
        json!({"group": "networking.istio.io", "version": "v1", "kind": "Sidecar"});
    let out = respond(
        &serde_json::to_vec(&body).expect("json"),
        &Snapshot::default(),
    );
    assert_eq!(out["response"]["allowed"], true);
}

#[test]
fn a_body_that_is_not_a_review_is_an_error() {
    let err = review(
        b"{\"hello\": 1}",
        &ModelConfig::default(),
        &Snapshot::default(),
    )
    .expect_err("not a review");
    assert!(
        matches!(err, ReviewError::Decode(_) | ReviewError::NoRequest),
        "{err}"
    );
    assert!(review(b"not json", &ModelConfig::default(), &Snapshot::default()).is_err());
}
