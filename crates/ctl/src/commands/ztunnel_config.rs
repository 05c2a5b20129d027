//! `meshctl ztunnel-config workloads|services|policies|certificates|connections|all [NODE|POD]`:
//! one ztunnel's admin `/config_dump` as tables, JSON or YAML.

use std::time::Duration;

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::Api;
use serde::Serialize;
use serde_json::Value;

use crate::cli::{ZtunnelConfigCommand, ZtunnelTarget};
use crate::context::{Ctx, Mode};
use crate::http;
use crate::kube_client::{KubeEnv, KubeError, ZTUNNEL_ADMIN_PORT};
use crate::local::LocalEnv;
use crate::output::{self, OutputFormat, Table, format_remaining, format_unix};
use crate::ztunnel_dump::{ZtunnelDump, waypoint_label};

use super::EXIT_OK;

/// Time limit for fetching a dump.
const FETCH_TIMEOUT: Duration = Duration::from_secs(15);

/// The listeners ztunnel holds inside each pod it serves.
pub const IN_POD_LISTENERS: [(u16, &str); 4] = [
    (15001, "outbound"),
    (15006, "inbound plaintext"),
    (15008, "inbound HBONE"),
    (15053, "DNS"),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Section {
    Workloads,
    Services,
    Policies,
    Certificates,
    Connections,
    All,
}

pub async fn run(ctx: &Ctx, cmd: &ZtunnelConfigCommand) -> anyhow::Result<u8> {
    let (section, target) = match cmd {
        ZtunnelConfigCommand::Workloads(t) => (Section::Workloads, t),
        ZtunnelConfigCommand::Services(t) => (Section::Services, t),
        ZtunnelConfigCommand::Policies(t) => (Section::Policies, t),
        ZtunnelConfigCommand::Certificates(t) => (Section::Certificates, t),
        ZtunnelConfigCommand::Connections(t) => (Section::Connections, t),
        ZtunnelConfigCommand::All(t) => (Section::All, t),
    };
    let (source, raw) = match &ctx.mode {
        Mode::Local(env) => fetch_local(ctx, env, target).await?,
        Mode::Kube(s) => fetch_kube(ctx, &Ctx::kube(s).await?, target).await?,
    };
    let dump = ZtunnelDump::from_value(raw).with_context(|| format!("from {source}"))?;
    let ns = target.workload_namespace.as_deref();
    match ctx.output {
        OutputFormat::Table => print!("{}", render(section, &dump, ns)),
        other => print!(
            "{}",
            output::encode(other, &structured(section, &dump, ns))?
        ),
    }
    Ok(EXIT_OK)
}

/// Pod reference forms: `ns/name`, `name` (in -n), `name.ns`.
fn pod_candidates(target: &str, default_ns: &str) -> Vec<(String, String)> {
    if let Some((ns, name)) = target.split_once('/') {
        return vec![(ns.to_string(), name.to_string())];
    }
    let mut out = vec![(default_ns.to_string(), target.to_string())];
    if let Some((name, ns)) = target.rsplit_once('.') {
        out.push((ns.to_string(), name.to_string()));
    }
    out
}

async fn fetch_local(
    ctx: &Ctx,
    env: &LocalEnv,
    target: &ZtunnelTarget,
) -> anyhow::Result<(String, Value)> {
    let admins = &env.ztunnels;
    if admins.is_empty() {
        bail!(
            "no ztunnel admin address given: pass --ztunnel-admin URL (or NODE=URL, once per \
             node); ztunnel's admin listens on 127.0.0.1:15000 of its node"
        );
    }
    let url = match target.target.as_deref() {
        None => {
            let all = admins.all();
            match all.as_slice() {
                [(_, url)] => url.clone(),
                _ => bail!(
                    "{} ztunnels are known ({}); name a node or a pod",
                    all.len(),
                    all.iter()
                        .map(|(n, u)| n.clone().unwrap_or_else(|| u.clone()))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        }
        Some(t) => match admins.by_node.get(t) {
            Some(url) => url.clone(),
            None => {
                let snap = env.snapshot()?;
                let pod = pod_candidates(t, &ctx.local_namespace())
                    .into_iter()
                    .find_map(|(ns, name)| {
                        snap.pods().find(|p| {
                            p.metadata.namespace.as_deref() == Some(ns.as_str())
                                && p.metadata.name.as_deref() == Some(name.as_str())
                        })
                    });
                let Some(pod) = pod else {
                    let nodes: Vec<&str> = admins.by_node.keys().map(String::as_str).collect();
                    bail!(
                        "{t:?} is neither a node given with --ztunnel-admin ({}) nor a pod in {}",
                        if nodes.is_empty() {
                            "none named".to_string()
                        } else {
                            nodes.join(", ")
                        },
                        env.config_dir.display()
                    );
                };
                let node = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.clone())
                    .unwrap_or_default();
                match (admins.by_node.get(&node), &admins.default) {
                    (Some(url), _) => url.clone(),
                    (None, Some(url)) if admins.by_node.is_empty() => url.clone(),
                    _ => bail!(
                        "pod {t} runs on node {node:?}, but no --ztunnel-admin {node}=URL was given"
                    ),
                }
            }
        },
    };
    let full = http::join(&url, "/config_dump");
    let raw: Value = http::get_json(&full, FETCH_TIMEOUT).await.with_context(
        || "is ztunnel running there? (--ztunnel-admin must point at its admin port, 15000)",
    )?;
    Ok((full, raw))
}

async fn fetch_kube(
    ctx: &Ctx,
    kube: &KubeEnv,
    target: &ZtunnelTarget,
) -> anyhow::Result<(String, Value)> {
    let ztunnel: Pod = match target.target.as_deref() {
        None => {
            let mut all = kube.ztunnels().await?;
            match all.len() {
                0 => bail!(
                    "no ztunnel pod (label app=ztunnel) in namespace {}; is the mesh installed? \
                     (--istio-namespace)",
                    kube.istio_namespace
                ),
                1 => all.remove(0),
                n => bail!(
                    "{n} ztunnels run (on nodes {}); name a node or a pod",
                    all.iter()
                        .filter_map(|p| p.spec.as_ref().and_then(|s| s.node_name.clone()))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        }
        Some(t) => {
            let nodes: Api<Node> = Api::all(kube.client.clone());
            let node = if nodes
                .get_opt(t)
                .await
                .map_err(|e| KubeError::api(format!("get node {t}"), e))?
                .is_some()
            {
                t.to_string()
            } else {
                let default_ns = ctx.kube_namespace(kube);
                let mut found = None;
                for (ns, name) in pod_candidates(t, &default_ns) {
                    let pods: Api<Pod> = Api::namespaced(kube.client.clone(), &ns);
                    if let Some(p) = pods
                        .get_opt(&name)
                        .await
                        .map_err(|e| KubeError::api(format!("get pod {ns}/{name}"), e))?
                    {
                        found = Some(p);
                        break;
                    }
                }
                let Some(pod) = found else {
                    bail!("{t:?} is neither a node nor a pod (namespace {default_ns}; -n sets it)");
                };
                pod.spec
                    .and_then(|s| s.node_name)
                    .with_context(|| format!("pod {t} is not scheduled on a node yet"))?
            };
            kube.ztunnel_on_node(&node).await?.with_context(|| {
                format!(
                    "no ztunnel pod on node {node} (label app=ztunnel in {})",
                    kube.istio_namespace
                )
            })?
        }
    };
    let name = ztunnel.metadata.name.clone().unwrap_or_default();
    let body = kube
        .get_via_port_forward(
            &kube.istio_namespace,
            &name,
            ZTUNNEL_ADMIN_PORT,
            "/config_dump",
            FETCH_TIMEOUT,
        )
        .await?;
    let source = format!("pod {}/{name}", kube.istio_namespace);
    let raw = serde_json::from_slice(&body)
        .with_context(|| format!("{source} answered /config_dump with something else than JSON"))?;
    Ok((source, raw))
}

fn ns_matches(item: &Value, ns: Option<&str>) -> bool {
    ns.is_none_or(|ns| item.get("namespace").and_then(Value::as_str) == Some(ns))
}

fn filtered(raw: &Value, key: &str, ns: Option<&str>) -> Value {
    match raw.get(key).and_then(Value::as_array) {
        Some(items) => Value::Array(
            items
                .iter()
                .filter(|i| ns_matches(i, ns))
                .cloned()
                .collect(),
        ),
        None => Value::Array(Vec::new()),
    }
}

/// What `connections` reports in JSON/YAML.
#[derive(Debug, Serialize)]
struct ConnectionsView {
    note: &'static str,
    node: Option<String>,
    pods: Vec<PodListeners>,
}

#[derive(Debug, Serialize)]
struct PodListeners {
    namespace: String,
    name: String,
    uid: String,
    identity: String,
    listeners: Vec<ListenerView>,
}

#[derive(Debug, Serialize)]
struct ListenerView {
    port: u16,
    purpose: &'static str,
}

const CONNECTIONS_NOTE: &str = "ztunnel's /config_dump does not report open connections; these \
    are the pods it serves and the listeners it holds inside each (per-connection figures are \
    in its metrics on port 15020)";

fn connections(dump: &ZtunnelDump, ns: Option<&str>) -> ConnectionsView {
    ConnectionsView {
        note: CONNECTIONS_NOTE,
        node: dump.node().map(str::to_string),
        pods: dump
            .parsed
            .pods
            .iter()
            .filter(|p| ns.is_none_or(|ns| p.namespace == ns))
            .map(|p| PodListeners {
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                uid: p.uid.clone(),
                identity: p.identity.clone(),
                listeners: IN_POD_LISTENERS
                    .iter()
                    .map(|(port, purpose)| ListenerView {
                        port: *port,
                        purpose,
                    })
                    .collect(),
            })
            .collect(),
    }
}

fn structured(section: Section, dump: &ZtunnelDump, ns: Option<&str>) -> Value {
    let raw = &dump.raw;
    match section {
        Section::Workloads => filtered(raw, "workloads", ns),
        Section::Services => filtered(raw, "services", ns),
        Section::Policies => filtered(raw, "policies", ns),
        Section::Certificates => raw
            .get("certificates")
            .cloned()
            .unwrap_or(Value::Array(Vec::new())),
        Section::Connections => serde_json::to_value(connections(dump, ns)).unwrap_or(Value::Null),
        Section::All => {
            let mut all = raw.clone();
            if let Some(map) = all.as_object_mut() {
                for key in ["workloads", "services", "policies", "pods"] {
                    map.insert(key.into(), filtered(raw, key, ns));
                }
            }
            all
        }
    }
}

/// The table text of a section.
fn render(section: Section, dump: &ZtunnelDump, ns: Option<&str>) -> String {
    match section {
        Section::Workloads => workloads(dump, ns),
        Section::Services => services(dump, ns),
        Section::Policies => policies(dump, ns),
        Section::Certificates => certificates(dump),
        Section::Connections => connections_text(dump, ns),
        Section::All => [
            ("WORKLOADS", workloads(dump, ns)),
            ("SERVICES", services(dump, ns)),
            ("POLICIES", policies(dump, ns)),
            ("CERTIFICATES", certificates(dump)),
            ("CONNECTIONS", connections_text(dump, ns)),
        ]
        .iter()
        .map(|(title, text)| format!("{title}\n{text}"))
        .collect::<Vec<_>>()
        .join("\n"),
    }
}

fn none_if_empty(t: &Table, what: &str) -> String {
    if t.is_empty() {
        format!("No {what}.\n")
    } else {
        t.render()
    }
}

fn workloads(dump: &ZtunnelDump, ns: Option<&str>) -> String {
    let mut t = Table::new([
        "NAMESPACE",
        "POD NAME",
        "ADDRESS",
        "NODE",
        "WAYPOINT",
        "PROTOCOL",
        "HEALTHY",
    ]);
    for w in dump
        .parsed
        .workloads
        .iter()
        .filter(|w| ns.is_none_or(|ns| w.namespace == ns))
    {
        t.row([
            w.namespace.clone(),
            w.name.clone(),
            w.ips.join(","),
            w.node.clone(),
            waypoint_label(w.waypoint.as_ref()),
            if w.tunnel.is_empty() {
                "NONE".into()
            } else {
                w.tunnel.clone()
            },
            if w.healthy { "true" } else { "false" }.into(),
        ]);
    }
    none_if_empty(&t, "workloads")
}

fn services(dump: &ZtunnelDump, ns: Option<&str>) -> String {
    let mut t = Table::new([
        "NAMESPACE",
        "SERVICE NAME",
        "SERVICE VIP",
        "PORTS",
        "WAYPOINT",
        "ENDPOINTS",
    ]);
    for s in dump
        .parsed
        .services
        .iter()
        .filter(|s| ns.is_none_or(|ns| s.namespace == ns))
    {
        let key = s.key();
        let backing = dump
            .parsed
            .workloads
            .iter()
            .filter(|w| w.services.contains_key(&key))
            .count();
        let healthy = dump
            .parsed
            .workloads
            .iter()
            .filter(|w| w.healthy && w.services.contains_key(&key))
            .count();
        let ports = s
            .ports
            .iter()
            .map(|(sp, tp)| {
                if sp == tp || *tp == 0 {
                    sp.to_string()
                } else {
                    format!("{sp}->{tp}")
                }
            })
            .collect::<Vec<_>>()
            .join(",");
        t.row([
            s.namespace.clone(),
            s.name.clone(),
            s.vips.join(","),
            ports,
            waypoint_label(s.waypoint.as_ref()),
            format!("{healthy}/{backing}"),
        ]);
    }
    none_if_empty(&t, "services")
}

fn policies(dump: &ZtunnelDump, ns: Option<&str>) -> String {
    let mut t = Table::new(["NAMESPACE", "POLICY NAME", "ACTION", "SCOPE", "RULES"]);
    for p in dump
        .parsed
        .policies
        .iter()
        .filter(|p| ns.is_none_or(|ns| p.namespace == ns))
    {
        let action = if p.dry_run {
            format!("{} (dry run)", p.action)
        } else {
            p.action.clone()
        };
        t.row([
            p.namespace.clone(),
            p.name.clone(),
            action,
            p.scope.clone(),
            p.groups.len().to_string(),
        ]);
    }
    none_if_empty(&t, "policies")
}

fn certificates(dump: &ZtunnelDump) -> String {
    let mut t = Table::new([
        "IDENTITY",
        "STATE",
        "SERIAL",
        "NOT BEFORE",
        "NOT AFTER",
        "EXPIRES IN",
        "FAILURES",
        "LAST ERROR",
    ]);
    for c in &dump.parsed.certificates {
        t.row([
            c.identity.clone(),
            c.state.clone(),
            c.serial.clone().unwrap_or_default(),
            c.not_before.map(format_unix).unwrap_or_default(),
            c.not_after.map(format_unix).unwrap_or_default(),
            c.expires_in_seconds
                .map(format_remaining)
                .unwrap_or_default(),
            c.failures.to_string(),
            c.last_error.clone().unwrap_or_default(),
        ]);
    }
    none_if_empty(&t, "certificates")
}

fn connections_text(dump: &ZtunnelDump, ns: Option<&str>) -> String {
    let view = connections(dump, ns);
    let mut t = Table::new(["NAMESPACE", "POD", "IDENTITY", "LISTENERS"]);
    let listeners = IN_POD_LISTENERS
        .iter()
        .map(|(p, what)| format!("{p} {what}"))
        .collect::<Vec<_>>()
        .join(", ");
    for p in &view.pods {
        t.row([
            p.namespace.clone(),
            p.name.clone(),
            p.identity.clone(),
            listeners.clone(),
        ]);
    }
    let node = view
        .node
        .map(|n| format!(" (node {n})"))
        .unwrap_or_default();
    format!(
        "Note: ztunnel's /config_dump does not report open connections. Pods this ztunnel{node} \
         serves, with the listeners it holds inside each:\n{}",
        none_if_empty(&t, "pods served")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_reference_forms() {
        assert_eq!(
            pod_candidates("shop/cart-0", "default"),
            vec![("shop".to_string(), "cart-0".to_string())]
        );
        assert_eq!(
            pod_candidates("cart-0.shop", "default"),
            vec![
                ("default".to_string(), "cart-0.shop".to_string()),
                ("shop".to_string(), "cart-0".to_string())
            ]
        );
    }
}
