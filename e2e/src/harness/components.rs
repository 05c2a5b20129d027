//! How the harness starts the mesh components: their command lines, files and probe URLs. This
//! file is the contract between the harness and the binaries (see also the ztunnel command line
//! contract); the flags a binary is expected to accept are checked against its `--help` before a
//! cluster starts, so a mismatch is reported up front by name.
//!
//! - istiod, in the underlay netns (it binds the default ports on every address there):
//!   `istiod --config-dir DIR --ca-dir DIR --node-tokens FILE --trust-domain TD`
//!   CA root written to `<ca-dir>/root-cert.pem`; readiness `GET http://<underlay>:15014/ready`.
//!   The node tokens file has one `<token> <node-name>` pair per line.
//! - cni-agent, in each node netns:
//!   `cni-agent --node-name N --config-dir DIR --cni-conf-dir DIR --cni-bin-dir DIR
//!    --plugin-binary BIN/mesh-cni --plugin-socket PATH --zds-socket PATH --state-dir DIR
//!    --no-proc-scan`
//!   It installs `mesh-cni` into the CNI bin dir and appends a plugin of type `mesh-cni`
//!   (with `agentSocket`) to the node's conflist; that entry is its readiness signal here.
//!   It publishes `<state-dir>/status.json` (ztunnel connected, enrolled and pending pods).
//!   `/proc` scanning is off: pods here are named netns, and other clusters' processes must not
//!   be mistaken for this node's pods.
//! - ztunnel, in each node netns, per the ztunnel contract: `--node-name`, `--xds-address
//!   https://<underlay>:15012`, `--ca-root-file`, `--token-file`, `--trust-domain`,
//!   `--zds-socket`, `--admin-address 127.0.0.1:15000`, `--metrics-address 0.0.0.0:15020`,
//!   `--readiness-address 0.0.0.0:15021`; readiness `GET http://<node>:15021/healthz/ready`.
//! - waypoint, in its own pod netns (a pod labelled `gateway.networking.k8s.io/gateway-name`,
//!   never captured), as Kubernetes' waypoint controller would deploy it: `--name`,
//!   `--namespace`, `--service-account` (the Gateway's name), `--trust-domain`,
//!   `--istiod-identity`, `--xds-address https://<underlay>:15012`, `--ca-root-file`,
//!   `--token-file` (its node's token: in local mode the CA gives a node token the identities of
//!   the pods on that node), `--metrics-address 0.0.0.0:15020`, `--readiness-address
//!   0.0.0.0:15021`, `--admin-address 127.0.0.1:15000`; readiness `GET
//!   http://127.0.0.1:15021/healthz/ready` inside the pod netns.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::cmd;

/// Plugin type the cni-agent chains into the conflist.
pub const MESH_CNI_TYPE: &str = "mesh-cni";
pub const ISTIOD_XDS_PLAINTEXT_PORT: u16 = 15010;
pub const ISTIOD_XDS_TLS_PORT: u16 = 15012;
pub const ISTIOD_MONITORING_PORT: u16 = 15014;
pub const ZTUNNEL_ADMIN_PORT: u16 = 15000;
pub const ZTUNNEL_METRICS_PORT: u16 = 15020;
pub const ZTUNNEL_READINESS_PORT: u16 = 15021;
/// Ports ztunnel binds inside an enrolled pod's netns.
pub const ZTUNNEL_POD_PORTS: &[u16] = &[15001, 15006, 15008];
/// The waypoint's ports (inside its pod netns).
pub const WAYPOINT_HBONE_PORT: u16 = 15008;
pub const WAYPOINT_ADMIN_PORT: u16 = 15000;
pub const WAYPOINT_METRICS_PORT: u16 = 15020;
pub const WAYPOINT_READINESS_PORT: u16 = 15021;
/// istiod's own service account and namespace: its serving certificate's identity.
pub const ISTIOD_NAMESPACE: &str = "istio-system";
pub const ISTIOD_SERVICE_ACCOUNT: &str = "istiod";

/// istiod's files.
#[derive(Debug, Clone)]
pub struct IstiodFiles {
    pub config_dir: PathBuf,
    pub ca_dir: PathBuf,
    pub tokens_file: PathBuf,
    pub log: PathBuf,
}

impl IstiodFiles {
    pub fn root_cert(&self) -> PathBuf {
        self.ca_dir.join("root-cert.pem")
    }
}

pub fn istiod_args(f: &IstiodFiles, trust_domain: &str, log_level: &str) -> Vec<String> {
    vec![
        "--config-dir".into(),
        f.config_dir.display().to_string(),
        "--ca-dir".into(),
        f.ca_dir.display().to_string(),
        "--node-tokens".into(),
        f.tokens_file.display().to_string(),
        "--trust-domain".into(),
        trust_domain.into(),
        "--log-format".into(),
        "plain".into(),
        "--log-level".into(),
        log_level.into(),
    ]
}

pub fn istiod_ready_url(ip: Ipv4Addr) -> String {
    format!("http://{ip}:{ISTIOD_MONITORING_PORT}/ready")
}

