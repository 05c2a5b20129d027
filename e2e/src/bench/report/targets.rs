//! The targets of the performance issue, checked against a run. They are recorded, never
//! asserted: a miss is a line in the table, with the measured value.

use serde::{Deserialize, Serialize};

use super::model::{BenchResults, Dataplane, Path};

/// One target and what the run reached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    pub name: String,
    pub goal: String,
    pub measured: String,
    /// `None` when the run has no figure for it.
    pub met: Option<bool>,
}

fn row(name: &str, goal: &str, value: Option<(f64, String)>, ok: impl Fn(f64) -> bool) -> Target {
    match value {
        Some((v, text)) => Target {
            name: name.into(),
            goal: goal.into(),
            measured: text,
            met: Some(ok(v)),
        },
        None => Target {
            name: name.into(),
            goal: goal.into(),
            measured: "not measured".into(),
            met: None,
        },
    }
}

const MIB: f64 = 1024.0;

fn added_p99(d: &Dataplane, path: Path) -> Option<f64> {
    let base = d.latency.iter().find(|l| l.path == Path::NoMesh)?;
    let other = d.latency.iter().find(|l| l.path == path)?;
    Some(other.latency.p99_us - base.latency.p99_us)
}

fn throughput_ratio(d: &Dataplane, streams: u32) -> Option<f64> {
    let get = |p: Path| {
        d.throughput
            .iter()
            .find(|t| t.path == p && t.streams == streams)
            .map(|t| t.throughput.gbps)
    };
    let base = get(Path::NoMesh)?;
    (base > 0.0).then(|| get(Path::L4).map(|m| m / base))?
}

/// Worst (largest) of a proxy kind's figure under a path's load.
fn worst_cost(
    d: &Dataplane,
    path: Path,
    proxy: &str,
    f: impl Fn(&super::model::ProxyCost) -> f64,
) -> Option<f64> {
    d.cost
        .iter()
        .filter(|c| c.path == path && c.usage.label.starts_with(proxy))
        .map(f)
        .reduce(f64::max)
}

/// Every target of the issue, in its order.
pub fn evaluate(r: &BenchResults) -> Vec<Target> {
    let d = r.dataplane.as_ref();
    let us = |v: f64| (v, format!("{v:+.0} µs"));
    let pct = |v: f64| (v, format!("{:.0}%", v * 100.0));
    let vcpu = |v: f64| (v, format!("{v:.3} vCPU"));
    let mib = |kib: f64| (kib / MIB, format!("{:.1} MiB", kib / MIB));
    let mut out = vec![
        row(
            "L4 added latency, p99",
            "≤ 100 µs",
            d.and_then(|d| added_p99(d, Path::L4)).map(us),
            |v| v <= 100.0,
        ),
        row(
            "L4 throughput, 1 connection",
            "≥ 25% of no mesh",
            d.and_then(|d| throughput_ratio(d, 1)).map(pct),
            |v| v >= 0.25,
        ),
        row(
            "L4 throughput, 8 connections",
            "≥ 35% of no mesh",
            d.and_then(|d| throughput_ratio(d, 8)).map(pct),
            |v| v >= 0.35,
        ),
        row(
            "ztunnel CPU at 1,000 req/s",
            "< 0.04 vCPU",
            d.and_then(|d| worst_cost(d, Path::L4, "ztunnel", |c| c.cpu_seconds_per_1k()))
                .map(vcpu),
            |v| v < 0.04,
        ),
        row(
            "ztunnel RSS under load",
            "< 10 MiB",
            d.and_then(|d| worst_cost(d, Path::L4, "ztunnel", |c| c.usage.rss_max_kib as f64))
                .map(mib),
            |v| v < 10.0,
        ),
        row(
            "ztunnel memory per idle connection",
            "< 4 KiB",
            d.and_then(|d| {
                let ic = d.idle_connections.as_ref()?;
                ic.proxies
                    .iter()
                    .map(|p| p.bytes_per_connection(ic.held))
                    .reduce(f64::max)
            })
            .map(|b| (b / 1024.0, format!("{:.2} KiB", b / 1024.0))),
            |v| v < 4.0,
        ),
        row(
            "waypoint CPU at 1,000 req/s",
            "< 0.15 vCPU",
            d.and_then(|d| worst_cost(d, Path::L7, "waypoint", |c| c.cpu_seconds_per_1k()))
                .map(vcpu),
            |v| v < 0.15,
        ),
        row(
            "waypoint RSS under load",
            "< 25 MiB",
            d.and_then(|d| worst_cost(d, Path::L7, "waypoint", |c| c.usage.rss_max_kib as f64))
                .map(mib),
            |v| v < 25.0,
        ),
        row(
            "L7 added latency, p99",
            "≤ 300 µs",
            d.and_then(|d| added_p99(d, Path::L7)).map(us),
            |v| v <= 300.0,
        ),
        row(
            "new HBONE connections per core",
            "≥ 3,000 /s",
            d.and_then(|d| d.connection_setup.hbone_per_core())
                .map(|v| (v, format!("{v:.0} /s"))),
            |v| v >= 3000.0,
        ),
    ];
    let cp = r.control_plane.as_ref();
    let default_run = cp.and_then(|c| c.runs.first());
    out.push(row(
        "control plane change → ACK, p99 (10k pods)",
        "< 100 ms",
        default_run.and_then(|run| run.percentile(99.0)).map(|v| {
            (
                v,
                format!(
                    "{v:.0} ms ({})",
                    default_run.map(|r| r.label.as_str()).unwrap_or("")
                ),
            )
        }),
        |v| v < 100.0,
    ));
    out.push(row(
        "istiod RSS (10k pods)",
        "< 150 MiB",
        cp.map(|c| mib(c.istiod_rss_kib as f64)),
        |v| v < 150.0,
    ));
    out.push(row(
        "ztunnel RSS holding 10k workloads",
        "< 40 MiB",
        cp.and_then(|c| c.ztunnel_rss_kib).map(|k| mib(k as f64)),
        |v| v < 40.0,
    ));
    out
}
