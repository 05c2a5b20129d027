//! Step 1: the Gateway API CRDs, then `helm install` of the umbrella chart, as the charts'
//! README says; every component becomes Ready and the CNI plugin is chained on every node.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use e2e::k8s::node::{CNI_BIN_DIR, NodeShell};
use e2e::k8s::tools::run as run_tool;
use e2e::k8s::{apply, eventually, workloads};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams};
use kube::core::GroupVersionKind;

use super::meshctl::ctl_namespace;
use super::{ROLLOUT, Suite};

/// What a node looked like before the mesh was installed.
#[derive(Debug, Clone)]
pub struct NodeSnapshot {
    /// Every file of /etc/cni/net.d with its content.
    pub cni_config: String,
    /// Whether /opt/cni/bin/mesh-cni existed.
    pub plugin_binary: bool,
    /// Host iptables lines mentioning the mesh's chains.
    pub host_rules: Vec<String>,
}

/// Prefix of the chains the mesh programs.
pub const MESH_CHAIN_PREFIX: &str = "MESH_";

pub async fn run(suite: &mut Suite) -> anyhow::Result<()> {
    preclean(suite).await?;
    for shell in suite
        .node_shells("the CNI configuration and rules before the install")
        .await?
    {
        let snap = NodeSnapshot {
            cni_config: shell.cni_config().await?,
            plugin_binary: shell.exists(&format!("{CNI_BIN_DIR}/mesh-cni")).await?,
            host_rules: shell.host_rules_matching(MESH_CHAIN_PREFIX).await?,
        };
        suite.log(format!(
            "node {}: CNI configuration recorded ({} bytes), mesh-cni binary present: {}",
            shell.node,
            snap.cni_config.len(),
            snap.plugin_binary
        ));
        suite.before.insert(shell.node.clone(), snap);
    }

    gateway_api_crds(suite).await?;

    let chart = chart_copy(suite).await?;
    let s = &suite.settings;
    let out = run_tool(
        s,
        &s.helm,
        &["dependency", "build", &chart.display().to_string()],
        Duration::from_secs(120),
    )
    .await?
    .checked()
    .context("helm dependency build")?;
    suite.log(format!(
        "helm dependency build: {}",
        out.stdout.lines().last().unwrap_or("")
    ));
    let chart_arg = chart.display().to_string();
    let mut args = vec![
        "install",
        s.release.as_str(),
        chart_arg.as_str(),
        "-n",
        s.istio_namespace.as_str(),
        "--create-namespace",
        "--timeout",
        "5m",
    ];
    let values = s.values.as_ref().map(|v| v.display().to_string());
    if let Some(v) = &values {
        args.extend(["-f", v.as_str()]);
    }
    suite.install_attempted = true;
    let out = run_tool(s, &s.helm, &args, Duration::from_secs(330))
        .await?
        .checked()
        .context("helm install")?;
    suite.log(format!(
        "helm install: {}",
        out.stdout
            .lines()
            .find(|l| l.starts_with("STATUS"))
            .unwrap_or("")
    ));

    let ns = suite.settings.istio_namespace.clone();
    eventually("istiod to be available", ROLLOUT, || {
        workloads::deployment_ready(&suite.client, &ns, "istiod")
    })
    .await?;
    suite.log("istiod: all replicas ready");
    eventually("the CNI node agent to run on every node", ROLLOUT, || {
        workloads::daemonset_ready(&suite.client, &ns, "istio-cni-node")
    })
    .await?;
    suite.log("istio-cni-node: ready on every node");
    eventually("ztunnel to run on every node", ROLLOUT, || {
        workloads::daemonset_ready(&suite.client, &ns, "ztunnel")
    })
    .await?;
    suite.log("ztunnel: ready on every node");
    for p in workloads::pods(&suite.client, &ns, "").await? {
        suite.log(format!("  {}", workloads::summary(&p)));
    }

    let gc = apply::parse(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata:\n  name: istio-waypoint\n",
    )?;
    let live = apply::get_live(&suite.client, &gc[0]).await?;
    anyhow::ensure!(
        live.is_some(),
        "the chart installed no GatewayClass istio-waypoint"
    );

    for shell in suite
        .node_shells("the CNI plugin chained after the install")
        .await?
    {
        plugin_chained(&shell).await?;
        suite.log(format!(
            "node {}: mesh-cni installed and chained",
            shell.node
        ));
    }
    Ok(())
}

