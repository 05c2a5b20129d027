//! `meshctl version`: the client's version, and what the control plane and each data-plane
//! component it can reach report. On Kubernetes each istiod and ztunnel pod is asked through
//! a port-forward (what runs, not what was deployed); its image tag stands in, said so in the
//! status, when it cannot be asked.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use serde::Serialize;
use serde_json::Value;

use crate::cli::VersionArgs;
use crate::cni_status;
use crate::context::{Ctx, Mode};
use crate::http;
use crate::istiod::version_field;
use crate::kube_client::{
    CNI_SELECTOR, ISTIOD_MONITORING_PORT, ISTIOD_SELECTOR, KubeEnv, ZTUNNEL_ADMIN_PORT,
    ZTUNNEL_SELECTOR, image_tag,
};
use crate::local::LocalEnv;
use crate::output::{self, OutputFormat, Table};

use super::EXIT_OK;

const TIMEOUT: Duration = Duration::from_secs(5);
/// Shown when a component answers without a version.
const UNKNOWN: &str = "unknown";

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Versions {
    client: Component,
    #[serde(skip_serializing_if = "Option::is_none")]
    control_plane: Option<Vec<Component>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_plane: Option<Vec<Component>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Component {
    component: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<String>,
    /// URL, file or pod the answer came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<String>,
    /// `None` when the component did not say.
    version: Option<String>,
    status: String,
}

fn client() -> Component {
    Component {
        component: "meshctl".into(),
        node: None,
        source: None,
        version: Some(env!("CARGO_PKG_VERSION").into()),
        status: "ok".into(),
    }
}

pub async fn run(ctx: &Ctx, args: &VersionArgs) -> anyhow::Result<u8> {
    let mut v = Versions {
        client: client(),
        control_plane: None,
        data_plane: None,
    };
    if !args.client {
        let (cp, dp) = match &ctx.mode {
            Mode::Local(env) => local(env).await,
            Mode::Kube(s) => match Ctx::kube(s).await {
                Ok(kube) => kube_versions(&kube).await,
                Err(e) => {
                    let unreachable = Component {
                        component: "cluster".into(),
                        node: None,
                        source: None,
                        version: None,
                        status: format!("unreachable: {e}"),
                    };
                    (vec![unreachable], Vec::new())
                }
            },
        };
        v.control_plane = Some(cp);
        v.data_plane = Some(dp);
    }
    match (ctx.output, args.short) {
        (OutputFormat::Table, true) => print!("{}", short(&v)),
        (OutputFormat::Table, false) => print!("{}", table(&v)),
        (other, _) => print!("{}", output::encode(other, &v)?),
    }
    Ok(EXIT_OK)
}

/// `client version: X`, `control plane version: Y`, `data plane version: Z (N components)`.
fn short(v: &Versions) -> String {
    let mut out = format!(
        "client version: {}\n",
        v.client.version.as_deref().unwrap_or(UNKNOWN)
    );
    let summarize = |list: &Option<Vec<Component>>| -> Option<String> {
        let list = list.as_ref()?;
        if list.is_empty() {
            return Some("none found".into());
        }
        let mut versions: Vec<String> = list
            .iter()
            .map(|c| c.version.clone().unwrap_or_else(|| UNKNOWN.into()))
            .collect();
        versions.sort();
        versions.dedup();
        Some(format!(
            "{} ({} component{})",
            versions.join(", "),
            list.len(),
            if list.len() == 1 { "" } else { "s" }
        ))
    };
    if let Some(cp) = summarize(&v.control_plane) {
        out.push_str(&format!("control plane version: {cp}\n"));
    }
    if let Some(dp) = summarize(&v.data_plane) {
        out.push_str(&format!("data plane version: {dp}\n"));
    }
    out
}

fn table(v: &Versions) -> String {
    let mut t = Table::new(["COMPONENT", "NODE", "SOURCE", "VERSION", "STATUS"]);
    let rows = std::iter::once(&v.client)
        .chain(v.control_plane.iter().flatten())
        .chain(v.data_plane.iter().flatten());
    for c in rows {
        t.row([
            c.component.clone(),
            c.node.clone().unwrap_or_default(),
            c.source.clone().unwrap_or_default(),
            c.version.clone().unwrap_or_else(|| UNKNOWN.into()),
            c.status.clone(),
        ]);
    }
    t.render()
}

async fn local(env: &LocalEnv) -> (Vec<Component>, Vec<Component>) {
    if env.istiod.is_none() && env.ztunnels.is_empty() && env.cni_status.is_empty() {
        eprintln!(
            "note: no --istiod-url, --ztunnel-admin or --cni-status given: only the client \
             version is known"
        );
    }
    let mut cp = Vec::new();
    if let Some(istiod) = &env.istiod {
        let mut c = Component {
            component: "istiod".into(),
            node: None,
            source: Some(istiod.base().to_string()),
            version: None,
            status: String::new(),
        };
        match istiod.ready().await {
            Ok(ready) => {
                c.status = if ready { "ready" } else { "not ready" }.into();
                c.version = istiod.version().await.ok().flatten();
            }
            Err(e) => c.status = format!("unreachable: {e}"),
        }
        cp.push(c);
    }
    let mut dp = Vec::new();
    for (node, url) in env.ztunnels.all() {
        let full = http::join(&url, "/config_dump");
        let mut c = Component {
            component: "ztunnel".into(),
            node,
            source: Some(url.clone()),
            version: None,
            status: String::new(),
        };
        match http::get_json::<Value>(&full, TIMEOUT).await {
            Ok(dump) => {
                c.version =
                    version_field(&dump).or_else(|| dump.get("config").and_then(version_field));
                if c.node.is_none() {
                    c.node = dump
                        .get("config")
                        .and_then(|cfg| cfg.get("node_name"))
                        .and_then(Value::as_str)
                        .map(str::to_string);
                }
                c.status = "reachable".into();
            }
            Err(e) => c.status = format!("unreachable: {e}"),
        }
        dp.push(c);
    }
    for path in &env.cni_status {
        let mut c = Component {
            component: "cni-agent".into(),
            node: None,
            source: Some(cni_status::status_path(path).display().to_string()),
            version: None,
            status: String::new(),
        };
        match cni_status::read(path) {
            Ok(s) => {
                c.node = Some(s.node.clone());
                c.status = if s.ztunnel_connected {
                    "ztunnel connected".into()
                } else {
                    "ztunnel not connected".into()
                };
            }
            Err(e) => c.status = format!("unreadable: {e}"),
        }
        dp.push(c);
    }
    (cp, dp)
}

/// A kind of mesh pod and where its running binary reports its version.
struct KubeComponent {
    name: &'static str,
    selector: &'static str,
    /// Port and path of a JSON document with a `version` field, reached through a
    /// port-forward; `None`: the image tag is all there is.
    endpoint: Option<(u16, &'static str)>,
}

const KUBE_COMPONENTS: [KubeComponent; 3] = [
    KubeComponent {
        name: "istiod",
        selector: ISTIOD_SELECTOR,
        endpoint: Some((ISTIOD_MONITORING_PORT, "/debug/config_dump")),
    },
    KubeComponent {
        name: "ztunnel",
        selector: ZTUNNEL_SELECTOR,
        endpoint: Some((ZTUNNEL_ADMIN_PORT, "/config_dump")),
    },
    KubeComponent {
        name: "cni-agent",
        selector: CNI_SELECTOR,
        endpoint: None,
    },
];

/// How many pods are asked for their version at once.
const PARALLEL_QUERIES: usize = 8;

async fn kube_versions(kube: &KubeEnv) -> (Vec<Component>, Vec<Component>) {
    let mut cp = Vec::new();
    let mut dp = Vec::new();
    for kind in &KUBE_COMPONENTS {
        let list = kube_component(kube, kind).await;
        if kind.name == "istiod" {
            cp.extend(list);
        } else {
            dp.extend(list);
        }
    }
    (cp, dp)
}

/// Each pod of one component: the version its binary reports, else its image tag (said so in
/// the status).
async fn kube_component(kube: &KubeEnv, kind: &KubeComponent) -> Vec<Component> {
    let ns = kube.istio_namespace.clone();
    let pods = match kube
        .pods(&ns, &ListParams::default().labels(kind.selector))
        .await
    {
        Ok(pods) => pods,
        Err(e) => {
            return vec![Component {
                component: kind.name.into(),
                node: None,
                source: None,
                version: None,
                status: format!("cannot list: {e}"),
            }];
        }
    };
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(PARALLEL_QUERIES));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, pod) in pods.into_iter().enumerate() {
        let (kube, ns, limit) = (kube.clone(), ns.clone(), limit.clone());
        let endpoint = kind.endpoint;
        let component = kind.name;
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            (i, pod_version(&kube, &ns, &pod, component, endpoint).await)
        });
    }
    let mut out: Vec<(usize, Component)> = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(done) => out.push(done),
            Err(e) => out.push((
                usize::MAX,
                Component {
                    component: kind.name.into(),
                    node: None,
                    source: None,
                    version: None,
                    status: format!("query failed: {e}"),
                },
            )),
        }
    }
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, c)| c).collect()
}

