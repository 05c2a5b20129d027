//! Services as ztunnel sees them, converted from `istio.workload.Service`.

use std::net::IpAddr;

use mesh_proto::proto::workload as pb;
use serde::Serialize;

use super::StateError;
use super::workload::{Waypoint, ip_from_bytes, ports, waypoint_from_proto};

#[derive(Clone, Debug, Serialize)]
pub struct Service {
    pub name: String,
    pub namespace: String,
    pub hostname: String,
    pub vips: Vec<IpAddr>,
    /// (service port, target port); target 0 means "as the workload says".
    pub ports: Vec<(u16, u16)>,
    pub waypoint: Option<Waypoint>,
}

impl Service {
    pub fn from_proto(s: pb::Service) -> Result<Self, StateError> {
        if s.hostname.is_empty() {
            return Err(StateError::Invalid(format!(
                "service {}/{} has no hostname",
                s.namespace, s.name
            )));
        }
        let vips = s
            .addresses
            .iter()
            .map(|a| ip_from_bytes(&a.address))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StateError::Invalid(format!("service {}: {e}", s.hostname)))?;
        Ok(Service {
            name: s.name,
            namespace: s.namespace,
            ports: ports(&s.ports),
            hostname: s.hostname,
            vips,
            waypoint: s.waypoint.map(waypoint_from_proto).transpose()?,
        })
    }

    /// The xDS resource name and endpoint key: `namespace/hostname`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.hostname)
    }
}
