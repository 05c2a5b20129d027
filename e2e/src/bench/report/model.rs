//! What one benchmark run measured: the JSON document `bench/results/<date>.json`, from which
//! the tables and the chart are rendered.

use serde::{Deserialize, Serialize};

use super::super::fortio::{Latency, LoadSpec};
use super::super::iperf::Throughput;
use super::super::procstat::Usage;
use super::super::tools::RateReport;

/// A whole run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BenchResults {
    /// `YYYY-MM-DD` (UTC).
    pub date: String,
    pub started_unix: u64,
    pub duration_seconds: f64,
    pub machine: Machine,
    pub settings: Settings,
    pub dataplane: Option<Dataplane>,
    pub control_plane: Option<ControlPlane>,
    /// Steps that failed, with why (the rest of the run goes on).
    pub errors: Vec<String>,
}

/// The machine, and how busy it was (the bench shares it with whatever else runs).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub mem_total_mib: u64,
    /// 1-minute load average at the start of each phase.
    pub load: Vec<PhaseLoad>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseLoad {
    pub phase: String,
    pub load1: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub load: LoadSpec,
    pub iperf_seconds: u64,
    pub idle_connections: usize,
    pub conn_seconds: u64,
    pub conn_concurrency: usize,
    pub hbone_concurrency: usize,
    pub component_log_level: String,
    pub bin_dir: String,
}

/// The path a measurement took.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Path {
    /// Pod to pod, un-enrolled pods.
    #[serde(rename = "no mesh")]
    NoMesh,
    /// Client ztunnel → HBONE → server ztunnel.
    L4,
    /// Client ztunnel → waypoint → server ztunnel.
    L7,
}

impl Path {
    pub fn name(self) -> &'static str {
        match self {
            Path::NoMesh => "no mesh",
            Path::L4 => "L4",
            Path::L7 => "L7",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Path::NoMesh => "no mesh (pod → pod)",
            Path::L4 => "L4 (ztunnel → ztunnel)",
            Path::L7 => "L7 (ztunnel → waypoint → ztunnel)",
        }
    }
}

/// Data-plane figures (two nodes, client and server pods on different nodes).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Dataplane {
    pub latency: Vec<PathLatency>,
    /// Why the L7 path was not measured, when it was not.
    pub l7_unavailable: Option<String>,
    pub throughput: Vec<PathThroughput>,
    /// Each proxy under the latency load.
    pub cost: Vec<ProxyCost>,
    /// Each proxy idle, after enrolment and before any load.
    pub idle_rss: Vec<ProxyRss>,
    pub idle_connections: Option<IdleConnections>,
    pub connection_setup: ConnectionSetup,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathLatency {
    pub path: Path,
    pub latency: Latency,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathThroughput {
    pub path: Path,
    pub streams: u32,
    pub throughput: Throughput,
    /// The proxies during the run (CPU shows which one saturates).
    pub proxies: Vec<Usage>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProxyCost {
    pub path: Path,
    pub usage: Usage,
    /// Requests the load generator completed in the window.
    pub requests: u64,
}

impl ProxyCost {
    /// CPU seconds per 1,000 requests, which is also the vCPU a proxy needs at 1,000 req/s.
    pub fn cpu_seconds_per_1k(&self) -> f64 {
        if self.requests == 0 {
            return 0.0;
        }
        self.usage.cpu_seconds * 1000.0 / self.requests as f64
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProxyRss {
    pub proxy: String,
    pub rss_kib: u64,
}

/// RSS with many idle connections open through the mesh.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IdleConnections {
    pub requested: usize,
    /// Connections actually open (each checked with an echo).
    pub held: usize,
    pub proxies: Vec<ConnRss>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnRss {
    pub proxy: String,
    pub before_kib: u64,
    pub after_kib: u64,
}

impl ConnRss {
    pub fn bytes_per_connection(&self, held: usize) -> f64 {
        if held == 0 {
            return 0.0;
        }
        (self.after_kib as f64 - self.before_kib as f64) * 1024.0 / held as f64
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConnectionSetup {
    /// New TCP connections per second, no mesh.
    pub plain_tcp: Option<RateReport>,
    /// New TCP connections per second through the mesh (tunnels share pooled HBONE
    /// connections: one new HTTP/2 stream each, not a new handshake).
    pub mesh_tcp: Option<RateReport>,
    pub mesh_tcp_proxies: Vec<Usage>,
    /// Fresh HBONE connections (TCP + mutual TLS + HTTP/2 + one CONNECT) per second, from an
    /// in-process client to the server node's ztunnel.
    pub hbone: Option<RateReport>,
    /// The server node's ztunnel during that test.
    pub hbone_proxy: Option<Usage>,
}

impl ConnectionSetup {
    /// HBONE connections per second per core the ztunnel spent on them.
    pub fn hbone_per_core(&self) -> Option<f64> {
        let (r, u) = (self.hbone.as_ref()?, self.hbone_proxy.as_ref()?);
        (u.cpu_seconds > 0.0).then(|| r.completed as f64 / u.cpu_seconds)
    }
}

/// Control-plane figures at scale.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ControlPlane {
    pub pods: usize,
    pub services: usize,
    pub nodes: usize,
    pub subscribers: usize,
    /// From istiod's start to every subscriber holding every workload.
    pub initial_sync_seconds: f64,
    pub runs: Vec<PushRun>,
    /// istiod's RSS with every subscriber synced.
    pub istiod_rss_kib: u64,
    /// A real ztunnel's RSS once it holds every workload.
    pub ztunnel_rss_kib: Option<u64>,
    pub ztunnel_workloads: Option<usize>,
    pub ztunnel_error: Option<String>,
}

/// Change-to-ACK latency over a series of manifest changes, with one istiod configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PushRun {
    pub label: String,
    pub poll_ms: u64,
    pub debounce_ms: u64,
    /// Per change: milliseconds from the manifest write to the last subscriber receiving it.
    pub samples_ms: Vec<f64>,
    /// Changes some subscriber never received within the deadline.
    pub timeouts: u32,
    pub istiod_cpu_seconds: f64,
}

impl PushRun {
    pub fn percentile(&self, p: f64) -> Option<f64> {
        percentile(&self.samples_ms, p)
    }
}

/// Nearest-rank percentile (`p` in 0..=100) of unsorted samples.
pub fn percentile(samples: &[f64], p: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&s, 50.0), Some(50.0));
        assert_eq!(percentile(&s, 99.0), Some(99.0));
        assert_eq!(percentile(&s, 100.0), Some(100.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn per_unit_costs() {
        let usage = Usage {
            label: "ztunnel node1".into(),
            cpu_seconds: 0.6,
            wall_seconds: 12.0,
            rss_max_kib: 9000,
            rss_end_kib: 8000,
        };
        let c = ProxyCost {
            path: Path::L4,
            usage,
            requests: 12_000,
        };
        assert!((c.cpu_seconds_per_1k() - 0.05).abs() < 1e-12);
        let r = ConnRss {
            proxy: "z".into(),
            before_kib: 8000,
            after_kib: 48000,
        };
        assert!((r.bytes_per_connection(10_000) - 4096.0).abs() < 1e-9);
        assert_eq!(serde_json::to_string(&Path::NoMesh).unwrap(), "\"no mesh\"");
    }
}
