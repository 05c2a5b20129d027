//! Helpers of the Kubernetes end-to-end suite (`tests/kubernetes.rs`), which installs the mesh
//! with helm into the cluster of `KUBECONFIG` and walks through what a user does and sees. Any
//! conformant cluster works: the local one of `e2e/cluster` (what CI runs) or kind.
//!
//! - [`settings`]: the environment the suite reads (kubeconfig, cluster kind, tools).
//! - [`client`]: the API client, checked reachable.
//! - [`apply`]: YAML manifests applied server-side, deleted, looked up.
//! - [`exec`], [`forward`]: a command in a pod, an HTTP GET to a pod's port, through the API
//!   server.
//! - [`workloads`]: readiness of Deployments, DaemonSets and pods.
//! - [`mesh`]: ztunnel's and waypoints' metrics, ztunnel's in-pod workloads.
//! - [`node`]: a shell on a node's host, for what the mesh leaves there.
//! - [`tools`]: helm, meshctl, kubectl as a user runs them.
//! - [`diagnostics`]: logs, descriptions and events gathered when a step fails.
//! - [`wait`]: polling with a deadline.

pub mod apply;
pub mod client;
pub mod diagnostics;
pub mod error;
pub mod exec;
pub mod forward;
pub mod mesh;
pub mod node;
pub mod settings;
pub mod tools;
pub mod wait;
pub mod workloads;

pub use error::K8sError;
pub use settings::{ClusterKind, NodeAccess, Settings};
pub use wait::eventually;
