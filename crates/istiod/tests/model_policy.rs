//! AuthorizationPolicy compiled for ztunnel.

mod common;

use common::{model, namespace, pod};
use istiod::model::Model;
use mesh_proto::proto::security::string_match::MatchType;
use mesh_proto::proto::security::{
    Action, Address, Authorization, Group, Match, Rules, Scope, StringMatch,
};

fn policy(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}\n---\n"
    )
}

fn auth<'a>(m: &'a Model, name: &str) -> &'a Authorization {
    m.authorization(name)
        .unwrap_or_else(|| panic!("no authorization {name}; have {:?}", m.authorizations))
}

fn sm(t: MatchType) -> StringMatch {
    StringMatch {
        match_type: Some(t),
    }
}

fn exact(s: &str) -> StringMatch {
    sm(MatchType::Exact(s.into()))
}

/// The single match of a policy with one rule holding one section.
fn only_match(a: &Authorization) -> &Match {
    assert_eq!(a.groups.len(), 1, "{a:?}");
    assert_eq!(a.groups[0].rules.len(), 1, "{a:?}");
    assert_eq!(a.groups[0].rules[0].matches.len(), 1, "{a:?}");
    &a.groups[0].rules[0].matches[0]
}

fn issues_for<'a>(m: &'a Model, object: &str) -> Vec<&'a str> {
    m.issues
        .iter()
        .filter(|i| i.object == object)
        .map(|i| i.reason.as_str())
        .collect()
}

#[test]
fn scope_follows_namespace_and_selector() {
    let m = model(&format!(
        "{}{}{}{}{}{}{}{}",
        namespace("shop", true),
        namespace("ops", true),
        pod("shop", "web", "{app: web}", "n1", "10.0.0.1"),
        pod("shop", "db", "{app: db}", "n1", "10.0.0.2"),
        pod("ops", "web", "{app: web}", "n1", "10.0.0.3"),
        policy(
            "istio-system",
            "mesh-wide",
            "  action: DENY\n  rules: [{from: [{source: {namespaces: [evil]}}]}]"
        ),
        policy("shop", "ns-wide", "  rules: [{}]"),
        policy(
            "shop",
            "web-only",
            "  selector: {matchLabels: {app: web}}\n  rules: [{}]"
        ) + &policy(
            "istio-system",
            "all-webs",
            "  selector: {matchLabels: {app: web}}\n  action: DENY\n  rules: [{to: [{operation: {ports: [\"22\"]}}]}]"
        ),
    ));
    assert_eq!(
        auth(&m, "istio-system/mesh-wide").scope,
        Scope::Global as i32
    );
    assert_eq!(
        auth(&m, "istio-system/mesh-wide").action,
        Action::Deny as i32
    );
    assert_eq!(auth(&m, "shop/ns-wide").scope, Scope::Namespace as i32);
    assert_eq!(auth(&m, "shop/ns-wide").action, Action::Allow as i32);
    assert_eq!(
        auth(&m, "shop/web-only").scope,
        Scope::WorkloadSelector as i32
    );
    assert_eq!(
        auth(&m, "istio-system/all-webs").scope,
        Scope::WorkloadSelector as i32
    );

    let listed = |uid: &str| m.workload(uid).expect(uid).authorization_policies.clone();
    assert_eq!(
        listed("shop/web"),
        ["istio-system/all-webs", "shop/web-only"]
    );
    assert_eq!(listed("shop/db"), Vec::<String>::new());
    // A selector policy of the root namespace selects in every namespace; others only in theirs.
    assert_eq!(listed("ops/web"), ["istio-system/all-webs"]);
}

