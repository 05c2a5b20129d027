//! Command-line interface of `meshctl`.

use clap::Parser;

/// Operate and inspect the ambient mesh.
#[derive(Debug, Clone, Parser)]
#[command(name = "meshctl", version, about, long_about = None)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Print the client version.
    Version,
}
