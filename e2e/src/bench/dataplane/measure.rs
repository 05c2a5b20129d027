//! The measurements of the data-plane benchmark, each one step that may fail on its own.

use std::time::{Duration, Instant};

use super::{Bed, Pair, note};
use crate::bench::error::BenchError;
use crate::bench::fortio::{self, Latency, LoadSpec};
use crate::bench::iperf;
use crate::bench::machine;
use crate::bench::procstat::{self, Meter, Usage, Watched};
use crate::bench::report::model::{
    ConnRss, ConnectionSetup, Dataplane, IdleConnections, Path, PathLatency, PathThroughput,
    PhaseLoad, ProxyCost,
};
use crate::bench::tools::{RateReport, hold};
use crate::harness::Pod;
use crate::harness::cmd;
use crate::harness::process::tail_file;

/// A short run before each measured latency run (connections, caches, pools), discarded.
const WARMUP_SECONDS: u64 = 2;
const HOLD_TIMEOUT: Duration = Duration::from_secs(180);
/// Parallel handshakes of the idle-connection client.
const HOLD_PARALLEL: usize = 200;

/// Every measurement, in order; failures are recorded in `errors`.
pub(super) fn all(
    bed: &Bed<'_>,
    d: &mut Dataplane,
    loads: &mut Vec<PhaseLoad>,
    errors: &mut Vec<String>,
) {
    machine::phase(loads, "latency");
    let mut paths = vec![Path::NoMesh, Path::L4];
    if bed.waypoint.is_some() {
        paths.push(Path::L7);
    }
    for path in paths {
        let step = format!("latency, {}", path.name());
        eprintln!("mesh-bench: {step}");
        if let Some((latency, usage)) = note(errors, &step, bed.latency(path)) {
            for u in usage {
                d.cost.push(ProxyCost {
                    path,
                    usage: u,
                    requests: latency.requests,
                });
            }
            d.latency.push(PathLatency { path, latency });
        }
    }

    machine::phase(loads, "throughput");
    for streams in [1, 8] {
        for path in [Path::NoMesh, Path::L4] {
            let step = format!("throughput, {}, {streams} connection(s)", path.name());
            eprintln!("mesh-bench: {step}");
            if let Some(t) = note(errors, &step, bed.throughput(path, streams)) {
                d.throughput.push(t);
            }
        }
    }

    machine::phase(loads, "idle connections");
    d.idle_connections = note(errors, "idle connections", bed.idle_connections());

    machine::phase(loads, "connection setup");
    let mut cs = ConnectionSetup {
        plain_tcp: note(
            errors,
            "connection rate, no mesh",
            bed.conn_rate(&bed.plain, &[]),
        )
        .map(|(r, _)| r),
        ..Default::default()
    };
    if let Some((r, usage)) = note(
        errors,
        "connection rate, mesh",
        bed.conn_rate(&bed.mesh, &bed.ztunnels),
    ) {
        cs.mesh_tcp = Some(r);
        cs.mesh_tcp_proxies = usage;
    }
    if let Some((r, usage)) = note(errors, "HBONE handshake rate", bed.hbone_rate()) {
        cs.hbone = Some(r);
        cs.hbone_proxy = Some(usage);
    }
    d.connection_setup = cs;
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

/// The last JSON line of a tool's stdout.
fn last_json<T: serde::de::DeserializeOwned>(tool: &str, stdout: &str) -> Result<T, BenchError> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or_else(|| BenchError::parse(tool, format!("no JSON line in {stdout:?}")))?;
    serde_json::from_str(line).map_err(|e| BenchError::parse(tool, e.to_string()))
}

