//! L7 metrics with Istio's standard names and labels and `reporter="waypoint"`, so existing
//! dashboards (Grafana, Kiali) work: `istio_requests_total`,
//! `istio_request_duration_milliseconds`, `istio_request_bytes`, `istio_response_bytes`. TCP
//! passthrough reports ztunnel's `istio_tcp_*` families with the same reporter.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use ztunnel::state::{Service, Tunnel, Workload};

pub const REPORTER: &str = "waypoint";
pub const MUTUAL_TLS: &str = "mutual_tls";
const UNKNOWN: &str = "unknown";

/// Istio's duration buckets, in milliseconds.
const DURATION_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// Labels of every `istio_request*` series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub reporter: &'static str,
    pub source_workload: String,
    pub source_canonical_service: String,
    pub source_canonical_revision: String,
    pub source_workload_namespace: String,
    pub source_principal: String,
    pub source_app: String,
    pub source_version: String,
    pub source_cluster: String,
    pub destination_service: String,
    pub destination_service_namespace: String,
    pub destination_service_name: String,
    pub destination_workload: String,
    pub destination_canonical_service: String,
    pub destination_canonical_revision: String,
    pub destination_workload_namespace: String,
    pub destination_principal: String,
    pub destination_app: String,
    pub destination_version: String,
    pub destination_cluster: String,
    pub request_protocol: &'static str,
    pub response_code: u16,
    pub grpc_response_status: String,
    pub response_flags: &'static str,
    pub connection_security_policy: &'static str,
}

fn or_unknown(s: &str) -> String {
    if s.is_empty() {
        UNKNOWN.to_string()
    } else {
        s.to_string()
    }
}

/// What is known of the source of a request.
#[derive(Clone, Debug, Default)]
pub struct SourceLabels {
    pub workload: String,
    pub canonical_service: String,
    pub canonical_revision: String,
    pub namespace: String,
    pub principal: String,
    pub cluster: String,
}

impl SourceLabels {
    pub fn new(w: Option<&Workload>, principal: &identity::Identity) -> Self {
        match w {
            Some(w) => SourceLabels {
                workload: or_unknown(&w.workload_name),
                canonical_service: or_unknown(w.canonical_service()),
                canonical_revision: or_unknown(&w.canonical_revision),
                namespace: or_unknown(&w.namespace),
                principal: principal.to_string(),
                cluster: or_unknown(&w.cluster_id),
            },
            None => SourceLabels {
                workload: UNKNOWN.into(),
                canonical_service: UNKNOWN.into(),
                canonical_revision: UNKNOWN.into(),
                namespace: principal.namespace.clone(),
                principal: principal.to_string(),
                cluster: UNKNOWN.into(),
            },
        }
    }
}

impl RequestLabels {
    /// Labels of one request: `service` is the destination service (hostname, namespace, name),
    /// `dst` the endpoint that served it, if one was reached.
    pub fn new(
        src: &SourceLabels,
        service: (&str, &str, &str),
        dst: Option<&Workload>,
        request_protocol: &'static str,
        response_code: u16,
        grpc_response_status: Option<&str>,
        response_flags: &'static str,
    ) -> Self {
        let (hostname, namespace, name) = service;
        let mut l = RequestLabels {
            reporter: REPORTER,
            source_workload: src.workload.clone(),
            source_canonical_service: src.canonical_service.clone(),
            source_canonical_revision: src.canonical_revision.clone(),
            source_workload_namespace: src.namespace.clone(),
            source_principal: src.principal.clone(),
            source_app: src.canonical_service.clone(),
            source_version: src.canonical_revision.clone(),
            source_cluster: src.cluster.clone(),
            destination_service: or_unknown(hostname),
            destination_service_namespace: or_unknown(namespace),
            destination_service_name: or_unknown(name),
            destination_workload: UNKNOWN.into(),
            destination_canonical_service: UNKNOWN.into(),
            destination_canonical_revision: UNKNOWN.into(),
            destination_workload_namespace: UNKNOWN.into(),
            destination_principal: UNKNOWN.into(),
            destination_app: UNKNOWN.into(),
            destination_version: UNKNOWN.into(),
            destination_cluster: UNKNOWN.into(),
            request_protocol,
            response_code,
            grpc_response_status: grpc_response_status.unwrap_or("").to_string(),
            response_flags,
            connection_security_policy: MUTUAL_TLS,
        };
        if let Some(w) = dst {
            l.destination_workload = or_unknown(&w.workload_name);
            l.destination_canonical_service = or_unknown(w.canonical_service());
            l.destination_canonical_revision = or_unknown(&w.canonical_revision);
            l.destination_workload_namespace = or_unknown(&w.namespace);
            if w.tunnel == Tunnel::Hbone {
                l.destination_principal = w.identity.to_string();
            }
            l.destination_app = or_unknown(w.canonical_service());
            l.destination_version = or_unknown(&w.canonical_revision);
            l.destination_cluster = or_unknown(&w.cluster_id);
        }
        l
    }
}

/// The waypoint's metric families, registered under the `istio` prefix.
pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub duration: Family<RequestLabels, Histogram, fn() -> Histogram>,
    pub request_bytes: Family<RequestLabels, Histogram, fn() -> Histogram>,
    pub response_bytes: Family<RequestLabels, Histogram, fn() -> Histogram>,
    /// `istio_tcp_*` for TCP passthrough.
    pub tcp: Arc<ztunnel::metrics::Metrics>,
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

fn bytes_histogram() -> Histogram {
    // 1 byte to 1 GB, one bucket per power of ten.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        1.0, 10.0, 10,
    ))
}

/// One finished request, as the metrics see it.
#[derive(Clone, Copy, Debug)]
pub struct Observation {
    pub duration_ms: f64,
    pub request_bytes: u64,
    pub response_bytes: u64,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let tcp = ztunnel::metrics::Metrics::register(registry);
        let m = Metrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            request_bytes: Family::new_with_constructor(bytes_histogram),
            response_bytes: Family::new_with_constructor(bytes_histogram),
            tcp,
        };
        let sub = registry.sub_registry_with_prefix("istio");
        sub.register("requests", "Requests handled", m.requests.clone());
        sub.register(
            "request_duration_milliseconds",
            "Request duration, from the first request byte to the last response byte",
            m.duration.clone(),
        );
        sub.register(
            "request_bytes",
            "Request body sizes",
            m.request_bytes.clone(),
        );
        sub.register(
            "response_bytes",
            "Response body sizes",
            m.response_bytes.clone(),
        );
        Arc::new(m)
    }

    pub fn record(&self, labels: &RequestLabels, o: Observation) {
        self.requests.get_or_create(labels).inc();
        self.duration.get_or_create(labels).observe(o.duration_ms);
        self.request_bytes
            .get_or_create(labels)
            .observe(o.request_bytes as f64);
        self.response_bytes
            .get_or_create(labels)
            .observe(o.response_bytes as f64);
    }
}

/// `istio_tcp_*` labels of a passthrough connection.
pub fn tcp_labels(
    src: Option<&Workload>,
    principal: &identity::Identity,
    dst: Option<&Workload>,
    svc: Option<&Service>,
) -> ztunnel::metrics::ConnectionLabels {
    ztunnel::metrics::ConnectionLabels::new(
        REPORTER,
        src,
        Some(principal.to_string()),
        dst,
        svc,
        MUTUAL_TLS,
    )
}
