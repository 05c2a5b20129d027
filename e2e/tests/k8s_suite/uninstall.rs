//! Step 9: the sample namespace deleted, then `helm uninstall`: no pod of the mesh left, no
//! object of the release, nothing the components created at run time, and on every node the CNI
//! configuration as it was before the install, no plugin binary, no rule, no state file.

use std::time::{Duration, Instant};

use anyhow::Context;
use e2e::k8s::node::CNI_BIN_DIR;
use e2e::k8s::tools::run as run_tool;
use e2e::k8s::{apply, eventually, workloads};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams};

use super::install::MESH_CHAIN_PREFIX;
use super::{ROLLOUT, Suite};

/// Host directories the charts mount (hostPath) for the mesh's sockets and state.
const HOST_STATE_DIRS: [&str; 2] = ["/var/run/mesh-cni", "/var/run/ztunnel"];

pub async fn run(suite: &mut Suite) -> anyhow::Result<()> {
    let suite = &*suite;
    let s = &suite.settings;
    let namespaces: Api<Namespace> = Api::all(suite.client.clone());
    if namespaces.get_opt(&s.namespace).await?.is_some() {
        let t = Instant::now();
        namespaces
            .delete(&s.namespace, &DeleteParams::default())
            .await?;
        // When each pod was last seen, to tell which ones were slow to stop.
        let last_seen = std::sync::Mutex::new(std::collections::BTreeMap::<String, f64>::new());
        eventually(
            &format!("namespace {} to be deleted", s.namespace),
            ROLLOUT,
            || async {
                if let Ok(pods) = workloads::pods(&suite.client, &s.namespace, "").await {
                    let mut seen = last_seen
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    for p in &pods {
                        seen.insert(workloads::name(p).to_string(), t.elapsed().as_secs_f64());
                    }
                }
                match namespaces.get_opt(&s.namespace).await {
                    Ok(None) => Ok(()),
                    Ok(Some(n)) => Err(format!("phase {:?}", n.status.and_then(|s| s.phase))),
                    Err(e) => Err(e.to_string()),
                }
            },
        )
        .await?;
        let seen = last_seen
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let slow: Vec<String> = seen
            .iter()
            .filter(|(_, at)| **at > 5.0)
            .map(|(p, at)| format!("{p} (still there at {at:.1}s)"))
            .collect();
        suite.log(format!(
            "namespace {} deleted in {:.1}s; pods slow to stop: {}",
            s.namespace,
            t.elapsed().as_secs_f64(),
            if slow.is_empty() {
                "none".to_string()
            } else {
                slow.join(", ")
            }
        ));
    }

    let manifest = run_tool(
        s,
        &s.helm,
        &["get", "manifest", &s.release, "-n", &s.istio_namespace],
        Duration::from_secs(60),
    )
    .await?
    .checked()
    .context("helm get manifest")?
    .stdout;
    let objects = apply::parse(&manifest)?;
    let t = Instant::now();
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
    .context("helm uninstall")?;
    suite.log(format!(
        "helm uninstall: done in {:.1}s ({} objects in the release)",
        t.elapsed().as_secs_f64(),
        objects.len()
    ));

    let ns = s.istio_namespace.as_str();
    eventually(
        &format!("every pod of {ns} to be gone"),
        ROLLOUT,
        || async {
            let pods = workloads::pods(&suite.client, ns, "")
                .await
                .map_err(|e| e.to_string())?;
            if pods.is_empty() {
                Ok(())
            } else {
                Err(pods
                    .iter()
                    .map(workloads::summary)
                    .collect::<Vec<_>>()
                    .join(", "))
            }
        },
    )
    .await?;
    suite.log(format!("no pod left in {ns}"));

    let mut left = Vec::new();
    for obj in &objects {
        // A kind no longer served (its CRD was part of the release) has no objects left.
        let Ok(api) = apply::api_for(&suite.client, obj).await else {
            continue;
        };
        let name = obj.metadata.name.as_deref().unwrap_or_default();
        if api.get_opt(name).await?.is_some() {
            left.push(format!("{} (from the release)", apply::describe(obj)));
        }
    }
    // What istiod made at run time is owned by the release's ClusterRole: the garbage
    // collector deletes it shortly after the uninstall.
    let collected = eventually(
        "the objects made at run time to be garbage-collected",
        Duration::from_secs(60),
        || async {
            let found = runtime_leftovers(&suite.client, ns)
                .await
                .map_err(|e| e.to_string())?;
            if found.is_empty() {
                Ok(())
            } else {
                Err(found.join(", "))
            }
        },
    )
    .await;
    if let Err(e) = collected {
        left.push(e.to_string());
    }

    let mut node_problems = Vec::new();
    for shell in suite
        .node_shells("the CNI configuration, plugin, rules and state after the uninstall")
        .await?
    {
        let Some(before) = suite.before.get(&shell.node) else {
            node_problems.push(format!(
                "node {}: no record of its state before the install",
                shell.node
            ));
            continue;
        };
        let restored = eventually(
            &format!(
                "the CNI configuration of node {} to be restored",
                shell.node
            ),
            Duration::from_secs(60),
            || async {
                let now = shell.cni_config().await.map_err(|e| e.to_string())?;
                if now == before.cni_config {
                    Ok(())
                } else {
                    Err(format!("before:\n{}\nnow:\n{now}", before.cni_config))
                }
            },
        )
        .await;
        if let Err(e) = restored {
            node_problems.push(e.to_string());
        }
        if !before.plugin_binary && shell.exists(&format!("{CNI_BIN_DIR}/mesh-cni")).await? {
            node_problems.push(format!(
                "node {}: {CNI_BIN_DIR}/mesh-cni left behind",
                shell.node
            ));
        }
        let rules = shell.host_rules_matching(MESH_CHAIN_PREFIX).await?;
        if rules != before.host_rules {
            node_problems.push(format!(
                "node {}: host rules left:\n{}",
                shell.node,
                rules.join("\n")
            ));
        }
        for dir in HOST_STATE_DIRS {
            let files = shell.files_under(dir).await?;
            if !files.is_empty() {
                node_problems.push(format!(
                    "node {}: files left in {dir}: {files:?}",
                    shell.node
                ));
            }
        }
    }
    left.extend(node_problems);
    anyhow::ensure!(
        left.is_empty(),
        "left behind after helm uninstall:\n  {}",
        left.join("\n  ")
    );
    suite.log(
        "nothing left: release objects, run-time objects, CNI configuration, plugin, rules, state",
    );
    Ok(())
}

