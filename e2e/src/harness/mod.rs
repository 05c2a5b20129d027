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
pub use cluster::{App, Cluster, ClusterBuilder, Node, Pod, PodSpec, Service, ServiceSpec};
pub use error::HarnessError;
pub use metrics::Metrics;
pub use poll::eventually;

/// Label that enrols a namespace or pod in the ambient mesh.
pub const DATAPLANE_MODE: &str = "istio.io/dataplane-mode";
pub const AMBIENT: &str = "ambient";
