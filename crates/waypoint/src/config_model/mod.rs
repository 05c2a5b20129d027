//! The waypoint's L7 configuration in typed, validated form: converted once from the
//! `mesh.waypoint.v1.Waypoint` resource (regular expressions compiled, names and values checked)
//! and then read on every request. A resource that does not convert is refused whole (NACK) and
//! the previous configuration stays in force.

pub mod policy;
pub mod route;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use mesh_proto::proto::waypoint as pb;
use serde::Serialize;

pub use policy::{Decision, Policy, Subject};
pub use route::{Backend, Route, RouteMatch};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{context}: invalid regular expression {pattern:?}: {source}")]
    Regex {
        context: String,
        pattern: String,
        #[source]
        source: Box<regex::Error>,
    },
    #[error("{context}: {reason}")]
    Invalid { context: String, reason: String },
    #[error("cannot decode waypoint resource {name}: {source}")]
    Decode {
        name: String,
        source: prost::DecodeError,
    },
}

impl ModelError {
    pub(crate) fn invalid(context: &str, reason: impl Into<String>) -> Self {
        ModelError::Invalid {
            context: context.to_string(),
            reason: reason.into(),
        }
    }
}

/// Application protocol of a service port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Sniff HTTP/1.1 and HTTP/2 from the first bytes; anything else is TCP.
    Detect,
    Http,
    Http2,
    Grpc,
    Tcp,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct ServicePort {
    pub port: u16,
    /// 0: as the endpoint says.
    pub target_port: u16,
    pub protocol: Protocol,
}

/// Connection-pool limits and outlier ejection for one backend service.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CircuitBreakerSpec {
    /// Upstream connections (HBONE tunnels) to the service's endpoints; `None`: unlimited.
    pub max_connections: Option<u32>,
    /// Requests waiting for a request slot; `None`: unlimited (0 in the resource).
    pub max_pending_requests: Option<u32>,
    /// Requests in flight; `None`: unlimited.
    pub max_requests: Option<u32>,
    /// Consecutive 5xx (or connection failures) that eject an endpoint; 0 disables ejection.
    pub consecutive_5xx: u32,
    pub ejection: Duration,
}

/// Ejection time when the resource asks for ejection but gives no duration.
pub const DEFAULT_EJECTION: Duration = Duration::from_secs(30);

impl CircuitBreakerSpec {
    fn from_proto(c: pb::CircuitBreaker) -> Self {
        let limit = |v: u32| (v > 0).then_some(v);
        CircuitBreakerSpec {
            max_connections: limit(c.max_connections),
            max_pending_requests: limit(c.max_pending_requests),
            max_requests: limit(c.max_requests),
            consecutive_5xx: c.consecutive_5xx,
            ejection: if c.ejection_ms == 0 {
                DEFAULT_EJECTION
            } else {
                Duration::from_millis(c.ejection_ms)
            },
        }
    }
}

/// A service whose traffic this waypoint receives.
#[derive(Debug, Serialize)]
pub struct BoundService {
    /// `namespace/hostname`.
    pub key: String,
    pub name: String,
    pub namespace: String,
    pub hostname: String,
    pub vips: Vec<IpAddr>,
    pub ports: Vec<ServicePort>,
    /// In precedence order.
    pub routes: Vec<Route>,
    pub circuit_breaker: Option<CircuitBreakerSpec>,
}

