//! The ambient model: what every ztunnel must know, computed from one configuration snapshot.
//!
//! Pods become `istio.workload.Workload`s, Services with a cluster IP become
//! `istio.workload.Service`s, and L4 AuthorizationPolicies and PeerAuthentications become
//! `istio.security.Authorization`s; waypoint Gateways bind services and workloads and get their
//! own L7 configuration ([`waypoint`]). The model is a pure function of the snapshot; the xDS
//! projection ([`crate::xds`]) turns it into resources.

mod peer_auth;
mod policy;
mod selector;
mod service;
pub mod waypoint;
mod workload;

use std::collections::BTreeMap;
use std::path::PathBuf;

use mesh_config::{ObjectKey, Snapshot};
use mesh_proto::proto::security::Authorization;
use mesh_proto::proto::waypoint::Waypoint;
use mesh_proto::proto::workload::{Service, Workload};
use serde::Serialize;

pub use peer_auth::{STATIC_STRICT_POLICY, converted_policy_name};
pub use service::service_hostname;
pub use waypoint::{WaypointStatus, waypoint_resource_name};

/// Settings the model depends on.
#[derive(Clone, Debug, Serialize)]
pub struct ModelConfig {
    /// Trust domain of workload identities.
    pub trust_domain: String,
    /// DNS suffix of services (`<name>.<ns>.svc.<domain_suffix>`).
    pub domain_suffix: String,
    /// Namespace whose selector-less policies apply to the whole mesh.
    pub root_namespace: String,
    /// Cluster id written on workloads.
    pub cluster_id: String,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            trust_domain: "cluster.local".into(),
            domain_suffix: "cluster.local".into(),
            root_namespace: "istio-system".into(),
            cluster_id: "Kubernetes".into(),
        }
    }
}

/// Something in the configuration the model could not take as written: the object, the file it
/// came from (when the source has files) and what was done instead.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ModelIssue {
    pub file: Option<PathBuf>,
    pub object: String,
    pub reason: String,
}

/// The computed model. Every list is sorted by its resource name.
#[derive(Clone, Debug, Default)]
pub struct Model {
    pub workloads: Vec<Workload>,
    pub services: Vec<Service>,
    pub authorizations: Vec<Authorization>,
    pub issues: Vec<ModelIssue>,
    /// Policies attached to waypoints through `targetRefs`; they are not sent to ztunnel but
    /// compiled into [`Model::waypoints`].
    pub waypoint_policies: Vec<ObjectKey>,
    /// The L7 configuration of each accepted waypoint.
    pub waypoints: Vec<Waypoint>,
    /// The status of each waypoint, and of each waypoint named but missing.
    pub waypoint_status: Vec<WaypointStatus>,
}

/// Collects issues while the model is built.
#[derive(Default)]
pub(crate) struct Issues<'a> {
    sources: Option<&'a BTreeMap<ObjectKey, PathBuf>>,
    list: Vec<ModelIssue>,
}

impl Issues<'_> {
    pub(crate) fn push(&mut self, key: &ObjectKey, reason: impl Into<String>) {
        let issue = ModelIssue {
            file: self.sources.and_then(|s| s.get(key)).cloned(),
            object: key.to_string(),
            reason: reason.into(),
        };
        tracing::debug!(object = %issue.object, reason = %issue.reason, "configuration converted");
        self.list.push(issue);
    }
}

impl Model {
    /// Computes the model of `snapshot`.
    pub fn build(snapshot: &Snapshot, cfg: &ModelConfig) -> Model {
        let mut issues = Issues {
            sources: Some(&snapshot.sources),
            list: Vec::new(),
        };
        let services = service::ServiceIndex::build(snapshot, cfg, &mut issues);
        let policies = policy::compile_all(snapshot, cfg, &mut issues);
        let peer_auth = peer_auth::PeerAuthIndex::build(snapshot, cfg, &mut issues);

        let mut workloads: Vec<Workload> = snapshot
            .pods()
            .filter_map(|pod| workload::build(pod, snapshot, cfg, &services, &policies, &peer_auth))
            .collect();
        workloads.sort_by(|a, b| a.uid.cmp(&b.uid));
        workloads.dedup_by(|a, b| a.uid == b.uid);

        let mut authorizations = policies.authorizations();
        authorizations.extend(peer_auth.authorizations());
        authorizations.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));

        let mut services = services.services();
        let waypoints = waypoint::build(
            snapshot,
            cfg,
            &mut services,
            &mut workloads,
            &policies.waypoint_policies,
            &mut issues,
        );

        Model {
            workloads,
            services,
            authorizations,
            issues: issues.list,
            waypoint_policies: policies.waypoint_policies,
            waypoints: waypoints.waypoints,
            waypoint_status: waypoints.status,
        }
    }

    pub fn workload(&self, uid: &str) -> Option<&Workload> {
        self.workloads.iter().find(|w| w.uid == uid)
    }

    /// The service with resource name `namespace/hostname`.
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services
            .iter()
            .find(|s| service_resource_name(s) == name)
    }

    /// The authorization with resource name `namespace/name`.
    pub fn authorization(&self, name: &str) -> Option<&Authorization> {
        self.authorizations
            .iter()
            .find(|a| authorization_resource_name(a) == name)
    }

    /// The waypoint configuration with resource name `namespace/name`.
    pub fn waypoint(&self, name: &str) -> Option<&Waypoint> {
        self.waypoints
            .iter()
            .find(|w| waypoint_resource_name(w) == name)
    }

    /// The status of the waypoint `namespace/name`.
    pub fn waypoint_status(&self, name: &str) -> Option<&WaypointStatus> {
        self.waypoint_status
            .iter()
            .find(|w| format!("{}/{}", w.namespace, w.name) == name)
    }

    /// Workloads backing the service `namespace/hostname` (its endpoints).
    pub fn endpoints(&self, service: &str) -> Vec<&Workload> {
        self.workloads
            .iter()
            .filter(|w| w.services.contains_key(service))
            .collect()
    }
}

/// xDS resource name of a service: `namespace/hostname`.
pub fn service_resource_name(s: &Service) -> String {
    format!("{}/{}", s.namespace, s.hostname)
}

/// xDS resource name of an authorization: `namespace/name`.
pub fn authorization_resource_name(a: &Authorization) -> String {
    format!("{}/{}", a.namespace, a.name)
}