/// The node tokens file: one `<token> <node-name>` pair per line.
pub fn node_tokens_file(tokens: &[(String, String)]) -> String {
    let mut out = String::from("# bearer token, node name\n");
    for (node, token) in tokens {
        out.push_str(&format!("{token} {node}\n"));
    }
    out
}

/// A random bearer token.
pub fn random_token() -> String {
    (0..4)
        .map(|_| format!("{:016x}", rand::random::<u64>()))
        .collect()
}

/// One node's component files.
#[derive(Debug, Clone)]
pub struct NodeFiles {
    pub node_name: String,
    pub node_ip: Ipv4Addr,
    pub cni_conf_dir: PathBuf,
    pub cni_bin_dir: PathBuf,
    pub zds_socket: PathBuf,
    pub agent_socket: PathBuf,
    pub agent_state_dir: PathBuf,
    /// The `mesh-cni` binary the agent installs.
    pub plugin_binary: PathBuf,
    pub token_file: PathBuf,
    pub agent_log: PathBuf,
    pub ztunnel_log: PathBuf,
}

pub fn cni_agent_args(n: &NodeFiles, config_dir: &Path, log_level: &str) -> Vec<String> {
    vec![
        "--node-name".into(),
        n.node_name.clone(),
        "--config-dir".into(),
        config_dir.display().to_string(),
        "--cni-conf-dir".into(),
        n.cni_conf_dir.display().to_string(),
        "--cni-bin-dir".into(),
        n.cni_bin_dir.display().to_string(),
        "--plugin-binary".into(),
        n.plugin_binary.display().to_string(),
        "--plugin-socket".into(),
        n.agent_socket.display().to_string(),
        "--zds-socket".into(),
        n.zds_socket.display().to_string(),
        "--state-dir".into(),
        n.agent_state_dir.display().to_string(),
        "--no-proc-scan".into(),
        "--log-format".into(),
        "plain".into(),
        "--log-level".into(),
        log_level.into(),
    ]
}

pub fn ztunnel_args(
    n: &NodeFiles,
    istiod_ip: Ipv4Addr,
    root_cert: &Path,
    trust_domain: &str,
    log_level: &str,
) -> Vec<String> {
    vec![
        "--node-name".into(),
        n.node_name.clone(),
        "--xds-address".into(),
        format!("https://{istiod_ip}:{ISTIOD_XDS_TLS_PORT}"),
        "--ca-root-file".into(),
        root_cert.display().to_string(),
        "--token-file".into(),
        n.token_file.display().to_string(),
        "--trust-domain".into(),
        trust_domain.into(),
        "--zds-socket".into(),
        n.zds_socket.display().to_string(),
        "--admin-address".into(),
        format!("127.0.0.1:{ZTUNNEL_ADMIN_PORT}"),
        "--metrics-address".into(),
        format!("0.0.0.0:{ZTUNNEL_METRICS_PORT}"),
        "--readiness-address".into(),
        format!("0.0.0.0:{ZTUNNEL_READINESS_PORT}"),
        "--log-format".into(),
        "plain".into(),
        "--log-level".into(),
        log_level.into(),
    ]
}

pub fn ztunnel_ready_url(node_ip: Ipv4Addr) -> String {
    format!("http://{node_ip}:{ZTUNNEL_READINESS_PORT}/healthz/ready")
}

pub fn ztunnel_metrics_url(node_ip: Ipv4Addr) -> String {
    format!("http://{node_ip}:{ZTUNNEL_METRICS_PORT}/metrics")
}

pub fn ztunnel_config_dump_url() -> String {
    format!("http://127.0.0.1:{ZTUNNEL_ADMIN_PORT}/config_dump")
}

/// What one waypoint is started with.
#[derive(Debug, Clone)]
pub struct WaypointLaunch {
    pub name: String,
    pub namespace: String,
    pub service_account: String,
    pub trust_domain: String,
    pub istiod_ip: Ipv4Addr,
    pub root_cert: PathBuf,
    pub token_file: PathBuf,
    pub log_level: String,
}

pub fn waypoint_args(w: &WaypointLaunch) -> Vec<String> {
    vec![
        "--name".into(),
        w.name.clone(),
        "--namespace".into(),
        w.namespace.clone(),
        "--service-account".into(),
        w.service_account.clone(),
        "--trust-domain".into(),
        w.trust_domain.clone(),
        "--istiod-identity".into(),
        format!(
            "spiffe://{}/ns/{ISTIOD_NAMESPACE}/sa/{ISTIOD_SERVICE_ACCOUNT}",
            w.trust_domain
        ),
        "--xds-address".into(),
        format!("https://{}:{ISTIOD_XDS_TLS_PORT}", w.istiod_ip),
        "--ca-root-file".into(),
        w.root_cert.display().to_string(),
        "--token-file".into(),
        w.token_file.display().to_string(),
        "--admin-address".into(),
        format!("127.0.0.1:{WAYPOINT_ADMIN_PORT}"),
        "--metrics-address".into(),
        format!("0.0.0.0:{WAYPOINT_METRICS_PORT}"),
        "--readiness-address".into(),
        format!("0.0.0.0:{WAYPOINT_READINESS_PORT}"),
        "--log-format".into(),
        "plain".into(),
        "--log-level".into(),
        w.log_level.clone(),
    ]
}

