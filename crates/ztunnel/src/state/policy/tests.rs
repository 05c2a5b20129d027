use std::collections::HashMap;
use std::net::IpAddr;

use identity::Identity;
use mesh_proto::proto::security as pb;

use super::*;
use crate::state::workload::{Tunnel, Workload};

fn workload(ns: &str, policies: &[&str]) -> Workload {
    Workload {
        uid: format!("{ns}/server"),
        name: "server".into(),
        namespace: ns.into(),
        ips: vec!["10.0.0.2".parse().unwrap()],
        node: "node1".into(),
        identity: Identity::new("cluster.local", ns, "server"),
        tunnel: Tunnel::Hbone,
        canonical_name: String::new(),
        canonical_revision: String::new(),
        workload_name: "server".into(),
        cluster_id: String::new(),
        healthy: true,
        services: HashMap::new(),
        authorization_policies: policies.iter().map(|s| s.to_string()).collect(),
        waypoint: None,
    }
}

fn exact(s: &str) -> pb::StringMatch {
    pb::StringMatch {
        match_type: Some(pb::string_match::MatchType::Exact(s.into())),
    }
}

fn presence() -> pb::StringMatch {
    pb::StringMatch {
        match_type: Some(pb::string_match::MatchType::Presence(())),
    }
}

fn policy(
    name: &str,
    ns: &str,
    scope: pb::Scope,
    action: pb::Action,
    matches: Vec<pb::Match>,
) -> Policy {
    Policy::from_proto(pb::Authorization {
        name: name.into(),
        namespace: ns.into(),
        scope: scope as i32,
        action: action as i32,
        groups: vec![pb::Group {
            rules: vec![pb::Rules { matches }],
        }],
        dry_run: false,
    })
    .unwrap()
}

fn conn<'a>(id: Option<&'a Identity>, port: u16) -> Connection<'a> {
    Connection {
        src_ip: "10.0.1.5".parse().unwrap(),
        src_identity: id,
        dst_ip: "10.0.0.2".parse().unwrap(),
        dst_port: port,
    }
}

#[test]
fn no_policy_allows() {
    let w = workload("app", &[]);
    assert_eq!(
        evaluate(std::iter::empty(), &w, &conn(None, 80)),
        Decision::Allow
    );
}

#[test]
fn deny_by_principal_wins_over_allow() {
    let client = Identity::new("cluster.local", "app", "client");
    let other = Identity::new("cluster.local", "app", "other");
    let deny = policy(
        "deny-client",
        "app",
        pb::Scope::Namespace,
        pb::Action::Deny,
        vec![pb::Match {
            principals: vec![exact("cluster.local/ns/app/sa/client")],
            ..Default::default()
        }],
    );
    let allow_all = policy(
        "allow-all",
        "app",
        pb::Scope::Namespace,
        pb::Action::Allow,
        vec![pb::Match::default()],
    );
    let w = workload("app", &[]);
    let ps = [deny, allow_all];
    assert!(
        matches!(evaluate(ps.iter(), &w, &conn(Some(&client), 80)), Decision::Deny(r) if r.contains("app/deny-client"))
    );
    assert_eq!(
        evaluate(ps.iter(), &w, &conn(Some(&other), 80)),
        Decision::Allow
    );
}

#[test]
fn allow_policy_denies_what_it_does_not_match() {
    let client = Identity::new("cluster.local", "app", "client");
    let stranger = Identity::new("cluster.local", "other-ns", "x");
    let allow = policy(
        "allow-ns",
        "app",
        pb::Scope::Namespace,
        pb::Action::Allow,
        vec![pb::Match {
            namespaces: vec![exact("app")],
            destination_ports: vec![80],
            ..Default::default()
        }],
    );
    let w = workload("app", &[]);
    let ps = [allow];
    assert_eq!(
        evaluate(ps.iter(), &w, &conn(Some(&client), 80)),
        Decision::Allow
    );
    assert!(matches!(
        evaluate(ps.iter(), &w, &conn(Some(&client), 81)),
        Decision::Deny(_)
    ));
    assert!(matches!(
        evaluate(ps.iter(), &w, &conn(Some(&stranger), 80)),
        Decision::Deny(_)
    ));
    assert!(matches!(
        evaluate(ps.iter(), &w, &conn(None, 80)),
        Decision::Deny(_)
    ));
}

