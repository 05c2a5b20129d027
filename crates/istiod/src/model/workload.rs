//! Pods as `istio.workload.Workload`s.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod;
use mesh_config::Snapshot;
use mesh_proto::proto::workload::{
    NetworkMode, TunnelProtocol, Workload, WorkloadStatus, WorkloadType,
};

use super::ModelConfig;
use super::peer_auth::PeerAuthIndex;
use super::policy::CompiledPolicies;
use super::selector;
use super::service::{ServiceIndex, ip_bytes};

/// Labels that name a workload's canonical service, in order of preference.
const CANONICAL_NAME_LABELS: &[&str] = &[
    "service.istio.io/canonical-name",
    "app.kubernetes.io/name",
    "app",
];
/// Labels that name a workload's canonical revision, in order of preference.
const CANONICAL_REVISION_LABELS: &[&str] = &[
    "service.istio.io/canonical-revision",
    "app.kubernetes.io/version",
    "version",
];

/// The workload of `pod`; `None` for pods without an IP and pods that have finished.
pub(crate) fn build(
    pod: &Pod,
    snapshot: &Snapshot,
    cfg: &ModelConfig,
    services: &ServiceIndex,
    policies: &CompiledPolicies,
    peer_auth: &PeerAuthIndex<'_>,
) -> Option<Workload> {
    let status = pod.status.as_ref()?;
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let mut ips: Vec<IpAddr> = Vec::new();
    let listed = status.pod_ips.iter().flatten().map(|p| p.ip.as_str());
    for ip in status.pod_ip.as_deref().into_iter().chain(listed) {
        if let Ok(ip) = ip.parse::<IpAddr>()
            && !ips.contains(&ip)
        {
            ips.push(ip);
        }
    }
    if ips.is_empty() {
        return None;
    }
    let meta = &pod.metadata;
    let namespace = selector::namespace(meta);
    let name = selector::name(meta);
    let labels = selector::labels(meta);
    let ns = snapshot.namespace(namespace);
    let enrolled = mesh_config::pod_enrolled(pod, ns);
    let host_network = mesh_config::pod_host_network(pod);

    let mut authorization_policies = policies.selected_for(namespace, labels);
    authorization_policies.extend(peer_auth.policies_for(namespace, labels));
    authorization_policies.sort();
    authorization_policies.dedup();

    Some(Workload {
        uid: mesh_config::pod_uid(pod),
        name: name.to_string(),
        namespace: namespace.to_string(),
        addresses: ips.into_iter().map(ip_bytes).collect(),
        tunnel_protocol: if enrolled {
            TunnelProtocol::Hbone
        } else {
            TunnelProtocol::None
        } as i32,
        trust_domain: cfg.trust_domain.clone(),
        service_account: mesh_config::pod_service_account(pod).to_string(),
        node: pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default(),
        canonical_name: first_label(labels, CANONICAL_NAME_LABELS)
            .unwrap_or_else(|| workload_name(pod))
            .to_string(),
        canonical_revision: first_label(labels, CANONICAL_REVISION_LABELS)
            .unwrap_or("latest")
            .to_string(),
        workload_type: WorkloadType::Pod as i32,
        workload_name: workload_name(pod).to_string(),
        services: services.for_pod(pod).into_iter().collect(),
        authorization_policies,
        status: if ready_false(pod) {
            WorkloadStatus::Unhealthy
        } else {
            WorkloadStatus::Healthy
        } as i32,
        cluster_id: cfg.cluster_id.clone(),
        network_mode: if host_network {
            NetworkMode::HostNetwork
        } else {
            NetworkMode::Standard
        } as i32,
        ..Default::default()
    })
}

fn first_label<'a>(
    labels: Option<&'a std::collections::BTreeMap<String, String>>,
    keys: &[&str],
) -> Option<&'a str> {
    let labels = labels?;
    keys.iter()
        .find_map(|k| labels.get(*k))
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

/// The name of what runs the pod: the Deployment behind its ReplicaSet, its StatefulSet,
/// DaemonSet or Job, or the pod itself.
fn workload_name(pod: &Pod) -> &str {
    let owner = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .or_else(|| pod.metadata.owner_references.iter().flatten().next());
    match owner {
        // `<deployment>-<pod-template-hash>`.
        Some(o) if o.kind == "ReplicaSet" => o
            .name
            .rsplit_once('-')
            .map(|(deployment, _)| deployment)
            .unwrap_or(&o.name),
        Some(o) => &o.name,
        None => selector::name(&pod.metadata),
    }
}

/// Whether the pod reports `Ready=False`.
fn ready_false(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "False"))
}
