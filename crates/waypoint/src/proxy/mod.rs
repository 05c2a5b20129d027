//! The data path.
//!
//! `inbound` terminates HBONE and dispatches each CONNECT stream; `detect` tells HTTP/1.1,
//! HTTP/2 and plain TCP apart; `phases` runs the request pipeline and `exchange` records each
//! request until its response is done (log and metrics); `retry` holds the replayable
//! request body and the retry rules; `circuit` the per-service limits and outlier ejection;
//! `forward` the upstream connections (HBONE to the backend's ztunnel); `passthrough` plain TCP.

pub mod circuit;
pub mod detect;
pub mod endpoints;
mod exchange;
pub mod forward;
pub mod inbound;
pub mod passthrough;
pub mod phases;
pub mod retry;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::combinators::UnsyncBoxBody;
use identity::{CertificateManager, Identity, WorkloadCertificate};
use mesh_proto::hbone::HboneError;
use parking_lot::Mutex;
use ztunnel::state::SharedState;

use crate::config_model::WaypointConfig;
use crate::telemetry::{Metrics, Tracer};

pub use circuit::Circuits;
pub use forward::Upstreams;

/// Error type of every body the proxy hands to hyper.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Body of responses sent downstream.
pub type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// Why a request could not be proxied; each maps to a status and an Envoy response flag.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no waypoint configuration received yet")]
    NotConfigured,
    #[error("{0} is not a service bound to this waypoint")]
    NotBound(SocketAddr),
    #[error("backend {0} is not a known service")]
    UnknownBackend(String),
    #[error("every backend of route {0} has weight 0")]
    NoWeight(String),
    #[error("service {0} has no healthy endpoint")]
    NoHealthyUpstream(String),
    #[error("circuit breaker open for {0}")]
    Overflow(String),
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: HboneError,
    },
    #[error("connecting to {addr}: {source}")]
    ConnectTcp {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("upstream {addr}: {source}")]
    Upstream {
        addr: SocketAddr,
        #[source]
        source: hyper::Error,
    },
    #[error("upstream attempt timed out after {0:?}")]
    AttemptTimeout(Duration),
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
    #[error("workload certificate: {0}")]
    Certificate(#[from] identity::ManagerError),
    #[error("tls: {0}")]
    Tls(#[from] identity::TlsError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl ProxyError {
    /// Envoy response flag, for metrics and access logs.
    pub fn response_flag(&self) -> &'static str {
        match self {
            ProxyError::NotConfigured | ProxyError::NotBound(_) => "NR",
            ProxyError::UnknownBackend(_) => "NC",
            ProxyError::NoWeight(_) => "NR",
            ProxyError::NoHealthyUpstream(_) => "UH",
            ProxyError::Overflow(_) => "UO",
            ProxyError::Connect { .. } | ProxyError::ConnectTcp { .. } => "UF",
            ProxyError::Upstream { .. } => "UC",
            ProxyError::AttemptTimeout(_) | ProxyError::Timeout(_) => "UT",
            ProxyError::Certificate(_) | ProxyError::Tls(_) | ProxyError::Io(_) => "UF",
        }
    }

    /// Status sent downstream.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NotBound(_) => StatusCode::NOT_FOUND,
            ProxyError::UnknownBackend(_) | ProxyError::NoWeight(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            ProxyError::AttemptTimeout(_) | ProxyError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Whether another attempt (on another connection or endpoint) may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ProxyError::Connect { .. }
                | ProxyError::ConnectTcp { .. }
                | ProxyError::Upstream { .. }
                | ProxyError::AttemptTimeout(_)
        )
    }

    /// Whether the failure counts against the endpoint for outlier ejection.
    pub fn is_endpoint_failure(&self) -> bool {
        self.is_retryable()
    }
}

/// Settings of the data path that are not part of the xDS configuration.
#[derive(Clone, Debug)]
pub struct ProxySettings {
    /// The waypoint's own identity: served to callers, presented to backends.
    pub identity: Identity,
    /// Port of the destination ztunnels' HBONE listeners.
    pub hbone_port: u16,
    pub pool: mesh_proto::hbone::PoolConfig,
    /// How long the first bytes of a stream are awaited before it is treated as TCP.
    pub detect_timeout: Duration,
    /// Largest request body kept for retries.
    pub retry_buffer: usize,
    /// Idle upstream HTTP connections are closed after this long.
    pub upstream_idle_timeout: Duration,
}

impl ProxySettings {
    pub fn new(identity: Identity) -> Self {
        ProxySettings {
            identity,
            hbone_port: mesh_proto::hbone::HBONE_PORT,
            pool: mesh_proto::hbone::PoolConfig::default(),
            detect_timeout: detect::DEFAULT_TIMEOUT,
            retry_buffer: retry::DEFAULT_BUFFER_LIMIT,
            upstream_idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Everything the per-connection and per-request code needs.
pub struct ProxyInputs {
    pub settings: ProxySettings,
    /// Workloads and services, from `istio.workload.Address`.
    pub state: SharedState,
    /// The L7 configuration; `None` until the first `Waypoint` resource arrives.
    pub waypoint: Arc<ArcSwapOption<WaypointConfig>>,
    pub certs: CertificateManager,
    pub metrics: Arc<Metrics>,
    pub tracer: Tracer,
    pub upstreams: Upstreams,
    pub circuits: Circuits,
    server_tls: Mutex<Option<(Arc<WorkloadCertificate>, Arc<rustls::ServerConfig>)>>,
}

impl ProxyInputs {
    pub fn new(
        settings: ProxySettings,
        state: SharedState,
        waypoint: Arc<ArcSwapOption<WaypointConfig>>,
        certs: CertificateManager,
        metrics: Arc<Metrics>,
        tracer: Tracer,
    ) -> Arc<Self> {
        let upstreams = Upstreams::new(&settings, certs.clone());
        Arc::new(ProxyInputs {
            settings,
            state,
            waypoint,
            certs,
            metrics,
            tracer,
            upstreams,
            circuits: Circuits::default(),
            server_tls: Mutex::new(None),
        })
    }

    /// Server TLS with the waypoint's current certificate, accepting any workload of the trust
    /// domain (who may do what is the business of the authorization phase). Rebuilt when the
    /// certificate is renewed.
    pub async fn server_tls(&self) -> Result<Arc<rustls::ServerConfig>, ProxyError> {
        let cert = self.certs.fetch(&self.settings.identity).await?;
        let mut cached = self.server_tls.lock();
        if let Some((c, cfg)) = cached.as_ref()
            && Arc::ptr_eq(c, &cert)
        {
            return Ok(cfg.clone());
        }
        let cfg = identity::server_config(
            &cert,
            identity::PeerPolicy::AnyInTrustDomain(self.settings.identity.trust_domain.clone()),
        )?;
        *cached = Some((cert, cfg.clone()));
        Ok(cfg)
    }
}
