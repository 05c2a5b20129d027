//! Command-line flags and environment of the `istiod` binary, read in one place, and the typed
//! configuration built from them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde::Serialize;

use crate::kube::settings::{
    DEFAULT_WEBHOOK_ADDR, KubeArgs, KubeSettings, SourceMode, source_mode,
};
use crate::model::ModelConfig;
use crate::webhook::WebhookSettings;
use crate::xds::Debounce;

/// Control plane: watches configuration, serves it over delta xDS and signs workload certificates.
#[derive(Debug, Clone, Parser)]
#[command(name = "istiod", version, about, long_about = None)]
pub struct Args {
    /// Directory of Kubernetes YAML manifests to serve (Namespaces, Pods, Services,
    /// AuthorizationPolicies, PeerAuthentications, Gateways, routes); watched for changes.
    /// Without it, istiod reads the Kubernetes API server (see --source).
    #[arg(long, env = "CONFIG_DIR")]
    pub config_dir: Option<PathBuf>,
    /// How often the configuration directory is checked for changes.
    #[arg(long, env = "CONFIG_POLL_INTERVAL", default_value = "200ms", value_parser = parse_duration)]
    pub config_poll_interval: Duration,
    /// Quiet period that coalesces configuration changes before the model is recomputed.
    #[arg(long, env = "PILOT_DEBOUNCE_AFTER", default_value = "100ms", value_parser = parse_duration)]
    pub debounce_after: Duration,
    /// Longest delay between a change and its push, however busy the configuration is.
    #[arg(long, env = "PILOT_DEBOUNCE_MAX", default_value = "1s", value_parser = parse_duration)]
    pub debounce_max: Duration,
    /// Trust domain of workload identities.
    #[arg(long, env = "TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: String,
    /// DNS suffix of services: `<name>.<namespace>.svc.<suffix>`.
    #[arg(long, env = "DOMAIN_SUFFIX", default_value = "cluster.local")]
    pub domain_suffix: String,
    /// Namespace whose policies without selector apply to the whole mesh; istiod's own
    /// identity lives there too.
    #[arg(long, env = "ROOT_NAMESPACE", default_value = "istio-system")]
    pub root_namespace: String,
    /// Cluster id written on workloads.
    #[arg(long, env = "CLUSTER_ID", default_value = "Kubernetes")]
    pub cluster_id: String,
    /// Plaintext gRPC address: delta ADS and the CA service.
    #[arg(long, env = "GRPC_ADDR", default_value = "0.0.0.0:15010")]
    pub grpc_addr: SocketAddr,
    /// TLS gRPC address: delta ADS and the CA service, with istiod's certificate.
    #[arg(long, env = "SECURE_GRPC_ADDR", default_value = "0.0.0.0:15012")]
    pub secure_grpc_addr: SocketAddr,
    /// Monitoring address: /ready, /metrics, /debug/*.
    #[arg(long, env = "MONITORING_ADDR", default_value = "0.0.0.0:15014")]
    pub monitoring_addr: SocketAddr,
    /// Directory of the CA root (root-cert.pem, root-key.pem); created when empty.
    #[arg(long, env = "CA_DIR", default_value = "/var/lib/istiod/ca")]
    pub ca_dir: PathBuf,
    /// File of node tokens for the CA: one `<token> <node-name>` pair per line, `#` comments.
    /// A node proxy presenting `authorization: Bearer <token>` may get certificates for the
    /// identities of the pods scheduled on that node. Without it, every request is refused.
    #[arg(long, env = "NODE_TOKENS")]
    pub node_tokens: Option<PathBuf>,
    /// Longest validity of a workload certificate (longer requests are capped).
    #[arg(long, env = "MAX_WORKLOAD_CERT_TTL", default_value = "24h", value_parser = parse_duration)]
    pub max_workload_cert_ttl: Duration,
    /// Log output format.
    #[arg(long, env = "LOG_FORMAT", default_value = "plain", value_parser = ["plain", "json"])]
    pub log_format: String,
    /// Log filter, in `tracing` env-filter syntax.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_level: String,
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// The running configuration; printed at start-up and served on `/debug/config_dump`.
#[derive(Clone, Debug, Serialize)]
pub struct Config {
    pub source: SourceMode,
    pub config_dir: Option<PathBuf>,
    #[serde(serialize_with = "ser_duration")]
    pub config_poll_interval: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub debounce_after: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub debounce_max: Duration,
    pub model: ModelConfig,
    pub grpc_addr: SocketAddr,
    pub secure_grpc_addr: SocketAddr,
    pub monitoring_addr: SocketAddr,
    pub ca_dir: PathBuf,
    pub node_tokens: Option<PathBuf>,
    #[serde(serialize_with = "ser_duration")]
    pub max_workload_cert_ttl: Duration,
    /// Kubernetes mode only.
    pub kubernetes: Option<KubeSettings>,
    pub webhook: Option<WebhookSettings>,
}

impl Config {
    pub fn from_args(args: &Args) -> Self {
        let source = source_mode(&args.kube, args.config_dir.as_ref());
        let kubernetes =
            (source == SourceMode::Kubernetes).then(|| KubeSettings::from_args(&args.kube));
        let webhook_addr = args.kube.webhook_addr.or_else(|| {
            (source == SourceMode::Kubernetes)
                .then(|| DEFAULT_WEBHOOK_ADDR.parse().ok())
                .flatten()
        });
        let webhook = webhook_addr.map(|addr| WebhookSettings {
            addr,
            host: format!(
                "{}.{}.svc",
                args.kube.istiod_service, args.kube.pod_namespace
            ),
        });
        Config {
            source,
            config_dir: args.config_dir.clone(),
            config_poll_interval: args.config_poll_interval,
            debounce_after: args.debounce_after,
            debounce_max: args.debounce_max,
            model: ModelConfig {
                trust_domain: args.trust_domain.clone(),
                domain_suffix: args.domain_suffix.clone(),
                root_namespace: args.root_namespace.clone(),
                cluster_id: args.cluster_id.clone(),
            },
            grpc_addr: args.grpc_addr,
            secure_grpc_addr: args.secure_grpc_addr,
            monitoring_addr: args.monitoring_addr,
            ca_dir: args.ca_dir.clone(),
            node_tokens: args.node_tokens.clone(),
            max_workload_cert_ttl: args.max_workload_cert_ttl,
            kubernetes,
            webhook,
        }
    }

