//! Command-line flags and environment of the `istiod` binary, read in one place.

use clap::Parser;

/// Control plane: watches configuration, serves it over delta xDS and signs workload certificates.
#[derive(Debug, Clone, Parser)]
#[command(name = "istiod", version, about, long_about = None)]
pub struct Args {
    /// Log output format.
    #[arg(long, env = "LOG_FORMAT", default_value = "plain", value_parser = ["plain", "json"])]
    pub log_format: String,
    /// Log filter, in `tracing` env-filter syntax.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_level: String,
}
