//! From watch events to the snapshot the agent decides with.
//!
//! The agent watches the pods of its node (field selector `spec.nodeName=<node>`) and every
//! namespace. [`NodeObjects`] keeps the latest state of both, applying each
//! [`watcher::Event`](Event): `Apply`/`Delete` change one object; a (re)list (`Init`,
//! `InitApply`..., `InitDone`) is buffered and replaces the whole kind at once, so objects
//! deleted while the watch was down disappear and no half-listed state is ever published.
//! Nothing is published before both kinds were listed once: an empty pod list at start-up would
//! release every pod the agent restored.
//!
//! Objects are trimmed to what the decision reads ([`trim_pod`], [`trim_namespace`]), so
//! status churn (conditions, container states) does not wake the agent. Pods whose phase is
//! `Succeeded` or `Failed` are left out: they have no sandbox left to enrol, and their
//! addresses may already belong to other pods.

use std::collections::BTreeMap;

use kube::runtime::watcher::Event;
use mesh_config::k8s_openapi::api::core::v1::{Namespace, Pod, PodSpec, PodStatus};
use mesh_config::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use mesh_config::{Object, REDIRECTION_ANNOTATION, Snapshot};

/// Pod phases after which nothing runs any more.
const TERMINAL_PHASES: [&str; 2] = ["Succeeded", "Failed"];

/// Whether all the pod's containers have terminated for good.
pub fn pod_terminated(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| TERMINAL_PHASES.contains(&p))
}

/// The parts of a pod the agent reads: name, namespace, uid, labels, the redirection
/// annotation, node, host network, service account, phase and addresses.
pub fn trim_pod(pod: Pod) -> Pod {
    let meta = pod.metadata;
    let annotations = meta.annotations.and_then(|mut a| {
        let ours = a.remove(REDIRECTION_ANNOTATION)?;
        Some(BTreeMap::from([(REDIRECTION_ANNOTATION.to_string(), ours)]))
    });
    Pod {
        metadata: ObjectMeta {
            name: meta.name,
            namespace: meta.namespace,
            uid: meta.uid,
            labels: meta.labels,
            annotations,
            ..ObjectMeta::default()
        },
        spec: pod.spec.map(|s| PodSpec {
            node_name: s.node_name,
            host_network: s.host_network,
            service_account_name: s.service_account_name,
            service_account: s.service_account,
            ..PodSpec::default()
        }),
        status: pod.status.map(|s| PodStatus {
            phase: s.phase,
            pod_ip: s.pod_ip,
            pod_ips: s.pod_ips,
            ..PodStatus::default()
        }),
    }
}

/// The parts of a namespace the agent reads: its name and labels.
pub fn trim_namespace(ns: Namespace) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: ns.metadata.name,
            labels: ns.metadata.labels,
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

/// The objects of one kind, by key.
#[derive(Debug)]
struct Listing<K> {
    current: BTreeMap<String, K>,
    /// A list in progress (between `Init` and `InitDone`).
    relist: Option<BTreeMap<String, K>>,
    /// Whether a list completed once.
    synced: bool,
}

impl<K> Default for Listing<K> {
    fn default() -> Self {
        Self {
            current: BTreeMap::new(),
            relist: None,
            synced: false,
        }
    }
}

impl<K: PartialEq> Listing<K> {
    /// Applies `event`; `admit` trims an object or turns it away (`None`: treated as absent).
    /// Returns whether the current objects changed.
    fn apply(
        &mut self,
        event: Event<K>,
        key: impl Fn(&K) -> String,
        admit: impl Fn(K) -> Option<K>,
    ) -> bool {
        match event {
            Event::Apply(obj) => {
                let k = key(&obj);
                match admit(obj) {
                    Some(obj) if self.current.get(&k) == Some(&obj) => false,
                    Some(obj) => {
                        self.current.insert(k, obj);
                        true
                    }
                    None => self.current.remove(&k).is_some(),
                }
            }
            Event::Delete(obj) => self.current.remove(&key(&obj)).is_some(),
            Event::Init => {
                self.relist = Some(BTreeMap::new());
                false
            }
            Event::InitApply(obj) => {
                let k = key(&obj);
                if let Some(obj) = admit(obj) {
                    self.relist.get_or_insert_default().insert(k, obj);
                }
                false
            }
            Event::InitDone => {
                let listed = self.relist.take().unwrap_or_default();
                let first = !self.synced;
                self.synced = true;
                let changed = listed != self.current;
                self.current = listed;
                changed || first
            }
        }
    }
}

fn name_of(meta: &ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or_default()
}

/// The pods of one node and every namespace, as the watches report them.
#[derive(Debug)]
pub struct NodeObjects {
    node: String,
    pods: Listing<Pod>,
    namespaces: Listing<Namespace>,
}

impl NodeObjects {
    pub fn new(node: impl Into<String>) -> Self {
        Self {
            node: node.into(),
            pods: Listing::default(),
            namespaces: Listing::default(),
        }
    }

    /// Applies a pod event; returns whether the pods changed. Pods of other nodes (should the
    /// selector let one through) and terminated pods count as absent.
    pub fn apply_pod(&mut self, event: Event<Pod>) -> bool {
        let node = self.node.as_str();
        self.pods.apply(
            event,
            |p| {
                format!(
                    "{}/{}",
                    p.metadata.namespace.as_deref().unwrap_or_default(),
                    name_of(&p.metadata)
                )
            },
            |p| {
                let on_node = p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node);
                (on_node && !pod_terminated(&p)).then(|| trim_pod(p))
            },
        )
    }

    /// Applies a namespace event; returns whether the namespaces changed.
    pub fn apply_namespace(&mut self, event: Event<Namespace>) -> bool {
        self.namespaces.apply(
            event,
            |n| name_of(&n.metadata).to_string(),
            |n| Some(trim_namespace(n)),
        )
    }

    /// Whether both kinds were listed completely at least once.
    pub fn synced(&self) -> bool {
        self.pods.synced && self.namespaces.synced
    }

    /// The current objects as a snapshot (generation 0; the publisher numbers them).
    pub fn snapshot(&self) -> Snapshot {
        Snapshot::from_objects(
            self.namespaces
                .current
                .values()
                .cloned()
                .map(Object::from)
                .chain(self.pods.current.values().cloned().map(Object::from)),
        )
    }
}

#[cfg(test)]
mod tests;
