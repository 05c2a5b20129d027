//! Which pods of this node should be enrolled, according to the configuration snapshot.

use std::collections::BTreeMap;
use std::net::IpAddr;

use mesh_config::k8s_openapi::api::core::v1::Pod;
use mesh_config::objects::kind;
use mesh_config::{Object, ObjectKey, Snapshot};

use super::state::PodKey;
use super::zds_sender::PodWorkload;

/// A pod as the configuration describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodView {
    pub workload: PodWorkload,
    /// `status.podIPs` (or `status.podIP`).
    pub ips: Vec<IpAddr>,
    /// Whether the pod should be enrolled ([`mesh_config::pod_enrolled`]).
    pub enroll: bool,
}

fn key_of(pod: &Pod) -> PodKey {
    PodKey::new(
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or_default(),
    )
}

fn ips_of(pod: &Pod) -> Vec<IpAddr> {
    let Some(status) = &pod.status else {
        return Vec::new();
    };
    let mut ips: Vec<IpAddr> = status
        .pod_ips
        .iter()
        .flatten()
        .filter_map(|p| p.ip.parse().ok())
        .collect();
    if let Some(ip) = status.pod_ip.as_deref().and_then(|s| s.parse().ok())
        && !ips.contains(&ip)
    {
        ips.insert(0, ip);
    }
    ips
}

/// The view of `pod` within `snap`.
pub fn view(pod: &Pod, snap: &Snapshot) -> PodView {
    let key = key_of(pod);
    let ns = snap.namespace(&key.namespace);
    PodView {
        workload: PodWorkload {
            uid: mesh_config::pod_uid(pod),
            namespace: key.namespace,
            name: key.name,
            service_account: mesh_config::pod_service_account(pod).to_string(),
        },
        ips: ips_of(pod),
        enroll: mesh_config::pod_enrolled(pod, ns),
    }
}

/// The pod `key` in `snap`.
pub fn find_pod<'a>(snap: &'a Snapshot, key: &PodKey) -> Option<&'a Pod> {
    match snap.get(&ObjectKey::new(kind::POD, &key.namespace, &key.name)) {
        Some(Object::Pod(pod)) => Some(pod),
        _ => None,
    }
}

/// A pod the CNI plugin reported before the configuration shows it: its namespace's label
/// decides (its own labels are unknown), its uid is the runtime's `K8S_POD_UID` or
/// `<namespace>/<name>`, its service account `default`.
pub fn fallback_view(key: &PodKey, uid: Option<&str>, snap: &Snapshot) -> PodView {
    PodView {
        workload: PodWorkload {
            uid: uid.map(str::to_string).unwrap_or_else(|| key.to_string()),
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            service_account: "default".to_string(),
        },
        ips: Vec::new(),
        enroll: snap
            .namespace(&key.namespace)
            .is_some_and(mesh_config::namespace_enrolled),
    }
}

/// Every pod scheduled on `node`.
pub fn node_pods(snap: &Snapshot, node: &str) -> BTreeMap<PodKey, PodView> {
    snap.pods()
        .filter(|p| {
            p.spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_some_and(|n| n == node)
        })
        .map(|p| (key_of(p), view(p, snap)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFESTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Namespace
metadata: {name: plain}
---
apiVersion: v1
kind: Pod
metadata: {name: cart-0, namespace: shop}
spec: {nodeName: node-a, serviceAccountName: cart, containers: [{name: c, image: i}]}
status: {podIP: 10.1.0.5, podIPs: [{ip: 10.1.0.5}, {ip: "fd00::5"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: legacy, namespace: shop, labels: {istio.io/dataplane-mode: none}}
spec: {nodeName: node-a, containers: [{name: c, image: i}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: plain}
spec: {nodeName: node-a, containers: [{name: c, image: i}]}
---
apiVersion: v1
kind: Pod
metadata: {name: elsewhere, namespace: shop}
spec: {nodeName: node-b, containers: [{name: c, image: i}]}
"#;

    #[test]
    fn pods_of_the_node_with_their_verdict() {
        let snap = Snapshot::from_yaml("test.yaml", MANIFESTS);
        assert!(snap.issues.is_empty(), "{:?}", snap.issues);
        let pods = node_pods(&snap, "node-a");
        let keys: Vec<String> = pods.keys().map(|k| k.to_string()).collect();
        assert_eq!(keys, ["plain/web", "shop/cart-0", "shop/legacy"]);
        let cart = &pods[&PodKey::new("shop", "cart-0")];
        assert!(cart.enroll);
        assert_eq!(cart.workload.uid, "shop/cart-0");
        assert_eq!(cart.workload.service_account, "cart");
        assert_eq!(cart.ips.len(), 2);
        assert!(!pods[&PodKey::new("shop", "legacy")].enroll);
        assert!(!pods[&PodKey::new("plain", "web")].enroll);
    }

    #[test]
    fn unknown_pods_follow_their_namespace() {
        let snap = Snapshot::from_yaml("test.yaml", MANIFESTS);
        let v = fallback_view(&PodKey::new("shop", "new-1"), Some("uid-9"), &snap);
        assert!(v.enroll);
        assert_eq!(v.workload.uid, "uid-9");
        assert!(!fallback_view(&PodKey::new("plain", "x"), None, &snap).enroll);
        assert_eq!(
            fallback_view(&PodKey::new("plain", "x"), None, &snap)
                .workload
                .uid,
            "plain/x"
        );
    }
}