    /// Defaults for the given directories, every listener on 127.0.0.1 with an ephemeral port
    /// (tests and local tools).
    pub fn local(config_dir: PathBuf, ca_dir: PathBuf) -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Config {
            source: SourceMode::Dir,
            config_dir: Some(config_dir),
            config_poll_interval: Duration::from_millis(200),
            debounce_after: Duration::from_millis(100),
            debounce_max: Duration::from_secs(1),
            model: ModelConfig::default(),
            grpc_addr: any,
            secure_grpc_addr: any,
            monitoring_addr: any,
            ca_dir,
            node_tokens: None,
            max_workload_cert_ttl: Duration::from_secs(24 * 3600),
            kubernetes: None,
            webhook: None,
        }
    }

    pub fn debounce(&self) -> Debounce {
        Debounce {
            quiet: self.debounce_after,
            max: self.debounce_max.max(self.debounce_after),
        }
    }
}

pub(crate) fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(*d))
}

/// `1h`, `30s`, `150ms`: the largest unit that divides the duration.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// Parses `150ms`, `10s`, `5m`, `24h`, `7d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{s:?}: missing unit (ms, s, m, h or d)"))?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number followed by ms, s, m, h or d"))?;
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h or d)")),
    }
    .ok_or_else(|| format!("{s:?}: too large"))?;
    Ok(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_format() {
        assert_eq!(parse_duration("150ms"), Ok(Duration::from_millis(150)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_duration("10").unwrap_err().contains("missing unit"));
        assert!(parse_duration("3w").unwrap_err().contains("unknown unit"));
        assert_eq!(format_duration(Duration::from_secs(86_400)), "1d");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn flags_and_defaults() {
        let args =
            Args::try_parse_from(["istiod", "--config-dir", "/cfg", "--debounce-after", "50ms"])
                .expect("valid flags");
        let cfg = Config::from_args(&args);
        assert_eq!(cfg.debounce_after, Duration::from_millis(50));
        assert_eq!(cfg.grpc_addr.port(), 15010);
        assert_eq!(cfg.secure_grpc_addr.port(), 15012);
        assert_eq!(cfg.monitoring_addr.port(), 15014);
        assert_eq!(cfg.model.trust_domain, "cluster.local");
        let json = serde_json::to_value(&cfg).expect("serializable");
        assert_eq!(json["max_workload_cert_ttl"], "1d");
        assert_eq!(json["model"]["root_namespace"], "istio-system");
    }
}
