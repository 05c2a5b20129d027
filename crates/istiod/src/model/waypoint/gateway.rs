//! Which Gateways are waypoints: `gatewayClassName: istio-waypoint` with the listener
//! `mesh`/15008/`HBONE`. Other Gateways are not the mesh's business and are skipped; a waypoint
//! Gateway without that listener is reported and not accepted (whatever uses it fails closed).

use std::collections::BTreeMap;
use std::fmt;

use mesh_config::objects::{Gateway, Listener, WAYPOINT_GATEWAY_CLASS, kind};
use mesh_config::{ObjectKey, Snapshot, WAYPOINT_FOR};

use super::super::selector;
use super::super::{ModelConfig, service_hostname};
use super::Report;

/// Name, port and protocol of a waypoint's listener.
pub const MESH_LISTENER: &str = "mesh";
pub const HBONE_PORT: u16 = 15008;
pub const HBONE_PROTOCOL: &str = "HBONE";

/// A waypoint by namespace and name (the Gateway's).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct WaypointRef {
    pub namespace: String,
    pub name: String,
}

impl WaypointRef {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        WaypointRef {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    pub fn gateway_key(&self) -> ObjectKey {
        ObjectKey::new(kind::GATEWAY, &self.namespace, &self.name)
    }

    /// The waypoint's Service hostname (Istio convention: the Service is named like the
    /// Gateway, in its namespace).
    pub fn hostname(&self, cfg: &ModelConfig) -> String {
        service_hostname(&self.name, &self.namespace, &cfg.domain_suffix)
    }

    /// `namespace/hostname` of the waypoint's Service.
    pub fn service_key(&self, cfg: &ModelConfig) -> String {
        format!("{}/{}", self.namespace, self.hostname(cfg))
    }
}

/// `namespace/name`, the name of the waypoint's xDS resource.
impl fmt::Display for WaypointRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Which traffic a waypoint takes (`istio.io/waypoint-for`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WaypointFor {
    Service,
    Workload,
    All,
    None,
}

impl WaypointFor {
    pub fn services(self) -> bool {
        matches!(self, WaypointFor::Service | WaypointFor::All)
    }

    pub fn workloads(self) -> bool {
        matches!(self, WaypointFor::Workload | WaypointFor::All)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WaypointFor::Service => "service",
            WaypointFor::Workload => "workload",
            WaypointFor::All => "all",
            WaypointFor::None => "none",
        }
    }
}

/// Namespaces whose objects may use a waypoint and attach routes to it (the mesh listener's
/// `allowedRoutes.namespaces`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum AllowedFrom {
    Same,
    All,
    Selector(BTreeMap<String, String>),
}

/// A Gateway of class `istio-waypoint`.
#[derive(Clone, Debug)]
pub(crate) struct WaypointDef {
    pub wp: WaypointRef,
    pub waypoint_for: WaypointFor,
    pub allowed: AllowedFrom,
    /// Why the Gateway is not accepted as a waypoint; `None` when it is.
    pub rejected: Option<String>,
}

impl WaypointDef {
    pub fn accepted(&self) -> bool {
        self.rejected.is_none()
    }

    /// Whether objects of `namespace` may use this waypoint.
    pub fn allows(&self, namespace: &str, snapshot: &Snapshot) -> bool {
        match &self.allowed {
            AllowedFrom::Same => namespace == self.wp.namespace,
            AllowedFrom::All => true,
            AllowedFrom::Selector(labels) => {
                let ns_labels = snapshot
                    .namespace(namespace)
                    .and_then(|ns| selector::labels(&ns.metadata));
                selector::matches(labels, ns_labels)
            }
        }
    }
}

