//! `meshctl precheck`: can this cluster (or, in local mode, this machine) run the mesh? Each
//! check passes, warns or fails, with what to do about it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Namespace, Node};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, PostParams};
use serde::Serialize;
use serde_json::Value;

use crate::cli::PrecheckArgs;
use crate::cni_status;
use crate::context::{Ctx, Mode};
use crate::http;
use crate::kube_client::{KubeEnv, KubeError};
use crate::local::LocalEnv;
use crate::output::{self, OutputFormat};

use super::{EXIT_FAILED, EXIT_OK};

/// Oldest Kubernetes minor version supported.
pub const MIN_KUBERNETES_MINOR: u32 = 28;
/// Where the Gateway API CRDs come from.
const GATEWAY_API_INSTALL: &str = "kubectl apply --server-side -f \
    https://github.com/kubernetes-sigs/gateway-api/releases/download/v1.2.1/standard-install.yaml";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    Pass,
    Warn,
    Fail,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: String,
    pub verdict: Verdict,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn check(name: &str, verdict: Verdict, message: impl Into<String>, fix: Option<String>) -> Check {
    Check {
        name: name.into(),
        verdict,
        message: message.into(),
        fix,
    }
}

fn pass(name: &str, message: impl Into<String>) -> Check {
    check(name, Verdict::Pass, message, None)
}

fn warn(name: &str, message: impl Into<String>, fix: impl Into<String>) -> Check {
    check(name, Verdict::Warn, message, Some(fix.into()))
}

fn fail(name: &str, message: impl Into<String>, fix: impl Into<String>) -> Check {
    check(name, Verdict::Fail, message, Some(fix.into()))
}

#[derive(Debug, Serialize)]
struct Report {
    checks: Vec<Check>,
    passed: bool,
}

pub async fn run(ctx: &Ctx, args: &PrecheckArgs) -> anyhow::Result<u8> {
    let checks = match &ctx.mode {
        Mode::Local(env) => local_checks(env, args).await,
        Mode::Kube(s) => match Ctx::kube(s).await {
            Ok(kube) => kube_checks(&kube).await,
            Err(e) => vec![fail(
                "cluster",
                format!("cannot reach the cluster: {e}"),
                "check KUBECONFIG / --context, or run in local mode with --config-dir",
            )],
        },
    };
    let report = Report {
        passed: checks.iter().all(|c| c.verdict != Verdict::Fail),
        checks,
    };
    match ctx.output {
        OutputFormat::Table => print!("{}", render(&report.checks)),
        other => print!("{}", output::encode(other, &report)?),
    }
    Ok(if report.passed { EXIT_OK } else { EXIT_FAILED })
}

/// `VERDICT  NAME  message`, a `fix:` line under each check that did not pass, and a summary.
pub fn render(checks: &[Check]) -> String {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for c in checks {
        out.push_str(&format!(
            "{}  {:<width$}  {}\n",
            c.verdict.as_str(),
            c.name,
            c.message
        ));
        if let Some(fix) = &c.fix {
            out.push_str(&format!("{:<w$}fix: {fix}\n", "", w = width + 8));
        }
    }
    let count = |v| checks.iter().filter(|c| c.verdict == v).count();
    out.push_str(&format!(
        "\n{} checks: {} passed, {} warnings, {} failed\n",
        checks.len(),
        count(Verdict::Pass),
        count(Verdict::Warn),
        count(Verdict::Fail)
    ));
    out
}

// ---------------------------------------------------------------------------------------------
// local mode

