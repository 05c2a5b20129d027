//! Traffic redirection of the ambient mesh: the chained CNI plugin (`mesh-cni`), the node agent
//! (`cni-agent`) that programs redirection inside pod network namespaces and hands them to
//! ztunnel over ZDS, the plugin-agent exchange, and a runner for CNI configuration lists.

pub mod agent;
pub mod api;
pub mod plugin;
pub mod runtime;
