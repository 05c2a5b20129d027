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
    let s = state.service(key)?;
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
    state
        .service_upstreams(SocketAddr::new(vip, port))
        .map(|(_, ups)| {
            ups.into_iter()
                .map(|u| Endpoint {
                    workload: u.workload,
                    target: u.target,
                })
                .collect()
        })
        .unwrap_or_default()
}