async fn local_checks(env: &LocalEnv, args: &PrecheckArgs) -> Vec<Check> {
    let mut checks = vec![config_dir_check(env)];
    checks.push(root_check());
    checks.push(tool_check("iptables", "apt-get install iptables"));
    checks.push(cni_plugins_check(&args.cni_bin_dir));
    checks.push(cni_conf_check(&args.cni_conf_dir));
    if let Some(istiod) = &env.istiod {
        checks.push(match istiod.ready().await {
            Ok(true) => pass("istiod", format!("ready at {}", istiod.base())),
            Ok(false) => warn(
                "istiod",
                format!("{} answers but is not ready yet", istiod.base()),
                "wait for it to read the configuration directory; its log says why it waits",
            ),
            Err(e) => fail(
                "istiod",
                format!("unreachable: {e}"),
                "start istiod (istiod --config-dir DIR) or correct --istiod-url",
            ),
        });
    }
    for (node, url) in env.ztunnels.all() {
        let name = format!("ztunnel {}", node.as_deref().unwrap_or(url.as_str()));
        checks.push(
            match http::get(&http::join(&url, "/healthz"), Duration::from_secs(5)).await {
                Ok(_) => pass(&name, format!("admin answers at {url}")),
                Err(e) => fail(
                    &name,
                    format!("unreachable: {e}"),
                    "start ztunnel on that node or correct --ztunnel-admin",
                ),
            },
        );
    }
    for path in &env.cni_status {
        checks.push(match cni_status::read(path) {
            Ok(s) if s.ztunnel_connected => pass(
                &format!("node agent {}", s.node),
                format!("{} pod(s) enrolled, ztunnel connected", s.enrolled.len()),
            ),
            Ok(s) => warn(
                &format!("node agent {}", s.node),
                "ztunnel is not connected to the node agent",
                "start ztunnel on that node with the agent's ZDS socket (--zds-socket)",
            ),
            Err(e) => fail(
                "node agent",
                e.to_string(),
                "start cni-agent on that node or correct --cni-status",
            ),
        });
    }
    checks
}

fn config_dir_check(env: &LocalEnv) -> Check {
    const NAME: &str = "configuration directory";
    match env.snapshot() {
        Ok(snap) if snap.issues.is_empty() => pass(
            NAME,
            format!(
                "{}: {} objects",
                env.config_dir.display(),
                snap.objects.len()
            ),
        ),
        Ok(snap) => warn(
            NAME,
            format!(
                "{}: {} objects, {} invalid manifest(s)",
                env.config_dir.display(),
                snap.objects.len(),
                snap.issues.len()
            ),
            format!(
                "meshctl --config-dir {} analyze shows each problem",
                env.config_dir.display()
            ),
        ),
        Err(e) => fail(
            NAME,
            e.to_string(),
            "create it, or pass the directory istiod reads",
        ),
    }
}

/// The effective user id, from `/proc/self/status`.
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

fn root_check() -> Check {
    const NAME: &str = "privileges";
    match effective_uid() {
        Some(0) => pass(NAME, "running as root"),
        Some(uid) => warn(
            NAME,
            format!("running as uid {uid}"),
            "the node agent and ztunnel enter network namespaces and program iptables: run \
             them as root (or with CAP_NET_ADMIN and CAP_SYS_ADMIN)",
        ),
        None => warn(
            NAME,
            "cannot read /proc/self/status",
            "run on Linux with /proc mounted",
        ),
    }
}

fn find_in_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

fn tool_check(tool: &str, install: &str) -> Check {
    match find_in_path(tool) {
        Some(p) => pass(tool, format!("found at {}", p.display())),
        None => fail(
            tool,
            format!("{tool} not found in PATH"),
            install.to_string(),
        ),
    }
}

/// The interface plugins the local harness chains `mesh-cni` after.
const CNI_PLUGINS: [&str; 3] = ["bridge", "host-local", "loopback"];

fn cni_plugins_check(dirs: &[PathBuf]) -> Check {
    const NAME: &str = "CNI plugins";
    let missing: Vec<&str> = CNI_PLUGINS
        .iter()
        .copied()
        .filter(|p| !dirs.iter().any(|d| d.join(p).is_file()))
        .collect();
    let searched = dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if missing.is_empty() {
        pass(
            NAME,
            format!("{} found in {searched}", CNI_PLUGINS.join(", ")),
        )
    } else {
        fail(
            NAME,
            format!("{} not found in {searched}", missing.join(", ")),
            "apt-get install containernetworking-plugins (or pass --cni-bin-dir)",
        )
    }
}

/// The primary network configuration: the first `*.conf`, `*.conflist` or `*.json` by name.
fn primary_conf(dir: &Path) -> std::io::Result<Option<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("conf" | "conflist" | "json")
            )
        })
        .collect();
    files.sort();
    Ok(files.into_iter().next())
}

/// Plugin types of a `.conflist` (`plugins[].type`) or a single-plugin `.conf` (`type`).
fn plugin_types(conf: &Value) -> Vec<String> {
    match conf.get("plugins").and_then(Value::as_array) {
        Some(plugins) => plugins
            .iter()
            .filter_map(|p| p.get("type").and_then(Value::as_str))
            .map(str::to_string)
            .collect(),
        None => conf
            .get("type")
            .and_then(Value::as_str)
            .map(|t| vec![t.to_string()])
            .unwrap_or_default(),
    }
}

