//! Flags of the Kubernetes mode (flattened into istiod's command line) and the typed settings
//! built from them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::cli::{parse_duration, ser_duration};
use crate::kube::token_review::{ReviewPolicy, ServiceAccountRef};

/// Where the configuration comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SourceMode {
    /// A directory of manifests (`--config-dir`), no API server.
    Dir,
    /// The Kubernetes API server (`--kubeconfig`, or the in-cluster service account).
    Kubernetes,
}

/// Default webhook listener in Kubernetes mode.
pub const DEFAULT_WEBHOOK_ADDR: &str = "0.0.0.0:15017";

/// Kubernetes-mode flags.
#[derive(Debug, Clone, clap::Args)]
pub struct KubeArgs {
    /// Configuration source: `dir` (the manifests of --config-dir) or `kubernetes` (the API
    /// server). Default: `dir` when --config-dir is given, `kubernetes` otherwise.
    #[arg(long, env = "CONFIG_SOURCE", value_enum)]
    pub source: Option<SourceMode>,
    /// Kubeconfig file to reach the API server. Without it: the in-cluster service account
    /// when running in a pod, else the usual kubeconfig inference ($HOME/.kube/config).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// This replica's name (leader election identity); defaults to the host name.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// Namespace istiod runs in: its lease, its CA Secret, its Service.
    #[arg(long, env = "POD_NAMESPACE", default_value = "istio-system")]
    pub pod_namespace: String,
    /// Name of istiod's Service (webhook certificate names, waypoints' xDS address).
    #[arg(long, env = "ISTIOD_SERVICE", default_value = "istiod")]
    pub istiod_service: String,
    /// Service accounts of node proxies (`namespace/name`, comma separated): they obtain
    /// certificates for the service accounts of the pods on the node their token is bound to.
    #[arg(
        long,
        env = "ZTUNNEL_SERVICE_ACCOUNTS",
        default_value = "istio-system/ztunnel",
        value_delimiter = ',',
        value_parser = parse_service_account
    )]
    pub ztunnel_service_account: Vec<ServiceAccountRef>,
    /// Audience of the ServiceAccount tokens the CA accepts.
    #[arg(long, env = "CA_TOKEN_AUDIENCE", default_value = "istio-ca")]
    pub ca_token_audience: String,
    /// Secret (in istiod's namespace) holding the self-signed root when --ca-dir has none:
    /// read if present, created otherwise, so that every replica signs with the same root.
    /// Empty: keep the root in --ca-dir only.
    #[arg(long, env = "CA_SECRET", default_value = "istio-ca-secret")]
    pub ca_secret: String,
    /// Image of the waypoint proxies the waypoint controller deploys.
    #[arg(
        long,
        env = "WAYPOINT_IMAGE",
        default_value = "ambient-mesh/waypoint:latest"
    )]
    pub waypoint_image: String,
    /// xDS and CA address given to waypoints; default `https://<istiod service host>:15012`.
    /// Set it where pods cannot resolve Service names (no cluster DNS).
    #[arg(long, env = "WAYPOINT_XDS_ADDRESS")]
    pub waypoint_xds_address: Option<String>,
    /// Pull policy of the waypoint image.
    #[arg(
        long,
        env = "WAYPOINT_IMAGE_PULL_POLICY",
        default_value = "IfNotPresent"
    )]
    pub waypoint_image_pull_policy: String,
    /// Run the waypoint deployment controller (on the leader).
    #[arg(long, env = "WAYPOINT_CONTROLLER", default_value_t = true, action = clap::ArgAction::Set)]
    pub waypoint_controller: bool,
    /// Create the `istio-waypoint` GatewayClass when it is absent; false when the installation
    /// creates it (the chart does when the Gateway API is served at install time).
    #[arg(long, env = "CREATE_GATEWAY_CLASS", default_value_t = true, action = clap::ArgAction::Set)]
    pub create_gateway_class: bool,
    /// Lease that elects the replica running the controllers and status writers.
    #[arg(
        long,
        env = "LEADER_ELECTION_LEASE",
        default_value = "istiod-controllers"
    )]
    pub leader_lease: String,
    /// How long a leader's lease lasts without renewal; renewed every third of it.
    #[arg(long, env = "LEADER_ELECTION_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub leader_lease_duration: Duration,
    /// HTTPS address of the validating webhook. Default: 0.0.0.0:15017 in Kubernetes mode,
    /// none with a configuration directory.
    #[arg(long, env = "WEBHOOK_ADDR")]
    pub webhook_addr: Option<SocketAddr>,
    /// ValidatingWebhookConfiguration whose webhooks get the CA bundle (the mesh root
    /// certificate) written into their `clientConfig.caBundle`. Default:
    /// `istio-validator-<namespace>`; empty: write none.
    #[arg(long, env = "VALIDATION_WEBHOOK_CONFIG_NAME")]
    pub webhook_config_name: Option<String>,
    /// ClusterRole that owns what istiod creates at run time (the root certificate
    /// ConfigMaps, the CA Secret, the leader Lease): deleting it, as `helm uninstall` does,
    /// makes the garbage collector delete them. Empty: they outlive istiod.
    #[arg(long, env = "OWNER_CLUSTER_ROLE")]
    pub owner_cluster_role: Option<String>,
    /// How long to wait for the API server to list every watched kind at start-up.
    #[arg(long, env = "KUBE_SYNC_TIMEOUT", default_value = "2m", value_parser = parse_duration)]
    pub kube_sync_timeout: Duration,
}

