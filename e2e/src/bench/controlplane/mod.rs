//! The control-plane benchmark: istiod serving a synthetic mesh (10,000 pods in 1,000 services
//! across 10 nodes by default) to simulated ztunnels, in a network namespace of its own.
//!
//! - Change → ACK: one pod's manifest is rewritten with a new `version` label (a new canonical
//!   revision on its workload); the time runs from the write until the last subscriber has
//!   received the changed workload (each ACKs right after). Repeated for each change, with a
//!   random pause so changes do not lock onto istiod's directory-poll period. Measured with
//!   istiod's default settings, and on request also with a short poll interval and debounce.
//! - istiod's RSS with every subscriber synced, and a real ztunnel's RSS once it holds every
//!   workload (no ZDS: it serves no pod, it only holds the state).

mod background;
pub mod manifests;
mod subscribers;

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns};
use rand::Rng;
use serde_json::Value;

use background::Background;
use manifests::Scale;
use subscribers::{Awaited, Subscribers};

use super::error::BenchError;
use super::perf;
use super::procstat::{self, Meter, Watched};
use super::report::model::{ControlPlane, PushRun};
use crate::harness::manifests::ConfigDir;
use crate::harness::netns;
use crate::http1::{self, Response, Url};

const XDS: &str = "127.0.0.1:15010";
const MONITORING: &str = "127.0.0.1:15014";
const ZTUNNEL_ADMIN: &str = "127.0.0.1:15000";
const READY_TIMEOUT: Duration = Duration::from_secs(120);
const SYNC_TIMEOUT: Duration = Duration::from_secs(600);
const CHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// What to run.
#[derive(Debug, Clone)]
pub struct CpOptions {
    pub bin_dir: PathBuf,
    pub scale: Scale,
    pub subscribers: usize,
    pub changes: usize,
    /// Also measure with a 20 ms poll and a 10 ms debounce.
    pub fast_run: bool,
    pub trust_domain: String,
    pub keep: bool,
    /// Profile istiod with perf during the first change series into this directory.
    pub profile_dir: Option<PathBuf>,
}

/// One istiod configuration: label, poll and debounce (None: istiod's defaults).
struct Setting {
    label: &'static str,
    poll_ms: u64,
    debounce_ms: u64,
    flags: Option<(&'static str, &'static str)>,
}

const SETTINGS: [Setting; 2] = [
    Setting {
        label: "defaults (200 ms poll, 100 ms debounce)",
        poll_ms: 200,
        debounce_ms: 100,
        flags: None,
    },
    Setting {
        label: "20 ms poll, 10 ms debounce",
        poll_ms: 20,
        debounce_ms: 10,
        flags: Some(("20ms", "10ms")),
    },
];

/// Removes the benchmark's network namespace.
struct NetnsGuard(String);

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        if let Err(e) = netns::delete(&self.0) {
            eprintln!(
                "mesh-bench: cannot delete network namespace {}: {e}",
                self.0
            );
        }
    }
}