fn cni_conf_check(dir: &Path) -> Check {
    const NAME: &str = "CNI configuration";
    let file = match primary_conf(dir) {
        Ok(Some(f)) => f,
        Ok(None) => {
            return warn(
                NAME,
                format!("no network configuration in {}", dir.display()),
                "the node's network must be configured before the node agent can chain mesh-cni \
                 into it (--cni-conf-dir)",
            );
        }
        Err(e) => {
            return warn(
                NAME,
                format!("cannot read {}: {e}", dir.display()),
                "pass the node's CNI configuration directory with --cni-conf-dir",
            );
        }
    };
    let conf: Value = match std::fs::read(&file)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(v) => v,
        Err(e) => {
            return fail(
                NAME,
                format!("{}: {e}", file.display()),
                "fix the file: the container runtime cannot use it either",
            );
        }
    };
    let types = plugin_types(&conf);
    if types.iter().any(|t| t == "istio-cni") {
        return fail(
            NAME,
            format!("{} chains Istio's istio-cni plugin", file.display()),
            "uninstall Istio's CNI node agent first: two redirection agents conflict",
        );
    }
    let chained = if types.iter().any(|t| t == "mesh-cni") {
        "mesh-cni is chained"
    } else {
        "the node agent will chain mesh-cni after them"
    };
    pass(
        NAME,
        format!(
            "{} (plugins: {}); {chained}",
            file.display(),
            types.join(", ")
        ),
    )
}

// ---------------------------------------------------------------------------------------------
// Kubernetes

async fn kube_checks(kube: &KubeEnv) -> Vec<Check> {
    let mut checks = vec![version_check(kube).await];
    checks.push(gateway_api_check(kube).await);
    checks.push(istio_crds_check(kube).await);
    checks.push(cni_check(kube).await);
    checks.push(permissions_check(kube).await);
    checks.extend(conflicts_check(kube).await);
    checks
}

