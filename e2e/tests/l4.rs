//! L4 end-to-end tests of the ambient mesh on the local network-namespace cluster: enrolment of
//! running pods, mutual TLS on the wire, identities in metrics, L4 authorization, and the data
//! plane surviving istiod and ztunnel restarts. Needs root; the mesh binaries must be built
//! (`cargo build --workspace --bins`).

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use e2e::harness::capture::Capture;
use e2e::harness::pcap::{self, looks_like_tls};
use e2e::harness::{
    AMBIENT, Cluster, DATAPLANE_MODE, Pod, PodSpec, ServiceSpec, eventually, netns,
};

use common::*;

const HBONE_PORT: u16 = 15008;

/// A pod running the echo server (TCP and HTTP) labelled `app: <name>`.
fn server(c: &Cluster, name: &str, ns: &str, node: usize, sa: &str) -> anyhow::Result<Pod> {
    let p = c.add_pod(
        PodSpec::new(name, ns)
            .on(&c.nodes()[node])
            .service_account(sa)
            .label("app", name)
            .port(TCP_PORT)
            .port(HTTP_PORT),
    )?;
    c.start_echo_server(&p, &[TCP_PORT], &[HTTP_PORT])?;
    Ok(p)
}

fn client(c: &Cluster, name: &str, ns: &str, node: usize, sa: &str) -> anyhow::Result<Pod> {
    Ok(c.add_pod(
        PodSpec::new(name, ns)
            .on(&c.nodes()[node])
            .service_account(sa)
            .label("app", name),
    )?)
}

fn enrolled_namespace(c: &Cluster, ns: &str) -> anyhow::Result<()> {
    Ok(c.create_namespace(ns, &[(DATAPLANE_MODE, AMBIENT)])?)
}

#[test]
fn running_pods_talk_plaintext_then_mutual_tls_after_enrolment() -> anyhow::Result<()> {
    with_mesh(|c| {
        let ns = "l4-enrol";
        let cl = client(c, "client", ns, 0, "client")?;
        let remote = server(c, "remote", ns, 1, "remote")?;
        let local = server(c, "local", ns, 0, "local")?;
        echo_ok(c, &cl, remote.addr(TCP_PORT), "plain across nodes")?;
        echo_ok(c, &cl, local.addr(TCP_PORT), "plain within a node")?;
        let inodes = [
            cl.netns_inode()?,
            remote.netns_inode()?,
            local.netns_inode()?,
        ];
        for dst in [&remote, &local] {
            let before = c.mtls_opened(&cl, dst)?;
            ensure!(
                before == 0.0,
                "{} ztunnel counted {before} mTLS connections before enrolment",
                dst.node
            );
        }

        c.label_namespace(ns, DATAPLANE_MODE, Some(AMBIENT))?;
        eventually_mtls(c, &cl, &remote, "mtls across nodes").context("cross-node")?;
        eventually_mtls(c, &cl, &local, "mtls within a node").context("same node")?;
        let after = [
            cl.netns_inode()?,
            remote.netns_inode()?,
            local.netns_inode()?,
        ];
        ensure!(
            inodes == after,
            "pod network namespaces were recreated: {inodes:?} -> {after:?}"
        );
        Ok(())
    })
}

#[test]
fn enrolment_and_release_of_running_pods_keep_their_netns() -> anyhow::Result<()> {
    with_mesh(|c| {
        let ns = "l4-release";
        let cl = client(c, "client", ns, 0, "client")?;
        let srv = server(c, "server", ns, 1, "server")?;
        let base_ports = c.listening_ports(&srv)?;
        ensure!(
            base_ports == vec![HTTP_PORT, TCP_PORT],
            "un-enrolled server listens on {base_ports:?}"
        );
        let base_rules = c.netns_rules(&srv)?;
        let base_client_rules = c.netns_rules(&cl)?;
        let inodes = (cl.netns_inode()?, srv.netns_inode()?);

        c.label_namespace(ns, DATAPLANE_MODE, Some(AMBIENT))?;
        c.wait_enrolled(&srv, &base_rules, PROPAGATION)?;
        c.wait_enrolled(&cl, &base_client_rules, PROPAGATION)?;
        eventually_mtls(c, &cl, &srv, "enrolled")?;

        c.label_namespace(ns, DATAPLANE_MODE, None)?;
        c.wait_released(&srv, &[HTTP_PORT, TCP_PORT], &base_rules, PROPAGATION)?;
        c.wait_released(&cl, &[], &base_client_rules, PROPAGATION)?;
        ensure!(
            inodes == (cl.netns_inode()?, srv.netns_inode()?),
            "a pod netns was recreated"
        );
        // Released pods talk directly again; the destination ztunnel sees nothing of it.
        let before = c.mtls_opened(&cl, &srv)?;
        echo_ok(c, &cl, srv.addr(TCP_PORT), "released")?;
        let (status, body) = c.http_get(&cl, &format!("http://{}:{HTTP_PORT}/released", srv.ip))?;
        ensure!(
            status == 200 && body.contains("\"pod\": \"server\""),
            "HTTP {status}: {body}"
        );
        ensure!(
            c.mtls_opened(&cl, &srv)? == before,
            "a released pod's connection was still counted as mTLS"
        );
        Ok(())
    })
}

