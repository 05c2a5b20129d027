//! `meshctl dataplane enroll|release` in local mode: the Namespace manifest is edited, and the
//! node agents' status files (written with the agent's own types) tell which pods are enrolled.

mod common;

use std::path::{Path, PathBuf};

use cni::agent::state::{EnrolledPod, PendingPod, Status};
use common::{ConfigDir, NAMESPACES, WORKLOADS, assert_snapshot, meshctl};

fn enrolled(ns: &str, name: &str) -> EnrolledPod {
    EnrolledPod {
        namespace: ns.into(),
        name: name.into(),
        uid: format!("{ns}/{name}"),
        service_account: "default".into(),
        netns: Some(PathBuf::from(format!("/var/run/netns/{name}"))),
        ips: vec!["10.1.0.9".parse().expect("ip")],
        since: 1_767_225_600,
    }
}

fn write_status(dir: &Path, node: &str, enrolled: Vec<EnrolledPod>, pending: Vec<PendingPod>) {
    let status = Status {
        node: node.into(),
        ztunnel_connected: true,
        updated: 1_767_225_600,
        enrolled,
        pending,
    };
    std::fs::create_dir_all(dir).expect("state dir");
    std::fs::write(
        dir.join("status.json"),
        serde_json::to_vec_pretty(&status).expect("json"),
    )
    .expect("status written");
}

struct Setup {
    dir: ConfigDir,
    node1: PathBuf,
    node2: PathBuf,
}

impl Setup {
    fn new() -> Self {
        let dir = ConfigDir::new(&[
            ("namespaces.yaml", NAMESPACES),
            ("workloads.yaml", WORKLOADS),
        ]);
        let node1 = dir.tmp.path().join("agent-node1");
        let node2 = dir.tmp.path().join("agent-node2");
        write_status(&node1, "node1", vec![enrolled("shop", "cart-0")], vec![]);
        write_status(&node2, "node2", vec![enrolled("shop", "web-0")], vec![]);
        Setup { dir, node1, node2 }
    }

    fn run(&self, args: &[&str]) -> common::Run {
        let mut v = vec![
            "--config-dir".to_string(),
            self.dir.arg(),
            "--cni-status".to_string(),
            self.node1.display().to_string(),
            "--cni-status".to_string(),
            self.node2.join("status.json").display().to_string(),
            "dataplane".to_string(),
        ];
        v.extend(args.iter().map(|s| s.to_string()));
        meshctl(v)
    }
}

#[test]
fn enroll_labels_the_namespace_and_reports_each_pod() {
    let s = Setup::new();
    // The agent of node1 has already picked up old-0.
    write_status(
        &s.node1,
        "node1",
        vec![enrolled("shop", "cart-0"), enrolled("legacy", "old-0")],
        vec![],
    );
    let run = s.run(&["enroll", "legacy", "--timeout", "10s"]).ok();
    assert_snapshot("dataplane_enroll.txt", &run.stdout);
    assert_snapshot(
        "dataplane_enroll_namespaces.yaml",
        &s.dir.read("namespaces.yaml"),
    );
    let ns = s.dir.snapshot();
    assert!(mesh_config::namespace_enrolled(
        ns.namespace("legacy").expect("legacy")
    ));
}

#[test]
fn enroll_waits_for_the_agent() {
    let s = Setup::new();
    let node1 = s.node1.clone();
    let writer = std::thread::spawn(move || {
        // Deliberately after meshctl started polling: it must see the later report.
        std::thread::sleep(std::time::Duration::from_millis(1200));
        write_status(
            &node1,
            "node1",
            vec![enrolled("shop", "cart-0"), enrolled("legacy", "old-0")],
            vec![],
        );
    });
    let run = s
        .run(&["enroll", "legacy", "--timeout", "20s", "-o", "json"])
        .ok();
    writer.join().expect("writer");
    let json = run.json();
    assert_eq!(json["complete"], true);
    assert_eq!(json["labelChange"], "set");
    assert_eq!(json["pods"][0]["name"], "old-0");
    assert_eq!(json["pods"][0]["status"], "enrolled");
}

#[test]
fn enroll_times_out_naming_the_pods_left() {
    let s = Setup::new();
    write_status(
        &s.node1,
        "node1",
        vec![enrolled("shop", "cart-0")],
        vec![PendingPod {
            namespace: "legacy".into(),
            name: "old-0".into(),
            reason: "ztunnel: no ztunnel is connected".into(),
        }],
    );
    let run = s
        .run(&["enroll", "legacy", "--timeout", "1s"])
        .expect_code(1);
    assert!(
        run.stdout
            .contains("old-0   node1   enrolled   pending   ztunnel: no ztunnel is connected"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr
            .contains("1 of 1 pods of namespace legacy did not report enrolled")
            && run.stderr.contains("old-0"),
        "{}",
        run.stderr
    );
}

#[test]
fn release_removes_the_label_and_waits_until_released() {
    let s = Setup::new();
    // Node agents no longer list the shop pods.
    write_status(&s.node1, "node1", vec![], vec![]);
    write_status(&s.node2, "node2", vec![], vec![]);
    let run = s.run(&["release", "shop", "--timeout", "10s"]).ok();
    assert_snapshot("dataplane_release.txt", &run.stdout);
    let text = s.dir.read("namespaces.yaml");
    assert!(!text.contains("dataplane-mode"), "{text}");
    assert!(text.starts_with("# Namespaces of the demo\n"), "{text}");
    // Releasing again: nothing to change.
    let again = s.run(&["release", "shop", "-o", "json"]).ok().json();
    assert_eq!(again["labelChange"], "unchanged");
}

#[test]
fn without_status_files_it_says_it_cannot_observe() {
    let dir = ConfigDir::new(&[
        ("namespaces.yaml", NAMESPACES),
        ("workloads.yaml", WORKLOADS),
    ]);
    let run = meshctl(["--config-dir", &dir.arg(), "dataplane", "enroll", "legacy"]).ok();
    assert!(
        run.stderr.contains("no --cni-status given"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.contains("not observed"), "{}", run.stdout);
}

#[test]
fn a_broken_status_file_is_named() {
    let s = Setup::new();
    std::fs::write(s.node1.join("status.json"), "{").expect("write");
    let run = s
        .run(&["enroll", "legacy", "--timeout", "1s"])
        .expect_code(1);
    assert!(
        run.stderr.contains("node agent status") && run.stderr.contains("agent-node1/status.json"),
        "{}",
        run.stderr
    );
}
