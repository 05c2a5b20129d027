//! Traffic between the sample pods, made with `mesh-echo client` inside a pod (`kubectl exec`),
//! and what a pod sees of its own network namespace (`mesh-echo listeners`).

use std::net::SocketAddr;
use std::time::Duration;

use e2e::echo::client::RepeatSummary;
use e2e::k8s::exec::{ExecOutput, exec};
use e2e::k8s::mesh::{self, IN_POD_PORTS, TCP_OPENED};
use e2e::k8s::{eventually, workloads};

use super::Suite;

const EXEC_TIMEOUT: Duration = Duration::from_secs(30);

async fn run(suite: &Suite, pod: &str, args: &[&str]) -> anyhow::Result<ExecOutput> {
    let mut cmd = vec!["mesh-echo"];
    cmd.extend_from_slice(args);
    Ok(exec(
        &suite.client,
        &suite.settings.namespace,
        pod,
        &cmd,
        EXEC_TIMEOUT,
    )
    .await?)
}

/// One TCP echo from `pod` to `addr`: Ok when the message came back, else the client's words.
pub async fn tcp_echo(
    suite: &Suite,
    pod: &str,
    addr: &str,
    message: &str,
) -> anyhow::Result<Result<(), String>> {
    let out = run(
        suite,
        pod,
        &[
            "client",
            "tcp",
            addr,
            "--message",
            message,
            "--timeout-ms",
            "3000",
        ],
    )
    .await?;
    Ok(if out.success() && out.stdout.trim() == message {
        Ok(())
    } else {
        Err(format!("exit {:?}: {}", out.exit_code, out.combined()))
    })
}

/// A TCP echo that must work now.
pub async fn tcp_echo_ok(
    suite: &Suite,
    pod: &str,
    addr: &str,
    message: &str,
) -> anyhow::Result<()> {
    tcp_echo(suite, pod, addr, message)
        .await?
        .map_err(|e| anyhow::anyhow!("TCP echo {pod} -> {addr} failed: {e}"))
}

