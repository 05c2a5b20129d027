//! Shared setup of the network-namespace end-to-end tests.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Once;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use e2e::harness::{Cluster, ClusterBuilder, HarnessError, Pod, eventually};

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
        bail!(
            "echo {} -> {to}: sent {message:?}, got {reply:?}",
            from.key()
        );
    }
    Ok(())
}

/// Polls until an echo succeeds (e.g. while the data plane converges).
pub fn eventually_echo(
    c: &Cluster,
    from: &Pod,
    to: SocketAddr,
    message: &str,
    within: Duration,
) -> anyhow::Result<()> {
    eventually(
        &format!("echo {} -> {to} to succeed", from.key()),
        within,
        || match c.echo_tcp(from, to, message) {
            Ok(r) if r == message => Ok(()),
            Ok(r) => Err(format!("wrong echo {r:?}")),
            Err(e) => Err(e.to_string()),
        },
    )?;
    Ok(())
}

/// Polls until echoes are refused (policy propagation), then checks that three more in a row
/// are refused too and none of them brought the message back. Returns the client's error.
pub fn eventually_denied(
    c: &Cluster,
    from: &Pod,
    to: SocketAddr,
    message: &str,
) -> anyhow::Result<String> {
    let first = c.wait_refused(from, to, message, PROPAGATION)?;
    for i in 0..3 {
        match c.echo_tcp(from, to, message) {
            Ok(r) => bail!(
                "echo {} -> {to} allowed again on retry {i} (echoed {r:?}) after being refused: {first}",
                from.key()
            ),
            Err(HarnessError::EchoFailed { stdout, .. }) if stdout.contains(message) => {
                bail!("a refused echo still printed the message: {stdout:?}")
            }
            Err(HarnessError::EchoFailed { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(first)
}

/// Polls until `src` reaches `dst`'s echo port over mutual TLS, as counted by `dst`'s ztunnel
/// with both principals.
pub fn eventually_mtls(c: &Cluster, src: &Pod, dst: &Pod, message: &str) -> anyhow::Result<()> {
    c.wait_mtls(src, dst, TCP_PORT, message, PROPAGATION)?;
    Ok(())
}

/// Whether ztunnel's in-pod listeners (15001, 15006, 15008) are bound in the pod's netns.
pub fn ztunnel_in_pod(c: &Cluster, pod: &Pod) -> anyhow::Result<bool> {
    let ports = c.listening_ports(pod)?;
    Ok(e2e::harness::components::ZTUNNEL_POD_PORTS
        .iter()
        .all(|p| ports.contains(p)))
}

/// An AuthorizationPolicy for pods labelled `app: <app>`, from these principals
/// (`<td>/ns/<ns>/sa/<sa>`, as Istio writes them).
pub fn policy_yaml(
    name: &str,
    namespace: &str,
    action: &str,
    app: &str,
    principals: &[String],
) -> String {
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
