//! Command-line flags and environment of the `cni-agent` binary, read in one place.

use std::path::PathBuf;

use clap::Parser;

/// Node agent: enrols pods by programming redirection in their network namespaces.
#[derive(Debug, Clone, Parser)]
#[command(name = "cni-agent", version, about, long_about = None)]
pub struct Args {
    /// Name of this node: pods with this `spec.nodeName` are the agent's (default: host name).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Kubernetes mode: watch this node's Pods and all Namespaces on the API server (in-cluster
    /// configuration, or --kubeconfig) and annotate enrolled pods.
    #[arg(long, env = "MESH_CNI_KUBERNETES", conflicts_with = "config_dir")]
    pub kubernetes: bool,
    /// Kubernetes mode: kubeconfig file to use instead of the in-cluster configuration.
    #[arg(long, requires = "kubernetes")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubernetes mode: the agent's own pod (downward API), to tell an uninstall from a restart.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// Kubernetes mode: namespace of the agent's own pod (downward API).
    #[arg(long, env = "POD_NAMESPACE")]
    pub pod_namespace: Option<String>,
    /// Directory of CNI plugin binaries, where `mesh-cni` is installed.
    #[arg(long, env = "CNI_BIN_DIR", default_value = "/opt/cni/bin")]
    pub cni_bin_dir: PathBuf,
    /// Directory of CNI network configurations, whose primary file gets `mesh-cni` chained.
    #[arg(long, env = "CNI_CONF_DIR", default_value = "/etc/cni/net.d")]
    pub cni_conf_dir: PathBuf,
    /// The `mesh-cni` binary to install (default: `mesh-cni` beside this executable).
    #[arg(long, env = "MESH_CNI_PLUGIN_BINARY")]
    pub plugin_binary: Option<PathBuf>,
    /// Leave the CNI binary and configuration directories alone.
    #[arg(long, env = "MESH_CNI_SKIP_INSTALL")]
    pub skip_install: bool,
    /// Socket the plugin reports pods on.
    #[arg(long, env = "MESH_CNI_AGENT_SOCKET", default_value = crate::api::DEFAULT_AGENT_SOCKET)]
    pub plugin_socket: PathBuf,
    /// Socket ztunnel connects to (ZDS).
    #[arg(long, env = "ZDS_SOCKET", default_value = mesh_proto::zds::DEFAULT_SOCKET_PATH)]
    pub zds_socket: PathBuf,
    /// Directory of the agent's records and of `status.json`.
    #[arg(long, env = "MESH_CNI_STATE_DIR", default_value = "/var/run/mesh-cni")]
    pub state_dir: PathBuf,
    /// Local mode: watch Pods and Namespaces in this directory of manifests.
    #[arg(long, env = "CONFIG_DIR")]
    pub config_dir: Option<PathBuf>,
    /// How often the configuration directory is checked, in milliseconds.
    #[arg(long, env = "CONFIG_POLL_MS", default_value_t = 200)]
    pub config_poll_ms: u64,
    /// Seconds between full reconciliations (and checks that the plugin is still chained).
    #[arg(long, env = "RESYNC_SECONDS", default_value_t = 10)]
    pub resync_seconds: u64,
    /// Namespaces whose pods the plugin lets through without asking the agent.
    #[arg(
        long,
        env = "EXCLUDE_NAMESPACES",
        value_delimiter = ',',
        default_value = "kube-system"
    )]
    pub exclude_namespaces: Vec<String>,
    /// Named network namespaces searched for pods started before the agent.
    #[arg(long, env = "NETNS_DIR", default_value = "/var/run/netns")]
    pub netns_dir: PathBuf,
    /// The host's `/proc` (in a container: a hostPath mount, e.g. `/host/proc`), whose
    /// `PID/ns/net` are searched for pods started before the agent.
    #[arg(long, env = "PROC_DIR", default_value = "/proc")]
    pub proc_dir: PathBuf,
    /// Do not search `<proc-dir>/*/ns/net` for pods started before the agent.
    #[arg(long, env = "NO_PROC_SCAN")]
    pub no_proc_scan: bool,
    /// Also program IPv6 rules (`ip6tables`).
    #[arg(long, env = "IPV6", default_value_t = true, action = clap::ArgAction::Set)]
    pub ipv6: bool,
    /// Remove the plugin from the node, the redirect rules from recorded pods (and, with
    /// --kubernetes, the annotation from this node's pods), and exit.
    #[arg(long)]
    pub uninstall: bool,
    /// On SIGTERM/SIGINT, clean up: on an uninstall (Kubernetes mode: the agent's DaemonSet is
    /// gone or being deleted) everything: plugin, redirect rules, annotations, state; on any
    /// other stop, take the plugin out of the CNI configuration and remove its binary (unless
    /// --keep-chained-on-exit); enrolled pods stay enrolled.
    #[arg(long, env = "CLEANUP_ON_EXIT")]
    pub cleanup_on_exit: bool,
    /// With --cleanup-on-exit: leave the plugin chained when the stop is not an uninstall, so
    /// that pod creations on the node wait for the next agent instead of starting unenrolled.
    #[arg(long, env = "KEEP_CHAINED_ON_EXIT")]
    pub keep_chained_on_exit: bool,
    /// Log output format.
    #[arg(long, env = "LOG_FORMAT", default_value = "plain", value_parser = ["plain", "json"])]
    pub log_format: String,
    /// Log filter, in `tracing` env-filter syntax.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_level: String,
}