impl BoundService {
    fn from_proto(s: pb::BoundService) -> Result<Self, ModelError> {
        let ctx = format!("service {}", s.key);
        if s.hostname.is_empty() || s.namespace.is_empty() {
            return Err(ModelError::invalid(
                &ctx,
                "hostname and namespace are required",
            ));
        }
        let key = if s.key.is_empty() {
            format!("{}/{}", s.namespace, s.hostname)
        } else {
            s.key
        };
        let vips = s
            .vips
            .iter()
            .map(|b| ztunnel::state::workload::ip_from_bytes(b))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ModelError::invalid(&ctx, e))?;
        let ports = s
            .ports
            .iter()
            .map(|p| {
                let protocol = match p.protocol.to_ascii_lowercase().as_str() {
                    "" => Protocol::Detect,
                    "http" => Protocol::Http,
                    "http2" => Protocol::Http2,
                    "grpc" => Protocol::Grpc,
                    "tcp" => Protocol::Tcp,
                    other => {
                        return Err(ModelError::invalid(
                            &ctx,
                            format!("unknown protocol {other:?}"),
                        ));
                    }
                };
                Ok(ServicePort {
                    port: route::port(p.port, &ctx)?,
                    target_port: u16::try_from(p.target_port)
                        .map_err(|_| ModelError::invalid(&ctx, "target port out of range"))?,
                    protocol,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let routes = s
            .routes
            .into_iter()
            .map(Route::from_proto)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(BoundService {
            key,
            name: s.name,
            namespace: s.namespace,
            hostname: s.hostname,
            vips,
            ports,
            routes,
            circuit_breaker: s.circuit_breaker.map(CircuitBreakerSpec::from_proto),
        })
    }

    /// The port entry for `port`; a service that lists no ports takes any port, sniffed.
    pub fn port(&self, port: u16) -> Option<ServicePort> {
        if self.ports.is_empty() {
            return Some(ServicePort {
                port,
                target_port: 0,
                protocol: Protocol::Detect,
            });
        }
        self.ports.iter().find(|p| p.port == port).copied()
    }
}

/// Everything this waypoint is configured with.
#[derive(Debug, Serialize)]
pub struct WaypointConfig {
    pub name: String,
    pub namespace: String,
    #[serde(serialize_with = "ser_services")]
    pub services: Vec<Arc<BoundService>>,
    pub policies: Vec<Policy>,
    #[serde(skip)]
    by_vip: HashMap<IpAddr, usize>,
    #[serde(skip)]
    by_key: HashMap<String, usize>,
}

impl WaypointConfig {
    pub fn from_proto(w: pb::Waypoint) -> Result<Self, ModelError> {
        let services = w
            .services
            .into_iter()
            .map(BoundService::from_proto)
            .collect::<Result<Vec<_>, _>>()?;
        let mut by_vip = HashMap::new();
        let mut by_key = HashMap::new();
        for (i, s) in services.iter().enumerate() {
            if by_key.insert(s.key.clone(), i).is_some() {
                return Err(ModelError::invalid(
                    &format!("service {}", s.key),
                    "listed twice",
                ));
            }
            for vip in &s.vips {
                if let Some(other) = by_vip.insert(*vip, i) {
                    return Err(ModelError::invalid(
                        &format!("service {}", s.key),
                        format!("VIP {vip} is also used by {}", services[other].key),
                    ));
                }
            }
        }
        let policies = w
            .policies
            .into_iter()
            .map(Policy::from_proto)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(WaypointConfig {
            name: w.name,
            namespace: w.namespace,
            services: services.into_iter().map(Arc::new).collect(),
            policies,
            by_vip,
            by_key,
        })
    }

    /// Decodes and converts a resource's bytes.
    pub fn decode(name: &str, bytes: &[u8]) -> Result<Self, ModelError> {
        use prost::Message;
        let w = pb::Waypoint::decode(bytes).map_err(|source| ModelError::Decode {
            name: name.to_string(),
            source,
        })?;
        Self::from_proto(w)
    }

    /// The bound service and port a CONNECT target (`VIP:port`) is for.
    pub fn service_for(&self, target: SocketAddr) -> Option<(&Arc<BoundService>, ServicePort)> {
        let svc = &self.services[*self.by_vip.get(&target.ip())?];
        Some((svc, svc.port(target.port())?))
    }

    pub fn service(&self, key: &str) -> Option<&Arc<BoundService>> {
        self.by_key.get(key).map(|i| &self.services[*i])
    }
}

fn ser_services<S: serde::Serializer>(v: &[Arc<BoundService>], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|b| b.as_ref()))
}

pub(crate) fn ser_display<S: serde::Serializer, T: std::fmt::Display>(
    v: &T,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

#[cfg(test)]
mod tests;
