//! The real `cni-agent` with a fake ztunnel, real network namespaces, real CNI plugins (root):
//! pods enrolled at creation and while running, released on un-labelling and deletion,
//! enrolment surviving an agent restart, and pod creation refused without ztunnel.

mod common;

use std::time::Duration;

use cni::runtime::{self, ExecError};
use common::agent_proc::{AgentEnv, AgentProc, namespace_yaml, pod_yaml};
use common::chain::{pod_network, result_ip, runtime_conf};
use common::fake_ztunnel::{Event, FakeZtunnel};
use common::{TestNetns, mesh_lines, require_cni_plugins, require_root, wait_until};

const T: Duration = Duration::from_secs(15);

fn has_rules(ns: &TestNetns) -> bool {
    !mesh_lines(&ns.nat_rules(false)).is_empty()
}

async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_follow_their_labels_without_restart() {
    require_root();
    require_cni_plugins();
    let env = AgentEnv::new();
    env.write_manifest("ns.yaml", &namespace_yaml("shop", true));
    env.write_manifest("pod.yaml", &pod_yaml("shop", "cart-0", None, None));
    let _agent = AgentProc::start(&env, &["--skip-install"]);
    let mut zt = FakeZtunnel::start(env.zds_socket());
    assert_eq!(zt.next(T).await, Event::Connected);
    assert_eq!(zt.next(T).await, Event::SnapshotSent);

    // Created through the chained CNI: enrolled before the ADD returns.
    let ns = TestNetns::new("agt");
    let net = pod_network(env.path(), &env.plugin_socket());
    let rt = runtime_conf("sandbox-1", &ns.path, "shop", "cart-0");
    let (list, rt2) = (net.list.clone(), rt.clone());
    let result = blocking(move || runtime::add(&list, &rt2))
        .await
        .expect("chained ADD");
    let add = Event::Add {
        uid: "shop/cart-0".into(),
        netns_inode: ns.inode(),
    };
    assert_eq!(zt.next_workload(T).await, add);
    assert!(has_rules(&ns), "no redirect rules after ADD");
    let status = env.status().expect("status");
    assert!(status.ztunnel_connected);
    let pod = status
        .enrolled
        .iter()
        .find(|p| p.name == "cart-0")
        .expect("listed");
    assert_eq!(pod.service_account, "cart-0-sa");
    assert_eq!(
        pod.ips,
        vec![result_ip(&result).parse::<std::net::IpAddr>().expect("ip")]
    );

    // Namespace un-labelled: released while running.
    env.write_manifest("ns.yaml", &namespace_yaml("shop", false));
    assert_eq!(
        zt.next_workload(T).await,
        Event::Del {
            uid: "shop/cart-0".into()
        }
    );
    wait_until("the pod to be listed as released", T, || {
        !env.enrolled("shop", "cart-0")
    });
    assert!(
        !has_rules(&ns),
        "rules left after release:\n{}",
        ns.nat_rules(false)
    );

    // Labelled again: enrolled again, same namespace, no restart.
    env.write_manifest("ns.yaml", &namespace_yaml("shop", true));
    assert_eq!(zt.next_workload(T).await, add);
    wait_until("the pod to be listed as enrolled", T, || {
        env.enrolled("shop", "cart-0")
    });
    assert!(has_rules(&ns));

    // The pod opts out by its own label.
    env.write_manifest("pod.yaml", &pod_yaml("shop", "cart-0", None, Some("none")));
    assert_eq!(
        zt.next_workload(T).await,
        Event::Del {
            uid: "shop/cart-0".into()
        }
    );
    wait_until("the opted-out pod to be released", T, || {
        !env.enrolled("shop", "cart-0")
    });
    assert!(!has_rules(&ns));
    env.write_manifest("pod.yaml", &pod_yaml("shop", "cart-0", None, None));
    assert_eq!(zt.next_workload(T).await, add);

    // Deleted through the CNI.
    let list = net.list.clone();
    blocking(move || runtime::del(&list, &rt, Some(&result)))
        .await
        .expect("chained DEL");
    assert_eq!(
        zt.next_workload(T).await,
        Event::Del {
            uid: "shop/cart-0".into()
        }
    );
    assert!(env.status().expect("status").enrolled.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_pods_are_found_and_survive_an_agent_restart() {
    require_root();
    let ns = TestNetns::new("run");
    let ip = format!("10.252.{}.9", common::next_index() % 250 + 1);
    ns.add_address(&format!("{ip}/32"));
    let env = AgentEnv::new();
    env.write_manifest("ns.yaml", &namespace_yaml("shop", true));
    env.write_manifest("pod.yaml", &pod_yaml("shop", "web-0", Some(&ip), None));
    let mut agent = AgentProc::start(&env, &["--skip-install"]);
    let mut zt = FakeZtunnel::start(env.zds_socket());
    let add = Event::Add {
        uid: "shop/web-0".into(),
        netns_inode: ns.inode(),
    };
    assert_eq!(zt.next_workload(T).await, add);
    wait_until("the pod to be listed as enrolled", T, || {
        env.enrolled("shop", "web-0")
    });
    let before = mesh_lines(&ns.nat_rules(false));
    assert!(!before.is_empty());

    // Restart: the rules stay, the new agent's first snapshot names the pod, nothing doubles.
    agent.stop();
    assert!(has_rules(&ns), "stopping the agent removed the rules");
    let _agent = AgentProc::start(&env, &["--skip-install"]);
    loop {
        if zt.next(T).await == Event::Connected {
            break;
        }
    }
    assert_eq!(
        zt.next(T).await,
        add,
        "the snapshot after restart lost the pod"
    );
    assert_eq!(zt.next(T).await, Event::SnapshotSent);
    assert_eq!(
        mesh_lines(&ns.nat_rules(false)),
        before,
        "rules changed over the restart"
    );
    wait_until("the restarted agent to list the pod", T, || {
        env.enrolled("shop", "web-0")
    });

    // The pod is deleted from the configuration: released.
    env.remove_manifest("pod.yaml");
    assert_eq!(
        zt.next_workload(T).await,
        Event::Del {
            uid: "shop/web-0".into()
        }
    );
    wait_until("the deleted pod to leave the status", T, || {
        env.status().is_some_and(|s| s.enrolled.is_empty())
    });
    assert!(!has_rules(&ns));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_creation_fails_without_ztunnel() {
    require_root();
    require_cni_plugins();
    let env = AgentEnv::new();
    env.write_manifest("ns.yaml", &namespace_yaml("shop", true));
    env.write_manifest("pod.yaml", &pod_yaml("shop", "cart-9", None, None));
    let _agent = AgentProc::start(&env, &["--skip-install"]);
    let ns = TestNetns::new("nzt");
    let net = pod_network(env.path(), &env.plugin_socket());
    let rt = runtime_conf("sandbox-9", &ns.path, "shop", "cart-9");
    let (list, rt2) = (net.list.clone(), rt.clone());
    match blocking(move || runtime::add(&list, &rt2)).await {
        Err(ExecError::Plugin {
            plugin,
            code,
            details,
            ..
        }) => {
            assert_eq!((plugin.as_str(), code), ("mesh-cni", 100));
            assert!(details.contains("no ztunnel is connected"), "{details}");
        }
        other => panic!("expected the ADD to fail, got {other:?}"),
    }
    assert!(
        !has_rules(&ns),
        "rules installed for a pod ztunnel does not serve"
    );
    let status = env.status().expect("status");
    assert!(!status.ztunnel_connected);
    let pending = status
        .pending
        .iter()
        .find(|p| p.name == "cart-9")
        .expect("pending");
    assert!(
        pending.reason.contains("no ztunnel is connected"),
        "{}",
        pending.reason
    );
    let list = net.list.clone();
    blocking(move || runtime::del(&list, &rt, None))
        .await
        .expect("DEL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installs_into_the_cni_configuration_and_cleans_up() {
    let env = AgentEnv::new();
    let bin = env.path().join("opt/cni/bin");
    let conf_dir = env.path().join("etc/cni/net.d");
    std::fs::create_dir_all(&conf_dir).expect("mkdir");
    let original =
        r#"{"cniVersion":"1.0.0","name":"podnet","plugins":[{"type":"bridge","bridge":"cni0"}]}"#;
    let conflist = conf_dir.join("10-podnet.conflist");
    std::fs::write(&conflist, original).expect("write conflist");
    let plugin = env!("CARGO_BIN_EXE_mesh-cni");
    let mut agent = AgentProc::start(
        &env,
        &[
            "--cni-bin-dir",
            bin.to_str().expect("utf-8"),
            "--cni-conf-dir",
            conf_dir.to_str().expect("utf-8"),
            "--plugin-binary",
            plugin,
            "--cleanup-on-exit",
        ],
    );
    let types = || -> Vec<String> {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&conflist).unwrap_or_default())
                .unwrap_or_default();
        v["plugins"]
            .as_array()
            .map(|p| {
                p.iter()
                    .map(|p| p["type"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    wait_until("mesh-cni to be chained", T, || {
        types() == ["bridge", "mesh-cni"]
    });
    assert_eq!(
        std::fs::read(bin.join("mesh-cni")).expect("installed binary"),
        std::fs::read(plugin).expect("built binary")
    );
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&conflist).expect("read")).expect("json");
    assert_eq!(
        v["plugins"][1]["agentSocket"],
        env.plugin_socket().to_str().expect("utf-8")
    );

    agent.stop();
    assert_eq!(std::fs::read_to_string(&conflist).expect("read"), original);
    assert!(!bin.join("mesh-cni").exists());
}
