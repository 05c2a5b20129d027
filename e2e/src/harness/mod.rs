//! The local network-namespace cluster: an underlay router, nodes, pods wired by the standard
//! CNI plugins, and istiod, cni-agent and ztunnel running in them.
//!
//! ```no_run
//! use e2e::harness::{Cluster, PodSpec};
//! # fn main() -> Result<(), e2e::harness::HarnessError> {
//! let cluster = Cluster::builder().nodes(2).build()?;
//! cluster.wait_ready()?;
//! let nodes = cluster.nodes();
//! let server = cluster.add_pod(PodSpec::new("server", "demo").on(&nodes[1]).label("app", "server"))?;
//! let client = cluster.add_pod(PodSpec::new("client", "demo").on(&nodes[0]))?;
//! cluster.start_echo_server(&server, &[9000], &[8080])?;
//! let reply = cluster.echo_tcp(&client, server.addr(9000), "hello")?;
//! assert_eq!(reply, "hello");
//! # Ok(()) }
//! ```
//!
//! Waypoints (L7) are deployed as Kubernetes' waypoint controller would deploy them: a Gateway
//! of class `istio-waypoint`, a pod that is never captured, its Service, and the `waypoint`
//! binary in the pod's netns ([`Cluster::add_waypoint`]); services, namespaces and pods use one
//! through `istio.io/use-waypoint` ([`Cluster::use_waypoint`]).
//!
//! ```no_run
//! use e2e::harness::{Cluster, ServiceSpec, UseWaypointOn, WaypointSpec};
//! # fn main() -> Result<(), e2e::harness::HarnessError> {
//! # let cluster = Cluster::builder().build()?;
//! let wp = cluster.add_waypoint(WaypointSpec::new("waypoint", "demo").node("node2"))?;
//! let svc = cluster.add_service(
//!     ServiceSpec::new("echo", "demo").select("app", "echo").named_port("http", 80, 8080),
//! )?;
//! cluster.use_waypoint(UseWaypointOn::Service(&svc), Some(&wp.name))?;
//! let through = cluster.waypoint_requests(&wp, &[("response_code", "200")])?;
//! # let _ = through; Ok(()) }
//! ```
//!
//! Requires root, iproute2, iptables and Debian's containernetworking-plugins; captures need
//! tcpdump. Binaries come from `MESH_BIN_DIR` (default `$CARGO_TARGET_DIR/debug`). Set
//! `MESH_E2E_KEEP=1` to keep a cluster's work directory (logs, configs, captures) after it is
//! dropped, and `MESH_E2E_LOG` to change the components' log filter (default `info`).

pub mod capture;
pub mod cleanup;
pub mod cluster;
pub mod cmd;
pub mod cni;
pub mod components;
pub mod error;
pub mod manifests;
pub mod metrics;
pub mod names;
pub mod netns;
pub mod network;
pub mod pcap;
pub mod poll;
pub mod prereq;
pub mod process;

pub use cleanup::cleanup_stale;
pub use cluster::{
    App, Cluster, ClusterBuilder, Node, Pod, PodSpec, Service, ServiceSpec, UseWaypointOn,
    Waypoint, WaypointSpec,
};
pub use error::HarnessError;
pub use metrics::Metrics;
pub use poll::eventually;

/// Label that enrols a namespace or pod in the ambient mesh.
pub const DATAPLANE_MODE: &str = "istio.io/dataplane-mode";
pub const AMBIENT: &str = "ambient";
/// Namespace, Service or Pod label naming the waypoint to use (`none` opts out).
pub const USE_WAYPOINT: &str = "istio.io/use-waypoint";
/// Label of a Gateway's proxy pods (a waypoint's pod): never captured by the mesh.
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";
pub use manifests::{WAYPOINT_FOR, WAYPOINT_GATEWAY_CLASS};