/// The objects of kind `K` in `ns`, but for those named in `keep`, as `Kind ns/name`.
async fn named_leftovers<K>(client: &Client, ns: &str, keep: &[&str]) -> anyhow::Result<Vec<String>>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    let list = Api::<K>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?;
    Ok(list
        .items
        .iter()
        .filter_map(|o| o.meta().name.clone())
        .filter(|n| !keep.contains(&n.as_str()))
        .map(|n| format!("{kind} {ns}/{n}"))
        .collect())
}

/// What the components made at run time and did not remove: the root certificate ConfigMaps
/// istiod publishes in every namespace, webhook configurations, and anything but the defaults in
/// the mesh's namespace.
async fn runtime_leftovers(client: &Client, ns: &str) -> anyhow::Result<Vec<String>> {
    let mut left = Vec::new();
    let lp = ListParams::default();
    let cms: Api<ConfigMap> = Api::all(client.clone());
    for cm in cms.list(&lp).await? {
        if cm.metadata.name.as_deref() == Some("istio-ca-root-cert") {
            left.push(format!(
                "ConfigMap {}/istio-ca-root-cert",
                cm.metadata.namespace.unwrap_or_default()
            ));
        }
    }
    let vw: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    for w in vw.list(&lp).await? {
        let name = w.metadata.name.unwrap_or_default();
        if name.contains("istio") || name.contains("mesh") {
            left.push(format!("ValidatingWebhookConfiguration {name}"));
        }
    }
    let mw: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    for w in mw.list(&lp).await? {
        let name = w.metadata.name.unwrap_or_default();
        if name.contains("istio") || name.contains("mesh") {
            left.push(format!("MutatingWebhookConfiguration {name}"));
        }
    }
    left.extend(
        named_leftovers::<ConfigMap>(client, ns, &["kube-root-ca.crt", "istio-ca-root-cert"])
            .await?,
    );
    left.extend(named_leftovers::<Secret>(client, ns, &[]).await?);
    left.extend(named_leftovers::<Lease>(client, ns, &[]).await?);
    left.extend(named_leftovers::<ServiceAccount>(client, ns, &["default"]).await?);
    left.extend(named_leftovers::<Service>(client, ns, &[]).await?);
    left.extend(named_leftovers::<Deployment>(client, ns, &[]).await?);
    left.extend(named_leftovers::<DaemonSet>(client, ns, &[]).await?);
    Ok(left)
}
