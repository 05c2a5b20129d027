//! Waypoints as Gateway API objects: the `Gateway` meshctl creates, and how to tell a waypoint
//! from other Gateways.

use std::collections::BTreeMap;

use mesh_config::enrol::USE_WAYPOINT_NAMESPACE;
use mesh_config::k8s_openapi::api::core::v1::Pod;
use mesh_config::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use mesh_config::objects::{GATEWAY_GROUP, Gateway, GatewaySpec, Listener, WAYPOINT_GATEWAY_CLASS};
use mesh_config::{Object, Snapshot, WAYPOINT_FOR, use_waypoint};

/// Name of the waypoint listener.
pub const MESH_LISTENER: &str = "mesh";
/// HBONE port of the waypoint listener.
pub const HBONE_PORT: u16 = 15008;
/// Protocol of the waypoint listener.
pub const HBONE_PROTOCOL: &str = "HBONE";
/// Waypoint name when none is given.
pub const DEFAULT_WAYPOINT_NAME: &str = "waypoint";

/// Which traffic a waypoint handles (`istio.io/waypoint-for`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum TrafficType {
    /// Traffic addressed to services (the default).
    #[default]
    Service,
    /// Traffic addressed to workloads directly (pod IPs).
    Workload,
    /// Both.
    All,
    /// Neither (the waypoint is not used).
    None,
}

impl TrafficType {
    pub fn as_str(self) -> &'static str {
        match self {
            TrafficType::Service => "service",
            TrafficType::Workload => "workload",
            TrafficType::All => "all",
            TrafficType::None => "none",
        }
    }

    /// Reads a label value; unknown values are `None` in the outer option.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "service" => Some(TrafficType::Service),
            "workload" => Some(TrafficType::Workload),
            "all" => Some(TrafficType::All),
            "none" => Some(TrafficType::None),
            _ => None,
        }
    }

    pub fn serves_services(self) -> bool {
        matches!(self, TrafficType::Service | TrafficType::All)
    }

    pub fn serves_workloads(self) -> bool {
        matches!(self, TrafficType::Workload | TrafficType::All)
    }
}

/// The Gateway `meshctl waypoint apply` creates.
pub fn waypoint_gateway(namespace: &str, name: &str, traffic: TrafficType) -> Gateway {
    Gateway {
        api_version: format!("{GATEWAY_GROUP}/v1"),
        kind: "Gateway".into(),
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([(
                WAYPOINT_FOR.to_string(),
                traffic.as_str().to_string(),
            )])),
            ..Default::default()
        },
        spec: GatewaySpec {
            gateway_class_name: WAYPOINT_GATEWAY_CLASS.into(),
            listeners: vec![Listener {
                name: MESH_LISTENER.into(),
                port: HBONE_PORT,
                protocol: HBONE_PROTOCOL.into(),
                ..Default::default()
            }],
            ..Default::default()
        },
    }
}

/// Whether the Gateway is a waypoint (its class is `istio-waypoint`).
pub fn is_waypoint(gw: &Gateway) -> bool {
    gw.spec.gateway_class_name == WAYPOINT_GATEWAY_CLASS
}

/// Whether the Gateway has the `mesh`-style HBONE listener on 15008 a waypoint needs.
pub fn has_hbone_listener(gw: &Gateway) -> bool {
    gw.spec
        .listeners
        .iter()
        .any(|l| l.port == HBONE_PORT && l.protocol == HBONE_PROTOCOL)
}

/// The waypoint's `istio.io/waypoint-for` value as written (`service` when absent).
pub fn traffic_label(gw: &Gateway) -> &str {
    gw.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(WAYPOINT_FOR))
        .map(String::as_str)
        .unwrap_or("service")
}

/// The waypoint's traffic type; unknown label values count as `service`.
pub fn traffic_type(gw: &Gateway) -> TrafficType {
    TrafficType::parse(traffic_label(gw)).unwrap_or_default()
}

/// The waypoint Gateway as a YAML manifest.
pub fn to_yaml(gw: &Gateway) -> Result<String, serde_saphyr::SerializeError> {
    serde_saphyr::to_string(gw)
}

/// Label Istio puts on the pods of a Gateway's deployment.
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

/// The waypoint `(namespace, name)` an object's `istio.io/use-waypoint` names: `Some(None)` for
/// the opt-out `none`, `None` without the label. A Namespace's own namespace is its name.
pub fn waypoint_ref(obj: &Object) -> Option<Option<(String, String)>> {
    let meta = obj.metadata();
    let name = use_waypoint(meta)?;
    let Some(name) = name else {
        return Some(None);
    };
    let own_ns = match obj {
        Object::Namespace(_) => meta.name.clone().unwrap_or_default(),
        _ => meta.namespace.clone().unwrap_or_default(),
    };
    let ns = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(USE_WAYPOINT_NAMESPACE))
        .cloned()
        .unwrap_or(own_ns);
    Some(Some((ns, name.to_string())))
}

/// Namespaces, Services and Pods whose `istio.io/use-waypoint` names the waypoint `ns/name`.
pub fn waypoint_users(snap: &Snapshot, ns: &str, name: &str) -> Vec<String> {
    snap.objects
        .iter()
        .filter(|(_, obj)| {
            matches!(
                obj,
                Object::Namespace(_) | Object::Service(_) | Object::Pod(_)
            )
        })
        .filter(|(_, obj)| {
            waypoint_ref(obj)
                .flatten()
                .is_some_and(|(n, w)| n == ns && w == name)
        })
        .map(|(key, _)| key.to_string())
        .collect()
}

/// Whether a pod reports the condition `Ready=True`.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The pods of the waypoint `ns/name` (label `gateway.networking.k8s.io/gateway-name`).
pub fn waypoint_pods<'a>(snap: &'a Snapshot, ns: &str, name: &str) -> Vec<&'a Pod> {
    snap.pods()
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns))
        .filter(|p| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(GATEWAY_NAME_LABEL))
                .is_some_and(|v| v == name)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_gateway_is_a_waypoint() {
        let gw = waypoint_gateway("demo", "wp", TrafficType::All);
        assert!(is_waypoint(&gw));
        assert!(has_hbone_listener(&gw));
        assert_eq!(traffic_label(&gw), "all");
        assert_eq!(traffic_type(&gw), TrafficType::All);
    }

    #[test]
    fn traffic_defaults_to_service() {
        let mut gw = waypoint_gateway("demo", "wp", TrafficType::Workload);
        gw.metadata.labels = None;
        assert_eq!(traffic_type(&gw), TrafficType::Service);
        assert!(TrafficType::All.serves_services() && TrafficType::All.serves_workloads());
        assert!(!TrafficType::None.serves_services());
    }
}
