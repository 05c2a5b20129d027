//! The performance benchmark behind `make bench` (binary `mesh-bench`, root): on the
//! network-namespace cluster of [`crate::harness`], the mesh against no mesh in one run.
//!
//! - Data plane ([`dataplane`]): fortio latency at a fixed rate (no mesh, L4, L7 through a
//!   waypoint when one is available), iperf3 throughput over 1 and 8 connections, each proxy's
//!   CPU and memory from `/proc`, memory per idle connection, new connections per second through
//!   the mesh and fresh HBONE handshakes per second.
//! - Control plane ([`controlplane`]): change-to-ACK latency with 10,000 pods and simulated
//!   ztunnel subscribers, istiod's memory, a ztunnel's memory holding every workload.
//! - Outputs ([`report`], [`chart`]): JSON, Markdown tables, a PNG chart, the README section.
//!
//! The in-pod tools (`mesh-bench serve|hold|connrate|hbone-rate`) are in [`tools`].

pub mod chart;
pub mod cli;
pub mod controlplane;
pub mod dataplane;
pub mod error;
pub mod fortio;
pub mod iperf;
pub mod machine;
pub mod perf;
pub mod procstat;
pub mod report;
pub mod run;
pub mod tools;
pub mod waypoint;

pub use error::BenchError;