/// `31` of `"31+"`.
fn leading_number(s: &str) -> Option<u32> {
    let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

async fn version_check(kube: &KubeEnv) -> Check {
    const NAME: &str = "Kubernetes version";
    match kube.client.apiserver_version().await {
        Ok(info) => {
            let (major, minor) = (leading_number(&info.major), leading_number(&info.minor));
            match (major, minor) {
                (Some(1), Some(m)) if m >= MIN_KUBERNETES_MINOR => pass(NAME, info.git_version),
                (Some(1), Some(_)) => fail(
                    NAME,
                    format!("{} is too old", info.git_version),
                    format!("upgrade the cluster to 1.{MIN_KUBERNETES_MINOR} or later"),
                ),
                _ => warn(
                    NAME,
                    format!("cannot read the version {:?}", info.git_version),
                    format!("make sure the cluster runs 1.{MIN_KUBERNETES_MINOR} or later"),
                ),
            }
        }
        Err(e) => fail(
            NAME,
            KubeError::api("get the server version", e).to_string(),
            "check KUBECONFIG / --context",
        ),
    }
}

async fn group_resources(kube: &KubeEnv, group_version: &str) -> Result<Vec<String>, KubeError> {
    kube.client
        .list_api_group_resources(group_version)
        .await
        .map(|l| l.resources.into_iter().map(|r| r.name).collect())
        .map_err(|e| KubeError::api(format!("discover {group_version}"), e))
}

async fn gateway_api_check(kube: &KubeEnv) -> Check {
    const NAME: &str = "Gateway API CRDs";
    match group_resources(kube, "gateway.networking.k8s.io/v1").await {
        Ok(resources) => {
            let missing: Vec<&str> = ["gateways", "httproutes", "grpcroutes"]
                .into_iter()
                .filter(|r| !resources.iter().any(|x| x == r))
                .collect();
            match missing.as_slice() {
                [] => pass(NAME, "gateways, httproutes and grpcroutes (v1) are served"),
                ["grpcroutes"] => warn(
                    NAME,
                    "GRPCRoute v1 is not served (Gateway API older than 1.1)",
                    GATEWAY_API_INSTALL,
                ),
                _ => fail(
                    NAME,
                    format!("{} (v1) not served", missing.join(", ")),
                    GATEWAY_API_INSTALL,
                ),
            }
        }
        Err(e) if e.code() == Some(404) => fail(
            NAME,
            "the gateway.networking.k8s.io/v1 API is not installed",
            GATEWAY_API_INSTALL,
        ),
        Err(e) => warn(NAME, e.to_string(), "check that you may read API discovery"),
    }
}

async fn istio_crds_check(kube: &KubeEnv) -> Check {
    const NAME: &str = "Istio security CRDs";
    match group_resources(kube, "security.istio.io/v1").await {
        Ok(r) if r.iter().any(|x| x == "authorizationpolicies") => pass(
            NAME,
            "AuthorizationPolicy and PeerAuthentication (v1) are served",
        ),
        Ok(_) | Err(_) => warn(
            NAME,
            "security.istio.io/v1 is not installed yet",
            "the mesh's base chart installs them: helm install mesh-base charts/base",
        ),
    }
}

/// CNI implementations recognised from DaemonSet names in kube-system, and what to know.
const KNOWN_CNIS: [(&str, &str, Option<&str>); 7] = [
    (
        "cilium",
        "Cilium",
        Some(
            "Cilium must run with cni.exclusive=false (and socketLB.hostNamespaceOnly=true) so that \
         mesh-cni can be chained and redirection works",
        ),
    ),
    ("calico", "Calico", None),
    ("flannel", "Flannel", None),
    ("kindnet", "kindnet", None),
    ("weave", "Weave Net", None),
    ("aws-node", "Amazon VPC CNI", None),
    ("antrea", "Antrea", None),
];

async fn cni_check(kube: &KubeEnv) -> Check {
    const NAME: &str = "CNI";
    let ds: Api<DaemonSet> = Api::all(kube.client.clone());
    let names: Vec<String> = match ds.list(&ListParams::default()).await {
        Ok(l) => l
            .items
            .into_iter()
            .filter_map(|d| d.metadata.name)
            .collect(),
        Err(e) => {
            return warn(
                NAME,
                format!(
                    "cannot list DaemonSets to identify the CNI: {}",
                    KubeError::api("list DaemonSets", e)
                ),
                "make sure the nodes' CNI configuration lives in /etc/cni/net.d (the node agent \
                 chains mesh-cni there)",
            );
        }
    };
    let nodes: Api<Node> = Api::all(kube.client.clone());
    let node_count = nodes
        .list(&ListParams::default())
        .await
        .map(|l| l.items.len())
        .unwrap_or(0);
    let found: Vec<&(&str, &str, Option<&str>)> = KNOWN_CNIS
        .iter()
        .filter(|(needle, _, _)| names.iter().any(|n| n.contains(needle)))
        .collect();
    match found.as_slice() {
        [] => warn(
            NAME,
            format!("could not identify the CNI of the {node_count} node(s)"),
            "the node agent chains mesh-cni into the primary configuration of /etc/cni/net.d; \
             make sure your CNI writes one there",
        ),
        [(_, name, Some(advice)), ..] => warn(NAME, format!("{name} detected"), *advice),
        list => pass(
            NAME,
            format!(
                "{} detected on {node_count} node(s); mesh-cni chains after it",
                list.iter()
                    .map(|(_, n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
    }
}

/// What installing the mesh needs: (verb, group, resource, namespaced in the mesh namespace).
const INSTALL_PERMISSIONS: [(&str, &str, &str, bool); 10] = [
    (
        "create",
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        false,
    ),
    ("create", "rbac.authorization.k8s.io", "clusterroles", false),
    (
        "create",
        "rbac.authorization.k8s.io",
        "clusterrolebindings",
        false,
    ),
    ("create", "", "namespaces", false),
    ("patch", "", "namespaces", false),
    ("create", "apps", "daemonsets", true),
    ("create", "apps", "deployments", true),
    ("create", "", "serviceaccounts", true),
    ("create", "", "configmaps", true),
    ("create", "gateway.networking.k8s.io", "gateways", false),
];

async fn permissions_check(kube: &KubeEnv) -> Check {
    const NAME: &str = "permissions";
    let api: Api<SelfSubjectAccessReview> = Api::all(kube.client.clone());
    let mut denied = Vec::new();
    let mut errors = Vec::new();
    for (verb, group, resource, namespaced) in INSTALL_PERMISSIONS {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(verb.into()),
                    group: Some(group.into()),
                    resource: Some(resource.into()),
                    namespace: namespaced.then(|| kube.istio_namespace.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let what = if group.is_empty() {
            format!("{verb} {resource}")
        } else {
            format!("{verb} {resource}.{group}")
        };
        match api.create(&PostParams::default(), &review).await {
            Ok(r) if r.status.as_ref().is_some_and(|s| s.allowed) => {}
            Ok(_) => denied.push(what),
            Err(e) => errors.push(format!("{what}: {}", KubeError::api("access review", e))),
        }
    }
    if !errors.is_empty() {
        return warn(
            NAME,
            format!("could not check: {}", errors.join("; ")),
            "your account may not create SelfSubjectAccessReviews; ask a cluster admin",
        );
    }
    if denied.is_empty() {
        pass(
            NAME,
            format!("allowed to {} install actions", INSTALL_PERMISSIONS.len()),
        )
    } else {
        fail(
            NAME,
            format!("not allowed to {}", denied.join(", ")),
            "install with a cluster-admin account, or have these verbs granted",
        )
    }
}

/// `app.kubernetes.io/part-of` of the objects this mesh's charts install.
const PART_OF_THIS_MESH: &str = "ambient-mesh";

/// An istiod, ztunnel or node agent found in the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Installed {
    /// `Deployment ns/name (image ...)`.
    what: String,
    /// Installed by this mesh's charts (`app.kubernetes.io/part-of: ambient-mesh`).
    ours: bool,
    /// `app.kubernetes.io/version`.
    version: Option<String>,
    /// The helm release that owns it.
    release: Option<String>,
}

fn installed(kind: &str, meta: &ObjectMeta, image: Option<String>) -> Installed {
    let label = |k: &str| meta.labels.as_ref().and_then(|l| l.get(k)).cloned();
    let release = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get("meta.helm.sh/release-name"))
        .cloned();
    let image = image.map(|i| format!(" (image {i})")).unwrap_or_default();
    Installed {
        what: format!(
            "{kind} {}/{}{image}",
            meta.namespace.as_deref().unwrap_or(""),
            meta.name.as_deref().unwrap_or("")
        ),
        ours: label("app.kubernetes.io/part-of").as_deref() == Some(PART_OF_THIS_MESH),
        version: label("app.kubernetes.io/version"),
        release,
    }
}

/// One check: this mesh already installed (upgrade it), or another installation in the way.
fn existing_check(found: &[Installed]) -> Check {
    const NAME: &str = "existing installations";
    if found.is_empty() {
        return pass(NAME, "no istiod, ztunnel or istio-cni-node found");
    }
    let (ours, others): (Vec<&Installed>, Vec<&Installed>) = found.iter().partition(|f| f.ours);
    let list = |v: &[&Installed]| {
        v.iter()
            .map(|f| f.what.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if others.is_empty() {
        let mut versions: Vec<&str> = ours.iter().filter_map(|f| f.version.as_deref()).collect();
        versions.sort_unstable();
        versions.dedup();
        let mut releases: Vec<&str> = ours.iter().filter_map(|f| f.release.as_deref()).collect();
        releases.sort_unstable();
        releases.dedup();
        let version = match versions.as_slice() {
            [] => String::new(),
            v => format!(" {}", v.join(", ")),
        };
        let release = match releases.as_slice() {
            [] => String::new(),
            r => format!(", helm release {}", r.join(", ")),
        };
        return warn(
            NAME,
            format!(
                "this mesh{version} is already installed{release}: {}",
                list(&ours)
            ),
            "nothing to install: change it with helm upgrade, or helm uninstall it before a fresh \
             install",
        );
    }
    let mut message = format!("another installation (not this mesh): {}", list(&others));
    if !ours.is_empty() {
        message.push_str(&format!("; this mesh: {}", list(&ours)));
    }
    warn(
        NAME,
        message,
        "uninstall the other installation first: two control planes or two node agents conflict",
    )
}

async fn conflicts_check(kube: &KubeEnv) -> Vec<Check> {
    let mut found = Vec::new();
    let deployments: Api<Deployment> = Api::namespaced(kube.client.clone(), &kube.istio_namespace);
    if let Ok(Some(d)) = deployments.get_opt("istiod").await {
        // Read through JSON: the optionality of these fields varies across API versions.
        let image = serde_json::to_value(&d).ok().and_then(|v| {
            v.pointer("/spec/template/spec/containers/0/image")
                .and_then(Value::as_str)
                .map(str::to_string)
        });
        found.push(installed("Deployment", &d.metadata, image));
    }
    let ds: Api<DaemonSet> = Api::all(kube.client.clone());
    if let Ok(list) = ds.list(&ListParams::default()).await {
        for d in list.items {
            let name = d.metadata.name.as_deref().unwrap_or_default();
            if name == "ztunnel" || name == "istio-cni-node" {
                found.push(installed("DaemonSet", &d.metadata, None));
            }
        }
    }
    let mut checks = vec![existing_check(&found)];
    let namespaces: Api<Namespace> = Api::all(kube.client.clone());
    if let Ok(list) = namespaces
        .list(&ListParams::default().labels("istio-injection=enabled"))
        .await
        && !list.items.is_empty()
    {
        let names: Vec<String> = list
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect();
        checks.push(warn(
            "sidecar injection",
            format!(
                "namespaces labelled istio-injection=enabled: {}",
                names.join(", ")
            ),
            "this mesh runs ambient only: remove the label (and restart those pods) before \
             enrolling them with meshctl dataplane enroll",
        ));
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendering_shows_fix_lines_and_a_summary() {
        let text = render(&[
            pass("a", "fine"),
            fail("longer name", "broken", "repair it"),
        ]);
        assert_eq!(
            text,
            "PASS  a            fine\nFAIL  longer name  broken\n                   fix: repair it\n\n\
             2 checks: 1 passed, 0 warnings, 1 failed\n"
        );
    }

    #[test]
    fn cni_conf_detection() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(cni_conf_check(dir.path()).verdict, Verdict::Warn);
        std::fs::write(
            dir.path().join("10-net.conflist"),
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"},{"type":"istio-cni"}]}"#,
        )
        .expect("write");
        let c = cni_conf_check(dir.path());
        assert_eq!(c.verdict, Verdict::Fail, "{c:?}");
        std::fs::write(
            dir.path().join("10-net.conflist"),
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"},{"type":"mesh-cni"}]}"#,
        )
        .expect("write");
        let c = cni_conf_check(dir.path());
        assert_eq!(c.verdict, Verdict::Pass, "{c:?}");
        assert!(c.message.contains("mesh-cni is chained"), "{c:?}");
    }

    #[test]
    fn existing_installations_tell_this_mesh_from_others() {
        assert_eq!(existing_check(&[]).verdict, Verdict::Pass);
        let meta = |part_of: &str| ObjectMeta {
            name: Some("istiod".into()),
            namespace: Some("istio-system".into()),
            labels: Some(
                [
                    ("app.kubernetes.io/part-of".to_string(), part_of.to_string()),
                    ("app.kubernetes.io/version".to_string(), "0.1.0".to_string()),
                ]
                .into(),
            ),
            annotations: Some(
                [(
                    "meta.helm.sh/release-name".to_string(),
                    "ambient".to_string(),
                )]
                .into(),
            ),
            ..Default::default()
        };
        let ours = installed(
            "Deployment",
            &meta(PART_OF_THIS_MESH),
            Some("x/istiod:0.1.0".into()),
        );
        let c = existing_check(std::slice::from_ref(&ours));
        assert_eq!(c.verdict, Verdict::Warn);
        assert_eq!(
            c.message,
            "this mesh 0.1.0 is already installed, helm release ambient: Deployment \
             istio-system/istiod (image x/istiod:0.1.0)"
        );
        let other = installed("DaemonSet", &meta("istio"), None);
        let c = existing_check(&[ours, other]);
        assert_eq!(c.verdict, Verdict::Warn);
        assert!(
            c.message.starts_with(
                "another installation (not this mesh): DaemonSet istio-system/istiod;"
            ),
            "{c:?}"
        );
        assert!(
            c.fix.as_deref().unwrap_or("").contains("uninstall"),
            "{c:?}"
        );
    }

    #[test]
    fn minor_versions_with_suffixes() {
        assert_eq!(leading_number("31+"), Some(31));
        assert_eq!(leading_number(""), None);
    }
}
