//! The status of each waypoint, as `/debug/waypoints` serves it. In local mode objects cannot
//! be written back, so this is where `meshctl waypoint status` reads what a Kubernetes
//! controller would write into `Gateway.status`: the Accepted and Programmed conditions, the
//! address, what is bound to the waypoint and what was refused.

use serde::Serialize;

/// A Gateway API style condition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True` or `False`.
    pub status: String,
    pub reason: String,
    pub message: String,
}

impl Condition {
    pub(super) fn new(type_: &str, ok: bool, reason: &str, message: impl Into<String>) -> Self {
        Condition {
            type_: type_.to_string(),
            status: if ok { "True" } else { "False" }.to_string(),
            reason: reason.to_string(),
            message: message.into(),
        }
    }

    pub fn is_true(&self) -> bool {
        self.status == "True"
    }
}

/// Where ztunnels send a waypoint's traffic.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WaypointAddress {
    /// `<gateway>.<namespace>.svc.<domain suffix>`.
    pub hostname: String,
    pub hbone_port: u32,
    /// Whether the Service named like the Gateway exists (with a cluster IP).
    pub service_found: bool,
    /// Healthy pods behind that Service.
    pub ready_endpoints: usize,
}

/// A Gateway `status.addresses` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StatusAddress {
    /// `Hostname`.
    #[serde(rename = "type")]
    pub type_: String,
    pub value: String,
}

/// One waypoint, or a waypoint that `istio.io/use-waypoint` names but that does not exist.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WaypointStatus {
    pub namespace: String,
    pub name: String,
    /// Name of the `mesh.waypoint.v1.Waypoint` resource served for it; `None` when none is
    /// (the Gateway is missing or not accepted).
    pub resource: Option<String>,
    /// `service`, `workload`, `all` or `none` (`istio.io/waypoint-for`).
    pub waypoint_for: String,
    pub address: WaypointAddress,
    /// As `Gateway.status.addresses`: the waypoint Service's hostname, once the Service exists.
    pub addresses: Vec<StatusAddress>,
    /// `Accepted` then `Programmed`.
    pub conditions: Vec<Condition>,
    /// Services whose traffic the waypoint receives (`namespace/hostname`).
    pub bound_services: Vec<String>,
    /// Workloads whose traffic the waypoint receives (uids).
    pub bound_workloads: Vec<String>,
    /// Objects that ask for this waypoint but whose traffic it refuses, with why.
    pub refused: Vec<String>,
    /// HTTPRoutes and GRPCRoutes (`Kind namespace/name`) programmed into the waypoint.
    pub routes: Vec<String>,
    /// AuthorizationPolicies (`namespace/name`) enforced by the waypoint.
    pub policies: Vec<String>,
    /// Problems with the Gateway and the objects attached to it.
    pub issues: Vec<String>,
}

impl WaypointStatus {
    /// The condition of type `type_` (`Accepted`, `Programmed`).
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}
