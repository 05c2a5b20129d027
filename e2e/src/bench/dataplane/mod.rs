//! The data-plane benchmark on a two-node netns cluster: a pair of un-enrolled pods (client on
//! node1, server on node2) for the no-mesh path and an enrolled pair on the same nodes for the
//! L4 path (and, through a waypoint, the L7 path), measured one after the other in one run.

mod measure;
mod profile;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::harness::{AMBIENT, Cluster, DATAPLANE_MODE, Pod, PodSpec, netns};

use super::error::BenchError;
use super::fortio::{self, LoadSpec};
use super::iperf;
use super::machine;
use super::procstat::{self, Watched};
use super::report::model::{Dataplane, PhaseLoad, ProxyRss};
use super::tools::ECHO_PORT;
use super::waypoint::{self, Waypoint};

pub const PLAIN_NS: &str = "bench-plain";
pub const MESH_NS: &str = "bench-mesh";
/// Name and `app` label of the L7 path's server pod.
pub const L7_SERVER: &str = "server-l7";
const MESH_TIMEOUT: Duration = Duration::from_secs(90);

/// What to run and with which tools.
#[derive(Debug, Clone)]
pub struct DataplaneOptions {
    /// istiod, ztunnel, cni-agent, mesh-cni, mesh-echo, waypoint.
    pub bin_dir: PathBuf,
    /// This program (`mesh-bench`), run inside pods for the connection tools.
    pub bench_bin: PathBuf,
    pub fortio: PathBuf,
    pub load: LoadSpec,
    pub iperf_seconds: u64,
    pub idle_connections: usize,
    pub conn_seconds: u64,
    pub conn_concurrency: usize,
    pub hbone_concurrency: usize,
    /// Set when the L7 path must not be tried, with why.
    pub waypoint_disabled: Option<String>,
    /// Profile the ztunnels with `perf` into this directory.
    pub profile_dir: Option<PathBuf>,
    pub keep: bool,
}

/// A client pod and the server pod it talks to.
#[derive(Debug, Clone)]
pub struct Pair {
    pub client: Pod,
    pub server: Pod,
}

impl Pair {
    pub fn echo_addr(&self) -> SocketAddr {
        self.server.addr(ECHO_PORT)
    }
}

/// The cluster, its pods and the processes to watch.
pub(crate) struct Bed<'a> {
    pub c: &'a Cluster,
    pub o: &'a DataplaneOptions,
    pub plain: Pair,
    pub mesh: Pair,
    /// The ztunnels of node1 (client side) and node2 (server side).
    pub ztunnels: Vec<Watched>,
    pub waypoint: Option<Waypoint>,
}

/// Sysctls of every benchmark pod: reuse of TIME_WAIT ports for outgoing connections and the
/// widest port range, so connection-rate tests are not capped by the port space.
const POD_SYSCTLS: &[(&str, &str)] = &[
    ("net.ipv4.tcp_tw_reuse", "1"),
    ("net.ipv4.ip_local_port_range", "1024 65000"),
];

fn pair(c: &Cluster, ns: &str) -> Result<Pair, BenchError> {
    let nodes = c.nodes();
    let client = c.add_pod(
        PodSpec::new("client", ns)
            .on(&nodes[0])
            .service_account("client")
            .label("app", "client"),
    )?;
    let server = c.add_pod(
        PodSpec::new("server", ns)
            .on(&nodes[1])
            .service_account("server")
            .label("app", "server")
            .port(fortio::HTTP_PORT)
            .port(iperf::PORT)
            .port(ECHO_PORT),
    )?;
    for pod in [&client, &server] {
        for (k, v) in POD_SYSCTLS {
            netns::sysctl(&pod.netns, k, v).map_err(crate::harness::HarnessError::from)?;
        }
    }
    Ok(Pair { client, server })
}

fn start_server(
    c: &Cluster,
    pod: &Pod,
    name: &str,
    args: &[String],
    port: u16,
) -> Result<(), BenchError> {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let app = c.spawn(pod, name, &refs)?;
    c.wait_listening(pod, &app, port)?;
    Ok(())
}

/// Starts fortio's server, iperf3's server and the quiet echo server in `pod`.
fn start_servers(c: &Cluster, o: &DataplaneOptions, pod: &Pod) -> Result<(), BenchError> {
    let echo = vec![
        o.bench_bin.display().to_string(),
        "serve".into(),
        "--port".into(),
        ECHO_PORT.to_string(),
    ];
    start_server(
        c,
        pod,
        "fortio-server",
        &fortio::server_args(&o.fortio),
        fortio::HTTP_PORT,
    )?;
    start_server(c, pod, "iperf3-server", &iperf::server_args(), iperf::PORT)?;
    start_server(c, pod, "echo-server", &echo, ECHO_PORT)
}

