//! The `mesh-cni` binary as a container runtime runs it: `CNI_*` environment, configuration on
//! stdin, result or error JSON on stdout, exit code.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use cni::api::{PluginCommand, PluginResponse};
use common::fake_agent::FakeAgent;
use serde_json::{Value, json};

/// A bridge plugin result, with spacing and key order a re-encoding would change.
const PREV_RESULT: &str = r#"{"cniVersion":"1.0.0",  "interfaces":[{"name":"cni0","mac":"6e:1f:00:00:00:01"},{"name":"veth1a2b","mac":"6e:1f:00:00:00:02"},{"name":"eth0","mac":"6e:1f:00:00:00:03","sandbox":"/var/run/netns/pod-1"}],"ips":[{"interface":2,"address":"10.1.0.5/24","gateway":"10.1.0.1"}],"routes":[{"dst":"0.0.0.0/0"}],"dns":{}}"#;

struct Outcome {
    code: i32,
    stdout: String,
}

impl Outcome {
    fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?}", self.stdout))
    }

    /// Asserts a CNI error result with `code` and returns its `msg` and `details`.
    fn error(&self, code: u64) -> (String, String) {
        assert_ne!(self.code, 0, "expected a failure, stdout {:?}", self.stdout);
        let v = self.json();
        assert_eq!(v["code"], code, "{v}");
        assert!(v["cniVersion"].is_string(), "{v}");
        (
            v["msg"].as_str().expect("msg").to_string(),
            v["details"].as_str().expect("details").to_string(),
        )
    }
}

fn plugin(env: &[(&str, &str)], stdin: &str) -> Outcome {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mesh-cni"))
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mesh-cni");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    Outcome {
        code: out.status.code().expect("exit code"),
        stdout: String::from_utf8(out.stdout).expect("utf-8"),
    }
}

const POD_ARGS: &str = "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=cart-0;\
                        K8S_POD_INFRA_CONTAINER_ID=c0ffee;K8S_POD_UID=uid-cart-0";

fn kubelet_env<'a>(command: &'a str, args: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", "c0ffee"),
        ("CNI_NETNS", "/var/run/netns/pod-1"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", args),
        ("CNI_PATH", "/opt/cni/bin"),
    ]
}

fn conf(socket: &std::path::Path, prev: Option<&str>) -> String {
    let socket = serde_json::to_string(socket).expect("path");
    match prev {
        Some(p) => format!(
            r#"{{"cniVersion":"1.0.0","name":"podnet","type":"mesh-cni","agentSocket":{socket},"prevResult":{p}}}"#
        ),
        None => format!(
            r#"{{"cniVersion":"1.0.0","name":"podnet","type":"mesh-cni","agentSocket":{socket}}}"#
        ),
    }
}

#[test]
fn version_lists_the_supported_versions() {
    let out = plugin(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"1.0.0"}"#);
    assert_eq!(out.code, 0);
    let v = out.json();
    assert_eq!(v["cniVersion"], "1.0.0");
    let versions = v["supportedVersions"].as_array().expect("list");
    for want in ["0.3.1", "0.4.0", "1.0.0"] {
        assert!(versions.contains(&json!(want)), "{v}");
    }
}

#[test]
fn add_reports_the_pod_and_passes_prev_result_through() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = FakeAgent::start(dir.path(), PluginResponse::Enrolled);
    let out = plugin(
        &kubelet_env("ADD", POD_ARGS),
        &conf(&agent.socket, Some(PREV_RESULT)),
    );
    assert_eq!(out.code, 0, "stdout {:?}", out.stdout);
    assert_eq!(out.stdout.trim_end(), PREV_RESULT);

    let reqs = agent.requests();
    assert_eq!(reqs.len(), 1);
    let req = &reqs[0];
    assert_eq!(req.command, PluginCommand::Add);
    assert_eq!(
        (req.pod_namespace.as_str(), req.pod_name.as_str()),
        ("shop", "cart-0")
    );
    assert_eq!(req.pod_uid.as_deref(), Some("uid-cart-0"));
    assert_eq!(req.container_id, "c0ffee");
    assert_eq!(
        req.netns.as_deref(),
        Some(std::path::Path::new("/var/run/netns/pod-1"))
    );
    assert_eq!(
        req.ips,
        vec!["10.1.0.5".parse::<std::net::IpAddr>().expect("ip")]
    );
}

