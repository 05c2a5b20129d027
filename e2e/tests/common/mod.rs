//! Shared setup of the network-namespace end-to-end tests.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Once;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use e2e::harness::{Cluster, ClusterBuilder, HarnessError, Node, Pod, eventually};

/// Port of the echo servers' TCP echo listener.
pub const TCP_PORT: u16 = 9000;
/// Port of the echo servers' HTTP listener.
pub const HTTP_PORT: u16 = 8080;
/// How long config changes (labels, policies) may take to reach the data plane.
pub const PROPAGATION: Duration = Duration::from_secs(60);

pub fn init_tracing() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("e2e=info")),
            )
            .with_test_writer()
            .with_ansi(false)
            .try_init();
    });
}

/// A builder with this crate's `mesh-echo`.
pub fn builder() -> ClusterBuilder {
    init_tracing();
    Cluster::builder().echo_bin(env!("CARGO_BIN_EXE_mesh-echo"))
}

/// Builds a cluster, runs `body`, and on failure returns the error followed by every
/// component's status and log tail (the cluster's Drop prints them on a panic).
pub fn with_cluster(
    builder: ClusterBuilder,
    body: impl FnOnce(&Cluster) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let cluster = builder.build().context("building the local cluster")?;
    match body(&cluster) {
        Ok(()) => Ok(()),
        Err(e) => Err(anyhow!("{e:?}\n\n{}", cluster.diagnostics())),
    }
}

/// A 2-node cluster with the mesh, ready.
pub fn with_mesh(body: impl FnOnce(&Cluster) -> anyhow::Result<()>) -> anyhow::Result<()> {
    with_cluster(builder().nodes(2), |c| {
        c.wait_ready().context("waiting for the mesh to be ready")?;
        body(c)
    })
}

/// An echo that must succeed now.
pub fn echo_ok(c: &Cluster, from: &Pod, to: SocketAddr, message: &str) -> anyhow::Result<()> {
    let reply = c
        .echo_tcp(from, to, message)
        .with_context(|| format!("echo {} -> {to}", from.key()))?;
    if reply != message {
        bail!("echo {} -> {to}: sent {message:?}, got {reply:?}", from.key());
    }
    Ok(())
}

/// Polls until an echo succeeds (e.g. while the data plane converges).
pub fn eventually_echo(c: &Cluster, from: &Pod, to: SocketAddr, message: &str, within: Duration) -> anyhow::Result<()> {
    eventually(&format!("echo {} -> {to} to succeed", from.key()), within, || {
        match c.echo_tcp(from, to, message) {
            Ok(r) if r == message => Ok(()),
            Ok(r) => Err(format!("wrong echo {r:?}")),
            Err(e) => Err(e.to_string()),
        }
    })?;
    Ok(())
}