/// Polls until TCP echoes from `pod` to `addr` work.
pub async fn eventually_tcp_ok(
    suite: &Suite,
    pod: &str,
    addr: &str,
    within: Duration,
) -> anyhow::Result<()> {
    eventually(
        &format!("TCP echo {pod} -> {addr} to work"),
        within,
        || async {
            match tcp_echo(suite, pod, addr, "ping").await {
                Ok(r) => r,
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await?;
    Ok(())
}

/// Polls until TCP echoes from `pod` to `addr` are refused, then checks that three more in a row
/// are too. Returns what the client said.
pub async fn eventually_tcp_denied(
    suite: &Suite,
    pod: &str,
    addr: &str,
    within: Duration,
) -> anyhow::Result<String> {
    let said = eventually(
        &format!("TCP echo {pod} -> {addr} to be refused"),
        within,
        || async {
            match tcp_echo(suite, pod, addr, "ping").await {
                Ok(Ok(())) => Err("still echoed".to_string()),
                Ok(Err(said)) => Ok(said),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await?;
    for i in 0..3 {
        if let Ok(()) = tcp_echo(suite, pod, addr, "again").await? {
            anyhow::bail!(
                "TCP echo {pod} -> {addr} echoed again on retry {i} after being refused ({said})"
            );
        }
    }
    Ok(said)
}

/// One HTTP GET from `pod`: the status and the body; Err(text) when no response came.
pub async fn http_get(
    suite: &Suite,
    pod: &str,
    url: &str,
) -> anyhow::Result<Result<(u16, String), String>> {
    let out = run(suite, pod, &["client", "http", url, "--timeout-ms", "5000"]).await?;
    let status = out
        .stdout
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("status: "))
        .and_then(|s| s.trim().parse::<u16>().ok());
    Ok(match status {
        Some(s) => Ok((s, out.stdout)),
        None => Err(format!("exit {:?}: {}", out.exit_code, out.combined())),
    })
}

/// `n` GETs of `url` from `pod`, summarized.
pub async fn http_repeat(
    suite: &Suite,
    pod: &str,
    url: &str,
    n: u32,
) -> anyhow::Result<RepeatSummary> {
    let count = n.to_string();
    let out = run(
        suite,
        pod,
        &[
            "client",
            "http",
            url,
            "--timeout-ms",
            "5000",
            "--repeat",
            &count,
        ],
    )
    .await?;
    serde_json::from_str(out.stdout.trim()).map_err(|e| {
        anyhow::anyhow!(
            "GET x{n} {url} from {pod}: no summary ({e}): {}",
            out.combined()
        )
    })
}

/// The TCP sockets listening in `pod`'s network namespace.
pub async fn listeners(suite: &Suite, pod: &str) -> anyhow::Result<Vec<SocketAddr>> {
    let out = run(suite, pod, &["listeners"]).await?;
    if !out.success() {
        anyhow::bail!("mesh-echo listeners in {pod}: {}", out.combined());
    }
    out.stdout
        .lines()
        .map(|l| {
            l.parse()
                .map_err(|e| anyhow::anyhow!("listeners of {pod}: {l:?}: {e}"))
        })
        .collect()
}

/// ztunnel's in-pod ports (15001, 15006, 15008) among `pod`'s listeners.
pub async fn mesh_ports(suite: &Suite, pod: &str) -> anyhow::Result<Vec<u16>> {
    let l = listeners(suite, pod).await?;
    let mut ports: Vec<u16> = l
        .iter()
        .map(SocketAddr::port)
        .filter(|p| IN_POD_PORTS.contains(p))
        .collect();
    ports.sort_unstable();
    ports.dedup();
    Ok(ports)
}

/// Sum of ztunnels' `istio_tcp_connections_opened_total` series matching `filter`.
pub async fn ztunnel_opened(suite: &Suite, filter: &[(&str, &str)]) -> anyhow::Result<f64> {
    let m = mesh::ztunnel_metrics(&suite.client, &suite.settings.istio_namespace).await?;
    Ok(m.sum(TCP_OPENED, filter))
}

/// The ztunnels' connection series, for messages.
pub async fn describe_connections(suite: &Suite) -> String {
    match mesh::ztunnel_metrics(&suite.client, &suite.settings.istio_namespace).await {
        Ok(m) => m.describe(TCP_OPENED, &mesh::CONNECTION_KEYS),
        Err(e) => format!("(cannot scrape ztunnel: {e})"),
    }
}

/// The labels of connections from `src_sa` to `dst_sa` (service accounts of the sample
/// namespace) over mutual TLS, as the destination's ztunnel reports them.
pub fn mtls_filter(suite: &Suite, src_sa: &str, dst_sa: &str) -> Vec<(&'static str, String)> {
    vec![
        ("reporter", "destination".into()),
        ("connection_security_policy", "mutual_tls".into()),
        ("source_principal", suite.settings.principal(src_sa)),
        ("destination_principal", suite.settings.principal(dst_sa)),
    ]
}

pub fn as_filter<'a>(f: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    f.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Polls until a TCP echo from `pod` to `addr` works and the destination ztunnel counts one more
/// mutual-TLS connection from `src_sa` to `dst_sa`. Returns the new count.
pub async fn eventually_mtls(
    suite: &Suite,
    pod: &str,
    addr: &str,
    src_sa: &str,
    dst_sa: &str,
) -> anyhow::Result<f64> {
    let labels = mtls_filter(suite, src_sa, dst_sa);
    let filter = as_filter(&labels);
    let res = eventually(
        &format!("{pod} -> {addr} over mutual TLS"),
        super::PROPAGATION,
        || async {
            let before = ztunnel_opened(suite, &filter)
                .await
                .map_err(|e| e.to_string())?;
            tcp_echo(suite, pod, addr, "mtls?")
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("echo failed: {e}"))?;
            // The counter may move a moment after the echo.
            eventually("the counter to move", Duration::from_secs(5), || async {
                let now = ztunnel_opened(suite, &filter)
                    .await
                    .map_err(|e| e.to_string())?;
                if now > before {
                    Ok(now)
                } else {
                    Err(format!("still {now}"))
                }
            })
            .await
            .map_err(|e| {
                format!("the echo worked but no ztunnel counted a new mutual_tls connection ({e})")
            })
        },
    )
    .await;
    match res {
        Ok(n) => Ok(n),
        Err(e) => anyhow::bail!(
            "{e}\nexpected series {TCP_OPENED}{labels:?}\nztunnel connection series:\n{}",
            describe_connections(suite).await
        ),
    }
}

/// Pods of the sample namespace carrying (or not) the enrolment annotation.
pub async fn redirection_annotations(
    suite: &Suite,
) -> anyhow::Result<Vec<(String, Option<String>)>> {
    let pods = workloads::pods(&suite.client, &suite.settings.namespace, "").await?;
    Ok(pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| {
            (
                workloads::name(p).to_string(),
                workloads::annotation(p, REDIRECTION_ANNOTATION).map(str::to_string),
            )
        })
        .collect())
}

/// The annotation the CNI agent puts on enrolled pods.
pub const REDIRECTION_ANNOTATION: &str = "ambient.istio.io/redirection";

/// The lines of the `nat` rules inside the pod's network namespace that belong to the mesh
/// (its `MESH_*` chains), read on the pod's node; `None` when nodes are out of reach.
pub async fn mesh_rules_in_pod(
    suite: &Suite,
    pod: &super::apps::AppPod,
    purpose: &str,
) -> anyhow::Result<Option<Vec<String>>> {
    let Some(access) = suite.settings.node_access.clone() else {
        suite.note(format!(
            "not checked on the nodes (MESH_E2E_NODE_EXEC unset): {purpose}"
        ));
        return Ok(None);
    };
    let shell = e2e::k8s::node::NodeShell::new(&access, &pod.node);
    let netns = shell.netns_of(&pod.ip).await?;
    let rules = shell.nat_rules_in(&netns).await?;
    Ok(Some(
        rules
            .lines()
            .filter(|l| l.contains(super::install::MESH_CHAIN_PREFIX))
            .map(str::to_string)
            .collect(),
    ))
}
