//! The control plane of the ambient mesh: configuration sources, the ambient model, the
//! delta-xDS server, the CA service, the monitoring endpoints, and in a cluster the Kubernetes
//! controllers and the validating webhook.

pub mod app;
pub mod ca_auth;
pub mod ca_service;
pub mod cli;
pub mod debug;
pub mod kube;
pub mod metrics;
pub mod model;
pub mod node_tokens;
pub mod server;
pub mod serving_cert;
pub mod status;
pub mod webhook;
pub mod xds;
pub mod xds_hooks;

pub use app::{Istiod, StartError};
pub use cli::Config;
