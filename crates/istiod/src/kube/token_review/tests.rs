use std::collections::BTreeMap;

use k8s_openapi::api::authentication::v1::UserInfo;

use super::*;

const ZTUNNEL: &str = "system:serviceaccount:istio-system:ztunnel";

fn policy() -> ReviewPolicy {
    ReviewPolicy {
        audience: "istio-ca".into(),
        node_proxies: vec!["istio-system/ztunnel".parse().expect("valid")],
    }
}

fn reviewed(username: &str, extra: &[(&str, &str)]) -> TokenReviewStatus {
    TokenReviewStatus {
        authenticated: Some(true),
        audiences: Some(vec!["istio-ca".into()]),
        user: Some(UserInfo {
            username: Some(username.into()),
            extra: Some(
                extra
                    .iter()
                    .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn snapshot() -> Snapshot {
    Snapshot::from_yaml(
        "pods.yaml",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: ztunnel-abc, namespace: istio-system, uid: uid-1}
spec: {nodeName: node-b, serviceAccountName: ztunnel}
---
apiVersion: v1
kind: Pod
metadata: {name: ztunnel-pending, namespace: istio-system, uid: uid-2}
spec: {serviceAccountName: ztunnel}
"#,
    )
}

fn refusal(status: &TokenReviewStatus) -> String {
    decide(status, &policy(), &snapshot())
        .expect_err("refused")
        .to_string()
}

#[test]
fn node_proxy_gets_the_node_named_by_its_bound_token() {
    let status = reviewed(
        ZTUNNEL,
        &[(NODE_NAME_EXTRA, "node-a"), (POD_NAME_EXTRA, "ztunnel-abc")],
    );
    assert_eq!(
        decide(&status, &policy(), &snapshot()).expect("allowed"),
        Caller::Node {
            node: "node-a".into(),
            proxy: "istio-system/ztunnel".into()
        }
    );
}

#[test]
fn node_proxy_without_node_extra_is_located_through_its_pod() {
    let status = reviewed(
        ZTUNNEL,
        &[(POD_NAME_EXTRA, "ztunnel-abc"), (POD_UID_EXTRA, "uid-1")],
    );
    let caller = decide(&status, &policy(), &snapshot()).expect("allowed");
    assert_eq!(
        caller.to_string(),
        "node proxy istio-system/ztunnel on node node-b"
    );

    let stale = reviewed(
        ZTUNNEL,
        &[(POD_NAME_EXTRA, "ztunnel-abc"), (POD_UID_EXTRA, "uid-old")],
    );
    assert_eq!(
        refusal(&stale),
        "the token of node proxy istio-system/ztunnel is bound to an earlier pod named ztunnel-abc"
    );
    let unknown = reviewed(ZTUNNEL, &[(POD_NAME_EXTRA, "ztunnel-zzz")]);
    assert!(
        refusal(&unknown)
            .contains("bound to pod istio-system/ztunnel-zzz, which istiod does not know"),
        "{}",
        refusal(&unknown)
    );
    let unscheduled = reviewed(ZTUNNEL, &[(POD_NAME_EXTRA, "ztunnel-pending")]);
    assert_eq!(
        refusal(&unscheduled),
        "pod istio-system/ztunnel-pending of node proxy istio-system/ztunnel is not scheduled on a node"
    );
}

#[test]
fn node_proxy_token_bound_to_nothing_is_refused() {
    let err = decide(&reviewed(ZTUNNEL, &[]), &policy(), &snapshot()).expect_err("refused");
    assert!(matches!(err, Refusal::NotAllowed(_)));
    assert!(
        err.to_string()
            .contains("the token of node proxy istio-system/ztunnel is not bound to a pod"),
        "{err}"
    );
}

#[test]
fn other_service_accounts_get_only_themselves() {
    // Even with a node-bound token: only node proxies act for a node.
    let status = reviewed(
        "system:serviceaccount:demo:waypoint",
        &[(NODE_NAME_EXTRA, "node-a")],
    );
    assert_eq!(
        decide(&status, &policy(), &snapshot()).expect("allowed"),
        Caller::Workload {
            namespace: "demo".into(),
            service_account: "waypoint".into()
        }
    );
    // A ztunnel service account in another namespace is not a node proxy.
    let status = reviewed("system:serviceaccount:other:ztunnel", &[]);
    assert!(matches!(
        decide(&status, &policy(), &snapshot()),
        Ok(Caller::Workload { .. })
    ));
}

#[test]
fn unauthenticated_foreign_audience_and_non_service_account_tokens_are_refused() {
    let mut status = reviewed(ZTUNNEL, &[(NODE_NAME_EXTRA, "node-a")]);
    status.authenticated = Some(false);
    status.error = Some("token has expired".into());
    let err = decide(&status, &policy(), &snapshot()).expect_err("refused");
    assert!(matches!(err, Refusal::NotAuthenticated(_)));
    assert_eq!(
        err.to_string(),
        "token not authenticated: token has expired (a ServiceAccount token for audience \
         istio-ca is expected)"
    );

    let mut status = reviewed(ZTUNNEL, &[(NODE_NAME_EXTRA, "node-a")]);
    status.audiences = Some(vec!["https://kubernetes.default.svc".into()]);
    assert_eq!(
        refusal(&status),
        "token not authenticated: the token is for audiences [\"https://kubernetes.default.svc\"], not istio-ca"
    );

    assert_eq!(
        refusal(&reviewed("kubernetes-admin", &[])),
        "user \"kubernetes-admin\" is not a service account; only ServiceAccount tokens are accepted"
    );
    assert!(
        refusal(&reviewed("system:serviceaccount:demo", &[])).contains("not a service account")
    );
}

#[test]
fn service_account_refs_parse() {
    let sa: ServiceAccountRef = "istio-system/ztunnel".parse().expect("valid");
    assert_eq!(sa.to_string(), "istio-system/ztunnel");
    assert!("ztunnel".parse::<ServiceAccountRef>().is_err());
    assert!("a/b/c".parse::<ServiceAccountRef>().is_err());
    assert!("/b".parse::<ServiceAccountRef>().is_err());
}
