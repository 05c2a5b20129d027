//! Workloads as ztunnel sees them, converted from `istio.workload.Workload`.

use std::collections::HashMap;
use std::net::IpAddr;

use identity::Identity;
use mesh_proto::proto::workload as pb;
use serde::Serialize;

use super::StateError;

/// How traffic reaches a workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Tunnel {
    /// In the mesh: HBONE to its node's ztunnel on 15008.
    Hbone,
    /// Outside the mesh: plain TCP.
    None,
}

/// A waypoint reference: where traffic for a workload or service must go first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Waypoint {
    /// A waypoint service, by `namespace/hostname`.
    Service {
        namespace: String,
        hostname: String,
        port: u16,
    },
    /// A waypoint reached by address.
    Address { ip: IpAddr, port: u16 },
}

#[derive(Clone, Debug, Serialize)]
pub struct Workload {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub ips: Vec<IpAddr>,
    pub node: String,
    #[serde(serialize_with = "ser_display")]
    pub identity: Identity,
    pub tunnel: Tunnel,
    pub canonical_name: String,
    pub canonical_revision: String,
    pub workload_name: String,
    pub cluster_id: String,
    pub healthy: bool,
    /// Ports per service this workload backs: service key → (service port → target port).
    pub services: HashMap<String, Vec<(u16, u16)>>,
    pub authorization_policies: Vec<String>,
    pub waypoint: Option<Waypoint>,
}

fn ser_display<S: serde::Serializer>(v: &Identity, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

impl Workload {
    /// Converts and validates a discovery resource.
    pub fn from_proto(w: pb::Workload, default_td: &str) -> Result<Self, StateError> {
        if w.uid.is_empty() {
            return Err(StateError::Invalid(format!(
                "workload {}/{} has no uid",
                w.namespace, w.name
            )));
        }
        let ips = w
            .addresses
            .iter()
            .map(|b| ip_from_bytes(b))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StateError::Invalid(format!("workload {}: {e}", w.uid)))?;
        let td = if w.trust_domain.is_empty() {
            default_td.to_string()
        } else {
            w.trust_domain.clone()
        };
        let sa = if w.service_account.is_empty() {
            "default".to_string()
        } else {
            w.service_account.clone()
        };
        let identity = Identity::new(td, w.namespace.clone(), sa);
        let tunnel = match pb::TunnelProtocol::try_from(w.tunnel_protocol) {
            Ok(pb::TunnelProtocol::Hbone) => Tunnel::Hbone,
            _ => Tunnel::None,
        };
        let services = w
            .services
            .iter()
            .map(|(k, pl)| (k.clone(), ports(&pl.ports)))
            .collect();
        Ok(Workload {
            uid: w.uid,
            name: w.name,
            namespace: w.namespace,
            ips,
            node: w.node,
            identity,
            tunnel,
            canonical_name: w.canonical_name,
            canonical_revision: w.canonical_revision,
            workload_name: w.workload_name,
            cluster_id: w.cluster_id,
            healthy: w.status == pb::WorkloadStatus::Healthy as i32,
            services,
            authorization_policies: w.authorization_policies,
            waypoint: w.waypoint.map(waypoint_from_proto).transpose()?,
        })
    }

    /// Label value for `canonical_service` metrics: the canonical name, else the workload name.
    pub fn canonical_service(&self) -> &str {
        if self.canonical_name.is_empty() {
            &self.workload_name
        } else {
            &self.canonical_name
        }
    }
}

pub(crate) fn ports(ports: &[pb::Port]) -> Vec<(u16, u16)> {
    ports
        .iter()
        .filter_map(|p| {
            let sp = u16::try_from(p.service_port).ok()?;
            let tp = u16::try_from(p.target_port).ok()?;
            Some((sp, if tp == 0 { sp } else { tp }))
        })
        .collect()
}

pub(crate) fn waypoint_from_proto(g: pb::GatewayAddress) -> Result<Waypoint, StateError> {
    let port = u16::try_from(g.hbone_mtls_port).unwrap_or(15008);
    let port = if port == 0 { 15008 } else { port };
    match g.destination {
        Some(pb::gateway_address::Destination::Hostname(h)) => Ok(Waypoint::Service {
            namespace: h.namespace,
            hostname: h.hostname,
            port,
        }),
        Some(pb::gateway_address::Destination::Address(a)) => Ok(Waypoint::Address {
            ip: ip_from_bytes(&a.address).map_err(StateError::Invalid)?,
            port,
        }),
        None => Err(StateError::Invalid("waypoint without a destination".into())),
    }
}

/// Decodes a 4- or 16-byte address.
pub fn ip_from_bytes(b: &[u8]) -> Result<IpAddr, String> {
    match b.len() {
        4 => Ok(IpAddr::from(
            <[u8; 4]>::try_from(b).expect("length checked"),
        )),
        16 => Ok(IpAddr::from(
            <[u8; 16]>::try_from(b).expect("length checked"),
        )),
        n => Err(format!("address of {n} bytes (expected 4 or 16)")),
    }
}
