//! Command-line flags and environment of the `cni-agent` binary, read in one place.

use clap::Parser;

/// Node agent: enrols pods by programming redirection in their network namespaces.
#[derive(Debug, Clone, Parser)]
#[command(name = "cni-agent", version, about, long_about = None)]
pub struct Args {
    /// Log output format.
    #[arg(long, env = "LOG_FORMAT", default_value = "plain", value_parser = ["plain", "json"])]
    pub log_format: String,
    /// Log filter, in `tracing` env-filter syntax.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_level: String,
}
