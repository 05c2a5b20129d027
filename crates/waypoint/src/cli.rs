//! Command-line flags and environment of the `waypoint` binary, read in one place.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// L7 waypoint proxy: terminates HBONE, routes HTTP and gRPC, applies L7 policy and telemetry.
#[derive(Debug, Clone, Parser)]
#[command(name = "waypoint", version, about, long_about = None)]
pub struct Args {
    /// Name of the waypoint (the `Gateway` it implements).
    #[arg(long, env = "WAYPOINT_NAME")]
    pub name: String,
    /// Namespace of the waypoint.
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: String,
    /// Service account the waypoint runs as; its identity is
    /// `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
    #[arg(long, env = "SERVICE_ACCOUNT")]
    pub service_account: String,
    /// Trust domain of the mesh.
    #[arg(long, env = "TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: String,
    /// istiod's xDS address: `http://host:15010` (plaintext) or `https://host:15012` (TLS).
    #[arg(
        long,
        env = "XDS_ADDRESS",
        default_value = "https://istiod.istio-system.svc:15012"
    )]
    pub xds_address: String,
    /// istiod's CA address; defaults to the xDS address.
    #[arg(long, env = "CA_ADDRESS")]
    pub ca_address: Option<String>,
    /// PEM file with the mesh root certificate (verifies istiod and peers).
    #[arg(long, env = "CA_ROOT_FILE")]
    pub ca_root_file: Option<PathBuf>,
    /// File holding the bearer token the waypoint presents to istiod.
    #[arg(long, env = "TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Identity istiod's serving certificate must carry.
    #[arg(
        long,
        env = "ISTIOD_IDENTITY",
        default_value = "spiffe://cluster.local/ns/istio-system/sa/istiod"
    )]
    pub istiod_identity: String,
    /// HBONE listener (mutual TLS, HTTP/2 CONNECT).
    #[arg(long, env = "LISTEN_ADDRESS", default_value = "0.0.0.0:15008")]
    pub listen: SocketAddr,
    /// Prometheus metrics endpoint (`/metrics`).
    #[arg(long, env = "METRICS_ADDRESS", default_value = "0.0.0.0:15020")]
    pub metrics_address: SocketAddr,
    /// Readiness endpoint (`/healthz/ready`).
    #[arg(long, env = "READINESS_ADDRESS", default_value = "0.0.0.0:15021")]
    pub readiness_address: SocketAddr,
    /// Admin endpoint (`/config_dump`, `/logging`); keep it on localhost.
    #[arg(long, env = "ADMIN_ADDRESS", default_value = "127.0.0.1:15000")]
    pub admin_address: SocketAddr,
    /// OTLP/gRPC collector for traces, e.g. `http://otel-collector:4317`; unset disables export
    /// (W3C `traceparent` is propagated either way).
    #[arg(long, env = "OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// HTTP/2 streams per pooled HBONE connection to a destination ztunnel.
    #[arg(long, env = "POOL_MAX_STREAMS", default_value_t = 100)]
    pub pool_max_streams: u32,
    /// Log output format.
    #[arg(long, env = "LOG_FORMAT", default_value = "plain", value_parser = ["plain", "json"])]
    pub log_format: String,
    /// Log filter, in `tracing` env-filter syntax; changeable at run time through admin.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_level: String,
}
