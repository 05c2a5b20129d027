//! L4 metrics with Istio's standard names and labels, so existing dashboards work.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::state::{Service, Workload};

/// Labels of every `istio_tcp_*` series.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
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
    pub response_flags: &'static str,
    pub connection_security_policy: &'static str,
}

pub const REPORTER_SOURCE: &str = "source";
pub const REPORTER_DESTINATION: &str = "destination";
pub const MUTUAL_TLS: &str = "mutual_tls";
pub const PLAINTEXT: &str = "unknown";

const UNKNOWN: &str = "unknown";

fn or_unknown(s: &str) -> String {
    if s.is_empty() {
        UNKNOWN.to_string()
    } else {
        s.to_string()
    }
}

impl ConnectionLabels {
    /// Builds the labels of one connection from what ztunnel knows of both ends.
    pub fn new(
        reporter: &'static str,
        src: Option<&Workload>,
        src_principal: Option<String>,
        dst: Option<&Workload>,
        svc: Option<&Service>,
        security: &'static str,
    ) -> Self {
        let mut l = ConnectionLabels {
            reporter,
            request_protocol: "tcp",
            response_flags: "-",
            connection_security_policy: security,
            source_principal: src_principal.unwrap_or_else(|| UNKNOWN.into()),
            ..Default::default()
        };
        match src {
            Some(w) => {
                l.source_workload = or_unknown(&w.workload_name);
                l.source_canonical_service = or_unknown(w.canonical_service());
                l.source_canonical_revision = or_unknown(&w.canonical_revision);
                l.source_workload_namespace = or_unknown(&w.namespace);
                l.source_app = or_unknown(w.canonical_service());
                l.source_version = or_unknown(&w.canonical_revision);
                l.source_cluster = or_unknown(&w.cluster_id);
            }
            None => {
                l.source_workload = UNKNOWN.into();
                l.source_canonical_service = UNKNOWN.into();
                l.source_canonical_revision = UNKNOWN.into();
                l.source_workload_namespace = UNKNOWN.into();
                l.source_app = UNKNOWN.into();
                l.source_version = UNKNOWN.into();
                l.source_cluster = UNKNOWN.into();
            }
        }
        match dst {
            Some(w) => {
                l.destination_workload = or_unknown(&w.workload_name);
                l.destination_canonical_service = or_unknown(w.canonical_service());
                l.destination_canonical_revision = or_unknown(&w.canonical_revision);
                l.destination_workload_namespace = or_unknown(&w.namespace);
                l.destination_principal = if w.tunnel == crate::state::Tunnel::Hbone {
                    w.identity.to_string()
                } else {
                    UNKNOWN.into()
                };
                l.destination_app = or_unknown(w.canonical_service());
                l.destination_version = or_unknown(&w.canonical_revision);
                l.destination_cluster = or_unknown(&w.cluster_id);
            }
            None => {
                l.destination_workload = UNKNOWN.into();
                l.destination_canonical_service = UNKNOWN.into();
                l.destination_canonical_revision = UNKNOWN.into();
                l.destination_workload_namespace = UNKNOWN.into();
                l.destination_principal = UNKNOWN.into();
                l.destination_app = UNKNOWN.into();
                l.destination_version = UNKNOWN.into();
                l.destination_cluster = UNKNOWN.into();
            }
        }
        match svc {
            Some(s) => {
                l.destination_service = s.hostname.clone();
                l.destination_service_namespace = s.namespace.clone();
                l.destination_service_name = s.name.clone();
            }
            None => {
                l.destination_service = dst
                    .map(|w| w.workload_name.clone())
                    .unwrap_or_else(|| UNKNOWN.into());
                l.destination_service_namespace = dst
                    .map(|w| w.namespace.clone())
                    .unwrap_or_else(|| UNKNOWN.into());
                l.destination_service_name = l.destination_service.clone();
            }
        }
        l
    }
}

/// The ztunnel metric families, registered under the `istio` prefix.
#[derive(Default)]
pub struct Metrics {
    pub opened: Family<ConnectionLabels, Counter>,
    pub closed: Family<ConnectionLabels, Counter>,
    pub sent: Family<ConnectionLabels, Counter>,
    pub received: Family<ConnectionLabels, Counter>,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> std::sync::Arc<Self> {
        let m = Metrics::default();
        let sub = registry.sub_registry_with_prefix("istio");
        sub.register(
            "tcp_connections_opened",
            "Connections opened",
            m.opened.clone(),
        );
        sub.register(
            "tcp_connections_closed",
            "Connections closed",
            m.closed.clone(),
        );
        sub.register(
            "tcp_sent_bytes",
            "Bytes sent to the destination during a connection",
            m.sent.clone(),
        );
        sub.register(
            "tcp_received_bytes",
            "Bytes received from the destination during a connection",
            m.received.clone(),
        );
        std::sync::Arc::new(m)
    }

    /// Records the opening of a connection; call `close` with the byte counts when it ends.
    pub fn open(&self, labels: &ConnectionLabels) {
        self.opened.get_or_create(labels).inc();
    }

    /// `sent` is bytes from the source towards the destination, `received` the other way.
    pub fn close(&self, labels: &ConnectionLabels, sent: u64, received: u64) {
        self.closed.get_or_create(labels).inc();
        self.sent.get_or_create(labels).inc_by(sent);
        self.received.get_or_create(labels).inc_by(received);
    }
}
