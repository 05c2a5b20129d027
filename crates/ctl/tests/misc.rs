//! `meshctl precheck`, `version`, `completion`, and the Kubernetes mode without a cluster.

mod common;

use common::{
    ConfigDir, FakeServer, NAMESPACES, assert_snapshot, collapse_spaces, meshctl, normalize,
};
use serde_json::Value;

fn verdicts(json: &Value) -> Vec<(String, String)> {
    json["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or("").to_string(),
                c["verdict"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

struct Node {
    conf: std::path::PathBuf,
    bin: std::path::PathBuf,
}

fn node(dir: &ConfigDir, conflist: &str, plugins: &[&str]) -> Node {
    let conf = dir.tmp.path().join("net.d");
    let bin = dir.tmp.path().join("bin");
    std::fs::create_dir_all(&conf).expect("conf");
    std::fs::create_dir_all(&bin).expect("bin");
    std::fs::write(conf.join("10-bridge.conflist"), conflist).expect("conflist");
    for p in plugins {
        std::fs::write(bin.join(p), "").expect("plugin");
    }
    Node { conf, bin }
}

const CONFLIST: &str = r#"{"cniVersion": "1.0.0", "name": "mesh-net",
  "plugins": [{"type": "bridge"}, {"type": "mesh-cni"}]}"#;

#[test]
fn precheck_local_reports_each_component() {
    let dir = ConfigDir::new(&[("namespaces.yaml", NAMESPACES)]);
    let n = node(&dir, CONFLIST, &["bridge", "host-local", "loopback"]);
    let istiod = FakeServer::start();
    istiod.route("/ready", 200, "ready\n");
    let ztunnel = FakeServer::start();
    ztunnel.route("/healthz", 200, "ok\n");
    let status = dir.tmp.path().join("status.json");
    std::fs::write(
        &status,
        r#"{"node":"node1","ztunnelConnected":false,"updated":1,"enrolled":[],"pending":[]}"#,
    )
    .expect("status");
    let run = meshctl([
        "--config-dir",
        &dir.arg(),
        "--istiod-url",
        &istiod.url,
        "--ztunnel-admin",
        &format!("node1={}", ztunnel.url),
        "--cni-status",
        status.to_str().expect("utf8"),
        "precheck",
        "--cni-conf-dir",
        n.conf.to_str().expect("utf8"),
        "--cni-bin-dir",
        n.bin.to_str().expect("utf8"),
        "-o",
        "json",
    ]);
    let json = run.json();
    let v = verdicts(&json);
    let get = |name: &str| {
        v.iter()
            .find(|(n, _)| n == name)
            .map(|(_, verdict)| verdict.clone())
            .unwrap_or_else(|| panic!("no check {name}: {v:?}"))
    };
    assert_eq!(get("configuration directory"), "PASS");
    assert_eq!(get("CNI plugins"), "PASS");
    assert_eq!(get("CNI configuration"), "PASS");
    assert_eq!(get("istiod"), "PASS");
    assert_eq!(get("ztunnel node1"), "PASS");
    assert_eq!(get("node agent node1"), "WARN");
    // The exit code follows the verdicts (iptables and root depend on this machine).
    let failed = v.iter().any(|(_, verdict)| verdict == "FAIL");
    assert_eq!(run.code, i32::from(failed), "{v:?}");
    assert_eq!(json["passed"], !failed);
}

#[test]
fn precheck_local_failures_exit_1_with_fixes() {
    let dir = ConfigDir::new(&[]);
    let n = node(
        &dir,
        r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"},{"type":"istio-cni"}]}"#,
        &["bridge"],
    );
    let dead = {
        let s = FakeServer::start();
        s.url.clone()
    };
    let run = meshctl([
        "--config-dir",
        &dir.arg(),
        "--istiod-url",
        &dead,
        "precheck",
        "--cni-conf-dir",
        n.conf.to_str().expect("utf8"),
        "--cni-bin-dir",
        n.bin.to_str().expect("utf8"),
    ])
    .expect_code(1);
    let out = normalize(
        &run.stdout,
        &[
            (&dir.tmp.path().display().to_string(), "$TMP"),
            (&dead, "$ISTIOD"),
        ],
    );
    for line in [
        "FAIL  CNI plugins              host-local, loopback not found in $TMP/bin",
        "fix: apt-get install containernetworking-plugins (or pass --cni-bin-dir)",
        "FAIL  CNI configuration        $TMP/net.d/10-bridge.conflist chains Istio's istio-cni plugin",
        "FAIL  istiod                   unreachable: cannot connect to $ISTIOD/ready",
        "fix: start istiod (istiod --config-dir DIR) or correct --istiod-url",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
}

#[test]
fn version_reports_what_it_reaches() {
    let istiod = FakeServer::start();
    istiod
        .route("/ready", 200, "ready\n")
        .route("/debug/config_dump", 200, r#"{"config_dir": "/etc/mesh"}"#)
        .route(
            "/metrics",
            200,
            "# TYPE istio_build gauge\nistio_build{component=\"pilot\",tag=\"1.2.3\"} 1\n",
        );
    let ztunnel = FakeServer::start();
    ztunnel.route(
        "/config_dump",
        200,
        r#"{"config": {"node_name": "node1"}, "workloads": []}"#,
    );
    let dir = ConfigDir::new(&[]);
    let status = dir.tmp.path().join("status.json");
    std::fs::write(
        &status,
        r#"{"node":"node1","ztunnelConnected":true,"updated":1,"enrolled":[],"pending":[]}"#,
    )
    .expect("status");
    let args = |extra: &[&str]| {
        let mut v = vec![
            "--config-dir".to_string(),
            dir.arg(),
            "--istiod-url".to_string(),
            istiod.url.clone(),
            "--ztunnel-admin".to_string(),
            ztunnel.url.clone(),
            "--cni-status".to_string(),
            status.display().to_string(),
            "version".to_string(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let version = env!("CARGO_PKG_VERSION");
    let placeholders = [
        (istiod.url.as_str(), "$ISTIOD"),
        (ztunnel.url.as_str(), "$ZTUNNEL"),
        (version, "$VERSION"),
    ];
    let tmp = dir.tmp.path().display().to_string();
    let mut all = placeholders.to_vec();
    all.push((tmp.as_str(), "$TMP"));
    let table = meshctl(args(&[])).ok().stdout;
    assert_snapshot("version.txt", &collapse_spaces(&normalize(&table, &all)));
    let short = meshctl(args(&["--short"])).ok().stdout;
    assert_snapshot("version_short.txt", &normalize(&short, &all));
    let json = meshctl(args(&["-o", "json"])).ok().json();
    assert_eq!(json["client"]["version"], version);
    assert_eq!(json["controlPlane"][0]["version"], "1.2.3");
    assert_eq!(json["dataPlane"][0]["node"], "node1");
    assert_eq!(json["dataPlane"][0]["version"], Value::Null);
    let client = meshctl(["version", "--client", "--short"]).ok().stdout;
    assert_eq!(client, format!("client version: {version}\n"));
}

#[test]
fn completion_scripts_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let run = meshctl(["completion", shell]).ok();
        for word in ["meshctl", "waypoint", "ztunnel-config", "dataplane"] {
            assert!(run.stdout.contains(word), "{shell} lacks {word}");
        }
    }
    let run = meshctl(["completion", "tcsh"]).expect_code(2);
    assert!(
        run.stderr.contains("invalid value 'tcsh'"),
        "{}",
        run.stderr
    );
}

#[test]
fn kubernetes_mode_without_a_cluster_says_what_to_do() {
    let home = tempfile::tempdir().expect("home");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(["waypoint", "list"])
        .env("HOME", home.path())
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .env_remove("MESHCTL_CONFIG_DIR")
        .output()
        .expect("runs");
    assert_eq!(run.status.code(), Some(1));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("no Kubernetes cluster configured") && err.contains("--config-dir"),
        "{err}"
    );
    // Commands that need no cluster still work.
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(["waypoint", "generate", "-n", "x"])
        .env("HOME", home.path())
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("runs");
    assert_eq!(run.status.code(), Some(0));
}

#[test]
fn every_command_has_examples_in_help() {
    for args in [
        vec!["--help"],
        vec!["precheck", "--help"],
        vec!["version", "--help"],
        vec!["completion", "--help"],
        vec!["dataplane", "enroll", "--help"],
        vec!["dataplane", "release", "--help"],
        vec!["ztunnel-config", "workloads", "--help"],
        vec!["ztunnel-config", "connections", "--help"],
    ] {
        let run = meshctl(&args).ok();
        assert!(run.stdout.contains("Examples:"), "{args:?}: {}", run.stdout);
    }
}
