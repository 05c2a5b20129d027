//! What ztunnel knows of the mesh: workloads, services and L4 policies, indexed for the data
//! path, fed by xDS (or a static file) and read on every connection.

pub mod local;
pub mod policy;
pub mod service;
pub mod workload;
pub mod xds;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use parking_lot::RwLock;
use serde::Serialize;

pub use policy::{Connection, Decision, Policy};
pub use service::Service;
pub use workload::{Tunnel, Waypoint, Workload};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("invalid resource: {0}")]
    Invalid(String),
    #[error("cannot decode {type_url} resource {name}: {source}")]
    Decode {
        type_url: String,
        name: String,
        source: prost::DecodeError,
    },
}

/// Indexed mesh state. Writers replace entries; readers take short read locks.
#[derive(Debug, Default)]
pub struct ProxyState {
    workloads: HashMap<String, Arc<Workload>>,
    workload_by_ip: HashMap<IpAddr, String>,
    services: HashMap<String, Arc<Service>>,
    service_by_vip: HashMap<IpAddr, String>,
    /// lower-cased hostname → service key
    service_by_hostname: HashMap<String, String>,
    /// service key → endpoint workload uids
    endpoints: HashMap<String, BTreeSet<String>>,
    policies: BTreeMap<String, Arc<Policy>>,
    /// Policy keys by scope, so a connection looks only at the policies that can apply.
    global_policies: BTreeSet<String>,
    namespace_policies: HashMap<String, BTreeSet<String>>,
}

/// A waypoint chosen for a connection: the waypoint pod and its HBONE address.
#[derive(Clone, Debug)]
pub struct WaypointTarget {
    pub workload: Arc<Workload>,
    pub addr: SocketAddr,
}

/// Where an outbound connection goes after resolution.
#[derive(Clone, Debug)]
pub struct Upstream {
    pub workload: Arc<Workload>,
    pub service: Option<Arc<Service>>,
    /// Address of the destination pod and port to reach the application.
    pub target: SocketAddr,
}

impl ProxyState {
    pub fn upsert_workload(&mut self, w: Workload) {
        self.remove_workload(&w.uid.clone());
        for ip in &w.ips {
            self.workload_by_ip.insert(*ip, w.uid.clone());
        }
        for svc in w.services.keys() {
            self.endpoints
                .entry(svc.clone())
                .or_default()
                .insert(w.uid.clone());
        }
        self.workloads.insert(w.uid.clone(), Arc::new(w));
    }

    pub fn remove_workload(&mut self, uid: &str) -> bool {
        let Some(old) = self.workloads.remove(uid) else {
            return false;
        };
        for ip in &old.ips {
            if self.workload_by_ip.get(ip).is_some_and(|u| u == uid) {
                self.workload_by_ip.remove(ip);
            }
        }
        for svc in old.services.keys() {
            if let Some(set) = self.endpoints.get_mut(svc) {
                set.remove(uid);
                if set.is_empty() {
                    self.endpoints.remove(svc);
                }
            }
        }
        true
    }

    pub fn upsert_service(&mut self, s: Service) {
        let key = s.key();
        self.remove_service(&key);
        for ip in &s.vips {
            self.service_by_vip.insert(*ip, key.clone());
        }
        self.service_by_hostname
            .insert(s.hostname.to_ascii_lowercase(), key.clone());
        self.services.insert(key, Arc::new(s));
    }

    pub fn remove_service(&mut self, key: &str) -> bool {
        let Some(old) = self.services.remove(key) else {
            return false;
        };
        for ip in &old.vips {
            if self.service_by_vip.get(ip).is_some_and(|k| k == key) {
                self.service_by_vip.remove(ip);
            }
        }
        let host = old.hostname.to_ascii_lowercase();
        if self
            .service_by_hostname
            .get(&host)
            .is_some_and(|k| k == key)
        {
            self.service_by_hostname.remove(&host);
        }
        true
    }

    pub fn upsert_policy(&mut self, p: Policy) {
        let key = p.key();
        self.remove_policy(&key);
        match p.scope {
            policy::Scope::Global => {
                self.global_policies.insert(key.clone());
            }
            policy::Scope::Namespace => {
                self.namespace_policies
                    .entry(p.namespace.clone())
                    .or_default()
                    .insert(key.clone());
            }
            policy::Scope::WorkloadSelector => {}
        }
        self.policies.insert(key, Arc::new(p));
    }

