//! Step 3: `istio.io/dataplane-mode=ambient` on the namespace enrols the running pods: the same
//! pods (UIDs, no restart) get the redirection annotation, ztunnel's listeners in their network
//! namespace and the redirect rules, and their traffic becomes mutual TLS with both identities
//! in ztunnel's metrics.

use e2e::k8s::{eventually, mesh, workloads};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams};

use super::apps::{Apps, TCP_PORT};
use super::{PROPAGATION, Suite, traffic};

pub const DATAPLANE_MODE: &str = "istio.io/dataplane-mode";

/// Sets (or with `None` removes) a label of a namespace, as `kubectl label` does.
pub async fn label_namespace(
    suite: &Suite,
    ns: &str,
    key: &str,
    value: Option<&str>,
) -> anyhow::Result<()> {
    let api: Api<Namespace> = Api::all(suite.client.clone());
    let patch = serde_json::json!({ "metadata": { "labels": { key: value } } });
    api.patch(ns, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// The sample pods are still the ones step 2 started: same UIDs, no restart.
pub async fn assert_same_pods(suite: &Suite, apps: &Apps) -> anyhow::Result<()> {
    let now = Apps::observe(suite).await?;
    for (d, before) in &apps.pods {
        let after = now.pod(d)?;
        anyhow::ensure!(
            after.uid == before.uid,
            "deployment {d}: pod {} ({}) was replaced by {} ({})",
            before.name,
            before.uid,
            after.name,
            after.uid
        );
        let pod = workloads::pod(&suite.client, &suite.settings.namespace, &after.name)
            .await?
            .ok_or_else(|| anyhow::anyhow!("pod {} is gone", after.name))?;
        anyhow::ensure!(
            workloads::restarts(&pod) == 0,
            "pod {} restarted: {}",
            after.name,
            workloads::summary(&pod)
        );
    }
    Ok(())
}

pub async fn run(suite: &mut Suite) -> anyhow::Result<()> {
    let apps = suite.apps()?.clone();
    let ns = suite.settings.namespace.clone();
    label_namespace(suite, &ns, DATAPLANE_MODE, Some("ambient")).await?;
    suite.log(format!("labelled namespace {ns} {DATAPLANE_MODE}=ambient"));

    eventually(
        "every sample pod to carry ambient.istio.io/redirection=enabled",
        PROPAGATION,
        || async {
            let a = traffic::redirection_annotations(suite)
                .await
                .map_err(|e| e.to_string())?;
            let missing: Vec<String> = a
                .iter()
                .filter(|(_, v)| v.as_deref() != Some("enabled"))
                .map(|(n, v)| format!("{n}: {v:?}"))
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!("not annotated: {missing:?}"))
            }
        },
    )
    .await?;
    suite.log("every pod annotated ambient.istio.io/redirection=enabled");

    assert_same_pods(suite, &apps).await?;
    suite.log("same pod UIDs, no restart");

    let served =
        mesh::ztunnel_in_pod_workloads(&suite.client, &suite.settings.istio_namespace).await?;
    for p in apps.pods.values() {
        anyhow::ensure!(
            served.iter().any(|(_, w)| w.uid == p.uid),
            "no ztunnel serves pod {} ({}); ztunnels serve: {:?}",
            p.name,
            p.uid,
            served
                .iter()
                .map(|(z, w)| format!("{z}: {}/{}", w.namespace, w.name))
                .collect::<Vec<_>>()
        );
        let ports = traffic::mesh_ports(suite, &p.name).await?;
        anyhow::ensure!(
            ports == mesh::IN_POD_PORTS,
            "pod {}: ztunnel listens on {ports:?} in its network namespace, expected {:?}",
            p.name,
            mesh::IN_POD_PORTS
        );
    }
    suite.log("ztunnel serves every pod and listens on 15001, 15006, 15008 in each");

    for d in ["client", "echo-v1"] {
        let p = apps.pod(d)?.clone();
        if let Some(rules) =
            traffic::mesh_rules_in_pod(suite, &p, "redirect rules in enrolled pods").await?
        {
            anyhow::ensure!(
                rules.iter().any(|l| l.contains("MESH_OUTPUT"))
                    && rules.iter().any(|l| l.contains("MESH_PREROUTING")),
                "pod {}: no MESH_OUTPUT / MESH_PREROUTING chains in its nat table:\n{}",
                p.name,
                rules.join("\n")
            );
            suite.log(format!(
                "pod {}: MESH_PREROUTING and MESH_OUTPUT in its nat table ({} rule lines)",
                p.name,
                rules.len()
            ));
        }
    }

    let client = apps.pod("client")?.name.clone();
    let echo = apps.service("echo-v1", TCP_PORT)?;
    let n = traffic::eventually_mtls(suite, &client, &echo, "client", "echo").await?;
    suite.log(format!(
        "client -> echo-v1 over mutual TLS: {n} connections from {} to {}",
        suite.settings.principal("client"),
        suite.settings.principal("echo")
    ));
    Ok(())
}
