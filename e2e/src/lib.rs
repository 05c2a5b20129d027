//! End-to-end suite of the ambient mesh.
//!
//! - [`echo`]: the `mesh-echo` test application (TCP echo and an HTTP server that describes the
//!   requests it gets), run inside pod network namespaces.
//! - [`harness`]: a local cluster of Linux network namespaces ("nodes" and "pods" joined by veth
//!   pairs and bridges, wired by the standard CNI plugins) running istiod, the cni-agent and
//!   ztunnel, as the end-to-end tests and the demo use it.
//! - [`demo`]: the narrated walk-through behind `make demo`.
//! - [`bench`]: the performance benchmark behind `make bench` (`mesh-bench`).
//! - [`http1`]: a tiny blocking HTTP/1.1 client shared by the echo client and the harness.
//! - [`k8s`]: helpers of the Kubernetes end-to-end suite (`tests/kubernetes.rs`).

pub mod bench;
pub mod demo;
pub mod echo;
pub mod harness;
pub mod http1;
pub mod k8s;