/// Polls until echoes are refused (policy propagation), then checks that three more in a row
/// are refused too and none of them brought the message back.
pub fn eventually_denied(c: &Cluster, from: &Pod, to: SocketAddr, message: &str) -> anyhow::Result<String> {
    let first = eventually(&format!("echo {} -> {to} to be refused", from.key()), PROPAGATION, || {
        match c.echo_tcp(from, to, message) {
            Ok(r) => Err(format!("still allowed (echoed {r:?})")),
            Err(e @ HarnessError::EchoFailed { .. }) => Ok(e.to_string()),
            Err(e) => Ok(format!("harness error: {e}")),
        }
    })?;
    if first.starts_with("harness error") {
        bail!("{first}");
    }
    for i in 0..3 {
        match c.echo_tcp(from, to, message) {
            Ok(r) => bail!("echo {} -> {to} allowed again on retry {i} (echoed {r:?}) after being refused: {first}", from.key()),
            Err(HarnessError::EchoFailed { stdout, .. }) if stdout.contains(message) => {
                bail!("a refused echo still printed the message: {stdout:?}")
            }
            Err(HarnessError::EchoFailed { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(first)
}

/// Sum of `istio_tcp_connections_opened_total` on `node`'s ztunnel for these labels.
pub fn opened(c: &Cluster, node: &Node, filter: &[(&str, &str)]) -> anyhow::Result<f64> {
    let m = c.ztunnel_metrics(node).with_context(|| format!("scraping {} ztunnel", node.name))?;
    Ok(m.sum("istio_tcp_connections_opened_total", filter))
}

/// Labels of a destination-reported mTLS connection from `src` to `dst`.
pub fn mtls_labels(c: &Cluster, src: &Pod, dst: &Pod) -> Vec<(String, String)> {
    vec![
        ("reporter".into(), "destination".into()),
        ("connection_security_policy".into(), "mutual_tls".into()),
        ("source_principal".into(), c.principal(&src.namespace, &src.service_account)),
        ("destination_principal".into(), c.principal(&dst.namespace, &dst.service_account)),
    ]
}

/// Polls until an echo from `src` to `dst` succeeds and `dst`'s ztunnel reports one more
/// mutual-TLS connection with both principals than `before` (see [`mtls_count`]).
pub fn eventually_mtls(c: &Cluster, src: &Pod, dst: &Pod, message: &str) -> anyhow::Result<()> {
    let node = c.node(&dst.node)?;
    let labels = mtls_labels(c, src, dst);
    let filter: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut last_metrics = String::new();
    let res = eventually(
        &format!("{} -> {} over mutual TLS (destination ztunnel metrics)", src.key(), dst.key()),
        PROPAGATION,
        || {
            let before = opened(c, node, &filter).map_err(|e| format!("{e:#}"))?;
            c.echo_tcp(src, dst.addr(TCP_PORT), message)
                .map_err(|e| format!("echo failed: {e}"))?;
            // The counter may be bumped when the connection opens or a moment later.
            let after = eventually("the opened counter to move", Duration::from_secs(5), || {
                let now = opened(c, node, &filter).map_err(|e| format!("{e:#}"))?;
                if now > before { Ok(now) } else { Err(format!("still {now}")) }
            });
            match after {
                Ok(_) => Ok(()),
                Err(e) => {
                    last_metrics = c
                        .ztunnel_metrics(node)
                        .map(|m| {
                            m.describe(
                                "istio_tcp_connections_opened_total",
                                &["reporter", "connection_security_policy", "source_principal", "destination_principal"],
                            )
                        })
                        .unwrap_or_else(|e| e.to_string());
                    Err(format!("echo worked but no new mutual_tls connection was counted ({e})"))
                }
            }
        },
    );
    res.map_err(|e| anyhow!("{e}\nexpected labels {filter:?}\n{} ztunnel metrics:\n{last_metrics}", node.name))
}

/// Whether ztunnel's in-pod listeners (15001, 15006, 15008) are bound in the pod's netns.
pub fn ztunnel_in_pod(c: &Cluster, pod: &Pod) -> anyhow::Result<bool> {
    let ports = c.listening_ports(pod)?;
    Ok(e2e::harness::components::ZTUNNEL_POD_PORTS
        .iter()
        .all(|p| ports.contains(p)))
}

/// Polls until the pod is enrolled as observed from inside its netns: ztunnel listening there
/// and redirect rules installed (different from `baseline_rules`).
pub fn eventually_enrolled(c: &Cluster, pod: &Pod, baseline_rules: &[String]) -> anyhow::Result<()> {
    eventually(&format!("pod {} to be enrolled (ztunnel listeners and redirect rules in its netns)", pod.key()), PROPAGATION, || {
        let ports = c.listening_ports(pod).map_err(|e| e.to_string())?;
        let rules = c.netns_rules(pod).map_err(|e| e.to_string())?;
        let listening = e2e::harness::components::ZTUNNEL_POD_PORTS.iter().all(|p| ports.contains(p));
        if listening && rules != baseline_rules {
            Ok(())
        } else {
            Err(format!("listening ports {ports:?}; {} rule lines (baseline {})", rules.len(), baseline_rules.len()))
        }
    })?;
    Ok(())
}

/// Polls until the pod's netns is back to its un-enrolled state: exactly the app's listeners
/// and the baseline rules.
pub fn eventually_released(c: &Cluster, pod: &Pod, app_ports: &[u16], baseline_rules: &[String]) -> anyhow::Result<()> {
    eventually(&format!("pod {} to be released (no ztunnel listener, no rule of ours)", pod.key()), PROPAGATION, || {
        let ports = c.listening_ports(pod).map_err(|e| e.to_string())?;
        let rules = c.netns_rules(pod).map_err(|e| e.to_string())?;
        if ports == app_ports && rules == baseline_rules {
            Ok(())
        } else {
            let extra: Vec<&String> = rules.iter().filter(|r| !baseline_rules.contains(r)).collect();
            Err(format!("listening ports {ports:?} (want {app_ports:?}); rules not in the baseline: {extra:?}"))
        }
    })?;
    Ok(())
}

/// An AuthorizationPolicy for pods labelled `app: <app>`, from these principals
/// (`<td>/ns/<ns>/sa/<sa>`, as Istio writes them).
pub fn policy_yaml(name: &str, namespace: &str, action: &str, app: &str, principals: &[String]) -> String {
    let list: Vec<String> = principals.iter().map(|p| format!("\"{p}\"")).collect();
    format!(
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: {name}
  namespace: {namespace}
spec:
  selector:
    matchLabels:
      app: {app}
  action: {action}
  rules:
  - from:
    - source:
        principals: [{}]
",
        list.join(", ")
    )
}
