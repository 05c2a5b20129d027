//! Step 8: removing `istio.io/dataplane-mode` from the namespace releases its pods, without a
//! restart: the annotation goes, ztunnel stops serving them and leaves no listener in them, the
//! redirect rules are removed, and their traffic is plaintext again.

use e2e::k8s::{eventually, mesh, workloads};

use super::apps::TCP_PORT;
use super::enrol::{DATAPLANE_MODE, assert_same_pods, label_namespace};
use super::{PROPAGATION, Suite, traffic};

pub async fn run(suite: &mut Suite) -> anyhow::Result<()> {
    let suite = &*suite;
    let ns = suite.settings.namespace.as_str();
    let apps = suite.apps()?;
    label_namespace(suite, ns, DATAPLANE_MODE, None).await?;
    suite.log(format!(
        "removed the label {DATAPLANE_MODE} from namespace {ns}"
    ));

    eventually(
        "no pod to carry ambient.istio.io/redirection",
        PROPAGATION,
        || async {
            let a = traffic::redirection_annotations(suite)
                .await
                .map_err(|e| e.to_string())?;
            let left: Vec<String> = a
                .iter()
                .filter_map(|(n, v)| v.as_ref().map(|v| format!("{n}={v}")))
                .collect();
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("still annotated: {left:?}"))
            }
        },
    )
    .await?;
    suite.log("annotation removed from every pod");

    eventually(
        "ztunnel to serve no pod of the namespace",
        PROPAGATION,
        || async {
            let served =
                mesh::ztunnel_in_pod_workloads(&suite.client, &suite.settings.istio_namespace)
                    .await
                    .map_err(|e| e.to_string())?;
            let ours: Vec<String> = served
                .iter()
                .filter(|(_, w)| w.namespace == ns)
                .map(|(z, w)| format!("{z}: {}", w.name))
                .collect();
            if ours.is_empty() {
                Ok(())
            } else {
                Err(format!("still served: {ours:?}"))
            }
        },
    )
    .await?;

    let mut pods: Vec<&str> = apps.pods.values().map(|p| p.name.as_str()).collect();
    // The pod step 6 created, when it ran.
    if workloads::pod(&suite.client, ns, "late").await?.is_some() {
        pods.push("late");
    }
    for pod in &pods {
        let ports = traffic::mesh_ports(suite, pod).await?;
        anyhow::ensure!(
            ports.is_empty(),
            "pod {pod}: ztunnel still listens on {ports:?} in it"
        );
    }
    suite.log(format!("no ztunnel listener left in {pods:?}"));
    for d in ["client", "echo-v1"] {
        let p = apps.pod(d)?;
        if let Some(rules) =
            traffic::mesh_rules_in_pod(suite, p, "no redirect rules left in released pods").await?
        {
            anyhow::ensure!(
                rules.is_empty(),
                "pod {}: mesh rules left:\n{}",
                p.name,
                rules.join("\n")
            );
            suite.log(format!(
                "pod {}: no MESH_ chain left in its nat table",
                p.name
            ));
        }
    }

    assert_same_pods(suite, apps).await?;
    let client = apps.pod("client")?.name.as_str();
    let labels = traffic::mtls_filter(suite, "client", "echo");
    let filter = traffic::as_filter(&labels);
    let before = traffic::ztunnel_opened(suite, &filter).await?;
    for addr in [
        apps.service("echo-v1", TCP_PORT)?,
        format!("{}:{TCP_PORT}", apps.pod("echo-v1")?.ip),
    ] {
        traffic::tcp_echo_ok(suite, client, &addr, "plaintext again").await?;
    }
    let after = traffic::ztunnel_opened(suite, &filter).await?;
    anyhow::ensure!(
        after == before,
        "released pods still talk mutual TLS: ztunnel's count of {labels:?} went from {before} to {after}"
    );
    suite.log("same pods, no restart; client -> echo answered with no new mutual-TLS connection");
    Ok(())
}
