//! Command-line interface of `meshctl`: every flag, its environment variable, and the examples
//! shown by `--help`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args as ClapArgs, Parser, Subcommand};

use crate::output::OutputFormat;
use crate::waypoint_gateway::{DEFAULT_WAYPOINT_NAME, TrafficType};

const ROOT_AFTER_HELP: &str = "\
Modes:
  Kubernetes (default)  talks to the cluster of the current kubeconfig context
                        (--kubeconfig, --context).
  Local                 with --config-dir DIR: the directory of manifests istiod reads; the
                        components are reached with --istiod-url, --ztunnel-admin and
                        --cni-status.

Examples:
  meshctl precheck
  meshctl waypoint apply -n shop --enroll-namespace --wait
  meshctl ztunnel-config workloads node1
  meshctl dataplane enroll shop
  meshctl analyze manifests/
  meshctl --config-dir /etc/mesh --istiod-url http://127.0.0.1:15014 waypoint status -A";

/// Operate and inspect the ambient mesh.
#[derive(Debug, Clone, Parser)]
#[command(name = "meshctl", version, long_about = None, after_help = ROOT_AFTER_HELP)]
pub struct Args {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command accepts.
#[derive(Debug, Clone, ClapArgs)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Local mode: the directory of manifests istiod reads (Namespaces, Pods, Services,
    /// policies, Gateways, routes).
    #[arg(long, global = true, env = "MESHCTL_CONFIG_DIR", value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
    /// Local mode: istiod's monitoring address (port 15014).
    #[arg(long, global = true, env = "MESHCTL_ISTIOD_URL", value_name = "URL")]
    pub istiod_url: Option<String>,
    /// Local mode: a ztunnel's admin address (port 15000), as URL or NODE=URL; repeat for
    /// several nodes.
    #[arg(
        long,
        global = true,
        env = "MESHCTL_ZTUNNEL_ADMIN",
        value_delimiter = ',',
        value_name = "[NODE=]URL"
    )]
    pub ztunnel_admin: Vec<String>,
    /// Local mode: a node agent's status.json (or its state directory); repeat for several
    /// nodes.
    #[arg(
        long,
        global = true,
        env = "MESHCTL_CNI_STATUS",
        value_delimiter = ',',
        value_name = "FILE"
    )]
    pub cni_status: Vec<PathBuf>,
    /// Kubernetes: the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then the
    /// in-cluster service account).
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubernetes: the kubeconfig context to use.
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// Kubernetes: the namespace the mesh components run in.
    #[arg(
        long,
        global = true,
        env = "MESHCTL_ISTIO_NAMESPACE",
        default_value = "istio-system",
        value_name = "NS"
    )]
    pub istio_namespace: String,
    /// The namespace to act on (default: `default`, or the kubeconfig context's namespace).
    #[arg(short = 'n', long, global = true, value_name = "NS")]
    pub namespace: Option<String>,
    /// Output format.
    #[arg(
        short = 'o',
        long,
        global = true,
        value_enum,
        default_value_t = OutputFormat::Table
    )]
    pub output: OutputFormat,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Create, inspect and delete waypoints (the L7 proxies of a namespace or service).
    #[command(subcommand)]
    Waypoint(WaypointCommand),
    /// Show what a ztunnel knows: workloads, services, policies, certificates.
    #[command(name = "ztunnel-config", subcommand)]
    ZtunnelConfig(ZtunnelConfigCommand),
    /// Enroll a namespace in the ambient data plane, or release it.
    #[command(subcommand)]
    Dataplane(DataplaneCommand),
    /// Check that the cluster (or this machine, in local mode) can run the mesh.
    #[command(after_help = PRECHECK_AFTER_HELP)]
    Precheck(PrecheckArgs),
    /// Find mistakes in the mesh's configuration: files, a configuration directory, or the
    /// cluster.
    #[command(after_help = ANALYZE_AFTER_HELP)]
    Analyze(AnalyzeArgs),
    /// Print the versions of meshctl, the control plane and the data plane.
    #[command(after_help = VERSION_AFTER_HELP)]
    Version(VersionArgs),
    /// Print a shell completion script.
    #[command(after_help = COMPLETION_AFTER_HELP)]
    Completion(CompletionArgs),
}

// ---------------------------------------------------------------------------------------------
// waypoint

