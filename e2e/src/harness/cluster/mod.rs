//! The cluster: creation, accessors, diagnostics and teardown. Pods, configuration and the mesh
//! components are in the sibling modules.

mod config;
mod exec;
mod mesh;
mod observe;
mod pods;
mod waypoint;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use nix::sys::signal::Signal;

pub use config::{Service, ServiceSpec, UseWaypointOn};
pub use observe::{MtlsEvidence, OPENED};
pub use pods::{App, Pod, PodSpec};
pub use waypoint::{Waypoint, WaypointSpec};

use super::cleanup;
use super::cni::{self, NodeCni};
use super::components::{IstiodFiles, NodeFiles};
use super::error::HarnessError;
use super::manifests::ConfigDir;
use super::names::{AddressPlan, ClusterId, MAX_NODES};
use super::network;
use super::prereq;
use super::process::Proc;

/// One node: a network namespace on the underlay with its own pod CIDR, CNI setup and (with the
/// mesh) a cni-agent and a ztunnel.
#[derive(Debug, Clone)]
pub struct Node {
    /// 1-based.
    pub index: usize,
    /// Logical name (`node1`): ztunnel's `--node-name`, pods' `spec.nodeName`.
    pub name: String,
    pub netns: String,
    pub ip: Ipv4Addr,
    pub pod_cidr: String,
    pub pod_gateway: Ipv4Addr,
    /// This node's veth end in the underlay netns: capture here to see the wire between nodes.
    pub underlay_veth: String,
    pub cni: NodeCni,
    pub files: NodeFiles,
    /// Work directory of the node (CNI dirs, IPAM state, token, logs).
    pub dir: PathBuf,
}

/// Options of a new cluster.
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    nodes: usize,
    mesh: bool,
    bin_dir: Option<PathBuf>,
    echo_bin: Option<PathBuf>,
    trust_domain: String,
    ready_timeout: Duration,
    keep_work_dir: bool,
    log_level: String,
}

impl Default for ClusterBuilder {
    fn default() -> Self {
        Self {
            nodes: 2,
            mesh: true,
            bin_dir: None,
            echo_bin: None,
            trust_domain: "cluster.local".into(),
            ready_timeout: Duration::from_secs(90),
            keep_work_dir: std::env::var("MESH_E2E_KEEP").is_ok_and(|v| !v.is_empty() && v != "0"),
            log_level: std::env::var("MESH_E2E_LOG").unwrap_or_else(|_| "info".into()),
        }
    }
}

impl ClusterBuilder {
    /// Number of nodes (1..=9; default 2).
    pub fn nodes(mut self, n: usize) -> Self {
        self.nodes = n;
        self
    }

    /// Whether to run istiod, cni-agents and ztunnels (default true). Without the mesh the
    /// cluster is plain pod networking, useful to check the harness itself.
    pub fn mesh(mut self, on: bool) -> Self {
        self.mesh = on;
        self
    }

