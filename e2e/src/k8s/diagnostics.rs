//! What a failed step leaves for the reader: every container's log of the given namespaces (the
//! mesh's components, the sample apps and their waypoint), `kubectl describe` of every pod that
//! is not ready or restarted, and the namespaces' warning events. Everything goes to a directory;
//! the returned text holds the pod states, the log tails and the paths.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::Client;
use kube::api::{Api, ListParams, LogParams};

use super::node::NodeShell;
use super::tools::run;
use super::{Settings, workloads};

/// Lines of each log quoted in the test output (the files have all of them).
const TAIL_LINES: usize = 25;

/// Where the CNI node agent publishes which pods it enrolled and why others are pending.
const AGENT_STATUS: &str = "/var/run/mesh-cni/status.json";

/// Gathers into `dir` and returns the summary. Never fails: what cannot be gathered is said.
/// `nodes`: shells on the nodes, for the CNI agent's status (none when out of reach).
pub async fn gather(
    client: &Client,
    settings: &Settings,
    namespaces: &[&str],
    nodes: &[NodeShell],
    dir: &Path,
) -> String {
    let mut out = String::new();
    if let Err(e) = std::fs::create_dir_all(dir) {
        let _ = writeln!(out, "(cannot create {}: {e})", dir.display());
    }
    let _ = writeln!(out, "diagnostics in {}", dir.display());
    for ns in namespaces {
        let pods = match workloads::pods(client, ns, "").await {
            Ok(p) => p,
            Err(e) => {
                let _ = writeln!(out, "--- namespace {ns}: {e}");
                continue;
            }
        };
        let _ = writeln!(out, "--- namespace {ns}: {} pods", pods.len());
        for p in &pods {
            let _ = writeln!(out, "  {}", workloads::summary(p));
        }
        for p in &pods {
            logs_of(client, ns, p, dir, &mut out).await;
            if !workloads::is_ready(p) || workloads::restarts(p) > 0 {
                describe(client, settings, ns, p, dir, &mut out).await;
            }
        }
        events(client, ns, dir, &mut out).await;
    }
    for shell in nodes {
        let file = dir.join(format!("node.{}.cni-agent-status.json", shell.node));
        match shell
            .sh_ok(&format!(
                "cat {AGENT_STATUS} 2>/dev/null || echo '(no {AGENT_STATUS})'"
            ))
            .await
        {
            Ok(text) => {
                let _ = std::fs::write(&file, &text);
                let _ = writeln!(out, "----- node {}: {AGENT_STATUS}", shell.node);
                for l in text.lines() {
                    let _ = writeln!(out, "    {l}");
                }
            }
            Err(e) => {
                let _ = writeln!(out, "----- node {}: {AGENT_STATUS}: {e}", shell.node);
            }
        }
    }
    out
}

/// `text` without terminal colour sequences (`ESC [ ... letter`), which some components write
/// even when their output is not a terminal.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for t in chars.by_ref() {
                if t.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

async fn logs_of(client: &Client, ns: &str, pod: &Pod, dir: &Path, out: &mut String) {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let name = workloads::name(pod);
    let containers: Vec<(String, i32)> = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| {
            cs.iter()
                .map(|c| (c.name.clone(), c.restart_count))
                .collect()
        })
        .unwrap_or_default();
    for (container, restarts) in containers {
        let mut runs = vec![(false, "")];
        if restarts > 0 {
            runs.push((true, ".previous"));
        }
        for (previous, suffix) in runs {
            let lp = LogParams {
                container: Some(container.clone()),
                previous,
                ..LogParams::default()
            };
            let file = dir.join(format!("{ns}.{name}.{container}{suffix}.log"));
            match tokio::time::timeout(Duration::from_secs(20), api.logs(name, &lp)).await {
                Ok(Ok(text)) => {
                    let text = strip_ansi(&text);
                    let _ = std::fs::write(&file, &text);
                    let lines: Vec<&str> = text.lines().collect();
                    let tail = &lines[lines.len().saturating_sub(TAIL_LINES)..];
                    let _ = writeln!(
                        out,
                        "----- log {ns}/{name} [{container}{suffix}] (last {} of {} lines; all in {})",
                        tail.len(),
                        lines.len(),
                        file.display()
                    );
                    for l in tail {
                        let _ = writeln!(out, "    {l}");
                    }
                }
                Ok(Err(e)) => {
                    let _ = writeln!(out, "----- log {ns}/{name} [{container}{suffix}]: {e}");
                }
                Err(_) => {
                    let _ = writeln!(
                        out,
                        "----- log {ns}/{name} [{container}{suffix}]: timed out"
                    );
                }
            }
        }
    }
}

async fn describe(
    client: &Client,
    settings: &Settings,
    ns: &str,
    pod: &Pod,
    dir: &Path,
    out: &mut String,
) {
    let name = workloads::name(pod);
    let file: PathBuf = dir.join(format!("{ns}.{name}.describe.txt"));
    let text = match &settings.kubectl {
        Some(kubectl) => {
            match run(
                settings,
                kubectl,
                &["describe", "pod", "-n", ns, name],
                Duration::from_secs(30),
            )
            .await
            {
                Ok(o) => o.combined(),
                Err(e) => format!("kubectl describe failed: {e}"),
            }
        }
        None => {
            // No kubectl: the pod's status and its events.
            let status = serde_json::to_string_pretty(&pod.status).unwrap_or_default();
            let evs = pod_events(client, ns, name).await;
            format!("(kubectl not found; status and events)\n{status}\n{evs}")
        }
    };
    let _ = std::fs::write(&file, &text);
    let _ = writeln!(
        out,
        "----- describe pod {ns}/{name} (also in {})",
        file.display()
    );
    for l in text.lines() {
        let _ = writeln!(out, "    {l}");
    }
}

async fn pod_events(client: &Client, ns: &str, name: &str) -> String {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().fields(&format!("involvedObject.name={name}"));
    match api.list(&lp).await {
        Ok(l) => l
            .items
            .iter()
            .map(event_line)
            .collect::<Vec<_>>()
            .join("\n"),
        Err(e) => format!("(events: {e})"),
    }
}

fn event_line(e: &Event) -> String {
    format!(
        "{} {} {}/{}: {} {}",
        e.type_.as_deref().unwrap_or("?"),
        e.reason.as_deref().unwrap_or("?"),
        e.involved_object.kind.as_deref().unwrap_or("?"),
        e.involved_object.name.as_deref().unwrap_or("?"),
        e.message.as_deref().unwrap_or("").trim(),
        e.count.map(|c| format!("(x{c})")).unwrap_or_default(),
    )
}

async fn events(client: &Client, ns: &str, dir: &Path, out: &mut String) {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    match api.list(&ListParams::default()).await {
        Ok(l) => {
            let all: Vec<String> = l.items.iter().map(event_line).collect();
            let _ = std::fs::write(dir.join(format!("{ns}.events.txt")), all.join("\n"));
            let warnings: Vec<&String> = all.iter().filter(|l| l.starts_with("Warning")).collect();
            let _ = writeln!(out, "----- warning events in {ns}: {}", warnings.len());
            for w in warnings.iter().rev().take(20) {
                let _ = writeln!(out, "    {w}");
            }
        }
        Err(e) => {
            let _ = writeln!(out, "----- events in {ns}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_colour_sequences_only() {
        let raw = "\u{1b}[2m2026-11-26T07:21:17Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m app: [x] ok";
        assert_eq!(strip_ansi(raw), "2026-11-26T07:21:17Z  INFO app: [x] ok");
    }
}