/// Removes what an earlier run on the same cluster left: the sample namespace, the release.
async fn preclean(suite: &Suite) -> anyhow::Result<()> {
    let s = &suite.settings;
    let status = run_tool(
        s,
        &s.helm,
        &["status", &s.release, "-n", &s.istio_namespace],
        Duration::from_secs(60),
    )
    .await?;
    let namespaces: Api<Namespace> = Api::all(suite.client.clone());
    for ns in [s.namespace.clone(), ctl_namespace(&s.namespace)] {
        if namespaces.get_opt(&ns).await?.is_none() {
            continue;
        }
        suite.log(format!(
            "namespace {ns} exists (an earlier run): deleting it"
        ));
        let _ = namespaces.delete(&ns, &DeleteParams::default()).await;
        eventually(&format!("namespace {ns} to be gone"), ROLLOUT, || async {
            match namespaces.get_opt(&ns).await {
                Ok(None) => Ok(()),
                Ok(Some(_)) => Err("still there".to_string()),
                Err(e) => Err(e.to_string()),
            }
        })
        .await?;
    }
    if status.success() {
        suite.log(format!(
            "release {} exists (an earlier run): uninstalling it",
            s.release
        ));
        run_tool(
            s,
            &s.helm,
            &[
                "uninstall",
                &s.release,
                "-n",
                &s.istio_namespace,
                "--wait",
                "--timeout",
                "3m",
            ],
            Duration::from_secs(200),
        )
        .await?
        .checked()
        .context("helm uninstall of the earlier release")?;
    }
    Ok(())
}

/// The Gateway API CRDs (standard channel), as charts/base/README.md installs them.
async fn gateway_api_crds(suite: &Suite) -> anyhow::Result<()> {
    let s = &suite.settings;
    let yaml = match std::env::var("MESH_E2E_GATEWAY_API_CRDS")
        .ok()
        .filter(|v| !v.is_empty())
    {
        Some(file) => std::fs::read_to_string(&file).with_context(|| format!("read {file}"))?,
        None => {
            let script = s.repo_root.join("charts/base/scripts/gateway-api-crds.sh");
            run_tool(s, &script, &[], Duration::from_secs(600))
                .await?
                .checked()
                .context("charts/base/scripts/gateway-api-crds.sh (set MESH_E2E_GATEWAY_API_CRDS=<file> to use a downloaded release instead)")?
                .stdout
        }
    };
    let applied = apply::apply_yaml(&suite.client, &yaml).await?;
    suite.log(format!("Gateway API CRDs applied: {}", applied.len()));
    let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute");
    eventually(
        "the HTTPRoute API to be served",
        Duration::from_secs(60),
        || async {
            kube::discovery::pinned_kind(&suite.client, &gvk)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        },
    )
    .await?;
    Ok(())
}

/// A copy of charts/ in the artifacts directory, so that `helm dependency build` writes its
/// packages there and not into the source tree.
async fn chart_copy(suite: &Suite) -> anyhow::Result<PathBuf> {
    let s = &suite.settings;
    let dest = s.artifacts.join("charts");
    if dest.exists() {
        std::fs::remove_dir_all(&dest).with_context(|| format!("remove {}", dest.display()))?;
    }
    std::fs::create_dir_all(&s.artifacts)
        .with_context(|| format!("create {}", s.artifacts.display()))?;
    let src = s.repo_root.join("charts");
    run_tool(
        s,
        std::path::Path::new("cp"),
        &[
            "-a",
            &src.display().to_string(),
            &dest.display().to_string(),
        ],
        Duration::from_secs(60),
    )
    .await?
    .checked()?;
    // Packages of an earlier `helm dependency build` in the source tree are not wanted.
    let _ = std::fs::remove_dir_all(dest.join("ambient/charts"));
    let _ = std::fs::remove_file(dest.join("ambient/Chart.lock"));
    Ok(dest.join("ambient"))
}

/// Polls until the node's CNI configuration chains mesh-cni and its binary is in place.
pub async fn plugin_chained(shell: &NodeShell) -> anyhow::Result<()> {
    eventually(
        &format!("mesh-cni to be chained on node {}", shell.node),
        Duration::from_secs(60),
        || async {
            let conf = shell.cni_config().await.map_err(|e| e.to_string())?;
            let bin = shell
                .exists(&format!("{CNI_BIN_DIR}/mesh-cni"))
                .await
                .map_err(|e| e.to_string())?;
            if conf.contains("mesh-cni") && bin {
                Ok(())
            } else {
                Err(format!(
                    "mesh-cni binary present: {bin}; configuration:\n{conf}"
                ))
            }
        },
    )
    .await?;
    Ok(())
}