#[derive(Debug, Clone, Subcommand)]
pub enum WaypointCommand {
    /// Create (or update) a waypoint Gateway.
    #[command(after_help = WAYPOINT_APPLY_AFTER_HELP)]
    Apply(WaypointApplyArgs),
    /// Print the Gateway `apply` would create, without creating it.
    #[command(after_help = WAYPOINT_GENERATE_AFTER_HELP)]
    Generate(WaypointGenerateArgs),
    /// List waypoints.
    #[command(after_help = WAYPOINT_LIST_AFTER_HELP)]
    List(WaypointListArgs),
    /// Delete waypoints.
    #[command(after_help = WAYPOINT_DELETE_AFTER_HELP)]
    Delete(WaypointDeleteArgs),
    /// Show whether waypoints are programmed.
    #[command(after_help = WAYPOINT_STATUS_AFTER_HELP)]
    Status(WaypointStatusArgs),
}

#[derive(Debug, Clone, ClapArgs)]
pub struct WaypointSpecArgs {
    /// Name of the waypoint Gateway.
    #[arg(long, default_value = DEFAULT_WAYPOINT_NAME)]
    pub name: String,
    /// Which traffic the waypoint handles (label istio.io/waypoint-for).
    #[arg(long = "for", value_enum, default_value_t = TrafficType::Service)]
    pub traffic_type: TrafficType,
}

#[derive(Debug, Clone, ClapArgs)]
pub struct WaypointApplyArgs {
    #[command(flatten)]
    pub spec: WaypointSpecArgs,
    /// Also label the namespace istio.io/use-waypoint=<name>, so its traffic uses the waypoint.
    #[arg(long)]
    pub enroll_namespace: bool,
    /// Replace what is in the way: a namespace already using another waypoint, or a Gateway
    /// of the same name that is not a waypoint.
    #[arg(long)]
    pub overwrite: bool,
    /// Wait until the waypoint is programmed.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits (e.g. 30s, 2m).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Clone, ClapArgs)]
pub struct WaypointGenerateArgs {
    #[command(flatten)]
    pub spec: WaypointSpecArgs,
}

#[derive(Debug, Clone, ClapArgs)]
pub struct WaypointListArgs {
    /// List the waypoints of every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
}

#[derive(Debug, Clone, ClapArgs)]
pub struct WaypointDeleteArgs {
    /// Waypoints to delete (default: the one named by --name).
    pub names: Vec<String>,
    /// Name of the waypoint to delete when none is given as argument.
    #[arg(long, default_value = DEFAULT_WAYPOINT_NAME)]
    pub name: String,
    /// Delete every waypoint of the namespace.
    #[arg(long, conflicts_with = "names")]
    pub all: bool,
}

#[derive(Debug, Clone, ClapArgs)]
pub struct WaypointStatusArgs {
    /// Only this waypoint.
    #[arg(long)]
    pub name: Option<String>,
    /// Waypoints of every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
}

const WAYPOINT_APPLY_AFTER_HELP: &str = "\
In local mode the Gateway is written to DIR/meshctl-waypoint-<ns>-<name>.yaml (or updated where
it is already defined), and --enroll-namespace edits the Namespace manifest where it lives.
--wait polls istiod's /debug/waypoints (--istiod-url) or, without it, the waypoint pod's Ready
condition.

Examples:
  meshctl waypoint apply -n shop
  meshctl waypoint apply -n shop --name reviews-wp --for all --enroll-namespace --wait
  meshctl --config-dir ./mesh waypoint apply -n shop --enroll-namespace --overwrite";

const WAYPOINT_GENERATE_AFTER_HELP: &str = "\
Examples:
  meshctl waypoint generate -n shop
  meshctl waypoint generate -n shop --name wp --for workload > waypoint.yaml
  meshctl waypoint generate -n shop -o json";

const WAYPOINT_LIST_AFTER_HELP: &str = "\
Examples:
  meshctl waypoint list -n shop
  meshctl waypoint list -A -o json";

const WAYPOINT_DELETE_AFTER_HELP: &str = "\
Namespaces and services still labelled istio.io/use-waypoint=<name> are reported: their traffic
fails until the label is removed or the waypoint comes back.

Examples:
  meshctl waypoint delete -n shop
  meshctl waypoint delete -n shop wp-a wp-b
  meshctl waypoint delete -n shop --all";

const WAYPOINT_STATUS_AFTER_HELP: &str = "\
Examples:
  meshctl waypoint status -n shop
  meshctl waypoint status -A
  meshctl --config-dir ./mesh --istiod-url http://127.0.0.1:15014 waypoint status --name wp";

// ---------------------------------------------------------------------------------------------
// ztunnel-config