#[test]
fn source_fields_and_their_negations() {
    let m = model(&policy(
        "shop",
        "src",
        r#"  rules:
  - from:
    - source:
        principals: ["*", "cluster.local/ns/a/*", "*/sa/b", "spiffe://cluster.local/ns/c/sa/d"]
        notPrincipals: ["cluster.local/ns/x/sa/y"]
    - source:
        namespaces: ["front*", "exact"]
        notNamespaces: ["*-test"]
    - source:
        ipBlocks: ["10.0.0.0/8", "192.168.1.1", "fd00::/64"]
        notIpBlocks: ["10.1.0.0/16"]"#,
    ));
    let a = auth(&m, "shop/src");
    assert_eq!(a.groups.len(), 1);
    let rules = &a.groups[0].rules;
    assert_eq!(rules.len(), 1, "one Rules for `from`, one Match per source");
    let [p, n, ip] = rules[0].matches.as_slice() else {
        panic!("three matches expected: {rules:?}")
    };
    assert_eq!(
        p.principals,
        [
            sm(MatchType::Presence(())),
            sm(MatchType::Prefix("cluster.local/ns/a/".into())),
            sm(MatchType::Suffix("/sa/b".into())),
            exact("cluster.local/ns/c/sa/d"),
        ]
    );
    assert_eq!(p.not_principals, [exact("cluster.local/ns/x/sa/y")]);
    assert_eq!(
        n.namespaces,
        [sm(MatchType::Prefix("front".into())), exact("exact")]
    );
    assert_eq!(n.not_namespaces, [sm(MatchType::Suffix("-test".into()))]);
    assert_eq!(
        ip.source_ips,
        [
            Address {
                address: vec![10, 0, 0, 0],
                length: 8
            },
            Address {
                address: vec![192, 168, 1, 1],
                length: 32
            },
            Address {
                address: "fd00::"
                    .parse::<std::net::Ipv6Addr>()
                    .expect("ip")
                    .octets()
                    .to_vec(),
                length: 64
            },
        ]
    );
    assert_eq!(
        ip.not_source_ips,
        [Address {
            address: vec![10, 1, 0, 0],
            length: 16
        }]
    );
    assert_eq!(
        issues_for(&m, "AuthorizationPolicy shop/src"),
        Vec::<&str>::new()
    );
}

#[test]
fn ports_conditions_and_rule_structure() {
    let m = model(&policy(
        "shop",
        "to",
        r#"  action: DENY
  rules:
  - to: [{operation: {ports: ["8080", "9090"]}}, {operation: {notPorts: ["22"]}}]
    from: [{source: {namespaces: [a]}}]
    when:
    - {key: source.ip, values: ["1.2.3.4"], notValues: ["1.2.3.5"]}
    - {key: destination.port, values: ["443"]}
    - {key: source.namespace, notValues: [kube-system]}
    - {key: source.principal, values: ["cluster.local/ns/a/sa/b"]}
    - {key: destination.ip, values: ["10.0.0.0/24"]}"#,
    ));
    let a = auth(&m, "shop/to");
    let rules = &a.groups[0].rules;
    assert_eq!(
        rules.len(),
        7,
        "to, from, then one Rules per condition: {rules:?}"
    );
    assert_eq!(rules[0].matches[0].destination_ports, [8080, 9090]);
    assert_eq!(rules[0].matches[1].not_destination_ports, [22]);
    assert_eq!(rules[1].matches[0].namespaces, [exact("a")]);
    let when: Vec<&Match> = rules[2..].iter().map(|r| &r.matches[0]).collect();
    assert_eq!(
        when[0].source_ips,
        [Address {
            address: vec![1, 2, 3, 4],
            length: 32
        }]
    );
    assert_eq!(
        when[0].not_source_ips,
        [Address {
            address: vec![1, 2, 3, 5],
            length: 32
        }]
    );
    assert_eq!(when[1].destination_ports, [443]);
    assert_eq!(when[2].not_namespaces, [exact("kube-system")]);
    assert_eq!(when[3].principals, [exact("cluster.local/ns/a/sa/b")]);
    assert_eq!(
        when[4].destination_ips,
        [Address {
            address: vec![10, 0, 0, 0],
            length: 24
        }]
    );
}

#[test]
fn empty_rule_allows_everything_and_empty_spec_matches_nothing() {
    let m = model(&format!(
        "{}{}",
        policy("shop", "allow-all", "  rules: [{}]"),
        policy("shop", "deny-all", "  {}"),
    ));
    let all = auth(&m, "shop/allow-all");
    assert_eq!(
        all.groups,
        vec![Group { rules: vec![] }],
        "a group without rules matches all"
    );
    let none = auth(&m, "shop/deny-all");
    assert_eq!(none.action, Action::Allow as i32);
    assert!(
        none.groups.is_empty(),
        "an ALLOW without groups matches nothing: {none:?}"
    );
}

#[test]
fn allow_rule_with_l7_fields_matches_nothing() {
    let m = model(&policy(
        "shop",
        "l7",
        r#"  rules:
  - to: [{operation: {methods: [GET], ports: ["80"]}}]
  - from: [{source: {principals: ["cluster.local/ns/a/sa/b"]}}]
  - when: [{key: "request.headers[x-user]", values: [admin]}]
  - from: [{source: {requestPrincipals: ["*"]}}]"#,
    ));
    let a = auth(&m, "shop/l7");
    assert_eq!(a.action, Action::Allow as i32);
    assert_eq!(a.groups.len(), 1, "only the pure L4 rule remains: {a:?}");
    assert_eq!(
        a.groups[0].rules[0].matches[0].principals,
        [exact("cluster.local/ns/a/sa/b")]
    );
    let issues = issues_for(&m, "AuthorizationPolicy shop/l7");
    assert_eq!(issues.len(), 3, "{issues:?}");
    assert!(
        issues[0].starts_with("rule 1 uses L7 attributes (to.operation.methods)"),
        "{issues:?}"
    );
    assert!(issues[0].contains("matches nothing"));
    assert!(issues[1].contains("when.key request.headers[x-user]"));
    assert!(issues[2].contains("from.source.requestPrincipals"));
}