/// Readiness, metrics and admin URLs of a waypoint, from inside its pod netns.
pub fn waypoint_ready_url() -> String {
    format!("http://127.0.0.1:{WAYPOINT_READINESS_PORT}/healthz/ready")
}

pub fn waypoint_metrics_url() -> String {
    format!("http://127.0.0.1:{WAYPOINT_METRICS_PORT}/metrics")
}

pub fn waypoint_config_dump_url() -> String {
    format!("http://127.0.0.1:{WAYPOINT_ADMIN_PORT}/config_dump")
}

/// istiod's waypoint status (`/debug/waypoints`), from the underlay.
pub fn istiod_waypoints_url(ip: Ipv4Addr) -> String {
    format!("http://{ip}:{ISTIOD_MONITORING_PORT}/debug/waypoints")
}

/// Long flags (`--name`) mentioned in a `--help` text.
pub fn flags_in_help(help: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for word in help.split(|c: char| c.is_whitespace() || matches!(c, ',' | '[' | ']' | '=' | '<'))
    {
        if let Some(rest) = word.strip_prefix("--") {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            if !name.is_empty() {
                out.insert(format!("--{name}"));
            }
        }
    }
    out
}

/// The `--flags` of `args` that `binary --help` does not mention (empty when all are known, or
/// when the help cannot be read: then the start itself will tell).
pub fn unknown_flags(binary: &Path, args: &[String]) -> Vec<String> {
    let Ok(out) = cmd::run(Command::new(binary).arg("--help"), cmd::DEFAULT_TIMEOUT) else {
        return Vec::new();
    };
    let known = flags_in_help(&format!("{}\n{}", out.stdout, out.stderr));
    if known.is_empty() {
        return Vec::new();
    }
    args.iter()
        .filter(|a| a.starts_with("--"))
        .filter(|a| !known.contains(a.split('=').next().unwrap_or(a)))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_flags_in_clap_help() {
        let help = "Usage: ztunnel [OPTIONS] --node-name <NODE_NAME>\n\nOptions:\n      --node-name <NODE_NAME>\n          Name [env: NODE_NAME=]\n      --xds-address <XDS_ADDRESS>\n  -h, --help\n";
        let flags = flags_in_help(help);
        assert!(flags.contains("--node-name"));
        assert!(flags.contains("--xds-address"));
        assert!(flags.contains("--help"));
        assert!(!flags.contains("--"));
    }

    #[test]
    fn ztunnel_gets_the_contract_flags() {
        let n = NodeFiles {
            node_name: "node1".into(),
            node_ip: Ipv4Addr::new(172, 18, 3, 11),
            cni_conf_dir: "/c".into(),
            cni_bin_dir: "/b".into(),
            zds_socket: "/run/ambient-mesh/x/node1/ztunnel.sock".into(),
            agent_socket: "/run/ambient-mesh/x/node1/agent.sock".into(),
            agent_state_dir: "/s".into(),
            plugin_binary: "/bin/mesh-cni".into(),
            token_file: "/t".into(),
            agent_log: "/a.log".into(),
            ztunnel_log: "/z.log".into(),
        };
        let args = ztunnel_args(
            &n,
            Ipv4Addr::new(172, 18, 3, 1),
            Path::new("/ca/root-cert.pem"),
            "cluster.local",
            "info",
        );
        let joined = args.join(" ");
        for expect in [
            "--node-name node1",
            "--xds-address https://172.18.3.1:15012",
            "--ca-root-file /ca/root-cert.pem",
            "--zds-socket /run/ambient-mesh/x/node1/ztunnel.sock",
            "--metrics-address 0.0.0.0:15020",
        ] {
            assert!(joined.contains(expect), "{joined} lacks {expect}");
        }
        assert_eq!(
            node_tokens_file(&[("node1".into(), "ab".into())]),
            "# bearer token, node name\nab node1\n"
        );
        assert_eq!(random_token().len(), 64);
    }

    #[test]
    fn waypoint_gets_its_identity_istiod_and_node_token() {
        let args = waypoint_args(&WaypointLaunch {
            name: "waypoint".into(),
            namespace: "demo".into(),
            service_account: "waypoint".into(),
            trust_domain: "example.org".into(),
            istiod_ip: Ipv4Addr::new(172, 18, 3, 1),
            root_cert: "/ca/root-cert.pem".into(),
            token_file: "/n1/token".into(),
            log_level: "info".into(),
        });
        let joined = args.join(" ");
        for expect in [
            "--name waypoint --namespace demo --service-account waypoint",
            "--trust-domain example.org",
            "--istiod-identity spiffe://example.org/ns/istio-system/sa/istiod",
            "--xds-address https://172.18.3.1:15012",
            "--ca-root-file /ca/root-cert.pem",
            "--token-file /n1/token",
            "--readiness-address 0.0.0.0:15021",
        ] {
            assert!(joined.contains(expect), "{joined} lacks {expect}");
        }
    }
}
