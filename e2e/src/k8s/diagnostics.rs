//! What a failed step leaves for the reader: every container's log of the given namespaces (the
//! mesh's components, the sample apps and their waypoint), `kubectl describe` of every pod that
//! is not ready or restarted, and the namespaces' warning events. Everything goes to a directory;
//! the returned text holds the pod states, the log tails and the paths.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams, LogParams};
use kube::Client;

use super::tools::run;
use super::{Settings, workloads};

/// Lines of each log quoted in the test output (the files have all of them).
const TAIL_LINES: usize = 25;

/// Gathers into `dir` and returns the summary. Never fails: what cannot be gathered is said.
pub async fn gather(client: &Client, settings: &Settings, namespaces: &[&str], dir: &Path) -> String {
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
    out
}

async fn logs_of(client: &Client, ns: &str, pod: &Pod, dir: &Path, out: &mut String) {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let name = workloads::name(pod);
    let containers: Vec<(String, i32)> = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| (c.name.clone(), c.restart_count)).collect())
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
                    let _ = writeln!(out, "----- log {ns}/{name} [{container}{suffix}]: timed out");
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
            match run(settings, kubectl, &["describe", "pod", "-n", ns, name], Duration::from_secs(30)).await {
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
    let _ = writeln!(out, "----- describe pod {ns}/{name} (also in {})", file.display());
    for l in text.lines() {
        let _ = writeln!(out, "    {l}");
    }
}

async fn pod_events(client: &Client, ns: &str, name: &str) -> String {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().fields(&format!("involvedObject.name={name}"));
    match api.list(&lp).await {
        Ok(l) => l.items.iter().map(event_line).collect::<Vec<_>>().join("\n"),
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
