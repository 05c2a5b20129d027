//! PeerAuthentication compiled into DENY-plaintext policies.

mod common;

use common::{model, namespace, pod};
use istiod::model::{Model, STATIC_STRICT_POLICY};
use mesh_proto::proto::security::string_match::MatchType;
use mesh_proto::proto::security::{Action, Match, Scope, StringMatch};

fn pa(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
         metadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n---\n"
    )
}

fn presence() -> StringMatch {
    StringMatch {
        match_type: Some(MatchType::Presence(())),
    }
}

fn listed(m: &Model, uid: &str) -> Vec<String> {
    m.workload(uid)
        .unwrap_or_else(|| panic!("no workload {uid}"))
        .authorization_policies
        .clone()
}

fn static_strict() -> String {
    format!("istio-system/{STATIC_STRICT_POLICY}")
}

fn pods() -> String {
    format!(
        "{}{}{}{}{}",
        namespace("shop", true),
        namespace("lab", true),
        pod("shop", "web", "{app: web}", "n1", "10.0.0.1"),
        pod("shop", "legacy", "{app: legacy}", "n1", "10.0.0.2"),
        pod("lab", "exp", "{app: exp}", "n1", "10.0.0.3"),
    )
}

#[test]
fn namespace_strict_denies_plaintext_to_its_workloads() {
    let m = model(&format!(
        "{}{}",
        pods(),
        pa("shop", "default", "{mtls: {mode: STRICT}}")
    ));
    let a = m
        .authorization(&static_strict())
        .expect("static strict policy");
    assert_eq!(a.action, Action::Deny as i32);
    assert_eq!(a.scope, Scope::WorkloadSelector as i32);
    assert_eq!(a.groups.len(), 1);
    assert_eq!(
        a.groups[0].rules[0].matches,
        vec![Match {
            not_principals: vec![presence()],
            ..Default::default()
        }],
        "denies every connection without a peer identity"
    );
    assert_eq!(listed(&m, "shop/web"), [static_strict()]);
    assert_eq!(listed(&m, "shop/legacy"), [static_strict()]);
    assert!(listed(&m, "lab/exp").is_empty());
}

#[test]
fn mesh_strict_with_namespace_and_workload_overrides() {
    let m = model(&format!(
        "{}{}{}{}",
        pods(),
        pa("istio-system", "mesh", "{mtls: {mode: STRICT}}"),
        pa("lab", "relaxed", "{mtls: {mode: PERMISSIVE}}"),
        pa(
            "shop",
            "legacy",
            "{selector: {matchLabels: {app: legacy}}, mtls: {mode: DISABLE}}"
        ),
    ));
    assert_eq!(listed(&m, "shop/web"), [static_strict()]);
    assert!(
        listed(&m, "shop/legacy").is_empty(),
        "workload policy wins over mesh"
    );
    assert!(
        listed(&m, "lab/exp").is_empty(),
        "namespace policy wins over mesh"
    );
}

#[test]
fn workload_strict_in_permissive_namespace() {
    let m = model(&format!(
        "{}{}",
        pods(),
        pa(
            "shop",
            "web-strict",
            "{selector: {matchLabels: {app: web}}, mtls: {mode: STRICT}}"
        ),
    ));
    assert_eq!(listed(&m, "shop/web"), [static_strict()]);
    assert!(listed(&m, "shop/legacy").is_empty());
}

#[test]
fn port_level_settings_get_their_own_policy() {
    let m = model(&format!(
        "{}{}{}",
        pods(),
        pa(
            "shop",
            "web-ports",
            "{selector: {matchLabels: {app: web}}, mtls: {mode: STRICT}, portLevelMtls: {8080: {mode: PERMISSIVE}}}"
        ),
        pa(
            "shop",
            "legacy-ports",
            "{selector: {matchLabels: {app: legacy}}, portLevelMtls: {9090: {mode: STRICT}, 8080: {mode: DISABLE}}}"
        ),
    ));
    let web = m
        .authorization("shop/converted_peer_authentication_web-ports")
        .expect("web converted policy");
    assert_eq!(web.action, Action::Deny as i32);
    assert_eq!(
        web.groups[0].rules[0].matches,
        vec![Match {
            not_principals: vec![presence()],
            not_destination_ports: vec![8080],
            ..Default::default()
        }],
        "STRICT except the PERMISSIVE port"
    );
    let legacy = m
        .authorization("shop/converted_peer_authentication_legacy-ports")
        .expect("legacy converted policy");
    assert_eq!(
        legacy.groups[0].rules[0].matches,
        vec![Match {
            not_principals: vec![presence()],
            destination_ports: vec![9090],
            ..Default::default()
        }],
        "PERMISSIVE except the STRICT port"
    );
    assert_eq!(
        listed(&m, "shop/web"),
        ["shop/converted_peer_authentication_web-ports"]
    );
    assert_eq!(
        listed(&m, "shop/legacy"),
        ["shop/converted_peer_authentication_legacy-ports"]
    );
}

#[test]
fn permissive_and_disable_produce_nothing() {
    let m = model(&format!(
        "{}{}{}",
        pods(),
        pa("shop", "default", "{mtls: {mode: PERMISSIVE}}"),
        pa("lab", "default", "{mtls: {mode: DISABLE}}"),
    ));
    assert!(m.authorizations.is_empty(), "{:?}", m.authorizations);
    assert!(listed(&m, "shop/web").is_empty());
}