impl Bed<'_> {
    fn fortio(&self, client: &Pod, spec: &LoadSpec, url: &str) -> Result<Latency, BenchError> {
        let args = fortio::load_args(&self.o.fortio, spec, url);
        let out = self
            .c
            .exec_timeout(client, &strs(&args), fortio::deadline(spec))?;
        if !out.success() {
            return Err(BenchError::tool(
                "fortio load",
                format!("{}: {}", out.status, tail(&out.stderr)),
            ));
        }
        fortio::parse(&out.stdout)
    }

    /// fortio against `path`: the latency and what each proxy on the path spent.
    pub(super) fn latency(&self, path: Path) -> Result<(Latency, Vec<Usage>), BenchError> {
        let url = |ip: std::net::Ipv4Addr| format!("http://{ip}:{}/", fortio::HTTP_PORT);
        let (client, url, watched) = match path {
            Path::NoMesh => (&self.plain.client, url(self.plain.server.ip), Vec::new()),
            Path::L4 => (
                &self.mesh.client,
                url(self.mesh.server.ip),
                self.ztunnels.clone(),
            ),
            Path::L7 => {
                let w = self
                    .waypoint
                    .as_ref()
                    .ok_or_else(|| BenchError::tool("waypoint", "not deployed"))?;
                (&self.mesh.client, url(w.service_vip), self.proxies())
            }
        };
        let warm = LoadSpec {
            seconds: WARMUP_SECONDS,
            ..self.o.load
        };
        self.fortio(client, &warm, &url)?;
        let meter = Meter::start(&watched)?;
        let latency = self.fortio(client, &self.o.load, &url)?;
        let usage = meter.finish()?;
        if latency.errors > 0 {
            eprintln!(
                "mesh-bench: {} of {} requests on the {} path did not answer 200",
                latency.errors,
                latency.requests,
                path.name()
            );
        }
        Ok((latency, usage))
    }

    /// iperf3 over `streams` connections.
    pub(super) fn throughput(
        &self,
        path: Path,
        streams: u32,
    ) -> Result<PathThroughput, BenchError> {
        let (pair, watched) = match path {
            Path::NoMesh => (&self.plain, Vec::new()),
            Path::L4 => (&self.mesh, self.ztunnels.clone()),
            Path::L7 => return Err(BenchError::tool("iperf3", "not measured over L7")),
        };
        let secs = self.o.iperf_seconds;
        let args = iperf::client_args(pair.server.ip, streams, secs);
        let meter = Meter::start(&watched)?;
        let out = self
            .c
            .exec_timeout(&pair.client, &strs(&args), iperf::deadline(secs))?;
        let proxies = meter.finish()?;
        let throughput = iperf::parse(&out.stdout).map_err(|e| match e {
            BenchError::Parse { .. } => {
                BenchError::tool("iperf3", format!("{e}; stderr: {}", tail(&out.stderr)))
            }
            other => other,
        })?;
        Ok(PathThroughput {
            path,
            streams,
            throughput,
            proxies,
        })
    }

    /// Opens the idle connections from the mesh client and reads the ztunnels' RSS before and
    /// with them.
    pub(super) fn idle_connections(&self) -> Result<IdleConnections, BenchError> {
        let n = self.o.idle_connections;
        let before: Vec<u64> = self
            .ztunnels
            .iter()
            .map(|w| procstat::rss_kib(w.pid))
            .collect::<Result<_, _>>()?;
        let args = [
            self.o.bench_bin.display().to_string(),
            "hold".into(),
            "--addr".into(),
            self.mesh.echo_addr().to_string(),
            "--count".into(),
            n.to_string(),
            "--parallel".into(),
            HOLD_PARALLEL.to_string(),
        ];
        let app = self.c.spawn(&self.mesh.client, "hold", &strs(&args))?;
        let start = Instant::now();
        let held = loop {
            let log = std::fs::read_to_string(&app.log).unwrap_or_default();
            if let Some(h) = log.lines().find_map(hold::parse_summary) {
                break Ok(h.0);
            }
            if procstat::find_in_netns(&self.mesh.client.netns, "mesh-bench").is_empty()
                && start.elapsed() > Duration::from_secs(2)
            {
                break Err(BenchError::tool(
                    "mesh-bench hold",
                    format!("exited:\n{}", tail_file(&app.log, 10)),
                ));
            }
            if start.elapsed() > HOLD_TIMEOUT {
                break Err(BenchError::Timeout {
                    what: format!("{n} idle connections to open"),
                    waited_ms: start.elapsed().as_millis(),
                    last: tail_file(&app.log, 5),
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let result = held.and_then(|held| {
            // Let the proxies settle (allocator, pools) before reading.
            std::thread::sleep(Duration::from_secs(2));
            let proxies = self
                .ztunnels
                .iter()
                .zip(before)
                .map(|(w, before_kib)| {
                    Ok(ConnRss {
                        proxy: w.label.clone(),
                        before_kib,
                        after_kib: procstat::rss_kib(w.pid)?,
                    })
                })
                .collect::<Result<Vec<_>, BenchError>>()?;
            Ok(IdleConnections {
                requested: n,
                held,
                proxies,
            })
        });
        self.c.stop_app(&app);
        result
    }

    /// New connections per second from the pair's client to its server's echo port.
    pub(super) fn conn_rate(
        &self,
        pair: &Pair,
        watched: &[Watched],
    ) -> Result<(RateReport, Vec<Usage>), BenchError> {
        let args = [
            self.o.bench_bin.display().to_string(),
            "connrate".into(),
            "--addr".into(),
            pair.echo_addr().to_string(),
            "--seconds".into(),
            self.o.conn_seconds.to_string(),
            "--concurrency".into(),
            self.o.conn_concurrency.to_string(),
        ];
        let meter = Meter::start(watched)?;
        let out = self.c.exec_timeout(
            &pair.client,
            &strs(&args),
            Duration::from_secs(self.o.conn_seconds + 60),
        )?;
        let usage = meter.finish()?;
        if !out.success() {
            return Err(BenchError::tool("mesh-bench connrate", tail(&out.stderr)));
        }
        Ok((last_json("mesh-bench connrate", &out.stdout)?, usage))
    }

    /// Fresh HBONE connections per second from node1 to the server pod's ztunnel listener.
    pub(super) fn hbone_rate(&self) -> Result<(RateReport, Usage), BenchError> {
        let node1 = &self.c.nodes()[0];
        let server = &self.mesh.server;
        let zt = self
            .ztunnels
            .get(1)
            .ok_or_else(|| BenchError::tool("ztunnel", "no server-side ztunnel"))?;
        let args = [
            "hbone-rate".to_string(),
            "--hbone".into(),
            server.addr(mesh_proto::hbone::HBONE_PORT).to_string(),
            "--authority".into(),
            self.mesh.echo_addr().to_string(),
            "--seconds".into(),
            self.o.conn_seconds.to_string(),
            "--concurrency".into(),
            self.o.hbone_concurrency.to_string(),
            "--ca-dir".into(),
            self.c.work_dir().join("istiod/ca").display().to_string(),
            "--trust-domain".into(),
            self.c.trust_domain().to_string(),
            "--namespace".into(),
            super::MESH_NS.into(),
            "--service-account".into(),
            "client".into(),
        ];
        let meter = Meter::start(std::slice::from_ref(zt))?;
        let out = cmd::run(
            &mut cmd::in_netns(&node1.netns, &self.o.bench_bin, &strs(&args)),
            Duration::from_secs(self.o.conn_seconds + 60),
        )
        .map_err(crate::harness::HarnessError::from)?;
        let mut usage = meter.finish()?;
        if !out.success() {
            return Err(BenchError::tool("mesh-bench hbone-rate", tail(&out.stderr)));
        }
        let report: RateReport = last_json("mesh-bench hbone-rate", &out.stdout)?;
        if report.completed == 0 {
            return Err(BenchError::tool(
                "mesh-bench hbone-rate",
                format!("no tunnel completed: {:?}", report.first_error),
            ));
        }
        Ok((report, usage.remove(0)))
    }
}
