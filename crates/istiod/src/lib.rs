//! The control plane of the ambient mesh: configuration sources, the ambient model, the
//! delta-xDS server, the CA service and the monitoring endpoints.

pub mod app;
pub mod ca_service;
pub mod cli;
pub mod debug;
pub mod metrics;
pub mod model;
pub mod node_tokens;
pub mod server;
pub mod serving_cert;
pub mod status;
pub mod xds;
pub mod xds_hooks;

pub use app::{Istiod, StartError};
pub use cli::Config;
