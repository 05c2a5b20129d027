//! `meshctl ztunnel-config ...` in local mode, against fake ztunnel admin ports serving a
//! `/config_dump` built from ztunnel's own types.

mod common;

use std::collections::HashMap;

use clap::Parser;
use common::{ConfigDir, FakeServer, NAMESPACES, WORKLOADS, assert_snapshot, meshctl, normalize};
use identity::Identity;
use serde_json::{Value, json};
use ztunnel::state::policy::{Action, Match, Scope, StringMatch};
use ztunnel::state::{Policy, Service, Tunnel, Waypoint, Workload};

fn workload(name: &str, ns: &str, ip: &str, node: &str, sa: &str, svc: Option<&str>) -> Workload {
    let mut services = HashMap::new();
    if let Some(svc) = svc {
        services.insert(
            format!("{ns}/{svc}.{ns}.svc.cluster.local"),
            vec![(80, 8080)],
        );
    }
    Workload {
        uid: format!("{ns}/{name}"),
        name: name.into(),
        namespace: ns.into(),
        ips: vec![ip.parse().expect("ip")],
        node: node.into(),
        identity: Identity::new("cluster.local", ns, sa),
        tunnel: Tunnel::Hbone,
        canonical_name: name.into(),
        canonical_revision: "latest".into(),
        workload_name: name.into(),
        cluster_id: "Kubernetes".into(),
        healthy: true,
        services,
        authorization_policies: vec![],
        waypoint: None,
    }
}

/// A dump shaped as ztunnel's admin serves it (state types serialized by ztunnel itself).
fn dump(node: &str) -> Value {
    // Built through ztunnel's own flags, so the section has exactly the fields it serves.
    let args = ztunnel::cli::Args::try_parse_from([
        "ztunnel",
        "--node-name",
        node,
        "--xds-address",
        "http://127.0.0.1:15010",
    ])
    .expect("ztunnel flags");
    let config = ztunnel::config::Config::from_args(&args).expect("ztunnel config");
    let mut cart = workload("cart-0", "shop", "10.1.0.5", "node1", "cart", Some("cart"));
    cart.waypoint = Some(Waypoint::Service {
        namespace: "shop".into(),
        hostname: "waypoint.shop.svc.cluster.local".into(),
        port: 15008,
    });
    let mut old = workload("old-0", "legacy", "10.1.0.9", "node1", "default", None);
    old.tunnel = Tunnel::None;
    old.healthy = false;
    let web = workload(
        "web-0",
        "shop",
        "10.2.0.7",
        "node2",
        "default",
        Some("cart"),
    );
    let service = Service {
        name: "cart".into(),
        namespace: "shop".into(),
        hostname: "cart.shop.svc.cluster.local".into(),
        vips: vec!["10.96.0.10".parse().expect("ip")],
        ports: vec![(80, 8080)],
        waypoint: Some(Waypoint::Service {
            namespace: "shop".into(),
            hostname: "waypoint.shop.svc.cluster.local".into(),
            port: 15008,
        }),
    };
    let policy = Policy {
        name: "allow-web".into(),
        namespace: "shop".into(),
        scope: Scope::Namespace,
        action: Action::Allow,
        dry_run: false,
        groups: vec![vec![vec![Match {
            principals: vec![StringMatch::Exact(
                "spiffe://cluster.local/ns/shop/sa/default".into(),
            )],
            ..Default::default()
        }]]],
    };
    let deny = Policy {
        name: "deny-legacy".into(),
        namespace: "legacy".into(),
        scope: Scope::Global,
        action: Action::Deny,
        dry_run: true,
        groups: vec![],
    };
    json!({
        "config": config,
        "workloads": [cart, old, web],
        "services": [service],
        "policies": [policy, deny],
        "pods": [
            {"uid": "shop/cart-0", "name": "cart-0", "namespace": "shop",
             "identity": "spiffe://cluster.local/ns/shop/sa/cart"},
            {"uid": "legacy/old-0", "name": "old-0", "namespace": "legacy",
             "identity": "spiffe://cluster.local/ns/legacy/sa/default"}
        ],
        "certificates": [
            {"identity": "spiffe://cluster.local/ns/shop/sa/cart", "state": "Valid",
             "serial": "3f2a9c", "not_before": 1_767_225_600_u64, "not_after": 1_767_312_000_u64,
             "expires_in_seconds": 43_200, "failures": 0, "last_error": null},
            {"identity": "spiffe://cluster.local/ns/legacy/sa/default", "state": "Failed",
             "serial": null, "not_before": null, "not_after": null,
             "expires_in_seconds": null, "failures": 3,
             "last_error": "CA refused: node1 may not request this identity"}
        ]
    })
}

struct Setup {
    dir: ConfigDir,
    node1: FakeServer,
    node2: FakeServer,
}