/// Kubernetes-mode settings; part of istiod's running configuration.
#[derive(Clone, Debug, Serialize)]
pub struct KubeSettings {
    pub kubeconfig: Option<PathBuf>,
    pub pod_name: String,
    pub namespace: String,
    pub istiod_service: String,
    pub token_review: ReviewPolicy,
    pub ca_secret: Option<String>,
    pub waypoint_image: String,
    pub waypoint_xds_address: Option<String>,
    pub waypoint_image_pull_policy: String,
    pub waypoint_controller: bool,
    pub create_gateway_class: bool,
    pub leader_lease: String,
    #[serde(serialize_with = "ser_duration")]
    pub leader_lease_duration: Duration,
    pub webhook_config_name: Option<String>,
    pub owner_cluster_role: Option<String>,
    #[serde(serialize_with = "ser_duration")]
    pub sync_timeout: Duration,
}

impl KubeSettings {
    pub fn from_args(args: &KubeArgs) -> Self {
        let pod_name = match &args.pod_name {
            Some(name) if !name.is_empty() => name.clone(),
            _ => hostname(),
        };
        let webhook_config_name = match &args.webhook_config_name {
            Some(name) if name.is_empty() => None,
            Some(name) => Some(name.clone()),
            None => Some(format!("istio-validator-{}", args.pod_namespace)),
        };
        KubeSettings {
            kubeconfig: args.kubeconfig.clone(),
            pod_name,
            namespace: args.pod_namespace.clone(),
            istiod_service: args.istiod_service.clone(),
            token_review: ReviewPolicy {
                audience: args.ca_token_audience.clone(),
                node_proxies: args.ztunnel_service_account.clone(),
            },
            ca_secret: Some(args.ca_secret.clone()).filter(|s| !s.is_empty()),
            waypoint_image: args.waypoint_image.clone(),
            waypoint_xds_address: args.waypoint_xds_address.clone().filter(|a| !a.is_empty()),
            waypoint_image_pull_policy: args.waypoint_image_pull_policy.clone(),
            waypoint_controller: args.waypoint_controller,
            create_gateway_class: args.create_gateway_class,
            leader_lease: args.leader_lease.clone(),
            leader_lease_duration: args.leader_lease_duration,
            webhook_config_name,
            owner_cluster_role: args.owner_cluster_role.clone().filter(|o| !o.is_empty()),
            sync_timeout: args.kube_sync_timeout,
        }
    }

    /// `<service>.<namespace>.svc`: the name the API server and waypoints reach istiod by.
    pub fn istiod_host(&self) -> String {
        format!("{}.{}.svc", self.istiod_service, self.namespace)
    }
}

/// The source mode the flags ask for.
pub fn source_mode(args: &KubeArgs, config_dir: Option<&PathBuf>) -> SourceMode {
    args.source.unwrap_or(if config_dir.is_some() {
        SourceMode::Dir
    } else {
        SourceMode::Kubernetes
    })
}

fn parse_service_account(s: &str) -> Result<ServiceAccountRef, String> {
    s.trim().parse()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "istiod".to_string())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Args, Config};

    use super::*;

    fn config(args: &[&str]) -> Config {
        let mut argv = vec!["istiod"];
        argv.extend_from_slice(args);
        Config::from_args(&Args::try_parse_from(argv).expect("valid flags"))
    }

    #[test]
    fn the_source_defaults_to_the_directory_when_one_is_given() {
        let dir = config(&["--config-dir", "/cfg"]);
        assert_eq!(dir.source, SourceMode::Dir);
        assert!(dir.kubernetes.is_none());
        assert!(
            dir.webhook.is_none(),
            "no webhook without a cluster unless asked"
        );

        let with_webhook = config(&["--config-dir", "/cfg", "--webhook-addr", "127.0.0.1:9443"]);
        assert_eq!(
            with_webhook.webhook.expect("webhook").addr,
            "127.0.0.1:9443".parse().expect("addr")
        );
    }

    #[test]
    fn kubernetes_mode_settings() {
        let cfg = config(&[
            "--source",
            "kubernetes",
            "--pod-name",
            "istiod-7f9",
            "--ztunnel-service-account",
            "istio-system/ztunnel,kube-system/ztunnel",
            "--waypoint-image",
            "registry.local/waypoint:1",
        ]);
        assert_eq!(cfg.source, SourceMode::Kubernetes);
        let kube = cfg.kubernetes.expect("kubernetes settings");
        assert_eq!(kube.pod_name, "istiod-7f9");
        assert_eq!(kube.istiod_host(), "istiod.istio-system.svc");
        assert_eq!(
            kube.token_review
                .node_proxies
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["istio-system/ztunnel", "kube-system/ztunnel"]
        );
        assert_eq!(kube.token_review.audience, "istio-ca");
        assert_eq!(kube.ca_secret.as_deref(), Some("istio-ca-secret"));
        assert_eq!(
            kube.webhook_config_name.as_deref(),
            Some("istio-validator-istio-system")
        );
        let webhook = cfg.webhook.expect("webhook served in a cluster");
        assert_eq!(webhook.addr.port(), 15017);
        assert_eq!(webhook.host, "istiod.istio-system.svc");
        let json = serde_json::to_value(&kube).expect("serializable");
        assert_eq!(json["leader_lease_duration"], "15s");
    }

    #[test]
    fn empty_values_disable_the_ca_secret_and_the_bundle_writer() {
        let cfg = config(&["--ca-secret=", "--webhook-config-name="]);
        let kube = cfg
            .kubernetes
            .expect("kubernetes is the default without --config-dir");
        assert_eq!(kube.ca_secret, None);
        assert_eq!(kube.webhook_config_name, None);
    }

    #[test]
    fn bad_service_accounts_are_refused_at_parse_time() {
        let err = Args::try_parse_from(["istiod", "--ztunnel-service-account", "ztunnel"])
            .expect_err("no namespace");
        assert!(
            err.to_string()
                .contains("expected <namespace>/<service-account>"),
            "{err}"
        );
    }
}
