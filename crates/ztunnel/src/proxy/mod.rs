//! The data path: per-pod listeners and what happens to each connection.

pub mod inbound;
pub mod inbound_plain;
pub mod outbound;
pub mod pod;
pub mod socket;

use std::collections::HashMap;
use std::sync::Arc;

use identity::CertificateManager;
use parking_lot::RwLock;

use crate::metrics::Metrics;
use crate::state::SharedState;
pub use pod::PodProxy;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("hbone: {0}")]
    Hbone(#[from] mesh_proto::hbone::HboneError),
    #[error("certificate: {0}")]
    Certificate(#[from] identity::manager::ManagerError),
    #[error("tls: {0}")]
    Tls(#[from] identity::tls::TlsError),
    #[error("unknown source workload {0}")]
    UnknownSource(String),
    #[error("service {0} has no healthy endpoint")]
    NoHealthyUpstream(String),
    #[error("{0}")]
    Denied(String),
    #[error("waypoint unavailable, failing closed: {0}")]
    NoWaypoint(String),
}

impl ProxyError {
    /// Envoy-style response flag for metrics and access logs.
    pub fn response_flag(&self) -> &'static str {
        match self {
            ProxyError::NoHealthyUpstream(_) | ProxyError::NoWaypoint(_) => "UH",
            ProxyError::Denied(_) => "DENY",
            ProxyError::Hbone(e)
                if matches!(
                    e.status(),
                    Some(http::StatusCode::FORBIDDEN | http::StatusCode::UNAUTHORIZED)
                ) =>
            {
                "DENY"
            }
            ProxyError::Io(_) | ProxyError::Hbone(_) => "UF",
            _ => "-",
        }
    }
}

/// Everything the per-connection code needs, shared by all pods of the node.
pub struct ProxyInputs {
    pub node: String,
    pub state: SharedState,
    pub certs: CertificateManager,
    pub metrics: Arc<Metrics>,
    /// Pods served by this ztunnel, by workload uid (for same-node short-circuits).
    pub pods: RwLock<HashMap<String, Arc<PodProxy>>>,
    pub pool: mesh_proto::hbone::PoolConfig,
}

impl ProxyInputs {
    pub fn pod(&self, uid: &str) -> Option<Arc<PodProxy>> {
        self.pods.read().get(uid).cloned()
    }
}
