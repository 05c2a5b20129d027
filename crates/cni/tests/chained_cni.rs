//! A real chained invocation, as a kubelet makes it (root): Debian's `loopback`, then the
//! `bridge` + `host-local` list with `mesh-cni` last, in a fresh network namespace, with a fake
//! node agent.

mod common;

use cni::api::{PluginCommand, PluginResponse};
use cni::runtime::{self, ExecError};
use common::chain::{pod_network, result_ip, runtime_conf};
use common::fake_agent::FakeAgent;
use common::{TestNetns, require_cni_plugins, require_root};

#[test]
fn chained_add_check_del() {
    require_root();
    require_cni_plugins();
    let ns = TestNetns::new("chn");
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = FakeAgent::start(dir.path(), PluginResponse::Enrolled);
    let net = pod_network(dir.path(), &agent.socket);
    let rt = runtime_conf("sandbox-1", &ns.path, "shop", "cart-0");

    runtime::add(&net.loopback, &rt).expect("loopback ADD");
    let result = runtime::add(&net.list, &rt).expect("chained ADD");
    // mesh-cni printed the bridge's result: the pod's address and interfaces.
    let ip = result_ip(&result);
    assert!(ip.starts_with(&net.prefix), "{result}");
    assert_eq!(result["cniVersion"], "1.0.0");
    let sandbox_ifs: Vec<&str> = result["interfaces"]
        .as_array()
        .expect("interfaces")
        .iter()
        .filter(|i| i["sandbox"].as_str() == Some(ns.path.to_str().expect("utf-8")))
        .filter_map(|i| i["name"].as_str())
        .collect();
    assert_eq!(sandbox_ifs, ["eth0"], "{result}");
    let addrs = String::from_utf8_lossy(&ns.exec(&["ip", "-o", "addr", "show", "eth0"]).stdout)
        .into_owned();
    assert!(addrs.contains(&format!("{ip}/24")), "{addrs}");

    let reqs = agent.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].command, PluginCommand::Add);
    assert_eq!(
        (reqs[0].pod_namespace.as_str(), reqs[0].pod_name.as_str()),
        ("shop", "cart-0")
    );
    assert_eq!(reqs[0].container_id, "sandbox-1");
    assert_eq!(reqs[0].netns.as_deref(), Some(ns.path.as_path()));
    assert_eq!(reqs[0].ifname.as_deref(), Some("eth0"));
    assert_eq!(
        reqs[0].ips,
        vec![ip.parse::<std::net::IpAddr>().expect("ip")]
    );

    runtime::check(&net.list, &rt, &result).expect("chained CHECK");
    assert_eq!(
        agent.requests().last().map(|r| r.command),
        Some(PluginCommand::Check)
    );

    runtime::del(&net.list, &rt, Some(&result)).expect("chained DEL");
    runtime::del(&net.loopback, &rt, None).expect("loopback DEL");
    assert_eq!(
        agent.requests().last().map(|r| r.command),
        Some(PluginCommand::Del)
    );
    let links = String::from_utf8_lossy(&ns.exec(&["ip", "-o", "link"]).stdout).into_owned();
    assert!(!links.contains("eth0"), "{links}");
    // DEL again, as runtimes do on retries: still fine.
    runtime::del(&net.list, &rt, Some(&result)).expect("repeated DEL");
}

#[test]
fn a_refusing_agent_fails_the_pod() {
    require_root();
    require_cni_plugins();
    let ns = TestNetns::new("ref");
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = FakeAgent::start(
        dir.path(),
        PluginResponse::Error {
            message: "ztunnel: no ztunnel is connected".into(),
        },
    );
    let net = pod_network(dir.path(), &agent.socket);
    let rt = runtime_conf("sandbox-2", &ns.path, "shop", "cart-1");
    match runtime::add(&net.list, &rt) {
        Err(ExecError::Plugin {
            plugin,
            code,
            details,
            ..
        }) => {
            assert_eq!(plugin, "mesh-cni");
            assert_eq!(code, 100);
            assert_eq!(details, "ztunnel: no ztunnel is connected");
        }
        other => panic!("expected mesh-cni to fail the ADD, got {other:?}"),
    }
    // The runtime cleans up after a failed ADD.
    runtime::del(&net.list, &rt, None).expect("DEL after failed ADD");
    // The plugin waits for the agent's answer, so the DEL is recorded once it returns.
    assert_eq!(
        agent.requests().last().map(|r| r.command),
        Some(PluginCommand::Del)
    );
}