    /// Directory of the mesh binaries (default: `MESH_BIN_DIR`, else `$CARGO_TARGET_DIR/debug`).
    pub fn bin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bin_dir = Some(dir.into());
        self
    }

    /// The `mesh-echo` binary (default: `<bin dir>/mesh-echo`); tests pass
    /// `env!("CARGO_BIN_EXE_mesh-echo")`.
    pub fn echo_bin(mut self, path: impl Into<PathBuf>) -> Self {
        self.echo_bin = Some(path.into());
        self
    }

    pub fn trust_domain(mut self, td: impl Into<String>) -> Self {
        self.trust_domain = td.into();
        self
    }

    /// Deadline of [`Cluster::wait_ready`] (default 90 s).
    pub fn ready_timeout(mut self, t: Duration) -> Self {
        self.ready_timeout = t;
        self
    }

    /// Keep the work directory (logs, configs, captures) after the cluster is dropped.
    pub fn keep_work_dir(mut self, keep: bool) -> Self {
        self.keep_work_dir = keep;
        self
    }

    /// Log filter of the components (default `MESH_E2E_LOG` or `info`).
    pub fn log_level(mut self, level: impl Into<String>) -> Self {
        self.log_level = level.into();
        self
    }

    /// Creates the namespaces, the network and the CNI setup, and starts the mesh components
    /// (call [`Cluster::wait_ready`] before relying on them). Everything created is removed
    /// again if this fails.
    pub fn build(self) -> Result<Cluster, HarnessError> {
        prereq::require_base()?;
        if self.nodes == 0 || self.nodes > MAX_NODES {
            return Err(HarnessError::Invalid(format!(
                "a cluster has 1 to {MAX_NODES} nodes, not {}",
                self.nodes
            )));
        }
        let bin_dir = self.bin_dir.clone().unwrap_or_else(prereq::default_bin_dir);
        let echo_bin = match &self.echo_bin {
            Some(p) if p.exists() => p.clone(),
            Some(p) => {
                return Err(prereq::PrereqError::Binary {
                    path: p.display().to_string(),
                }
                .into());
            }
            None => prereq::require_binary(&bin_dir, "mesh-echo")?,
        };
        if self.mesh {
            for b in prereq::MESH_BINARIES {
                prereq::require_binary(&bin_dir, b)?;
            }
        }
        // Distinct ids, and distinct address octets among the clusters on this machine: the
        // namespaces are isolated, but a node agent looking up pods by address in
        // /var/run/netns must never find another cluster's pod.
        let others = cleanup::known_clusters();
        let id = loop {
            let id = ClusterId::random();
            let crowded = others.len() >= 200;
            let taken = others
                .iter()
                .any(|o| *o == id || (!crowded && o.octet() == id.octet()));
            if !taken {
                break id;
            }
        };
        cleanup::write_owner(&id).map_err(HarnessError::io("writing the cluster owner file"))?;
        let mut guard = Guard {
            id: id.clone(),
            keep: self.keep_work_dir,
            armed: true,
        };
        tracing::info!(cluster = %id, nodes = self.nodes, mesh = self.mesh, "creating cluster");

        let plan = AddressPlan::new(&id);
        let work = cleanup::work_dir(&id);
        let run = cleanup::run_dir(&id);
        std::fs::create_dir_all(&work).map_err(HarnessError::io("creating the work dir"))?;
        let topo = network::create(&id, plan, self.nodes)?;
        let mut nodes = Vec::new();
        for n in &topo.nodes {
            let dir = work.join(&n.name);
            let node_run = run.join(&n.name);
            std::fs::create_dir_all(&node_run)
                .map_err(HarnessError::io(format!("creating {}", node_run.display())))?;
            let cni = NodeCni {
                node_netns: n.netns.clone(),
                conf_dir: dir.join("cni/net.d"),
                bin_dir: dir.join("cni/bin"),
            };
            cni.prepare(&cni::bridge_conflist(
                &n.pod_cidr,
                n.pod_gateway,
                &dir.join("ipam"),
            ))?;
            let files = NodeFiles {
                node_name: n.name.clone(),
                node_ip: n.ip,
                cni_conf_dir: cni.conf_dir.clone(),
                cni_bin_dir: cni.bin_dir.clone(),
                zds_socket: node_run.join("ztunnel.sock"),
                agent_socket: node_run.join("agent.sock"),
                agent_state_dir: dir.join("cni-agent-state"),
                plugin_binary: bin_dir.join("mesh-cni"),
                token_file: dir.join("token"),
                agent_log: dir.join("cni-agent.log"),
                ztunnel_log: dir.join("ztunnel.log"),
            };
            nodes.push(Node {
                index: n.index,
                name: n.name.clone(),
                netns: n.netns.clone(),
                ip: n.ip,
                pod_cidr: n.pod_cidr.clone(),
                pod_gateway: n.pod_gateway,
                underlay_veth: n.underlay_veth.clone(),
                cni,
                files,
                dir,
            });
        }
        let istiod_dir = work.join("istiod");
        let config = ConfigDir::create(&istiod_dir.join("config"))?;
        let istiod_files = IstiodFiles {
            config_dir: config.path().to_path_buf(),
            ca_dir: istiod_dir.join("ca"),
            tokens_file: istiod_dir.join("node-tokens"),
            log: istiod_dir.join("istiod.log"),
        };
        let cluster = Cluster {
            id,
            plan,
            underlay_netns: topo.underlay_netns,
            underlay_ip: topo.underlay_ip,
            nodes,
            work,
            bin_dir,
            echo_bin,
            config,
            istiod_files,
            mesh: self.mesh,
            keep: self.keep_work_dir,
            trust_domain: self.trust_domain,
            log_level: self.log_level,
            ready_timeout: self.ready_timeout,
            state: Mutex::new(State::default()),
        };
        // From here on the cluster's own Drop cleans up.
        guard.armed = false;
        if cluster.mesh {
            cluster.start_mesh()?;
        }
        Ok(cluster)
    }
}

/// Removes a half-built cluster.
struct Guard {
    id: ClusterId,
    keep: bool,
    armed: bool,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.armed {
            for p in cleanup::remove_cluster(&self.id, self.keep) {
                eprintln!("cleanup of cluster {}: {p}", self.id);
            }
        }
    }
}

#[derive(Debug, Default)]
struct State {
    istiod: Option<Proc>,
    agents: BTreeMap<String, Proc>,
    ztunnels: BTreeMap<String, Proc>,
    pods: BTreeMap<(String, String), pods::PodRecord>,
    apps: BTreeMap<u32, (App, Proc)>,
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
    services: BTreeMap<(String, String), (Service, ServiceSpec)>,
    waypoints: BTreeMap<(String, String), waypoint::WaypointRecord>,
    next_pod: u32,
    next_app: u32,
    next_vip: u8,
}

