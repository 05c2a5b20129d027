//! Command-line flags and environment of the `waypoint` binary, read in one place.

use clap::Parser;

/// L7 waypoint proxy: terminates HBONE, routes HTTP and gRPC, applies L7 policy and telemetry.
#[derive(Debug, Clone, Parser)]
#[command(name = "waypoint", version, about, long_about = None)]
pub struct Args {
    /// Log output format.
    #[arg(long, env = "LOG_FORMAT", default_value = "plain", value_parser = ["plain", "json"])]
    pub log_format: String,
    /// Log filter, in `tracing` env-filter syntax.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_level: String,
}