#[test]
fn wire_between_nodes_carries_only_tls_to_15008() -> anyhow::Result<()> {
    with_mesh(|c| {
        let ns = "l4-wire";
        enrolled_namespace(c, ns)?;
        let cl = client(c, "client", ns, 0, "client")?;
        let srv = server(c, "server", ns, 1, "server")?;
        let probe = client(c, "probe", ns, 0, "probe")?;
        // Until the source ztunnel knows the destination, it may pass traffic through as is
        // (as Istio's does for unknown destinations): converge first, then capture.
        eventually_mtls(c, &cl, &srv, "warm-up")?;
        c.wait_enrolled(&probe, &[], PROPAGATION)?;
        let n1 = &c.nodes()[0];
        let cap = Capture::start(
            c.underlay_netns(),
            &n1.underlay_veth,
            &c.work_dir().join("wire.pcap"),
            &c.work_dir().join("tcpdump-wire.log"),
            "tcp",
        )?;
        let payload = "super-secret-payload-4b1d9e";
        echo_ok(c, &probe, srv.addr(TCP_PORT), payload)?;
        let (status, _) =
            c.http_get(&probe, &format!("http://{}:{HTTP_PORT}/{payload}", srv.ip))?;
        ensure!(status == 200, "HTTP through the mesh answered {status}");
        let seen = cap.stop()?;
        let plan = c.plan();
        let pod_flows = seen.flows_between(|ip| plan.is_pod_ip(ip));
        let summary = seen.summary();
        ensure!(
            !seen.contains(payload.as_bytes()),
            "the plaintext payload crossed the wire:\n{summary}"
        );
        ensure!(
            !pcap::contains(&seen.raw, b"HTTP/1.1"),
            "HTTP/1.1 text visible on the wire:\n{summary}"
        );
        for (k, f) in &pod_flows {
            ensure!(
                f.payload.is_empty() || k.dport == HBONE_PORT || k.sport == HBONE_PORT,
                "pod-to-pod bytes outside HBONE: {k} carried {} bytes:\n{summary}",
                f.payload.len()
            );
        }
        let hbone: Vec<_> = pod_flows
            .iter()
            .filter(|(k, f)| k.dport == HBONE_PORT && k.src == probe.ip && !f.payload.is_empty())
            .collect();
        ensure!(
            !hbone.is_empty(),
            "no bytes from the probe pod to port {HBONE_PORT}:\n{summary}"
        );
        for (k, f) in &hbone {
            ensure!(
                looks_like_tls(&f.payload),
                "bytes of {k} do not look like TLS:\n{summary}"
            );
            // A connection opened during the capture must start with a TLS handshake record.
            ensure!(
                !f.syn || f.payload.first() == Some(&22),
                "{k} did not start with a TLS handshake:\n{summary}"
            );
        }
        Ok(())
    })
}

#[test]
fn authorization_policies_deny_and_allow_by_principal() -> anyhow::Result<()> {
    with_mesh(|c| {
        let ns = "l4-authz";
        enrolled_namespace(c, ns)?;
        let srv = server(c, "server", ns, 1, "server")?;
        let a = client(c, "client-a", ns, 0, "a")?;
        let b = client(c, "client-b", ns, 0, "b")?;
        let third = client(c, "client-c", ns, 1, "c")?;
        let outsider = c.add_pod(
            PodSpec::new("outsider", ns)
                .on(&c.nodes()[0])
                .label(DATAPLANE_MODE, "none"),
        )?;
        for p in [&a, &b, &third] {
            eventually_mtls(c, p, &srv, "before any policy")?;
        }
        eventually_echo(
            c,
            &outsider,
            srv.addr(TCP_PORT),
            "no identity, no policy",
            PROPAGATION,
        )?;
        let principal = |sa: &str| format!("{}/ns/{ns}/sa/{sa}", c.trust_domain());

        c.apply_yaml(
            "deny-a",
            &policy_yaml("deny-a", ns, "DENY", "server", &[principal("a")]),
        )?;
        let why = eventually_denied(c, &a, srv.addr(TCP_PORT), "denied by principal")?;
        tracing::info!("client-a refused as expected: {why}");
        echo_ok(c, &b, srv.addr(TCP_PORT), "b is not denied")?;
        echo_ok(c, &third, srv.addr(TCP_PORT), "c is not denied")?;

        c.delete_yaml("deny-a")?;
        eventually_echo(c, &a, srv.addr(TCP_PORT), "deny removed", PROPAGATION)?;

        c.apply_yaml(
            "allow-b",
            &policy_yaml("allow-b", ns, "ALLOW", "server", &[principal("b")]),
        )?;
        eventually_denied(c, &third, srv.addr(TCP_PORT), "c is not allowed")
            .context("third pod")?;
        eventually_denied(c, &a, srv.addr(TCP_PORT), "a is not allowed").context("client-a")?;
        // No identity at all (plaintext from outside the mesh) fails a principal rule too.
        eventually_denied(c, &outsider, srv.addr(TCP_PORT), "no identity").context("outsider")?;
        echo_ok(c, &b, srv.addr(TCP_PORT), "b is allowed")?;
        Ok(())
    })
}