#[test]
fn add_of_a_pod_outside_the_mesh_passes_through() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = FakeAgent::start(dir.path(), PluginResponse::NotEnrolled);
    let out = plugin(
        &kubelet_env("ADD", POD_ARGS),
        &conf(&agent.socket, Some(PREV_RESULT)),
    );
    assert_eq!(out.code, 0);
    assert_eq!(out.stdout.trim_end(), PREV_RESULT);
}

#[test]
fn add_fails_when_the_agent_cannot_enrol() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = FakeAgent::start(
        dir.path(),
        PluginResponse::Error {
            message: "ztunnel: no ztunnel is connected".into(),
        },
    );
    let out = plugin(
        &kubelet_env("ADD", POD_ARGS),
        &conf(&agent.socket, Some(PREV_RESULT)),
    );
    let (msg, details) = out.error(100);
    assert!(msg.contains("shop/cart-0"), "{msg}");
    assert_eq!(details, "ztunnel: no ztunnel is connected");
}

#[test]
fn add_fails_when_the_agent_is_unreachable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nobody.sock");
    let out = plugin(
        &kubelet_env("ADD", POD_ARGS),
        &conf(&missing, Some(PREV_RESULT)),
    );
    let (msg, details) = out.error(11);
    assert!(msg.contains("agent"), "{msg}");
    assert!(details.contains("nobody.sock"), "{details}");
}

#[test]
fn pods_without_kubernetes_arguments_or_excluded_pass_through() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nobody.sock");
    let out = plugin(
        &kubelet_env("ADD", "IgnoreUnknown=1"),
        &conf(&missing, Some(PREV_RESULT)),
    );
    assert_eq!(out.code, 0, "{:?}", out.stdout);
    assert_eq!(out.stdout.trim_end(), PREV_RESULT);

    let socket = serde_json::to_string(&missing).expect("path");
    let excluded = format!(
        r#"{{"cniVersion":"1.0.0","name":"podnet","type":"mesh-cni","agentSocket":{socket},
            "excludeNamespaces":["shop"],"prevResult":{PREV_RESULT}}}"#
    );
    let out = plugin(&kubelet_env("ADD", POD_ARGS), &excluded);
    assert_eq!(out.code, 0, "{:?}", out.stdout);
    assert_eq!(out.stdout.trim_end(), PREV_RESULT);
}

#[test]
fn bad_input_gets_the_specified_error_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("agent.sock");
    let good = conf(&sock, Some(PREV_RESULT));

    let mut env = kubelet_env("ADD", POD_ARGS);
    env.retain(|(k, _)| *k != "CNI_COMMAND");
    let (msg, _) = plugin(&env, &good).error(4);
    assert!(msg.contains("CNI_COMMAND"), "{msg}");

    let (msg, details) = plugin(&kubelet_env("FROB", POD_ARGS), &good).error(4);
    assert!(
        msg.contains("CNI_COMMAND") && details.contains("FROB"),
        "{msg} {details}"
    );

    let (msg, _) = plugin(&kubelet_env("ADD", POD_ARGS), "{\"cniVersion\": ").error(6);
    assert!(msg.contains("decode"), "{msg}");

    let (msg, details) = plugin(&kubelet_env("ADD", POD_ARGS), &conf(&sock, None)).error(7);
    assert!(
        msg.contains("prevResult") && details.contains("chained"),
        "{msg} {details}"
    );

    let old = r#"{"cniVersion":"0.1.0","name":"podnet","type":"mesh-cni"}"#;
    plugin(&kubelet_env("ADD", POD_ARGS), old).error(1);

    let mut env = kubelet_env("ADD", POD_ARGS);
    env.retain(|(k, _)| *k != "CNI_NETNS");
    let (msg, _) = plugin(&env, &good).error(4);
    assert!(msg.contains("CNI_NETNS"), "{msg}");

    let (_, details) = plugin(&kubelet_env("ADD", "K8S_POD_NAME"), &good).error(6);
    assert!(details.contains("K8S_POD_NAME"), "{details}");
}