    pub fn remove_policy(&mut self, key: &str) -> bool {
        let Some(old) = self.policies.remove(key) else {
            return false;
        };
        self.global_policies.remove(key);
        if let Some(set) = self.namespace_policies.get_mut(&old.namespace) {
            set.remove(key);
            if set.is_empty() {
                self.namespace_policies.remove(&old.namespace);
            }
        }
        true
    }

    pub fn workload(&self, uid: &str) -> Option<Arc<Workload>> {
        self.workloads.get(uid).cloned()
    }

    pub fn workload_by_ip(&self, ip: IpAddr) -> Option<Arc<Workload>> {
        self.workload_by_ip
            .get(&ip)
            .and_then(|u| self.workloads.get(u))
            .cloned()
    }

    pub fn service_by_vip(&self, ip: IpAddr) -> Option<Arc<Service>> {
        self.service_by_vip
            .get(&ip)
            .and_then(|k| self.services.get(k))
            .cloned()
    }

    /// Services by hostname, for DNS.
    pub fn service_by_hostname(&self, host: &str) -> Option<Arc<Service>> {
        self.services
            .values()
            .find(|s| s.hostname.eq_ignore_ascii_case(host))
            .cloned()
    }

    /// Every healthy endpoint of the service at `dst` (a VIP and service port), each with the
    /// target port it maps that port to. `None` when `dst` is not a service address or port.
    pub fn service_upstreams(&self, dst: SocketAddr) -> Option<(Arc<Service>, Vec<Upstream>)> {
        let svc = self.service_by_vip(dst.ip())?;
        let key = svc.key();
        let (_, svc_target) = svc.ports.iter().copied().find(|(p, _)| *p == dst.port())?;
        let ups = self
            .endpoints_of(&key)
            .into_iter()
            .map(|w| {
                let target_port = w
                    .services
                    .get(&key)
                    .and_then(|ps| {
                        ps.iter()
                            .find(|(sp, _)| *sp == dst.port())
                            .map(|(_, tp)| *tp)
                    })
                    .filter(|tp| *tp != 0)
                    .unwrap_or(if svc_target == 0 {
                        dst.port()
                    } else {
                        svc_target
                    });
                let ip = w
                    .ips
                    .iter()
                    .copied()
                    .find(|ip| ip.is_ipv4() == dst.is_ipv4())
                    .unwrap_or(w.ips[0]);
                Upstream {
                    target: SocketAddr::new(ip, target_port),
                    workload: w,
                    service: Some(svc.clone()),
                }
            })
            .collect();
        Some((svc, ups))
    }

    /// Resolves an original destination: a service VIP picks a healthy endpoint (chosen by
    /// `pick` among the candidates), a workload IP is that workload; anything else is `None`
    /// (outside the mesh's knowledge: passthrough).
    pub fn resolve(&self, dst: SocketAddr, pick: impl FnOnce(usize) -> usize) -> Option<Upstream> {
        if self.is_service_vip(dst.ip()) {
            let (_, mut ups) = self.service_upstreams(dst)?;
            if ups.is_empty() {
                return None;
            }
            let i = pick(ups.len()) % ups.len();
            return Some(ups.swap_remove(i));
        }
        let w = self.workload_by_ip(dst.ip())?;
        Some(Upstream {
            workload: w,
            service: None,
            target: dst,
        })
    }

    /// A service by its key, `namespace/hostname`.
    pub fn service(&self, key: &str) -> Option<Arc<Service>> {
        self.services.get(key).cloned()
    }

    /// The waypoint an upstream must be reached through, if any: the service's waypoint when
    /// the connection was addressed to a service, else the workload's. `Err` when a waypoint is
    /// configured but cannot be reached (traffic must then fail closed, never skip L7 policy).
    pub fn waypoint_for(
        &self,
        up: &Upstream,
        pick: impl FnOnce(usize) -> usize,
    ) -> Option<Result<WaypointTarget, String>> {
        let wp = up
            .service
            .as_ref()
            .and_then(|s| s.waypoint.clone())
            .or_else(|| up.workload.waypoint.clone())?;
        Some(self.resolve_waypoint(&wp, pick))
    }

