//! The network-namespace harness itself, without the mesh: namespaces and addressing, the
//! standard CNI plugins called like a kubelet, pod-to-pod traffic across and within nodes,
//! captures on the wire, pod deletion, and cleanup. Needs root.

mod common;

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use e2e::harness::{Cluster, PodSpec, capture::Capture, cleanup, netns};

use common::{HTTP_PORT, TCP_PORT, builder, echo_ok, with_cluster};

#[test]
fn plain_pod_networking_across_and_within_nodes() -> anyhow::Result<()> {
    let mut id = None;
    let mut work = None;
    with_cluster(builder().nodes(2).mesh(false), |c| {
        id = Some(c.id().clone());
        work = Some(c.work_dir().to_path_buf());
        for ns in [c.underlay_netns(), &c.nodes()[0].netns, &c.nodes()[1].netns] {
            ensure!(netns::exists(ns), "netns {ns} missing");
            ensure!(ns.len() <= 15, "netns name {ns} longer than 15");
        }
        let [n1, n2] = [&c.nodes()[0], &c.nodes()[1]];
        let a = c.add_pod(PodSpec::new("a", "plain").on(n1).service_account("sa-a"))?;
        let b = c.add_pod(PodSpec::new("b", "plain").on(n2).label("app", "b"))?;
        let same = c.add_pod(PodSpec::new("same", "plain").on(n1))?;
        let plan = c.plan();
        ensure!(
            a.ip.octets()[..3] == [10, plan.c, 1],
            "a got {} outside {}",
            a.ip,
            n1.pod_cidr
        );
        ensure!(
            b.ip.octets()[..3] == [10, plan.c, 2],
            "b got {} outside {}",
            b.ip,
            n2.pod_cidr
        );
        ensure!(
            c.pod_plugins(&a) == vec!["bridge".to_string()],
            "plugins called: {:?}",
            c.pod_plugins(&a)
        );

        let text = std::fs::read_to_string(c.config_dir().join("pod-plain-a.yaml"))?;
        let manifest: serde_json::Value =
            serde_saphyr::from_str(&text).context("Pod manifest is YAML")?;
        ensure!(
            manifest["status"]["podIP"] == a.ip.to_string().as_str()
                && manifest["spec"]["nodeName"] == "node1"
                && manifest["spec"]["serviceAccountName"] == "sa-a",
            "Pod manifest does not describe pod a:\n{text}"
        );
        ensure!(
            c.config_dir().join("namespace-plain.yaml").exists(),
            "no Namespace manifest"
        );

        c.start_echo_server(&b, &[TCP_PORT], &[HTTP_PORT])?;
        c.start_echo_server(&same, &[TCP_PORT], &[])?;
        echo_ok(c, &a, b.addr(TCP_PORT), "across nodes")?;
        echo_ok(c, &a, same.addr(TCP_PORT), "within a node")?;

        let (status, body) = c.http_get(&a, &format!("http://{}:{HTTP_PORT}/status/503", b.ip))?;
        ensure!(status == 503, "status {status}, body {body}");
        let json: serde_json::Value = serde_json::from_str(&body).context("echo body is JSON")?;
        ensure!(
            json["pod"] == "b" && json["path"] == "/status/503",
            "body {body}"
        );
        let remote = json["remote_addr"].as_str().unwrap_or_default();
        ensure!(
            remote.starts_with(&format!("{}:", a.ip)),
            "server saw {remote}, not pod a's IP {} (NAT?)",
            a.ip
        );

        // The wire between the nodes carries the payload in the clear.
        let payload = "plaintext-canary-7f3a9c";
        let cap = Capture::start(
            c.underlay_netns(),
            &n1.underlay_veth,
            &c.work_dir().join("plain.pcap"),
            &c.work_dir().join("tcpdump-plain.log"),
            "tcp",
        )?;
        echo_ok(c, &a, b.addr(TCP_PORT), payload)?;
        let seen = cap.stop_when(
            "the server's FIN on the wire",
            Duration::from_secs(10),
            |cap| cap.saw_fin(|p| p.src == b.ip && p.sport == TCP_PORT),
        )?;
        ensure!(
            seen.contains(payload.as_bytes()),
            "capture lacks the payload:\n{}",
            seen.summary()
        );
        let to_server = seen.flows_where(|k| k.src == a.ip && k.dst == b.ip && k.dport == TCP_PORT);
        ensure!(
            !to_server.is_empty(),
            "no a -> b:{TCP_PORT} flow captured:\n{}",
            seen.summary()
        );

        // Deleting a pod: CNI DEL releases the IP, the netns and the manifest go away.
        let lease = n1
            .dir
            .join("ipam")
            .join("mesh-pods")
            .join(same.ip.to_string());
        ensure!(lease.exists(), "no host-local lease at {}", lease.display());
        c.delete_pod(&same)?;
        ensure!(
            !netns::exists(&same.netns),
            "netns {} still exists",
            same.netns
        );
        ensure!(!lease.exists(), "IP {} not released by CNI DEL", same.ip);
        ensure!(
            !c.config_dir().join("pod-plain-same.yaml").exists(),
            "manifest left behind"
        );
        if c.echo_tcp(&a, same.addr(TCP_PORT), "gone").is_ok() {
            bail!("a deleted pod still answers");
        }
        Ok(())
    })?;
    let id = id.context("no cluster id")?;
    let left: Vec<String> = netns::list()
        .into_iter()
        .filter(|n| n.starts_with(&id.netns_prefix()))
        .collect();
    ensure!(left.is_empty(), "netns left after drop: {left:?}");
    ensure!(!cleanup::run_dir(&id).exists(), "run dir left after drop");
    let work = work.context("no work dir")?;
    ensure!(
        std::env::var_os("MESH_E2E_KEEP").is_some() || !work.exists(),
        "work dir {} left after drop",
        work.display()
    );
    Ok(())
}