/// The L7 path's own server pod (node2, enrolled, fortio's server) and a waypoint for it.
///
/// The L7 backend is a pod of its own so that the Service bound to the waypoint selects no pod
/// of the L4 measurements: whatever the mesh does with pod-addressed traffic to a workload
/// behind a waypoint-bound Service, the L4 figures stay pod to pod through two ztunnels.
fn deploy_l7(c: &Cluster, o: &DataplaneOptions, client: &Pod) -> Result<Waypoint, String> {
    let setup = || -> Result<(), BenchError> {
        let pod = c.add_pod(
            PodSpec::new(L7_SERVER, MESH_NS)
                .on(&c.nodes()[1])
                .service_account(L7_SERVER)
                .label("app", L7_SERVER)
                .port(fortio::HTTP_PORT),
        )?;
        let args = fortio::server_args(&o.fortio);
        start_server(c, &pod, "fortio-server", &args, fortio::HTTP_PORT)
    };
    setup().map_err(|e| format!("cannot start the L7 server pod: {e}"))?;
    waypoint::deploy(c, MESH_NS, L7_SERVER, client)
}

impl<'a> Bed<'a> {
    fn setup(c: &'a Cluster, o: &'a DataplaneOptions) -> Result<Self, BenchError> {
        c.create_namespace(PLAIN_NS, &[])?;
        c.create_namespace(MESH_NS, &[(DATAPLANE_MODE, AMBIENT)])?;
        let plain = pair(c, PLAIN_NS)?;
        let mesh = pair(c, MESH_NS)?;
        for p in [&plain.server, &mesh.server] {
            start_servers(c, o, p)?;
        }
        c.echo_tcp(&plain.client, plain.echo_addr(), "no mesh")?;
        c.wait_mtls(
            &mesh.client,
            &mesh.server,
            ECHO_PORT,
            "through the mesh",
            MESH_TIMEOUT,
        )?;
        let mut ztunnels = Vec::new();
        for (n, side) in c.nodes().iter().zip(["client side", "server side"]) {
            let pids = procstat::find_in_netns(&n.netns, "ztunnel");
            let [pid] = pids.as_slice() else {
                return Err(BenchError::tool(
                    "ztunnel",
                    format!("expected one ztunnel in {}, found pids {pids:?}", n.netns),
                ));
            };
            ztunnels.push(Watched::new(format!("ztunnel {} ({side})", n.name), *pid));
        }
        Ok(Self {
            c,
            o,
            plain,
            mesh,
            ztunnels,
            waypoint: None,
        })
    }

    /// Every proxy to watch: the ztunnels, and the waypoint when there is one.
    fn proxies(&self) -> Vec<Watched> {
        let mut all = self.ztunnels.clone();
        if let Some(w) = &self.waypoint {
            all.push(Watched::new("waypoint", w.pid));
        }
        all
    }

    fn rss(&self) -> Result<Vec<ProxyRss>, BenchError> {
        self.proxies()
            .iter()
            .map(|w| {
                Ok(ProxyRss {
                    proxy: w.label.clone(),
                    rss_kib: procstat::rss_kib(w.pid)?,
                })
            })
            .collect()
    }
}

/// Records a failed step and goes on.
fn note<T>(errors: &mut Vec<String>, step: &str, r: Result<T, BenchError>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            eprintln!("mesh-bench: {step} failed: {e}");
            errors.push(format!("{step}: {e}"));
            None
        }
    }
}

/// Builds the cluster, measures, tears it down.
pub fn run(
    o: &DataplaneOptions,
    loads: &mut Vec<PhaseLoad>,
    errors: &mut Vec<String>,
) -> Result<Dataplane, BenchError> {
    machine::phase(loads, "cluster setup");
    let c = Cluster::builder()
        .nodes(2)
        .bin_dir(&o.bin_dir)
        .echo_bin(o.bin_dir.join("mesh-echo"))
        .keep_work_dir(o.keep)
        .build()?;
    c.wait_ready()?;
    let mut bed = Bed::setup(&c, o)?;
    let mut d = Dataplane::default();
    // Idle: enrolled, one connection made, nothing else yet.
    std::thread::sleep(Duration::from_secs(2));
    d.idle_rss = bed.rss()?;

    match &o.waypoint_disabled {
        Some(why) => d.l7_unavailable = Some(why.clone()),
        None => {
            machine::phase(loads, "waypoint setup");
            match deploy_l7(&c, o, &bed.mesh.client) {
                Ok(w) => {
                    d.idle_rss.push(ProxyRss {
                        proxy: "waypoint".into(),
                        rss_kib: procstat::rss_kib(w.pid)?,
                    });
                    bed.waypoint = Some(w);
                }
                Err(why) => {
                    eprintln!("mesh-bench: L7 path: waypoint not available: {why}");
                    d.l7_unavailable = Some(why);
                }
            }
        }
    }
    measure::all(&bed, &mut d, loads, errors);
    if let Some(dir) = &o.profile_dir {
        machine::phase(loads, "profile");
        note(errors, "profile", profile::run(&bed, dir));
    }
    Ok(d)
}
