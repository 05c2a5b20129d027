//! istiod's Prometheus metrics, under Istio's metric names (counters carry the OpenMetrics
//! `_total` suffix).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type TypeLabel = Vec<(&'static str, String)>;

/// The metrics, registered once per process (or per test instance).
pub struct Metrics {
    registry: Registry,
    /// Pushes of changed resources to subscribed clients, by resource type.
    pub xds_pushes: Family<TypeLabel, Counter>,
    /// xDS streams currently connected.
    pub xds_connected: Gauge,
    /// NACKs received, by resource type.
    pub xds_rejects: Family<TypeLabel, Counter>,
    /// Certificate signing requests received.
    pub csr_count: Counter,
    /// Certificates issued.
    pub cert_issued: Counter,
    /// Requests refused because the caller could not be authenticated.
    pub authn_failures: Counter,
    /// Requests refused because the caller may not have the requested identity.
    pub authz_failures: Counter,
    /// Invalid or converted configuration objects currently reported.
    pub config_issues: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let xds_pushes = Family::<TypeLabel, Counter>::default();
        let xds_connected = Gauge::default();
        let xds_rejects = Family::<TypeLabel, Counter>::default();
        let csr_count = Counter::default();
        let cert_issued = Counter::default();
        let authn_failures = Counter::default();
        let authz_failures = Counter::default();
        let config_issues = Gauge::default();
        registry.register(
            "pilot_xds_pushes",
            "Pushes of changed xDS resources, by type",
            xds_pushes.clone(),
        );
        registry.register(
            "pilot_xds",
            "Number of xDS streams connected to this istiod",
            xds_connected.clone(),
        );
        registry.register(
            "pilot_total_xds_rejects",
            "xDS responses rejected (NACKed) by clients, by type",
            xds_rejects.clone(),
        );
        registry.register(
            "citadel_server_csr_count",
            "Certificate signing requests received",
            csr_count.clone(),
        );
        registry.register(
            "citadel_server_success_cert_issuance_count",
            "Certificates issued",
            cert_issued.clone(),
        );
        registry.register(
            "citadel_server_authentication_failure_count",
            "Certificate requests whose caller could not be authenticated",
            authn_failures.clone(),
        );
        registry.register(
            "citadel_server_authorization_failure_count",
            "Certificate requests for an identity the caller may not have",
            authz_failures.clone(),
        );
        registry.register(
            "pilot_config_issues",
            "Invalid or converted configuration objects currently reported",
            config_issues.clone(),
        );
        Metrics {
            registry,
            xds_pushes,
            xds_connected,
            xds_rejects,
            csr_count,
            cert_issued,
            authn_failures,
            authz_failures,
            config_issues,
        }
    }

    /// The label set of a per-type metric, with the short type name (`Address`, `Authorization`).
    pub fn type_label(type_url: &str) -> TypeLabel {
        let short = type_url.rsplit('.').next().unwrap_or(type_url);
        vec![("type", short.to_string())]
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
