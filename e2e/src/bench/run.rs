//! `mesh-bench run`: the whole benchmark, then the outputs.

use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::cli::RunArgs;
use super::controlplane::{self, CpOptions, manifests::Scale};
use super::dataplane::{self, DataplaneOptions};
use super::error::BenchError;
use super::fortio::LoadSpec;
use super::machine;
use super::report::{self, BenchResults, Settings};
use super::tools;
use crate::harness::{self, prereq};

fn require_root() -> Result<(), BenchError> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(BenchError::MissingTool {
            tool: "root".into(),
            hint: "the benchmark creates network namespaces: run it as root (sudo make bench)"
                .into(),
        })
    }
}

fn fortio_path(a: &RunArgs) -> Result<PathBuf, BenchError> {
    let p = match &a.fortio {
        Some(p) => p.clone(),
        None => prereq::in_path("fortio").ok_or_else(|| BenchError::MissingTool {
            tool: "fortio".into(),
            hint: "build it with `e2e/cluster/build.sh fortio` and pass --fortio \
                   \"$FORTIO_BIN_DIR/fortio\" (see `e2e/cluster/build.sh --print-env`)"
                .into(),
        })?,
    };
    if p.is_file() {
        Ok(p)
    } else {
        Err(BenchError::MissingTool {
            tool: "fortio".into(),
            hint: format!(
                "{} does not exist (e2e/cluster/build.sh fortio builds it)",
                p.display()
            ),
        })
    }
}

fn bin_dir(a: &RunArgs) -> PathBuf {
    a.bin_dir.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("."))
    })
}

/// Runs what `a` asks for, writes the outputs and returns the results.
pub fn run(a: &RunArgs) -> Result<BenchResults, BenchError> {
    require_root()?;
    let nofile = tools::raise_nofile();
    tracing::info!(nofile, "open files limit");
    let bin_dir = bin_dir(a);
    let bench_bin = std::env::current_exe().map_err(BenchError::io("locating mesh-bench"))?;
    let load = LoadSpec {
        qps: a.qps,
        connections: a.connections,
        seconds: a.seconds,
        payload_bytes: a.payload,
    };
    let started = Instant::now();
    let mut r = BenchResults {
        date: time::OffsetDateTime::now_utc().date().to_string(),
        started_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        machine: machine::describe(),
        settings: Settings {
            load,
            iperf_seconds: a.iperf_seconds,
            idle_connections: a.idle_connections,
            conn_seconds: a.conn_seconds,
            conn_concurrency: a.conn_concurrency,
            hbone_concurrency: a.hbone_concurrency,
            component_log_level: std::env::var("MESH_E2E_LOG").unwrap_or_else(|_| "info".into()),
            bin_dir: bin_dir.display().to_string(),
        },
        ..Default::default()
    };
    let mut loads = Vec::new();
    let mut errors = Vec::new();
    for gone in harness::cleanup_stale() {
        eprintln!("mesh-bench: removed the leftovers of cluster {gone}");
    }

    if !a.skip_dataplane {
        let tools_ok = fortio_path(a).and_then(|f| {
            prereq::in_path("iperf3").ok_or_else(|| BenchError::MissingTool {
                tool: "iperf3".into(),
                hint: "apt-get install iperf3 (listed in scripts/deps-debian.txt)".into(),
            })?;
            Ok(f)
        });
        match tools_ok {
            Ok(fortio) => {
                let o = DataplaneOptions {
                    bin_dir: bin_dir.clone(),
                    bench_bin,
                    fortio,
                    load,
                    iperf_seconds: a.iperf_seconds,
                    idle_connections: a.idle_connections,
                    conn_seconds: a.conn_seconds,
                    conn_concurrency: a.conn_concurrency,
                    hbone_concurrency: a.hbone_concurrency,
                    waypoint_disabled: a.no_waypoint.clone(),
                    profile_dir: a.profile.clone(),
                    keep: a.keep,
                };
                match dataplane::run(&o, &mut loads, &mut errors) {
                    Ok(d) => r.dataplane = Some(d),
                    Err(e) => {
                        eprintln!("mesh-bench: data plane failed: {e}");
                        errors.push(format!("data plane: {e}"));
                    }
                }
            }
            Err(e) => errors.push(format!("data plane: {e}")),
        }
    }

    if !a.skip_control_plane {
        machine::phase(&mut loads, "control plane");
        let o = CpOptions {
            bin_dir,
            scale: Scale {
                pods: a.cp_pods,
                services: a.cp_services,
                nodes: a.cp_nodes,
                namespaces: 10.min(a.cp_services.max(1)),
            },
            subscribers: a.cp_subscribers,
            changes: a.cp_changes,
            fast_run: a.cp_fast,
            trust_domain: "cluster.local".into(),
            keep: a.keep,
            profile_dir: a.profile.clone(),
        };
        match controlplane::run(&o) {
            Ok(cp) => r.control_plane = Some(cp),
            Err(e) => {
                eprintln!("mesh-bench: control plane failed: {e}");
                errors.push(format!("control plane: {e}"));
            }
        }
    }
    machine::phase(&mut loads, "end");
    r.machine.load = loads;
    r.errors = errors;
    r.duration_seconds = started.elapsed().as_secs_f64();
    let written = report::write_all(&r, &a.out, a.readme.as_deref())?;
    if let Some(e) = &written.chart_error {
        eprintln!("mesh-bench: no chart: {e}");
    }
    for f in &written.files {
        eprintln!("mesh-bench: wrote {}", f.display());
    }
    Ok(r)
}