#[test]
fn data_plane_keeps_working_while_istiod_is_down() -> anyhow::Result<()> {
    with_mesh(|c| {
        let ns = "l4-istiod";
        enrolled_namespace(c, ns)?;
        let cl = client(c, "client", ns, 0, "client")?;
        let srv = server(c, "server", ns, 1, "server")?;
        eventually_mtls(c, &cl, &srv, "before the restart")?;

        let stop = AtomicBool::new(false);
        let (ok, failed) = (AtomicU32::new(0), AtomicU32::new(0));
        let first_failure = std::sync::Mutex::new(None::<String>);
        std::thread::scope(|s| -> anyhow::Result<()> {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    match c.echo_tcp(&cl, srv.addr(TCP_PORT), "background") {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            if let Ok(mut first) = first_failure.lock() {
                                first.get_or_insert(e.to_string());
                            }
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            });
            let result = (|| -> anyhow::Result<()> {
                c.stop_istiod()?;
                ensure!(
                    c.istiod_ready().is_err(),
                    "istiod still answers after being stopped"
                );
                for i in 0..5 {
                    echo_ok(c, &cl, srv.addr(TCP_PORT), &format!("istiod down #{i}"))
                        .context("new connection while istiod is down")?;
                }
                eventually_mtls(c, &cl, &srv, "istiod down")
                    .context("mTLS while istiod is down")?;
                c.start_istiod()?;
                c.wait_ready().context("after restarting istiod")?;
                Ok(())
            })();
            stop.store(true, Ordering::Relaxed);
            result
        })?;
        let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
        ensure!(ok > 0, "the background traffic never succeeded");
        ensure!(
            failed == 0,
            "{failed} of {} background connections failed across the istiod restart; first: {:?}",
            ok + failed,
            first_failure.lock().ok().and_then(|f| f.clone())
        );
        // The restarted istiod serves new configuration: a new pod joins and talks.
        let late = client(c, "late", ns, 1, "late")?;
        eventually_mtls(c, &late, &srv, "after the restart")?;
        Ok(())
    })
}

#[test]
fn ztunnel_restart_reconnects_pods_without_restarting_them() -> anyhow::Result<()> {
    with_mesh(|c| {
        let ns = "l4-ztunnel";
        enrolled_namespace(c, ns)?;
        let cl = client(c, "client", ns, 0, "client")?;
        let srv = server(c, "server", ns, 1, "server")?;
        eventually_mtls(c, &cl, &srv, "before the restarts")?;
        let inodes = (cl.netns_inode()?, srv.netns_inode()?);
        for node in ["node1", "node2"] {
            c.restart_ztunnel(node)?;
            let n = c.node(node)?;
            eventually(
                &format!("{node} ztunnel ready again"),
                Duration::from_secs(60),
                || c.ztunnel_ready(n),
            )?;
            eventually_echo(
                c,
                &cl,
                srv.addr(TCP_PORT),
                &format!("after restarting {node} ztunnel"),
                Duration::from_secs(30),
            )
            .with_context(|| format!("traffic after restarting the {node} ztunnel"))?;
            eventually_mtls(c, &cl, &srv, &format!("mtls after restarting {node}"))?;
            for p in [&cl, &srv] {
                ensure!(
                    ztunnel_in_pod(c, p)?,
                    "no ztunnel listeners in {} after the {node} restart",
                    p.key()
                );
            }
        }
        ensure!(
            inodes == (cl.netns_inode()?, srv.netns_inode()?),
            "a pod netns was recreated"
        );
        Ok(())
    })
}