#[derive(Debug, Clone, Subcommand)]
pub enum ZtunnelConfigCommand {
    /// Workloads (pods) the ztunnel knows, with their addresses, nodes and waypoints.
    #[command(after_help = ZTUNNEL_AFTER_HELP)]
    Workloads(ZtunnelTarget),
    /// Services, their virtual IPs, waypoints and endpoint counts.
    #[command(after_help = ZTUNNEL_AFTER_HELP)]
    Services(ZtunnelTarget),
    /// Authorization policies enforced by the ztunnel.
    #[command(after_help = ZTUNNEL_AFTER_HELP)]
    Policies(ZtunnelTarget),
    /// Workload certificates held by the ztunnel and when they expire.
    #[command(after_help = ZTUNNEL_AFTER_HELP)]
    Certificates(ZtunnelTarget),
    /// The pods the ztunnel serves on its node and their in-pod listeners.
    #[command(after_help = ZTUNNEL_CONNECTIONS_AFTER_HELP)]
    Connections(ZtunnelTarget),
    /// Everything above.
    #[command(after_help = ZTUNNEL_AFTER_HELP)]
    All(ZtunnelTarget),
}

#[derive(Debug, Clone, ClapArgs)]
pub struct ZtunnelTarget {
    /// A node name, or a pod (NAME with -n, NAMESPACE/NAME or NAME.NAMESPACE) whose node's
    /// ztunnel to read. Optional when only one ztunnel is known.
    #[arg(value_name = "NODE|POD")]
    pub target: Option<String>,
    /// Only rows of this namespace (workloads, services, policies, connections).
    #[arg(long, value_name = "NS")]
    pub workload_namespace: Option<String>,
}

const ZTUNNEL_AFTER_HELP: &str = "\
The data comes from the ztunnel's admin /config_dump (port 15000): in local mode from
--ztunnel-admin URL (or NODE=URL, one per node); on Kubernetes through a port-forward to the
ztunnel pod of the node.

Examples:
  meshctl ztunnel-config workloads
  meshctl ztunnel-config services node1
  meshctl ztunnel-config certificates -n shop cart-0
  meshctl ztunnel-config all shop/cart-0 -o yaml
  meshctl --config-dir ./mesh --ztunnel-admin node1=http://127.0.0.1:15000 ztunnel-config policies";

const ZTUNNEL_CONNECTIONS_AFTER_HELP: &str = "\
ztunnel's /config_dump does not report open connections; this lists the pods the ztunnel
serves and the listeners it holds inside each of them (15001 outbound, 15006 inbound plaintext,
15008 HBONE, 15053 DNS). Per-connection figures are in its metrics (port 15020).

Examples:
  meshctl ztunnel-config connections node1";

// ---------------------------------------------------------------------------------------------
// dataplane

#[derive(Debug, Clone, Subcommand)]
pub enum DataplaneCommand {
    /// Label the namespace istio.io/dataplane-mode=ambient and wait until its pods are
    /// enrolled.
    #[command(after_help = DATAPLANE_ENROLL_AFTER_HELP)]
    Enroll(DataplaneArgs),
    /// Remove the label and wait until its pods are released.
    #[command(after_help = DATAPLANE_RELEASE_AFTER_HELP)]
    Release(DataplaneArgs),
}

#[derive(Debug, Clone, ClapArgs)]
pub struct DataplaneArgs {
    /// The namespace.
    #[arg(id = "target_namespace", value_name = "NAMESPACE")]
    pub namespace: String,
    /// How long to wait for every pod (e.g. 30s, 2m).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Change the label and return without waiting.
    #[arg(long)]
    pub no_wait: bool,
}

const DATAPLANE_ENROLL_AFTER_HELP: &str = "\
A pod counts as enrolled once the node agent reports it: on Kubernetes its annotation
ambient.istio.io/redirection=enabled, in local mode its entry in an agent's status.json
(--cni-status, one per node). Pods labelled istio.io/dataplane-mode=none and host-network pods
stay out. Exits 1 when some pod did not report in time.

Examples:
  meshctl dataplane enroll shop
  meshctl dataplane enroll shop --timeout 2m -o json
  meshctl --config-dir ./mesh --cni-status /run/mesh-cni/node1 dataplane enroll shop";

const DATAPLANE_RELEASE_AFTER_HELP: &str = "\
Examples:
  meshctl dataplane release shop
  meshctl --config-dir ./mesh --cni-status /run/mesh-cni/node1 dataplane release shop --no-wait";

// ---------------------------------------------------------------------------------------------
// precheck

#[derive(Debug, Clone, ClapArgs)]
pub struct PrecheckArgs {
    /// Local mode: the node's CNI configuration directory the agent chains into.
    #[arg(long, default_value = "/etc/cni/net.d", value_name = "DIR")]
    pub cni_conf_dir: PathBuf,
    /// Local mode: where the standard CNI plugins (bridge, host-local, loopback) are looked for.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "/opt/cni/bin,/usr/lib/cni",
        value_name = "DIR"
    )]
    pub cni_bin_dir: Vec<PathBuf>,
}