/// A running local cluster. Dropping it stops every process and removes every namespace and
/// directory it created (also when a test panics; the components' log tails are printed then).
#[derive(Debug)]
pub struct Cluster {
    id: ClusterId,
    plan: AddressPlan,
    underlay_netns: String,
    underlay_ip: Ipv4Addr,
    nodes: Vec<Node>,
    work: PathBuf,
    bin_dir: PathBuf,
    echo_bin: PathBuf,
    config: ConfigDir,
    istiod_files: IstiodFiles,
    mesh: bool,
    keep: bool,
    trust_domain: String,
    log_level: String,
    ready_timeout: Duration,
    state: Mutex<State>,
}

impl Cluster {
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    pub fn id(&self) -> &ClusterId {
        &self.id
    }

    pub fn plan(&self) -> AddressPlan {
        self.plan
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The node named `name` (`node1`, ...).
    pub fn node(&self, name: &str) -> Result<&Node, HarnessError> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| HarnessError::Unknown {
                kind: "node",
                name: name.to_string(),
            })
    }

    pub fn underlay_netns(&self) -> &str {
        &self.underlay_netns
    }

    /// The router's address, where istiod listens.
    pub fn underlay_ip(&self) -> Ipv4Addr {
        self.underlay_ip
    }

    pub fn work_dir(&self) -> &Path {
        &self.work
    }

    /// istiod's manifest directory.
    pub fn config_dir(&self) -> &Path {
        self.config.path()
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn has_mesh(&self) -> bool {
        self.mesh
    }

    pub fn echo_bin(&self) -> &Path {
        &self.echo_bin
    }

    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`.
    pub fn principal(&self, namespace: &str, service_account: &str) -> String {
        format!(
            "spiffe://{}/ns/{namespace}/sa/{service_account}",
            self.trust_domain
        )
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Status and log tail of every component and app: what a failing test should print.
    pub fn diagnostics(&self) -> String {
        let mut st = self.state();
        let mut out = format!(
            "=== cluster {} (work dir {}{}) ===\n",
            self.id,
            self.work.display(),
            if self.keep {
                ", kept"
            } else {
                "; set MESH_E2E_KEEP=1 to keep it"
            }
        );
        if let Some(p) = st.istiod.as_mut() {
            out.push_str(&section("istiod", p, 40));
        }
        let State {
            agents,
            ztunnels,
            apps,
            ..
        } = &mut *st;
        for (node, p) in agents.iter_mut() {
            out.push_str(&section(&format!("{node} cni-agent"), p, 40));
        }
        for n in &self.nodes {
            let file = n.files.agent_state_dir.join("status.json");
            if let Ok(text) = std::fs::read_to_string(&file) {
                let text: String = text.chars().take(3000).collect();
                out.push_str(&format!(
                    "--- {} cni-agent {} ---\n{text}\n",
                    n.name,
                    file.display()
                ));
            }
        }
        for (node, p) in ztunnels.iter_mut() {
            out.push_str(&section(&format!("{node} ztunnel"), p, 40));
        }
        for (app, p) in apps.values_mut() {
            out.push_str(&section(
                &format!("app {} in pod {}", app.name, app.pod),
                p,
                10,
            ));
        }
        for rec in st.waypoints.values_mut() {
            let label = format!("waypoint {}", rec.waypoint.key());
            match rec.proc.as_mut() {
                Some(p) => out.push_str(&section(&label, p, 40)),
                None => out.push_str(&format!(
                    "--- {label} [stopped] {} ---\n{}\n",
                    rec.waypoint.log.display(),
                    super::process::tail_file(&rec.waypoint.log, 20)
                )),
            }
        }
        out
    }

    fn stop_everything(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        let mut procs: Vec<Proc> = std::mem::take(&mut st.apps)
            .into_values()
            .map(|(_, p)| p)
            .collect();
        procs.extend(
            std::mem::take(&mut st.waypoints)
                .into_values()
                .filter_map(|r| r.proc),
        );
        procs.extend(std::mem::take(&mut st.ztunnels).into_values());
        procs.extend(std::mem::take(&mut st.agents).into_values());
        procs.extend(st.istiod.take());
        for p in &mut procs {
            p.signal(Signal::SIGTERM);
        }
        for p in &mut procs {
            p.stop(Duration::from_secs(5));
        }
    }
}

/// One component's status line and log tail.
fn section(label: &str, proc: &mut Proc, lines: usize) -> String {
    let status = match proc.exit_status() {
        None => "running".to_string(),
        Some(s) => format!("EXITED ({s})"),
    };
    format!(
        "--- {label} [{status}] {} ---\n{}\n",
        proc.log_path().display(),
        proc.log_tail(lines)
    )
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.diagnostics());
        }
        self.stop_everything();
        for p in cleanup::remove_cluster(&self.id, self.keep) {
            eprintln!("cleanup of cluster {}: {p}", self.id);
        }
        if self.keep {
            eprintln!(
                "cluster {}: work dir kept at {}",
                self.id,
                self.work.display()
            );
        }
    }
}
