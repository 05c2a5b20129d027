use std::net::Ipv4Addr;

use mesh_proto::proto::waypoint as pb;

use crate::harness::{Behaviour, Env, cfg, key};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 1, 10);

fn policy(name: &str, action: pb::policy::Action, rules: Vec<pb::PolicyRule>) -> pb::Policy {
    pb::Policy {
        name: name.into(),
        action: action as i32,
        targets: vec![key("reviews")],
        rules,
    }
}

#[tokio::test]
async fn deny_get_admin_while_get_root_passes() {
    let env = Env::new().await;
    let v1 = env.pod("reviews-v1", Behaviour::Echo).await;
    env.service("reviews", VIP, &[&v1]);
    let deny_admin = policy(
        "demo/deny-admin",
        pb::policy::Action::Deny,
        vec![pb::PolicyRule {
            from: vec![],
            to: vec![pb::Operation {
                methods: vec!["GET".into()],
                paths: vec!["/admin*".into()],
                ..Default::default()
            }],
        }],
    );
    env.configure(cfg::waypoint(
        vec![cfg::bound("reviews", VIP, vec![])],
        vec![deny_admin],
    ));
    let mut c = env.client(VIP).await;
    let denied = c.get("/admin").await;
    assert_eq!(denied.status, 403);
    assert_eq!(denied.text(), "RBAC: access denied");
    // Dot segments do not get around the rule.
    assert_eq!(c.get("/public/../admin/users").await.status, 403);
    assert_eq!(v1.hits(), 0, "denied requests never reach the backend");
    let ok = c.get("/").await;
    assert_eq!(
        (ok.status.as_u16(), ok.text().as_str()),
        (200, "reviews-v1")
    );
    assert_eq!(v1.hits(), 1);
}

#[tokio::test]
async fn allow_policies_admit_only_the_principals_they_name() {
    let env = Env::new().await;
    let v1 = env.pod("reviews-v1", Behaviour::Echo).await;
    env.service("reviews", VIP, &[&v1]);
    let allow = |name: &str, principal: &str| {
        policy(
            name,
            pb::policy::Action::Allow,
            vec![pb::PolicyRule {
                from: vec![pb::Source {
                    principals: vec![principal.into()],
                    ..Default::default()
                }],
                to: vec![],
            }],
        )
    };
    // Only another workload is allowed: the client is refused.
    env.configure(cfg::waypoint(
        vec![cfg::bound("reviews", VIP, vec![])],
        vec![allow("demo/only-web", "cluster.local/ns/frontend/sa/web")],
    ));
    let mut c = env.client(VIP).await;
    assert_eq!(c.get("/").await.status, 403);
    // The client's own principal (Istio form, without spiffe://) is allowed.
    env.configure(cfg::waypoint(
        vec![cfg::bound("reviews", VIP, vec![])],
        vec![
            allow("demo/only-web", "cluster.local/ns/frontend/sa/web"),
            allow("demo/sleep", "cluster.local/ns/clients/sa/sleep"),
        ],
    ));
    let got = c.get("/").await;
    assert_eq!(
        (got.status.as_u16(), got.text().as_str()),
        (200, "reviews-v1")
    );
    // A namespace-based DENY wins over the ALLOW.
    let deny_ns = policy(
        "demo/deny-clients",
        pb::policy::Action::Deny,
        vec![pb::PolicyRule {
            from: vec![pb::Source {
                namespaces: vec!["clients".into()],
                ..Default::default()
            }],
            to: vec![],
        }],
    );
    env.configure(cfg::waypoint(
        vec![cfg::bound("reviews", VIP, vec![])],
        vec![
            allow("demo/sleep", "cluster.local/ns/clients/sa/sleep"),
            deny_ns,
        ],
    ));
    assert_eq!(c.get("/").await.status, 403);
}