#[test]
fn pods_keep_their_netns_and_the_cluster_cleans_up_after_a_panic() -> anyhow::Result<()> {
    common::init_tracing();
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let c = builder().nodes(1).mesh(false).build().expect("cluster");
        let p = c.add_pod(PodSpec::new("p", "x")).expect("pod");
        let inode = p.netns_inode().expect("inode");
        assert_eq!(inode, p.netns_inode().expect("inode again"));
        tx.send((c.id().clone(), p.netns.clone())).expect("send");
        panic!("deliberate panic with a live cluster");
    });
    ensure!(handle.join().is_err(), "the thread should have panicked");
    let (id, pod_ns) = rx.recv_timeout(Duration::from_secs(1))?;
    ensure!(
        !netns::exists(&pod_ns),
        "pod netns {pod_ns} survived the panic"
    );
    let left: Vec<String> = netns::list()
        .into_iter()
        .filter(|n| n.starts_with(&id.netns_prefix()))
        .collect();
    ensure!(left.is_empty(), "netns left after the panic: {left:?}");
    Ok(())
}

#[test]
fn stale_leftovers_are_removed_and_live_clusters_kept() -> anyhow::Result<()> {
    common::init_tracing();
    let live = builder().nodes(1).mesh(false).build()?;
    // A crashed run: a netns and a run dir with no living owner.
    let stale = e2e::harness::names::ClusterId::random();
    netns::create(&stale.underlay_netns())?;
    std::fs::create_dir_all(cleanup::run_dir(&stale))?;
    std::fs::write(cleanup::run_dir(&stale).join("owner"), "999999999 1\n")?;
    let removed = cleanup::cleanup_stale();
    ensure!(
        removed.contains(&stale),
        "stale cluster {stale} not removed (removed {removed:?})"
    );
    ensure!(
        !netns::exists(&stale.underlay_netns()),
        "stale netns survived"
    );
    ensure!(!cleanup::run_dir(&stale).exists(), "stale run dir survived");
    ensure!(
        !removed.contains(live.id()),
        "the live cluster was treated as stale"
    );
    ensure!(
        netns::exists(live.underlay_netns()),
        "the live cluster lost its underlay"
    );
    Ok(())
}

#[test]
fn missing_mesh_binaries_are_reported_with_the_fix() {
    common::init_tracing();
    let err = Cluster::builder()
        .bin_dir("/nonexistent-mesh-bins")
        .echo_bin(env!("CARGO_BIN_EXE_mesh-echo"))
        .build()
        .expect_err("no binaries there");
    let text = err.to_string();
    assert!(
        text.contains("/nonexistent-mesh-bins/") && text.contains("cargo build --workspace --bins"),
        "{text}"
    );
}
