//! `mesh-demo`: the narrated local ambient mesh demo (`make demo`). Needs root.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Walks through the ambient mesh on a local cluster of network namespaces: plaintext, then
/// enrolment without restarts, HBONE mutual TLS on the wire, identities, and an
/// AuthorizationPolicy; then L7 through a waypoint: a 90/10 HTTPRoute split, an L7 deny and
/// retries hiding a flaky backend. Exits non-zero if anything does not behave as expected.
#[derive(Debug, Parser)]
#[command(name = "mesh-demo", version, about, long_about = None)]
struct Args {
    /// Directory of istiod, ztunnel, cni-agent, mesh-cni and waypoint (default: MESH_BIN_DIR,
    /// else $CARGO_TARGET_DIR/debug, else next to this program).
    #[arg(long, env = "MESH_BIN_DIR")]
    bin_dir: Option<PathBuf>,
    /// The mesh-echo binary (default: in the bin dir).
    #[arg(long)]
    echo_bin: Option<PathBuf>,
    /// Keep the cluster's work directory (logs, configs, captures) afterwards.
    #[arg(long, env = "MESH_E2E_KEEP")]
    keep: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let opts = e2e::demo::DemoOptions {
        bin_dir: args.bin_dir,
        echo_bin: args.echo_bin,
        keep: args.keep,
    };
    match e2e::demo::run(&opts) {
        Ok(()) => {
            println!("\nThe demo behaved as expected.");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\nmesh-demo: {e}");
            ExitCode::FAILURE
        }
    }
}
