//! Configuration sources shared by istiod, the CNI agent and meshctl: Kubernetes-shaped objects
//! (a directory of YAML manifests, or the Kubernetes API server) published as full snapshots.
//!
//! Core objects use the k8s-openapi types; the Istio security CRDs and the Gateway API have
//! their own serde types in [`objects`]. Unknown fields are ignored when parsing.

pub mod dir;
pub mod enrol;
pub mod kube;
pub mod objects;
pub mod parse;
pub mod snapshot;
pub mod source;

pub use crate::kube::{KubeSource, KubeSourceError, KubeSourceOptions, WatchedKind};
pub use dir::{ConfigError, DirSource};
pub use enrol::{
    DATAPLANE_MODE, GATEWAY_NAME_LABEL, REDIRECTION_ANNOTATION, USE_WAYPOINT,
    USE_WAYPOINT_NAMESPACE, WAYPOINT_FOR, namespace_enrolled, pod_enrolled, pod_gateway_name,
    pod_host_network, pod_service_account, pod_uid, use_waypoint, use_waypoint_namespace,
};
pub use k8s_openapi;
pub use objects::{Object, ObjectKey};
pub use parse::{DocumentError, Parsed, parse_manifests};
pub use snapshot::{ConfigIssue, Snapshot};
pub use source::{ConfigSource, StaticSource};