/// Runs the benchmark in a fresh network namespace (all of istiod's ports on its loopback).
pub fn run(o: &CpOptions) -> Result<ControlPlane, BenchError> {
    let name = format!("ambench-{}", std::process::id() % 10_000_000);
    netns::create(&name).map_err(crate::harness::HarnessError::from)?;
    let _guard = NetnsGuard(name.clone());
    let dir = std::env::temp_dir().join(format!("mesh-bench-cp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(BenchError::io(format!("creating {}", dir.display())))?;
    let file = File::open(netns::path(&name)).map_err(BenchError::io("opening the netns"))?;
    let (o2, dir2) = (o.clone(), dir.clone());
    let res = std::thread::spawn(move || -> Result<ControlPlane, BenchError> {
        // This thread, the runtime's threads and every process started from them live in
        // the namespace.
        setns(&file, CloneFlags::CLONE_NEWNET)
            .map_err(|e| BenchError::ControlPlane(format!("entering the netns: {e}")))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(BenchError::io("starting a runtime"))?;
        rt.block_on(scenario(&o2, &dir2))
    })
    .join()
    .unwrap_or_else(|_| {
        Err(BenchError::ControlPlane(
            "the benchmark thread panicked".into(),
        ))
    });
    if o.keep {
        eprintln!("mesh-bench: control-plane files kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    res
}

/// `GET url` (blocking, off the runtime's workers).
async fn get(url: &str) -> Result<Response, BenchError> {
    let url = url.to_string();
    tokio::task::spawn_blocking(move || {
        let fail = |e: String| BenchError::tool("HTTP GET", format!("{url}: {e}"));
        let parsed = Url::parse(&url).map_err(|e| fail(e.to_string()))?;
        let addr: SocketAddr = parsed
            .authority()
            .parse()
            .map_err(|_| fail("not an IP address".into()))?;
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .map_err(|e| fail(e.to_string()))?;
        let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
        http1::get(stream, &parsed.authority(), &parsed.path, &[]).map_err(|e| fail(e.to_string()))
    })
    .await
    .map_err(|e| BenchError::ControlPlane(e.to_string()))?
}

fn istiod_args(o: &CpOptions, dir: &Path, s: &Setting) -> Vec<String> {
    let mut args: Vec<String> = [
        "--config-dir",
        &dir.join("config").display().to_string(),
        "--ca-dir",
        &dir.join("ca").display().to_string(),
        "--trust-domain",
        &o.trust_domain,
        "--grpc-addr",
        XDS,
        "--secure-grpc-addr",
        "127.0.0.1:15012",
        "--monitoring-addr",
        MONITORING,
        "--log-format",
        "plain",
        "--log-level",
        "warn",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some((poll, debounce)) = s.flags {
        args.extend([
            "--config-poll-interval".into(),
            poll.into(),
            "--debounce-after".into(),
            debounce.into(),
        ]);
    }
    args
}

async fn wait_ready(istiod: &mut Background) -> Result<(), BenchError> {
    let start = Instant::now();
    let url = format!("http://{MONITORING}/ready");
    loop {
        istiod.check_running()?;
        match get(&url).await {
            Ok(r) if r.is_success() => return Ok(()),
            _ if start.elapsed() > READY_TIMEOUT => {
                return Err(BenchError::Timeout {
                    what: "istiod to be ready".into(),
                    waited_ms: start.elapsed().as_millis(),
                    last: procstat_log(istiod),
                });
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn procstat_log(b: &Background) -> String {
    crate::harness::process::tail_file(&b.log, 10)
}

async fn wait_synced(
    istiod: &mut Background,
    subs: &Subscribers,
    want: usize,
) -> Result<(), BenchError> {
    let start = Instant::now();
    while subs.shared.min_held() < want {
        istiod.check_running()?;
        if start.elapsed() > SYNC_TIMEOUT {
            return Err(BenchError::Timeout {
                what: format!("every subscriber to hold {want} addresses"),
                waited_ms: start.elapsed().as_millis(),
                last: format!("the slowest holds {}", subs.shared.min_held()),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// The change series of one setting.
async fn changes(
    o: &CpOptions,
    cfg: &ConfigDir,
    subs: &Subscribers,
    run: usize,
    s: &Setting,
) -> Result<PushRun, BenchError> {
    let mut out = PushRun {
        label: s.label.to_string(),
        poll_ms: s.poll_ms,
        debounce_ms: s.debounce_ms,
        ..Default::default()
    };
    let pods = o.scale.pods.max(1);
    for k in 0..o.changes {
        let index = (k * 7919 + run * 131) % pods;
        let revision = format!("r{run}-{k}");
        subs.shared.expect(Awaited {
            uid: o.scale.pod(index).uid,
            revision: revision.clone(),
        });
        let t0 = Instant::now();
        manifests::write_pod(cfg, &o.scale, index, &revision)
            .map_err(crate::harness::HarnessError::from)?;
        loop {
            if let Some(t) = subs.shared.all_arrived() {
                out.samples_ms
                    .push(t.saturating_duration_since(t0).as_secs_f64() * 1000.0);
                break;
            }
            if t0.elapsed() > CHANGE_TIMEOUT {
                out.timeouts += 1;
                eprintln!(
                    "mesh-bench: change {k}: only {} of {} subscribers got it within {CHANGE_TIMEOUT:?}",
                    subs.shared.arrived_count(),
                    o.subscribers
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let pause = rand::rng().random_range(0..=s.poll_ms.max(1));
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    Ok(out)
}

/// Whether istiod's only client (the ztunnel) has ACKed at least `want` addresses (istiod's
/// `/debug/xds`: nothing awaiting an ACK, an ACKed store version, the resources it holds).
fn ztunnel_acked(xds: &Value, want: usize) -> bool {
    xds["clients"].as_array().into_iter().flatten().any(|c| {
        c["types"].as_array().into_iter().flatten().any(|t| {
            t["type_url"] == mesh_proto::proto::type_url::ADDRESS
                && t["awaiting_ack"].is_null()
                && t["last_acked_version"].is_u64()
                && t["resources_sent"].as_u64().unwrap_or(0) >= want as u64
        })
    })
}

/// Starts a ztunnel against istiod, waits until it has ACKed every address, and reads its RSS
/// (then counts the workloads in its config dump).
async fn ztunnel_rss(
    o: &CpOptions,
    dir: &Path,
    istiod: &mut Background,
    want: usize,
) -> Result<(u64, usize), BenchError> {
    let args: Vec<String> = [
        "--node-name",
        "node1",
        "--xds-address",
        &format!("http://{XDS}"),
        "--trust-domain",
        &o.trust_domain,
        "--zds-socket",
        &dir.join("no-zds.sock").display().to_string(),
        "--admin-address",
        ZTUNNEL_ADMIN,
        "--metrics-address",
        "127.0.0.1:15020",
        "--readiness-address",
        "127.0.0.1:15021",
        "--log-format",
        "plain",
        "--log-level",
        "warn",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut zt = Background::spawn(
        "ztunnel",
        &o.bin_dir.join("ztunnel"),
        &args,
        &dir.join("ztunnel.log"),
    )?;
    let start = Instant::now();
    loop {
        zt.check_running()?;
        istiod.check_running()?;
        let xds: Value = match get(&format!("http://{MONITORING}/debug/xds")).await {
            Ok(r) => serde_json::from_slice(&r.body).unwrap_or(Value::Null),
            Err(_) => Value::Null,
        };
        if ztunnel_acked(&xds, want) {
            break;
        }
        if start.elapsed() > SYNC_TIMEOUT {
            return Err(BenchError::Timeout {
                what: format!("the ztunnel to ACK {want} addresses"),
                waited_ms: start.elapsed().as_millis(),
                last: xds["clients"].to_string().chars().take(400).collect(),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Let it finish applying what it ACKed, and the allocator settle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = procstat::rss_kib(zt.pid())?;
    let dump = get(&format!("http://{ZTUNNEL_ADMIN}/config_dump")).await?;
    let v: Value = serde_json::from_slice(&dump.body)?;
    let workloads = v["workloads"]
        .as_array()
        .or_else(|| v["state"]["workloads"].as_array())
        .map_or(0, Vec::len);
    Ok((rss, workloads))
}

async fn scenario(o: &CpOptions, dir: &Path) -> Result<ControlPlane, BenchError> {
    let cfg = ConfigDir::create(&dir.join("config")).map_err(crate::harness::HarnessError::from)?;
    manifests::write_all(&cfg, &o.scale).map_err(crate::harness::HarnessError::from)?;
    let want = o.scale.pods + o.scale.services;
    let mut cp = ControlPlane {
        pods: o.scale.pods,
        services: o.scale.services,
        nodes: o.scale.nodes,
        subscribers: o.subscribers,
        ..Default::default()
    };
    let count = if o.fast_run { 2 } else { 1 };
    for (i, s) in SETTINGS.iter().take(count).enumerate() {
        eprintln!("mesh-bench: control plane, istiod {}", s.label);
        let started = Instant::now();
        let mut istiod = Background::spawn(
            "istiod",
            &o.bin_dir.join("istiod"),
            &istiod_args(o, dir, s),
            &dir.join(format!("istiod-{i}.log")),
        )?;
        wait_ready(&mut istiod).await?;
        let subs = Subscribers::start(&format!("http://{XDS}"), o.subscribers);
        wait_synced(&mut istiod, &subs, want).await?;
        if i == 0 {
            cp.initial_sync_seconds = started.elapsed().as_secs_f64();
        }
        let meter = Meter::start(&[Watched::new("istiod", istiod.pid())])?;
        let recording = match (&o.profile_dir, i) {
            (Some(d), 0) => {
                std::fs::create_dir_all(d)
                    .map_err(BenchError::io(format!("creating {}", d.display())))?;
                Some((
                    perf::Recording::start(istiod.pid(), &d.join("istiod-changes.data"))?,
                    d,
                ))
            }
            _ => None,
        };
        let mut run = changes(o, &cfg, &subs, i, s).await?;
        let usage = meter.finish()?;
        if let Some((rec, d)) = recording {
            let title = format!(
                "istiod, {} manifest changes, {} pods",
                o.changes, o.scale.pods
            );
            if let Err(e) = rec.finish(&d.join("istiod-changes.txt"), &title) {
                eprintln!("mesh-bench: istiod profile: {e}");
            }
        }
        run.istiod_cpu_seconds = usage.first().map_or(0.0, |u| u.cpu_seconds);
        if i == 0 {
            cp.istiod_rss_kib = usage.first().map_or(0, |u| u.rss_max_kib);
        }
        subs.stop().await;
        cp.runs.push(run);
        if i == 0 {
            match ztunnel_rss(o, dir, &mut istiod, want).await {
                Ok((rss, workloads)) => {
                    cp.ztunnel_rss_kib = Some(rss);
                    cp.ztunnel_workloads = Some(workloads);
                }
                Err(e) => cp.ztunnel_error = Some(e.to_string()),
            }
        }
    }
    Ok(cp)
}