#[test]
fn strict_peer_authentication_denies_plaintext_only() {
    // The compiled form of STRICT mTLS: deny when no principal is present.
    let strict = policy(
        "istio_converted_static_strict",
        "app",
        pb::Scope::Namespace,
        pb::Action::Deny,
        vec![pb::Match {
            not_principals: vec![presence()],
            ..Default::default()
        }],
    );
    let client = Identity::new("cluster.local", "app", "client");
    let w = workload("app", &[]);
    let ps = [strict];
    assert!(matches!(
        evaluate(ps.iter(), &w, &conn(None, 80)),
        Decision::Deny(_)
    ));
    assert_eq!(
        evaluate(ps.iter(), &w, &conn(Some(&client), 80)),
        Decision::Allow
    );
}

#[test]
fn scopes_select_the_right_workloads() {
    let deny_all = |name: &str, ns: &str, scope| {
        policy(
            name,
            ns,
            scope,
            pb::Action::Deny,
            vec![pb::Match::default()],
        )
    };
    let global = deny_all("g", "istio-system", pb::Scope::Global);
    let ns_other = deny_all("n", "other", pb::Scope::Namespace);
    let selector = deny_all("s", "app", pb::Scope::WorkloadSelector);
    let plain = workload("app", &[]);
    let selected = workload("app", &["app/s"]);
    assert!(global.selects(&plain));
    assert!(!ns_other.selects(&plain));
    assert!(!selector.selects(&plain));
    assert!(selector.selects(&selected));
}

#[test]
fn not_fields_and_cidrs() {
    let cidr = |ip: &str, len| pb::Address {
        address: ip
            .parse::<IpAddr>()
            .map(|i| match i {
                IpAddr::V4(v) => v.octets().to_vec(),
                IpAddr::V6(v) => v.octets().to_vec(),
            })
            .unwrap(),
        length: len,
    };
    let deny = policy(
        "d",
        "app",
        pb::Scope::Namespace,
        pb::Action::Deny,
        vec![pb::Match {
            source_ips: vec![cidr("10.0.1.0", 24)],
            not_destination_ports: vec![8080],
            ..Default::default()
        }],
    );
    let w = workload("app", &[]);
    let ps = [deny];
    assert!(matches!(
        evaluate(ps.iter(), &w, &conn(None, 80)),
        Decision::Deny(_)
    ));
    assert_eq!(evaluate(ps.iter(), &w, &conn(None, 8080)), Decision::Allow);
    let mut c = conn(None, 80);
    c.src_ip = "10.0.2.5".parse().unwrap();
    assert_eq!(evaluate(ps.iter(), &w, &c), Decision::Allow);
}

#[test]
fn allow_with_no_groups_matches_nothing_and_empty_group_matches_all() {
    let none = Policy::from_proto(pb::Authorization {
        name: "nothing".into(),
        namespace: "app".into(),
        scope: pb::Scope::Namespace as i32,
        action: pb::Action::Allow as i32,
        groups: vec![],
        dry_run: false,
    })
    .unwrap();
    let all = Policy::from_proto(pb::Authorization {
        name: "all".into(),
        namespace: "app".into(),
        scope: pb::Scope::Namespace as i32,
        action: pb::Action::Allow as i32,
        groups: vec![pb::Group { rules: vec![] }],
        dry_run: false,
    })
    .unwrap();
    let w = workload("app", &[]);
    assert!(matches!(
        evaluate([none.clone()].iter(), &w, &conn(None, 80)),
        Decision::Deny(_)
    ));
    assert_eq!(
        evaluate([none, all].iter(), &w, &conn(None, 80)),
        Decision::Allow
    );
}

#[test]
fn bad_prefix_length_is_rejected() {
    let err = Policy::from_proto(pb::Authorization {
        name: "bad".into(),
        namespace: "app".into(),
        scope: 1,
        action: 0,
        groups: vec![pb::Group {
            rules: vec![pb::Rules {
                matches: vec![pb::Match {
                    source_ips: vec![pb::Address {
                        address: vec![10, 0, 0, 0],
                        length: 33,
                    }],
                    ..Default::default()
                }],
            }],
        }],
        dry_run: false,
    })
    .unwrap_err();
    assert!(err.to_string().contains("prefix length 33"), "{err}");
}
