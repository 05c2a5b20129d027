//! The services a waypoint receives traffic for (`mesh.waypoint.v1.BoundService`): addresses,
//! ports with their application protocol, and circuit breaking.
//!
//! Protocol of a port, as Istio reads it: `appProtocol` first (`http`, `http2`, `grpc`,
//! `kubernetes.io/h2c`, `grpc-web`, `tcp`, `tls`, `https`, ...), else the port name (`http`,
//! `http-*`, `http2-*`, `grpc-*`, `tcp-*`, ...); anything else is detected by the waypoint.
//!
//! Circuit breaking has no standard Kubernetes or Gateway API field, so this mesh reads its own
//! Service annotations (values are non-negative integers; absent means no limit):
//!
//! | annotation | meaning |
//! |---|---|
//! | `mesh.io/max-connections` | upstream connections to the service's endpoints |
//! | `mesh.io/max-pending-requests` | requests waiting for a request slot |
//! | `mesh.io/max-requests` | requests in flight |
//! | `mesh.io/consecutive-5xx` | consecutive 5xx (or connect failures) that eject an endpoint |
//! | `mesh.io/ejection-ms` | how long an endpoint stays ejected (milliseconds) |
//!
//! They apply where the service is reached through a waypoint it is bound to.

use k8s_openapi::api::core::v1::{Service as K8sService, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mesh_config::ObjectKey;
use mesh_proto::proto::waypoint::{BoundService, CircuitBreaker, ServicePort as WpPort};
use mesh_proto::proto::workload::Service;

use super::Report;

pub const MAX_CONNECTIONS: &str = "mesh.io/max-connections";
pub const MAX_PENDING_REQUESTS: &str = "mesh.io/max-pending-requests";
pub const MAX_REQUESTS: &str = "mesh.io/max-requests";
pub const CONSECUTIVE_5XX: &str = "mesh.io/consecutive-5xx";
pub const EJECTION_MS: &str = "mesh.io/ejection-ms";

/// The circuit-breaking annotations, in the order of [`CircuitBreaker`]'s fields.
pub const CIRCUIT_BREAKER_ANNOTATIONS: [&str; 5] = [
    MAX_CONNECTIONS,
    MAX_PENDING_REQUESTS,
    MAX_REQUESTS,
    CONSECUTIVE_5XX,
    EJECTION_MS,
];

/// The bound service of `proto` (the model's Service), with ports and circuit breaking read
/// from the Kubernetes Service `svc`.
pub(crate) fn bound_service(
    proto: &Service,
    svc: &K8sService,
    key: &ObjectKey,
    report: &mut Report<'_, '_>,
) -> BoundService {
    let ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .filter(|p| matches!(p.protocol.as_deref(), None | Some("TCP")))
        .filter_map(|p| {
            let port = u16::try_from(p.port).ok().filter(|p| *p > 0)?;
            Some(WpPort {
                port: u32::from(port),
                target_port: match &p.target_port {
                    None => u32::from(port),
                    Some(IntOrString::Int(t)) => u16::try_from(*t).map(u32::from).unwrap_or(0),
                    Some(IntOrString::String(_)) => 0,
                },
                protocol: port_protocol(p).to_string(),
            })
        })
        .collect();
    BoundService {
        key: format!("{}/{}", proto.namespace, proto.hostname),
        name: proto.name.clone(),
        namespace: proto.namespace.clone(),
        hostname: proto.hostname.clone(),
        vips: proto.addresses.iter().map(|a| a.address.clone()).collect(),
        ports,
        routes: Vec::new(),
        circuit_breaker: circuit_breaker(svc, key, report),
    }
}

/// `http`, `http2`, `grpc`, `tcp`, or `""` (detect).
pub(crate) fn port_protocol(p: &ServicePort) -> &'static str {
    if let Some(app) = p.app_protocol.as_deref() {
        let known = protocol_name(&app.to_ascii_lowercase());
        if !known.is_empty() {
            return known;
        }
    }
    let name = p.name.as_deref().unwrap_or("").to_ascii_lowercase();
    let prefix = name.split_once('-').map_or(name.as_str(), |(p, _)| p);
    protocol_name(prefix)
}

fn protocol_name(v: &str) -> &'static str {
    match v {
        "http" | "grpc-web" => "http",
        "http2" | "h2c" | "kubernetes.io/h2c" => "http2",
        "grpc" => "grpc",
        "tcp" | "tls" | "https" | "mongo" | "mysql" | "redis" | "kubernetes.io/ws"
        | "kubernetes.io/wss" => "tcp",
        _ => "",
    }
}

/// Whether the Service carries any circuit-breaking annotation.
pub(crate) fn has_circuit_breaker(svc: &K8sService) -> bool {
    svc.metadata.annotations.as_ref().is_some_and(|a| {
        CIRCUIT_BREAKER_ANNOTATIONS
            .iter()
            .any(|k| a.contains_key(*k))
    })
}

fn circuit_breaker(
    svc: &K8sService,
    key: &ObjectKey,
    report: &mut Report<'_, '_>,
) -> Option<CircuitBreaker> {
    let annotations = svc.metadata.annotations.as_ref()?;
    if !has_circuit_breaker(svc) {
        return None;
    }
    let mut read = |name: &str| -> u64 {
        let Some(v) = annotations.get(name) else {
            return 0;
        };
        match v.trim().parse::<u32>() {
            Ok(n) => u64::from(n),
            Err(_) => {
                report.issue(
                    key,
                    format!("annotation {name}={v:?} is not a non-negative integer; ignored"),
                );
                0
            }
        }
    };
    let [conns, pending, requests, c5xx, ejection] = CIRCUIT_BREAKER_ANNOTATIONS.map(&mut read);
    let narrow = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    Some(CircuitBreaker {
        max_connections: narrow(conns),
        max_pending_requests: narrow(pending),
        max_requests: narrow(requests),
        consecutive_5xx: narrow(c5xx),
        ejection_ms: ejection,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(name: Option<&str>, app: Option<&str>) -> ServicePort {
        ServicePort {
            name: name.map(str::to_string),
            app_protocol: app.map(str::to_string),
            port: 80,
            ..Default::default()
        }
    }

    #[test]
    fn protocols_from_app_protocol_then_name() {
        assert_eq!(port_protocol(&port(Some("http"), None)), "http");
        assert_eq!(port_protocol(&port(Some("http-web"), None)), "http");
        assert_eq!(port_protocol(&port(Some("http2-api"), None)), "http2");
        assert_eq!(port_protocol(&port(Some("grpc-api"), None)), "grpc");
        assert_eq!(port_protocol(&port(Some("tcp-db"), None)), "tcp");
        assert_eq!(port_protocol(&port(Some("web"), None)), "");
        assert_eq!(port_protocol(&port(None, None)), "");
        assert_eq!(port_protocol(&port(Some("web"), Some("grpc"))), "grpc");
        assert_eq!(
            port_protocol(&port(Some("http"), Some("kubernetes.io/h2c"))),
            "http2"
        );
        assert_eq!(port_protocol(&port(Some("grpc"), Some("unknown"))), "grpc");
    }
}
