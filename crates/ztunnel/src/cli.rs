//! Command-line flags and environment of the `ztunnel` binary, read in one place.

use clap::Parser;

/// Per-node L4 proxy: captures pod traffic, tunnels it over HBONE with mutual TLS, enforces L4
/// policy and reports L4 metrics.
#[derive(Debug, Clone, Parser)]
#[command(name = "ztunnel", version, about, long_about = None)]
pub struct Args {
    /// Log output format.
    #[arg(long, env = "LOG_FORMAT", default_value = "plain", value_parser = ["plain", "json"])]
    pub log_format: String,
    /// Log filter, in `tracing` env-filter syntax.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_level: String,
}