/// Every waypoint Gateway of the snapshot, accepted or not.
pub(crate) fn discover(snapshot: &Snapshot, report: &mut Report<'_, '_>) -> Vec<WaypointDef> {
    let mut out = Vec::new();
    for gw in snapshot.gateways() {
        if gw.spec.gateway_class_name != WAYPOINT_GATEWAY_CLASS {
            continue;
        }
        out.push(define(gw, report));
    }
    out.sort_by(|a, b| a.wp.cmp(&b.wp));
    out
}

fn define(gw: &Gateway, report: &mut Report<'_, '_>) -> WaypointDef {
    let wp = WaypointRef::new(
        selector::namespace(&gw.metadata),
        selector::name(&gw.metadata),
    );
    let labels = selector::labels(&gw.metadata);
    let waypoint_for = match labels.and_then(|l| l.get(WAYPOINT_FOR)).map(String::as_str) {
        None | Some("service") => WaypointFor::Service,
        Some("workload") => WaypointFor::Workload,
        Some("all") => WaypointFor::All,
        Some("none") => WaypointFor::None,
        Some(other) => {
            report.waypoint(
                &wp,
                &wp.gateway_key(),
                format!(
                    "label {WAYPOINT_FOR}={other:?} is not one of service, workload, all, \
                     none; the waypoint takes service traffic (the default)"
                ),
            );
            WaypointFor::Service
        }
    };
    let mesh: Vec<&Listener> = gw
        .spec
        .listeners
        .iter()
        .filter(|l| l.name == MESH_LISTENER)
        .collect();
    let rejected = match mesh.as_slice() {
        [] => Some(format!(
            "no listener {MESH_LISTENER:?} (port {HBONE_PORT}, protocol {HBONE_PROTOCOL}): \
             not a waypoint"
        )),
        [l] if l.port == HBONE_PORT && l.protocol == HBONE_PROTOCOL => None,
        [l] => Some(format!(
            "listener {MESH_LISTENER:?} has port {} and protocol {:?}; a waypoint needs port \
             {HBONE_PORT} and protocol {HBONE_PROTOCOL}",
            l.port, l.protocol
        )),
        _ => Some(format!(
            "listener {MESH_LISTENER:?} is declared more than once"
        )),
    };
    if let Some(reason) = &rejected {
        report.waypoint(
            &wp,
            &wp.gateway_key(),
            format!("{reason}; traffic bound to it is refused"),
        );
    }
    for l in gw.spec.listeners.iter().filter(|l| l.name != MESH_LISTENER) {
        report.waypoint(
            &wp,
            &wp.gateway_key(),
            format!(
                "listener {:?} is ignored: a waypoint serves only its {MESH_LISTENER:?} listener",
                l.name
            ),
        );
    }
    if let Some(l) = mesh.first()
        && l.hostname.is_some()
    {
        report.waypoint(
            &wp,
            &wp.gateway_key(),
            "listener hostname is ignored: a waypoint serves the services bound to it",
        );
    }
    if !gw.spec.addresses.is_empty() {
        report.waypoint(
            &wp,
            &wp.gateway_key(),
            "spec.addresses is ignored: the waypoint's address is the Service named like the \
             Gateway",
        );
    }
    let namespaces = mesh
        .first()
        .and_then(|l| l.allowed_routes.as_ref())
        .and_then(|a| a.namespaces.as_ref());
    let allowed = match namespaces.and_then(|n| n.from.as_deref()) {
        None | Some("Same") => AllowedFrom::Same,
        Some("All") => AllowedFrom::All,
        Some("Selector") => AllowedFrom::Selector(
            namespaces
                .and_then(|n| n.selector.as_ref())
                .map(|s| s.match_labels.clone())
                .unwrap_or_default(),
        ),
        Some(other) => {
            report.waypoint(
                &wp,
                &wp.gateway_key(),
                format!(
                    "allowedRoutes.namespaces.from {other:?} is not Same, All or Selector; \
                     only the Gateway's namespace may use it"
                ),
            );
            AllowedFrom::Same
        }
    };
    WaypointDef {
        wp,
        waypoint_for,
        allowed,
        rejected,
    }
}
