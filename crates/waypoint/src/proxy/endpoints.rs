//! Backend services and their endpoints, from workload discovery (ztunnel's `ProxyState`).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ztunnel::state::{ProxyState, Workload};

use crate::config_model::WaypointConfig;

/// A destination service, as metrics and endpoint lookup need it.
#[derive(Clone, Debug)]
pub struct ServiceRef {
    /// `namespace/hostname`.
    pub key: String,
    pub hostname: String,
    pub namespace: String,
    pub name: String,
    /// The address endpoints are looked up by.
    pub vip: IpAddr,
}

/// One endpoint: the workload and the address its application listens on.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub workload: Arc<Workload>,
    pub target: SocketAddr,
}

/// Finds a service by `namespace/hostname`: a service bound to this waypoint, else any service
/// from workload discovery.
pub fn find_service(state: &ProxyState, config: &WaypointConfig, key: &str) -> Option<ServiceRef> {
    if let Some(s) = config.service(key)
        && let Some(vip) = s.vips.first()
    {
        return Some(ServiceRef {
            key: s.key.clone(),
            hostname: s.hostname.clone(),
            namespace: s.namespace.clone(),
            name: s.name.clone(),
            vip: *vip,
        });
    }
    let (namespace, hostname) = key.split_once('/')?;
    let s = state
        .service_by_hostname(hostname)
        .filter(|s| s.namespace == namespace)?;
    Some(ServiceRef {
        key: key.to_string(),
        hostname: s.hostname.clone(),
        namespace: s.namespace.clone(),
        name: s.name.clone(),
        vip: *s.vips.first()?,
    })
}

/// Every healthy endpoint of the service with VIP `vip` for service port `port`, with the
/// target port each one maps it to.
pub fn endpoints(state: &ProxyState, vip: IpAddr, port: u16) -> Vec<Endpoint> {
    // `ProxyState::resolve` picks one endpoint through a callback given the candidate count;
    // asking for each index in turn lists them all, in the state's stable order.
    let dst = SocketAddr::new(vip, port);
    let mut count = 0;
    let Some(first) = state.resolve(dst, |n| {
        count = n;
        0
    }) else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(count);
    out.push(Endpoint {
        workload: first.workload,
        target: first.target,
    });
    for i in 1..count {
        if let Some(u) = state.resolve(dst, |_| i) {
            out.push(Endpoint {
                workload: u.workload,
                target: u.target,
            });
        }
    }
    out
}
