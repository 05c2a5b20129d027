//! Step 6: pods created in the enrolled namespace are enrolled at creation, before their first
//! container runs: an init container's connection is already mutual TLS. A pod labelled
//! `istio.io/dataplane-mode=none` is left alone.

use e2e::k8s::{apply, eventually, mesh, workloads};

use super::apps::{TCP_PORT, container_yaml, echo_image};
use super::{ROLLOUT, Suite, traffic};

fn manifests(ns: &str, target_ip: &str) -> String {
    let image = echo_image();
    let container = container_yaml("    ");
    format!(
        "apiVersion: v1
kind: ServiceAccount
metadata:
  name: late
  namespace: {ns}
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: optout
  namespace: {ns}
---
apiVersion: v1
kind: Pod
metadata:
  name: optout
  namespace: {ns}
  labels:
    app: optout
    istio.io/dataplane-mode: none
spec:
  serviceAccountName: optout
  containers:
{container}---
apiVersion: v1
kind: Pod
metadata:
  name: late
  namespace: {ns}
  labels:
    app: late
spec:
  serviceAccountName: late
  # The first connection of the pod, before its app starts: it must already go through the mesh.
  initContainers:
    - name: first-connection
      image: {image}
      imagePullPolicy: IfNotPresent
      args: [client, tcp, \"{target_ip}:{TCP_PORT}\", --message, from-init, --timeout-ms, \"5000\"]
  containers:
{container}"
    )
}

pub async fn run(suite: &mut Suite) -> anyhow::Result<()> {
    let suite = &*suite;
    let ns = suite.settings.namespace.as_str();
    let apps = suite.apps()?;
    // The client pod's echo server: no Service selects it, so whatever waypoint step 5 left
    // for the namespace's services, traffic to it goes straight to its ztunnel.
    let target = apps.pod("client")?;
    let echo_addr = format!("{}:{TCP_PORT}", target.ip);
    let yaml = manifests(ns, &target.ip);
    let objs = apply::parse(&yaml)?;
    // The opted-out pod first, so that when the later one is enrolled the agent has long seen it.
    for obj in &objs[..3] {
        apply::apply_object(&suite.client, obj).await?;
    }
    eventually("pod optout to be ready", ROLLOUT, || {
        workloads::pods_ready(&suite.client, ns, "app=optout", 1)
    })
    .await?;
    apply::apply_object(&suite.client, &objs[3]).await?;
    let late = eventually("pod late to be ready", ROLLOUT, || {
        workloads::pods_ready(&suite.client, ns, "app=late", 1)
    })
    .await?;
    let late = &late[0];
    let init_restarts: i32 = late
        .status
        .as_ref()
        .and_then(|s| s.init_container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).sum())
        .unwrap_or(0);
    anyhow::ensure!(
        init_restarts == 0,
        "pod late: its init container's first connection to {echo_addr} failed ({init_restarts} retries): {}",
        workloads::summary(late)
    );

    // Enrolled at creation: the init container's connection was mutual TLS.
    let labels = traffic::mtls_filter(suite, "late", "client");
    let filter = traffic::as_filter(&labels);
    let from_init = traffic::ztunnel_opened(suite, &filter).await?;
    anyhow::ensure!(
        from_init >= 1.0,
        "pod late's init container reached {echo_addr}, but not over mutual TLS (no series {labels:?}):\n{}",
        traffic::describe_connections(suite).await
    );
    suite.log(format!(
        "pod late: its init container's connection was mutual TLS ({from_init} counted)"
    ));
    eventually(
        "pod late to carry ambient.istio.io/redirection=enabled",
        super::PROPAGATION,
        || async {
            let a = traffic::redirection_annotations(suite)
                .await
                .map_err(|e| e.to_string())?;
            match a.iter().find(|(n, _)| n == "late") {
                Some((_, Some(v))) if v == "enabled" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await?;
    let ports = traffic::mesh_ports(suite, "late").await?;
    anyhow::ensure!(
        ports == mesh::IN_POD_PORTS,
        "pod late: ztunnel listens on {ports:?}"
    );
    traffic::eventually_mtls(suite, "late", &echo_addr, "late", "client").await?;
    suite.log("pod late: annotated, ztunnel listening in it, its traffic mutual TLS");

    // Opted out: nothing of the mesh, and its (plaintext) traffic still reaches enrolled pods.
    let annotations = traffic::redirection_annotations(suite).await?;
    if let Some((_, Some(v))) = annotations.iter().find(|(n, _)| n == "optout") {
        anyhow::bail!(
            "pod optout (istio.io/dataplane-mode=none) carries {}={v}",
            traffic::REDIRECTION_ANNOTATION
        );
    }
    let served =
        mesh::ztunnel_in_pod_workloads(&suite.client, &suite.settings.istio_namespace).await?;
    if let Some((z, _)) = served
        .iter()
        .find(|(_, w)| w.namespace == ns && w.name == "optout")
    {
        anyhow::bail!("ztunnel {z} serves pod optout (istio.io/dataplane-mode=none)");
    }
    let ports = traffic::mesh_ports(suite, "optout").await?;
    anyhow::ensure!(
        ports.is_empty(),
        "pod optout: ztunnel listens on {ports:?} in it"
    );
    traffic::tcp_echo_ok(suite, "optout", &echo_addr, "from outside the mesh").await?;
    let optout_principal = suite.settings.principal("optout");
    let mtls = traffic::ztunnel_opened(
        suite,
        &[
            ("connection_security_policy", "mutual_tls"),
            ("source_principal", optout_principal.as_str()),
        ],
    )
    .await?;
    anyhow::ensure!(
        mtls == 0.0,
        "ztunnel counted {mtls} mutual-TLS connections from {optout_principal}"
    );
    suite.log("pod optout: not annotated, not served, no listener; its plaintext echo answered");
    Ok(())
}