#[test]
fn allow_policy_whose_only_rule_is_l7_denies_everything_selected() {
    let m = model(&policy(
        "shop",
        "get-only",
        "  rules: [{to: [{operation: {methods: [GET]}}]}]",
    ));
    let a = auth(&m, "shop/get-only");
    assert_eq!(a.action, Action::Allow as i32);
    assert!(a.groups.is_empty(), "{a:?}");
}

#[test]
fn deny_rule_with_l7_fields_is_widened_to_its_l4_parts() {
    let m = model(&policy(
        "shop",
        "no-delete",
        r#"  action: DENY
  rules:
  - to: [{operation: {methods: [DELETE], ports: ["8080"]}}]
    when: [{key: "request.auth.claims[iss]", values: [x]}]"#,
    ));
    let a = auth(&m, "shop/no-delete");
    assert_eq!(a.action, Action::Deny as i32);
    let m0 = only_match(a);
    assert_eq!(
        m0,
        &Match {
            destination_ports: vec![8080],
            ..Default::default()
        }
    );
    let issues = issues_for(&m, "AuthorizationPolicy shop/no-delete");
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert!(issues[0].contains("denies more"), "{issues:?}");
}

#[test]
fn invalid_values_never_widen_an_allow_and_always_widen_a_deny() {
    let m = model(&format!(
        "{}{}",
        policy(
            "shop",
            "bad-allow",
            "  rules: [{to: [{operation: {ports: [\"http\"]}}]}]"
        ),
        policy(
            "shop",
            "bad-deny",
            "  action: DENY\n  rules: [{from: [{source: {ipBlocks: [\"10.0.0.0/99\"]}}]}]"
        ),
    ));
    assert!(auth(&m, "shop/bad-allow").groups.is_empty());
    assert_eq!(only_match(auth(&m, "shop/bad-deny")), &Match::default());
    let issues = issues_for(&m, "AuthorizationPolicy shop/bad-allow");
    assert!(issues[0].contains("\"http\" is not a port"), "{issues:?}");
}

#[test]
fn waypoint_audit_and_custom_policies_are_not_sent_to_ztunnel() {
    let m = model(&format!(
        "{}{}{}",
        policy(
            "shop",
            "for-waypoint",
            "  targetRefs: [{kind: Service, group: \"\", name: web}]\n  rules: [{to: [{operation: {methods: [GET]}}]}]"
        ),
        policy("shop", "audit", "  action: AUDIT\n  rules: [{}]"),
        policy(
            "shop",
            "ext",
            "  action: CUSTOM\n  provider: {name: authz}\n  rules: [{}]"
        ),
    ));
    assert!(m.authorizations.is_empty(), "{:?}", m.authorizations);
    let keys: Vec<String> = m
        .waypoint_policies
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(keys, ["AuthorizationPolicy shop/for-waypoint"]);
    // Not an L4 problem: the only issue is that its target Service does not exist.
    assert_eq!(
        issues_for(&m, "AuthorizationPolicy shop/for-waypoint"),
        ["targetRef Service web: the Service does not exist; not enforced"]
    );
    assert!(
        issues_for(&m, "AuthorizationPolicy shop/audit")[0].contains("not enforced by ztunnel")
    );
    assert!(issues_for(&m, "AuthorizationPolicy shop/ext")[0].contains("Custom"));
}

#[test]
fn service_accounts_and_dry_run() {
    let yaml = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
        metadata: {name: sa, namespace: shop, annotations: {istio.io/dry-run: \"true\"}}\n\
        spec: {rules: [{from: [{source: {serviceAccounts: [front, other/back]}}]}]}\n";
    let m = model(yaml);
    let a = auth(&m, "shop/sa");
    assert!(a.dry_run);
    assert_eq!(
        only_match(a).principals,
        [
            sm(MatchType::Suffix("/ns/shop/sa/front".into())),
            sm(MatchType::Suffix("/ns/other/sa/back".into())),
        ]
    );
    assert_eq!(
        a.groups[0].rules,
        vec![Rules {
            matches: vec![only_match(a).clone()]
        }]
    );
}
