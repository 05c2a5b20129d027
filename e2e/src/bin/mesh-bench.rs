//! `mesh-bench`: the performance benchmark of the ambient mesh (`make bench`), and the tools it
//! runs inside pods.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use e2e::bench::cli::{Args, Command};
use e2e::bench::report::{self, BenchResults};
use e2e::bench::tools::{self, connrate, echo, hbone, hold};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
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
    match run(args.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mesh-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Run(a) => {
            let r = e2e::bench::run::run(&a)?;
            println!("{}", report::markdown::render(&r, None));
            Ok(
                if r.dataplane.is_none() && !a.skip_dataplane
                    || r.control_plane.is_none() && !a.skip_control_plane
                {
                    ExitCode::FAILURE
                } else {
                    ExitCode::SUCCESS
                },
            )
        }
        Command::Report(a) => {
            let text = std::fs::read_to_string(&a.json)?;
            let r: BenchResults = serde_json::from_str(&text)?;
            let w = report::write_all(&r, &a.out, a.readme.as_deref())?;
            for f in w.files {
                eprintln!("wrote {}", f.display());
            }
            if let Some(e) = w.chart_error {
                eprintln!("no chart: {e}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { port } => {
            tools::raise_nofile();
            runtime().block_on(echo::serve(port))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Hold {
            addr,
            count,
            parallel,
        } => {
            tools::raise_nofile();
            runtime().block_on(async {
                let held = hold::open(addr, count, parallel).await;
                println!("{}", hold::summary(&held, count));
                // Keep the connections until killed.
                loop {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
            })
        }
        Command::Connrate {
            addr,
            seconds,
            concurrency,
        } => {
            tools::raise_nofile();
            let r = runtime().block_on(connrate::run(
                addr,
                Duration::from_secs(seconds),
                concurrency,
            ));
            println!("{}", serde_json::to_string(&r)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::HboneRate(a) => {
            tools::raise_nofile();
            let tls = hbone::client_tls(&hbone::ClientIdentity {
                ca_dir: a.ca_dir,
                trust_domain: a.trust_domain,
                namespace: a.namespace,
                service_account: a.service_account,
            })?;
            let target = hbone::Target {
                hbone: a.hbone,
                authority: a.authority,
            };
            let rt = runtime();
            // One tunnel first, so a refusal is reported as such rather than as a rate of 0.
            rt.block_on(hbone::one(target, tls.clone()))
                .map_err(|e| anyhow::anyhow!("first HBONE tunnel to {}: {e}", a.hbone))?;
            let r = rt.block_on(hbone::run(
                target,
                tls,
                Duration::from_secs(a.seconds),
                a.concurrency,
            ));
            println!("{}", serde_json::to_string(&r)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}