impl Setup {
    fn new() -> Self {
        let node1 = FakeServer::start();
        node1.route("/config_dump", 200, dump("node1").to_string());
        let node2 = FakeServer::start();
        node2.route("/config_dump", 200, dump("node2").to_string());
        Setup {
            dir: ConfigDir::new(&[
                ("namespaces.yaml", NAMESPACES),
                ("workloads.yaml", WORKLOADS),
            ]),
            node1,
            node2,
        }
    }

    fn run(&self, args: &[&str]) -> common::Run {
        let mut v = vec![
            "--config-dir".to_string(),
            self.dir.arg(),
            "--ztunnel-admin".to_string(),
            format!("node1={}", self.node1.url),
            "--ztunnel-admin".to_string(),
            format!("node2={}", self.node2.url),
            "ztunnel-config".to_string(),
        ];
        v.extend(args.iter().map(|s| s.to_string()));
        meshctl(v)
    }
}

#[test]
fn tables_of_each_section() {
    let s = Setup::new();
    for section in [
        "workloads",
        "services",
        "policies",
        "certificates",
        "connections",
        "all",
    ] {
        let run = s.run(&[section, "node1"]).ok();
        assert_snapshot(&format!("ztunnel_{section}.txt"), &run.stdout);
    }
    assert_eq!(s.node1.hits("/config_dump"), 6);
    assert_eq!(s.node2.hits("/config_dump"), 0);
}

#[test]
fn json_and_yaml_carry_the_dump_as_served() {
    let s = Setup::new();
    let json = s.run(&["workloads", "node1", "-o", "json"]).ok().json();
    assert_eq!(json, dump("node1")["workloads"]);
    let filtered = s
        .run(&[
            "services",
            "node1",
            "--workload-namespace",
            "legacy",
            "-o",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(filtered, json!([]));
    let all = s.run(&["all", "node1", "-o", "json"]).ok().json();
    assert_eq!(all, dump("node1"));
    let yaml = s.run(&["policies", "node1", "-o", "yaml"]).ok().stdout;
    let back: Value = serde_saphyr::from_str(&yaml).expect("yaml parses");
    assert_eq!(back, dump("node1")["policies"]);
    let conns = s.run(&["connections", "node1", "-o", "json"]).ok().json();
    assert!(
        conns["note"]
            .as_str()
            .unwrap_or("")
            .contains("does not report open connections")
    );
    assert_eq!(conns["node"], "node1");
    assert_eq!(conns["pods"][0]["listeners"][2]["port"], 15008);
}

#[test]
fn a_pod_selects_the_ztunnel_of_its_node() {
    let s = Setup::new();
    s.run(&["workloads", "-n", "shop", "web-0"]).ok();
    assert_eq!(
        (s.node1.hits("/config_dump"), s.node2.hits("/config_dump")),
        (0, 1)
    );
    s.run(&["workloads", "shop/cart-0"]).ok();
    s.run(&["workloads", "old-0.legacy"]).ok();
    assert_eq!(
        (s.node1.hits("/config_dump"), s.node2.hits("/config_dump")),
        (2, 1)
    );
}

#[test]
fn unclear_targets_are_explained() {
    let s = Setup::new();
    let run = s.run(&["workloads"]).expect_code(1);
    assert!(
        run.stderr
            .contains("2 ztunnels are known (node1, node2); name a node or a pod"),
        "{}",
        run.stderr
    );
    let run = s.run(&["workloads", "nowhere"]).expect_code(1);
    assert!(
        run.stderr.contains(
            "\"nowhere\" is neither a node given with --ztunnel-admin (node1, node2) nor a pod"
        ),
        "{}",
        run.stderr
    );
    let run = meshctl(["--config-dir", &s.dir.arg(), "ztunnel-config", "workloads"]).expect_code(1);
    assert!(
        run.stderr.contains("no ztunnel admin address given"),
        "{}",
        run.stderr
    );
}

#[test]
fn an_unreachable_ztunnel_is_a_clear_error() {
    let dir = ConfigDir::new(&[]);
    let dead = {
        let s = FakeServer::start();
        s.url.clone()
    };
    let run = meshctl([
        "--config-dir",
        &dir.arg(),
        "--ztunnel-admin",
        &dead,
        "ztunnel-config",
        "workloads",
    ])
    .expect_code(1);
    let err = normalize(&run.stderr, &[(&dead, "$URL")]);
    assert!(err.contains("cannot connect to $URL/config_dump"), "{err}");
    assert!(
        err.contains("--ztunnel-admin must point at its admin port"),
        "{err}"
    );
}

#[test]
fn a_single_unnamed_ztunnel_needs_no_target() {
    let z = FakeServer::start();
    z.route("/config_dump", 200, dump("solo").to_string());
    let dir = ConfigDir::new(&[]);
    let run = meshctl([
        "--config-dir",
        &dir.arg(),
        "--ztunnel-admin",
        &z.url,
        "ztunnel-config",
        "services",
    ])
    .ok();
    assert!(run.stdout.contains("10.96.0.10"), "{}", run.stdout);
}
