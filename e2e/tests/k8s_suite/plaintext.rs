//! Step 2: the sample apps in a namespace without the ambient label. They talk, and the mesh
//! has nothing to do with it: no pod annotated, none served by ztunnel, no ztunnel listener in
//! their network namespaces, no connection of theirs in ztunnel's metrics.

use anyhow::Context;
use e2e::k8s::{apply, eventually, mesh, workloads};

use super::apps::{self, Apps, DEPLOYMENTS, HTTP_PORT, TCP_PORT};
use super::{ROLLOUT, Suite, traffic};

pub async fn run(suite: &mut Suite) -> anyhow::Result<()> {
    let ns = suite.settings.namespace.clone();
    apply::apply_yaml(&suite.client, &apps::manifests(&ns)).await?;
    for (name, ..) in DEPLOYMENTS {
        eventually(
            &format!("deployment {ns}/{name} to be available"),
            ROLLOUT,
            || workloads::deployment_ready(&suite.client, &ns, name),
        )
        .await?;
    }
    let apps = Apps::observe(suite).await?;
    for p in apps.pods.values() {
        suite.log(format!("  pod {} uid={} ip={}", p.name, p.uid, p.ip));
    }
    suite.apps = Some(apps.clone());

    let client = &apps.pod("client")?.name;
    let echo = apps.service("echo-v1", TCP_PORT)?;
    // kube-proxy programs a new Service a moment after its pods are ready.
    traffic::eventually_tcp_ok(suite, client, &echo, std::time::Duration::from_secs(30)).await?;
    traffic::tcp_echo_ok(suite, client, &echo, "hello plaintext").await?;
    let url = format!("http://{}/", apps.service("echo-v1", HTTP_PORT)?);
    match traffic::http_get(suite, client, &url).await? {
        Ok((200, _)) => {}
        Ok((status, body)) => anyhow::bail!("GET {url} from {client}: {status}\n{body}"),
        Err(e) => anyhow::bail!("GET {url} from {client}: {e}"),
    }
    suite.log(format!(
        "{client} -> echo-v1 (TCP {echo}, HTTP {url}): answered"
    ));

    assert_outside_mesh(suite, &apps, &["client", "intruder", "echo-v1", "echo-v2"]).await?;
    let m = mesh::ztunnel_metrics(&suite.client, &suite.settings.istio_namespace).await?;
    for side in [
        "source_workload_namespace",
        "destination_workload_namespace",
    ] {
        let n = m.sum(mesh::TCP_OPENED, &[(side, ns.as_str())]);
        anyhow::ensure!(
            n == 0.0,
            "ztunnel counted {n} connections with {side}={ns} before the namespace was enrolled:\n{}",
            m.describe(mesh::TCP_OPENED, &mesh::CONNECTION_KEYS)
        );
    }
    for d in ["client", "echo-v1"] {
        let p = apps.pod(d)?.clone();
        if let Some(rules) =
            traffic::mesh_rules_in_pod(suite, &p, "no redirect rules in pods outside the mesh")
                .await?
        {
            anyhow::ensure!(
                rules.is_empty(),
                "mesh rules in pod {} before enrolment:\n{}",
                p.name,
                rules.join("\n")
            );
        }
    }
    suite.log("no pod annotated or served by ztunnel, no ztunnel listener or mesh rule in the pods, no connection in ztunnel's metrics");
    Ok(())
}

/// The pods of these deployments are not in the mesh: no redirection annotation, not served by
/// any ztunnel, no ztunnel listener in their network namespace.
pub async fn assert_outside_mesh(
    suite: &Suite,
    apps: &Apps,
    deployments: &[&str],
) -> anyhow::Result<()> {
    let annotated = traffic::redirection_annotations(suite).await?;
    let served =
        mesh::ztunnel_in_pod_workloads(&suite.client, &suite.settings.istio_namespace).await?;
    for d in deployments {
        let p = apps.pod(d)?;
        if let Some((_, Some(v))) = annotated.iter().find(|(n, _)| n == &p.name) {
            anyhow::bail!(
                "pod {} carries {}={v}",
                p.name,
                traffic::REDIRECTION_ANNOTATION
            );
        }
        if let Some((z, _)) = served.iter().find(|(_, w)| w.uid == p.uid) {
            anyhow::bail!("ztunnel {z} serves pod {} ({})", p.name, p.uid);
        }
        let ports = traffic::mesh_ports(suite, &p.name)
            .await
            .with_context(|| format!("listeners of {}", p.name))?;
        anyhow::ensure!(
            ports.is_empty(),
            "ztunnel listeners {ports:?} in pod {}",
            p.name
        );
    }
    Ok(())
}
