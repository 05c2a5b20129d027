//! The control plane of the ambient mesh: configuration sources, the ambient model, the
//! delta-xDS server, the CA service and the monitoring endpoints.

pub mod app;
pub mod cli;
pub mod model;
