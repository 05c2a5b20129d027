//! Runs one `meshctl` command: builds the context (local or Kubernetes), runs the command on a
//! single-threaded runtime, and turns its outcome into the exit code.

use std::process::ExitCode;

use crate::cli::{Args, Command};
use crate::commands::{self, EXIT_FAILED};
use crate::context::Ctx;

pub fn main(args: Args) -> ExitCode {
    identity::tls::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let code = runtime.block_on(run(args));
    ExitCode::from(code)
}

/// Runs the command; returns the exit code.
pub async fn run(args: Args) -> u8 {
    let ctx = match Ctx::from_args(&args.global) {
        Ok(ctx) => ctx,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_FAILED;
        }
    };
    let result = match &args.command {
        Command::Waypoint(cmd) => commands::waypoint::run(&ctx, cmd).await,
        Command::ZtunnelConfig(cmd) => commands::ztunnel_config::run(&ctx, cmd).await,
        Command::Dataplane(cmd) => commands::dataplane::run(&ctx, cmd).await,
        Command::Precheck(a) => commands::precheck::run(&ctx, a).await,
        Command::Analyze(a) => return commands::analyze::run(&ctx, a).await,
        Command::Version(a) => commands::version::run(&ctx, a).await,
        Command::Completion(a) => commands::completion::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            EXIT_FAILED
        }
    }
}