#[test]
fn deleted_pod_leaves_no_netns_and_no_workload_behind() -> anyhow::Result<()> {
    with_mesh(|c| {
        let ns = "l4-delete";
        enrolled_namespace(c, ns)?;
        let srv = server(c, "server", ns, 1, "server")?;
        let victim = client(c, "victim", ns, 0, "victim")?;
        let cl = client(c, "client", ns, 0, "client")?;
        c.wait_enrolled(&victim, &[], PROPAGATION)?;
        eventually_mtls(c, &victim, &srv, "before deletion")?;
        let n1 = c.node(&victim.node)?;
        let quoted_ip = format!("\"{}\"", victim.ip);
        let dump = c.ztunnel_config_dump(n1)?.to_string();
        ensure!(
            dump.contains(&victim.uid) || dump.contains(&quoted_ip),
            "{} ztunnel config_dump never knew the victim ({} / {})",
            n1.name,
            victim.uid,
            victim.ip
        );

        c.delete_pod(&victim)?;
        ensure!(!netns::exists(&victim.netns), "victim netns still exists");
        eventually(
            &format!("{} ztunnel to forget the deleted pod", n1.name),
            PROPAGATION,
            || {
                let dump = c
                    .ztunnel_config_dump(n1)
                    .map_err(|e| e.to_string())?
                    .to_string();
                if dump.contains(&victim.uid) || dump.contains(&quoted_ip) {
                    Err(format!(
                        "config_dump still mentions {} / {}",
                        victim.uid, victim.ip
                    ))
                } else {
                    Ok(())
                }
            },
        )?;
        // The rest of the node is unaffected.
        eventually_mtls(c, &cl, &srv, "after deletion")?;
        if c.echo_tcp(&cl, victim.addr(TCP_PORT), "to the deleted pod")
            .is_ok()
        {
            bail!("the deleted pod's address still answers");
        }
        Ok(())
    })
}

#[test]
fn service_vip_reaches_its_pods_over_the_mesh() -> anyhow::Result<()> {
    with_mesh(|c| {
        let ns = "l4-service";
        enrolled_namespace(c, ns)?;
        let cl = client(c, "client", ns, 0, "client")?;
        let srv = server(c, "server", ns, 1, "server")?;
        let svc = c.add_service(
            ServiceSpec::new("echo", ns)
                .select("app", "server")
                .port(80, TCP_PORT)
                .port(8000, HTTP_PORT),
        )?;
        let before = c.mtls_opened(&cl, &srv)?;
        eventually_echo(c, &cl, svc.addr(80), "via the service VIP", PROPAGATION)
            .with_context(|| format!("{} ({})", svc.hostname(), svc.vip))?;
        eventually(
            "the VIP connection to be counted as mutual TLS",
            Duration::from_secs(10),
            || match c.mtls_opened(&cl, &srv) {
                Ok(now) if now > before => Ok(()),
                Ok(now) => Err(format!("still {now}")),
                Err(e) => Err(e.to_string()),
            },
        )?;
        let (status, body) = c.http_get(&cl, &format!("http://{}:8000/status/503", svc.vip))?;
        ensure!(status == 503, "HTTP via the VIP answered {status}: {body}");
        ensure!(
            body.contains("\"pod\": \"server\""),
            "answered by someone else: {body}"
        );
        Ok(())
    })
}

#[test]
fn an_enrolled_pod_has_its_certificate_before_its_first_connection() -> anyhow::Result<()> {
    with_mesh(|c| {
        let ns = "l4-cert";
        enrolled_namespace(c, ns)?;
        let quiet = client(c, "quiet", ns, 0, "quiet-sa")?;
        c.wait_enrolled(&quiet, &[], PROPAGATION)?;
        let n1 = c.node(&quiet.node)?;
        let want = format!("spiffe://cluster.local/ns/{ns}/sa/quiet-sa");
        // No traffic from or to the pod: the certificate comes from enrolment alone.
        let cert = eventually(
            &format!("{} ztunnel to hold a certificate for {want}", n1.name),
            PROPAGATION,
            || {
                let dump = c.ztunnel_config_dump(n1).map_err(|e| e.to_string())?;
                let certs = dump["certificates"].as_array().cloned().unwrap_or_default();
                certs
                    .iter()
                    .find(|cert| cert["identity"] == want.as_str() && cert["state"] == "Available")
                    .cloned()
                    .ok_or_else(|| format!("certificates: {certs:?}"))
            },
        )?;
        ensure!(
            cert["expires_in_seconds"].as_i64().unwrap_or(0) > 0,
            "the certificate is not valid: {cert}"
        );
        Ok(())
    })
}