const PRECHECK_AFTER_HELP: &str = "\
Each check prints PASS, WARN or FAIL and, unless it passed, what to do. Exits 1 when a check
failed, 0 otherwise.

Kubernetes: server version, Gateway API CRDs, the cluster's CNI (from nodes and kube-system),
your permissions for the install, existing Istio installations.
Local: the configuration directory, the CNI configuration and plugins, iptables, root,
istiod, the ztunnels and node agents given.

Examples:
  meshctl precheck
  meshctl precheck -o json
  meshctl --config-dir ./mesh precheck --cni-conf-dir /etc/cni/net.d";

// ---------------------------------------------------------------------------------------------
// analyze

#[derive(Debug, Clone, ClapArgs)]
pub struct AnalyzeArgs {
    /// Manifest files or directories to analyze offline (`-` reads standard input). Without
    /// files: --config-dir in local mode, else the cluster.
    #[arg(value_name = "FILES")]
    pub files: Vec<PathBuf>,
    /// Exit 1 when warnings (and no errors) are found.
    #[arg(long)]
    pub fail_on_warning: bool,
    /// Namespace whose policies apply to the whole mesh.
    #[arg(long, default_value = "istio-system", value_name = "NS")]
    pub root_namespace: String,
    /// Report on every namespace (the default unless -n is given; -n limits the report to one
    /// namespace, cluster-wide findings included).
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
}

const ANALYZE_AFTER_HELP: &str = "\
Findings:
  MESH0001 error    invalid manifest: malformed YAML or an object that does not parse
  MESH0002 warning  unknown field: the mesh ignores it
  MESH0003 error    AuthorizationPolicy with HTTP fields where no waypoint enforces it
  MESH0004 error    istio.io/use-waypoint names a waypoint that does not exist
  MESH0005 warning  HTTPRoute/GRPCRoute attached to a Service that has no waypoint
  MESH0006 warning  PeerAuthentication STRICT while some namespaces are outside the mesh
  MESH0007 warning  istio.io/use-waypoint names a waypoint that does not serve that traffic
  MESH0008 error    istio-waypoint Gateway without the HBONE listener on 15008

Exit codes:
  0  no error (warnings allowed unless --fail-on-warning)
  1  warnings only, with --fail-on-warning
  2  errors found
  3  the analysis could not run (unreadable input, cluster unreachable)

Examples:
  meshctl analyze manifests/ extra.yaml
  cat app.yaml | meshctl analyze -
  meshctl --config-dir ./mesh analyze --fail-on-warning
  meshctl analyze -n shop -o json";

// ---------------------------------------------------------------------------------------------
// version, completion

#[derive(Debug, Clone, ClapArgs)]
pub struct VersionArgs {
    /// One line per component kind.
    #[arg(long)]
    pub short: bool,
    /// Only the client version; do not contact the mesh.
    #[arg(long)]
    pub client: bool,
}

const VERSION_AFTER_HELP: &str = "\
Examples:
  meshctl version
  meshctl version --short
  meshctl version --client
  meshctl --config-dir ./mesh --istiod-url http://127.0.0.1:15014 \\
      --ztunnel-admin node1=http://127.0.0.1:15000 version -o json";

#[derive(Debug, Clone, ClapArgs)]
pub struct CompletionArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

const COMPLETION_AFTER_HELP: &str = "\
Examples:
  meshctl completion bash > /etc/bash_completion.d/meshctl
  meshctl completion zsh > \"${fpath[1]}/_meshctl\"
  meshctl completion fish > ~/.config/fish/completions/meshctl.fish";

/// Parses `500ms`, `30s`, `5m`, `1h` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number followed by ms, s, m or h"))?;
    let ms = match unit {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m or h)")),
    }
    .ok_or_else(|| format!("{s:?}: too large"))?;
    Ok(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("3w").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn positional_namespace_is_not_the_global_flag() {
        let args = Args::try_parse_from(["meshctl", "dataplane", "enroll", "shop", "-n", "other"])
            .expect("parses");
        let Command::Dataplane(DataplaneCommand::Enroll(a)) = &args.command else {
            panic!("wrong command: {args:?}");
        };
        assert_eq!(a.namespace, "shop");
        assert_eq!(args.global.namespace.as_deref(), Some("other"));
    }

    #[test]
    fn global_flags_after_the_subcommand() {
        let args = Args::try_parse_from([
            "meshctl",
            "waypoint",
            "list",
            "-A",
            "-o",
            "json",
            "--config-dir",
            "/x",
        ])
        .expect("parses");
        assert_eq!(args.global.output, OutputFormat::Json);
        assert_eq!(args.global.config_dir, Some(PathBuf::from("/x")));
    }
}
