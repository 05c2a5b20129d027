//! Command-line flags and environment of the `ztunnel` binary, read in one place.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// Per-node L4 proxy of the ambient mesh: captures the traffic of enrolled pods, tunnels it over
/// HBONE with mutual TLS, enforces L4 policy and reports L4 metrics.
#[derive(Debug, Clone, Parser)]
#[command(name = "ztunnel", version, about, long_about = None)]
pub struct Args {
    /// Name of the node this ztunnel serves.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
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
    /// File holding the bearer token ztunnel presents to istiod.
    #[arg(long, env = "TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Trust domain of the mesh.
    #[arg(long, env = "TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: String,
    /// Identity istiod's serving certificate must carry.
    #[arg(
        long,
        env = "ISTIOD_IDENTITY",
        default_value = "spiffe://cluster.local/ns/istio-system/sa/istiod"
    )]
    pub istiod_identity: String,
    /// Unix socket of the node agent's ZDS server.
    #[arg(long, env = "ZDS_SOCKET", default_value = mesh_proto::zds::DEFAULT_SOCKET_PATH)]
    pub zds_socket: PathBuf,
    /// Admin endpoint (config_dump, logging); keep it on localhost.
    #[arg(long, env = "ADMIN_ADDRESS", default_value = "127.0.0.1:15000")]
    pub admin_address: SocketAddr,
    /// Prometheus metrics endpoint.
    #[arg(long, env = "METRICS_ADDRESS", default_value = "0.0.0.0:15020")]
    pub metrics_address: SocketAddr,
    /// Readiness endpoint (`/healthz/ready`).
    #[arg(long, env = "READINESS_ADDRESS", default_value = "0.0.0.0:15021")]
    pub readiness_address: SocketAddr,
    /// Static local mode: read workloads and services from this YAML file instead of xDS.
    #[arg(long, env = "LOCAL_CONFIG")]
    pub local_config: Option<PathBuf>,
    /// Sign workload certificates with a local CA kept in this directory instead of istiod's.
    #[arg(long, env = "LOCAL_CA_DIR")]
    pub local_ca_dir: Option<PathBuf>,
    /// HTTP/2 streams per pooled HBONE connection.
    #[arg(long, env = "POOL_MAX_STREAMS", default_value_t = 100)]
    pub pool_max_streams: u32,
    /// Threads of the proxy's runtime (namespace workers come on top).
    #[arg(long, env = "ZTUNNEL_WORKER_THREADS", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub worker_threads: u16,
    /// Log output format.
    #[arg(long, env = "LOG_FORMAT", default_value = "plain", value_parser = ["plain", "json"])]
    pub log_format: String,
    /// Log filter, in `tracing` env-filter syntax; changeable at run time through admin.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_level: String,
}
