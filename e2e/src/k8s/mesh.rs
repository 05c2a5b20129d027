//! What the mesh's components report, read as an operator would: ztunnel's and a waypoint's
//! Prometheus metrics (15020) and ztunnel's `config_dump` (admin, 15000, the pod's localhost),
//! through port-forwards.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use serde::Deserialize;

use super::{K8sError, forward, workloads};
use crate::harness::Metrics;

/// Label selectors of the components (the charts' selector labels).
pub const ZTUNNEL_SELECTOR: &str = "app=ztunnel";
pub const CNI_SELECTOR: &str = "k8s-app=istio-cni-node";
pub const ISTIOD_SELECTOR: &str = "app=istiod";
/// Label the waypoint controller puts on a waypoint's pods.
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

pub const METRICS_PORT: u16 = 15020;
pub const ZTUNNEL_ADMIN_PORT: u16 = 15000;
/// ztunnel's listeners inside every enrolled pod's network namespace.
pub const IN_POD_PORTS: [u16; 3] = [15001, 15006, 15008];

/// Series of opened TCP connections (ztunnel and waypoint).
pub const TCP_OPENED: &str = "istio_tcp_connections_opened_total";
/// Series of HTTP requests (waypoint).
pub const REQUESTS: &str = "istio_requests_total";

const SCRAPE_TIMEOUT: Duration = Duration::from_secs(20);

/// The ztunnel pods.
pub async fn ztunnels(client: &Client, istio_ns: &str) -> Result<Vec<Pod>, K8sError> {
    let list = workloads::pods(client, istio_ns, ZTUNNEL_SELECTOR).await?;
    if list.is_empty() {
        return Err(K8sError::Invalid(format!(
            "no ztunnel pod ({ZTUNNEL_SELECTOR}) in {istio_ns}"
        )));
    }
    Ok(list)
}

/// Metrics of one pod's port 15020.
pub async fn pod_metrics(client: &Client, namespace: &str, pod: &str) -> Result<Metrics, K8sError> {
    let text = forward::http_get_ok(
        client,
        namespace,
        pod,
        METRICS_PORT,
        "/metrics",
        SCRAPE_TIMEOUT,
    )
    .await?;
    Metrics::parse(&text)
        .map_err(|e| K8sError::Invalid(format!("metrics of {namespace}/{pod}: {e}")))
}

/// The samples of every ztunnel, together (each node's ztunnel counts its own pods).
pub async fn ztunnel_metrics(client: &Client, istio_ns: &str) -> Result<Metrics, K8sError> {
    let mut all = Metrics::default();
    for z in ztunnels(client, istio_ns).await? {
        let m = pod_metrics(client, istio_ns, workloads::name(&z)).await?;
        all.samples.extend(m.samples);
    }
    Ok(all)
}

/// A pod ztunnel serves in its network namespace (the `pods` of its `config_dump`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct InPodWorkload {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    #[serde(default)]
    pub identity: String,
}

#[derive(Debug, Deserialize)]
struct ConfigDumpPods {
    #[serde(default)]
    pods: Vec<InPodWorkload>,
}

/// Every pod that some ztunnel serves, with the ztunnel pod's name.
pub async fn ztunnel_in_pod_workloads(
    client: &Client,
    istio_ns: &str,
) -> Result<Vec<(String, InPodWorkload)>, K8sError> {
    let mut out = Vec::new();
    for z in ztunnels(client, istio_ns).await? {
        let zname = workloads::name(&z).to_string();
        let body = forward::http_get_ok(
            client,
            istio_ns,
            &zname,
            ZTUNNEL_ADMIN_PORT,
            "/config_dump",
            SCRAPE_TIMEOUT,
        )
        .await?;
        let dump: ConfigDumpPods = serde_json::from_str(&body).map_err(|e| {
            K8sError::Invalid(format!(
                "config_dump of {istio_ns}/{zname}: no `pods` list ({e}): {}",
                body.chars().take(300).collect::<String>()
            ))
        })?;
        out.extend(dump.pods.into_iter().map(|p| (zname.clone(), p)));
    }
    Ok(out)
}

/// A readable listing of one family, keeping only the `keys` labels.
pub fn describe(m: &Metrics, family: &str, keys: &[&str]) -> String {
    m.describe(family, keys)
}

/// Labels that identify a connection or request in messages.
pub const CONNECTION_KEYS: [&str; 6] = [
    "reporter",
    "source_principal",
    "destination_principal",
    "destination_service_name",
    "connection_security_policy",
    "response_flags",
];