    fn resolve_waypoint(
        &self,
        wp: &Waypoint,
        pick: impl FnOnce(usize) -> usize,
    ) -> Result<WaypointTarget, String> {
        match wp {
            Waypoint::Address { ip, port } => {
                let w = self
                    .workload_by_ip(*ip)
                    .ok_or(format!("waypoint {ip} is not a known workload"))?;
                Ok(WaypointTarget {
                    workload: w,
                    addr: SocketAddr::new(*ip, *port),
                })
            }
            Waypoint::Service {
                namespace,
                hostname,
                port,
            } => {
                let key = format!("{namespace}/{hostname}");
                let ws = self.endpoints_of(&key);
                if ws.is_empty() {
                    return Err(format!("waypoint {key} has no ready endpoint"));
                }
                let w = ws[pick(ws.len()) % ws.len()].clone();
                let ip = *w
                    .ips
                    .first()
                    .ok_or(format!("waypoint {key} endpoint has no address"))?;
                Ok(WaypointTarget {
                    workload: w,
                    addr: SocketAddr::new(ip, *port),
                })
            }
        }
    }

    /// Identities allowed to reach `w` when it sits behind a waypoint (its own waypoint or one
    /// of its services'); empty when no waypoint applies.
    pub fn waypoint_identities(&self, w: &Workload) -> Vec<identity::Identity> {
        let mut refs: Vec<Waypoint> = w.waypoint.iter().cloned().collect();
        refs.extend(
            w.services
                .keys()
                .filter_map(|k| self.services.get(k))
                .filter_map(|s| s.waypoint.clone()),
        );
        let mut ids = Vec::new();
        for r in refs {
            match r {
                Waypoint::Address { ip, .. } => {
                    ids.extend(self.workload_by_ip(ip).map(|w| w.identity.clone()))
                }
                Waypoint::Service {
                    namespace,
                    hostname,
                    ..
                } => ids.extend(
                    self.endpoints_of(&format!("{namespace}/{hostname}"))
                        .iter()
                        .map(|w| w.identity.clone()),
                ),
            }
        }
        ids.sort();
        ids.dedup();
        ids
    }

    fn endpoints_of(&self, key: &str) -> Vec<Arc<Workload>> {
        self.endpoints
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|u| self.workloads.get(u))
            .filter(|w| w.healthy && !w.ips.is_empty())
            .cloned()
            .collect()
    }

    /// Whether a service VIP exists for this address (even with no endpoints).
    pub fn is_service_vip(&self, ip: IpAddr) -> bool {
        self.service_by_vip.contains_key(&ip)
    }

    /// L4 authorization of one connection to `dst`: global, namespace and selector policies.
    pub fn authorize(&self, dst: &Workload, conn: &Connection<'_>) -> Decision {
        let keys = self
            .global_policies
            .iter()
            .chain(
                self.namespace_policies
                    .get(&dst.namespace)
                    .into_iter()
                    .flatten(),
            )
            .chain(dst.authorization_policies.iter());
        policy::evaluate(
            keys.filter_map(|k| self.policies.get(k))
                .map(|p| p.as_ref()),
            dst,
            conn,
        )
    }

    /// Serializable view for the admin `config_dump`.
    pub fn dump(&self) -> StateDump {
        let mut workloads: Vec<_> = self.workloads.values().map(|w| (**w).clone()).collect();
        workloads.sort_by(|a, b| a.uid.cmp(&b.uid));
        let mut services: Vec<_> = self.services.values().map(|s| (**s).clone()).collect();
        services.sort_by_key(|s| s.key());
        StateDump {
            workloads,
            services,
            policies: self.policies.values().map(|p| (**p).clone()).collect(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct StateDump {
    pub workloads: Vec<Workload>,
    pub services: Vec<Service>,
    pub policies: Vec<Policy>,
}

/// Shared handle to the state.
pub type SharedState = Arc<RwLock<ProxyState>>;

#[cfg(test)]
mod tests;