async fn pod_version(
    kube: &KubeEnv,
    ns: &str,
    pod: &Pod,
    component: &str,
    endpoint: Option<(u16, &str)>,
) -> Component {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let ready = crate::waypoint_gateway::pod_ready(pod);
    let tag = image_tag(pod);
    let mut status = if ready { "ready" } else { "not ready" }.to_string();
    let reported = match endpoint {
        Some((port, path)) => {
            match kube
                .get_via_port_forward(ns, &name, port, path, TIMEOUT)
                .await
            {
                Ok(body) => match serde_json::from_slice::<Value>(&body) {
                    Ok(doc) => version_field(&doc).ok_or_else(|| format!("{path} has no version")),
                    Err(e) => Err(format!("{path} is not JSON: {e}")),
                },
                Err(e) => Err(e.to_string()),
            }
        }
        None => Err(String::new()),
    };
    let version = match reported {
        Ok(v) => {
            if v != tag {
                status.push_str(&format!("; image tag {tag}"));
            }
            v
        }
        Err(why) => {
            if why.is_empty() {
                status.push_str("; version from the image tag");
            } else {
                status.push_str(&format!("; version from the image tag ({why})"));
            }
            tag
        }
    };
    Component {
        component: component.into(),
        node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        source: Some(format!("pod {ns}/{name}")),
        version: Some(version),
        status,
    }
}