#[test]
fn errors_carry_the_configuration_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = serde_json::to_string(&dir.path().join("agent.sock")).expect("path");
    let conf = format!(
        r#"{{"cniVersion":"0.4.0","name":"podnet","type":"mesh-cni","agentSocket":{sock}}}"#
    );
    let out = plugin(&kubelet_env("ADD", POD_ARGS), &conf);
    out.error(7);
    assert_eq!(out.json()["cniVersion"], "0.4.0");
}

#[test]
fn del_is_reported_and_never_fails_on_the_agent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = FakeAgent::start(dir.path(), PluginResponse::NotEnrolled);
    for _ in 0..2 {
        let out = plugin(&kubelet_env("DEL", POD_ARGS), &conf(&agent.socket, None));
        assert_eq!(out.code, 0, "{:?}", out.stdout);
        assert_eq!(out.stdout, "");
    }
    let reqs = agent.requests();
    assert_eq!(reqs.len(), 2);
    assert!(reqs.iter().all(|r| r.command == PluginCommand::Del));

    let missing = dir.path().join("nobody.sock");
    let out = plugin(&kubelet_env("DEL", POD_ARGS), &conf(&missing, None));
    assert_eq!(
        out.code, 0,
        "DEL must succeed without the agent: {:?}",
        out.stdout
    );
}

#[test]
fn check_reports_what_the_agent_finds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ok = FakeAgent::start(dir.path(), PluginResponse::Enrolled);
    let out = plugin(
        &kubelet_env("CHECK", POD_ARGS),
        &conf(&ok.socket, Some(PREV_RESULT)),
    );
    assert_eq!(out.code, 0, "{:?}", out.stdout);
    assert_eq!(out.stdout, "");
    assert_eq!(ok.requests()[0].command, PluginCommand::Check);
    drop(ok);

    let dir = tempfile::tempdir().expect("tempdir");
    let bad = FakeAgent::start(
        dir.path(),
        PluginResponse::Error {
            message: "the redirect rules are missing".into(),
        },
    );
    let out = plugin(
        &kubelet_env("CHECK", POD_ARGS),
        &conf(&bad.socket, Some(PREV_RESULT)),
    );
    let (_, details) = out.error(100);
    assert_eq!(details, "the redirect rules are missing");
}

#[test]
fn status_and_gc_of_cni_1_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = FakeAgent::start(dir.path(), PluginResponse::NotEnrolled);
    let conf_for = |sock: &std::path::Path| {
        let sock = serde_json::to_string(sock).expect("path");
        format!(
            r#"{{"cniVersion":"1.1.0","name":"podnet","type":"mesh-cni","agentSocket":{sock}}}"#
        )
    };
    let out = plugin(&[("CNI_COMMAND", "STATUS")], &conf_for(&agent.socket));
    assert_eq!((out.code, out.stdout.as_str()), (0, ""));
    let out = plugin(
        &[("CNI_COMMAND", "STATUS")],
        &conf_for(&dir.path().join("nobody.sock")),
    );
    let (msg, _) = out.error(50);
    assert!(msg.contains("not reachable"), "{msg}");
    let out = plugin(&[("CNI_COMMAND", "GC")], &conf_for(&agent.socket));
    assert_eq!((out.code, out.stdout.as_str()), (0, ""));
}
