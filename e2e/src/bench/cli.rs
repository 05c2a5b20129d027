//! The `mesh-bench` command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args as ClapArgs, Parser, Subcommand};

use super::tools::ECHO_PORT;

/// Performance benchmark of the ambient mesh on the local network-namespace cluster (root):
/// latency, throughput, proxy cost, connection setup and control-plane push latency, each next
/// to the no-mesh path measured in the same run.
#[derive(Debug, Parser)]
#[command(name = "mesh-bench", version, about, long_about = None)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole benchmark and write JSON, Markdown, a PNG chart and the README section.
    Run(RunArgs),
    /// Render the Markdown, chart and README section again from a results JSON.
    Report(ReportArgs),
    /// (in a pod) TCP echo server that logs nothing per connection.
    Serve {
        #[arg(long, default_value_t = ECHO_PORT)]
        port: u16,
    },
    /// (in a pod) Open COUNT connections, check each with an echo, print `held N of COUNT`,
    /// then keep them open until killed.
    Hold {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 10_000)]
        count: usize,
        #[arg(long, default_value_t = 200)]
        parallel: usize,
    },
    /// (in a pod) New connections per second: connect, 1-byte echo, close; prints one JSON line.
    Connrate {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
    },
    /// (in a node) Fresh HBONE connections per second against a ztunnel's 15008, one CONNECT
    /// with a 1-byte echo each; prints one JSON line.
    HboneRate(HboneRateArgs),
}

#[derive(Debug, ClapArgs)]
pub struct HboneRateArgs {
    /// The ztunnel's HBONE listener (`<pod ip>:15008`).
    #[arg(long)]
    pub hbone: SocketAddr,
    /// What each CONNECT asks for (`<pod ip>:<port>` of an echo server).
    #[arg(long)]
    pub authority: SocketAddr,
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// The mesh CA directory (root-cert.pem, root-key.pem) to sign the client certificate.
    #[arg(long)]
    pub ca_dir: PathBuf,
    #[arg(long, default_value = "cluster.local")]
    pub trust_domain: String,
    #[arg(long, default_value = "default")]
    pub namespace: String,
    #[arg(long, default_value = "default")]
    pub service_account: String,
}

#[derive(Debug, ClapArgs)]
pub struct ReportArgs {
    /// A `bench/results/<date>.json`.
    pub json: PathBuf,
    #[arg(long, default_value = "bench/results")]
    pub out: PathBuf,
    /// README whose Performance section to update.
    #[arg(long)]
    pub readme: Option<PathBuf>,
}

#[derive(Debug, Clone, ClapArgs)]
pub struct RunArgs {
    /// Directory of the mesh binaries (release build: istiod, ztunnel, cni-agent, mesh-cni,
    /// mesh-echo, waypoint); default: this program's directory.
    #[arg(long, env = "MESH_BIN_DIR")]
    pub bin_dir: Option<PathBuf>,
    /// The fortio binary (`e2e/cluster/build.sh fortio` builds it); default: `fortio` in PATH.
    #[arg(long, env = "FORTIO_BIN")]
    pub fortio: Option<PathBuf>,
    /// Output directory of the results.
    #[arg(long, default_value = "bench/results")]
    pub out: PathBuf,
    /// README whose Performance section to update.
    #[arg(long)]
    pub readme: Option<PathBuf>,
    /// fortio: requests per second.
    #[arg(long, default_value_t = 1000)]
    pub qps: u32,
    /// fortio: connections.
    #[arg(long, default_value_t = 16)]
    pub connections: u32,
    /// fortio: seconds per path.
    #[arg(long, default_value_t = 12)]
    pub seconds: u64,
    /// fortio: request and response body bytes.
    #[arg(long, default_value_t = 1024)]
    pub payload: u32,
    #[arg(long, default_value_t = 8)]
    pub iperf_seconds: u64,
    #[arg(long, default_value_t = 10_000)]
    pub idle_connections: usize,
    /// Seconds of each connection-rate test.
    #[arg(long, default_value_t = 5)]
    pub conn_seconds: u64,
    #[arg(long, default_value_t = 32)]
    pub conn_concurrency: usize,
    #[arg(long, default_value_t = 16)]
    pub hbone_concurrency: usize,
    /// Do not try the L7 path; the reason is reported as is.
    #[arg(long, value_name = "REASON")]
    pub no_waypoint: Option<String>,
    /// Profile with perf into this directory: the ztunnels under L4 load and during the HBONE
    /// handshake test, istiod during the manifest changes.
    #[arg(long, value_name = "DIR")]
    pub profile: Option<PathBuf>,
    #[arg(long)]
    pub skip_dataplane: bool,
    #[arg(long)]
    pub skip_control_plane: bool,
    #[arg(long, default_value_t = 10_000)]
    pub cp_pods: usize,
    #[arg(long, default_value_t = 1_000)]
    pub cp_services: usize,
    #[arg(long, default_value_t = 10)]
    pub cp_nodes: usize,
    /// Simulated ztunnels (one per node by default).
    #[arg(long, default_value_t = 10)]
    pub cp_subscribers: usize,
    #[arg(long, default_value_t = 100)]
    pub cp_changes: usize,
    /// Also measure a second series with istiod polling its config directory every 20 ms and
    /// a 10 ms debounce.
    #[arg(long)]
    pub cp_fast: bool,
    /// Keep the cluster's work directory and the control-plane files.
    #[arg(long)]
    pub keep: bool,
}
