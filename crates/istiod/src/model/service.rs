//! Services with a cluster IP, and which pods back them on which ports.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Pod, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mesh_config::objects::kind;
use mesh_config::{ObjectKey, Snapshot};
use mesh_proto::proto::workload::{IpFamilies, NetworkAddress, Port, PortList, Service};

use super::selector;
use super::{Issues, ModelConfig};

/// `<name>.<namespace>.svc.<domain_suffix>`.
pub fn service_hostname(name: &str, namespace: &str, domain_suffix: &str) -> String {
    format!("{name}.{namespace}.svc.{domain_suffix}")
}

struct Entry {
    namespace: String,
    /// `namespace/hostname`.
    resource_name: String,
    selector: BTreeMap<String, String>,
    ports: Vec<ServicePort>,
    proto: Service,
}

/// The services of a snapshot, ready to be matched against pods.
pub(crate) struct ServiceIndex {
    /// Sorted by resource name (`namespace/hostname`): a namespace's services are contiguous.
    entries: Vec<Entry>,
    /// Where each namespace's services are in `entries`.
    by_namespace: std::collections::HashMap<String, std::ops::Range<usize>>,
}

impl ServiceIndex {
    pub(crate) fn build(snapshot: &Snapshot, cfg: &ModelConfig, issues: &mut Issues<'_>) -> Self {
        let mut entries = Vec::new();
        for svc in snapshot.services() {
            let Some(spec) = svc.spec.as_ref() else {
                continue;
            };
            let ips: Vec<&str> = match (&spec.cluster_ips, &spec.cluster_ip) {
                (Some(ips), _) if !ips.is_empty() => ips.iter().map(String::as_str).collect(),
                (_, Some(ip)) => vec![ip.as_str()],
                _ => Vec::new(),
            };
            // Headless ("None") and ExternalName services have no virtual IP: not served.
            let ips: Vec<&str> = ips
                .into_iter()
                .filter(|ip| !ip.is_empty() && *ip != "None")
                .collect();
            if ips.is_empty() {
                continue;
            }
            let key = ObjectKey::new(
                kind::SERVICE,
                selector::namespace(&svc.metadata),
                selector::name(&svc.metadata),
            );
            let mut addresses = Vec::new();
            for ip in ips {
                match ip.parse::<IpAddr>() {
                    Ok(addr) => addresses.push(addr),
                    Err(_) => issues.push(
                        &key,
                        format!("cluster IP {ip:?} is not an IP address; ignored"),
                    ),
                }
            }
            if addresses.is_empty() {
                continue;
            }
            let namespace = selector::namespace(&svc.metadata).to_string();
            let name = selector::name(&svc.metadata).to_string();
            let hostname = service_hostname(&name, &namespace, &cfg.domain_suffix);
            let ports: Vec<ServicePort> = spec
                .ports
                .iter()
                .flatten()
                .filter(|p| is_tcp(p.protocol.as_deref()) && (1..=65535).contains(&p.port))
                .cloned()
                .collect();
            let proto = Service {
                name: name.clone(),
                namespace: namespace.clone(),
                hostname: hostname.clone(),
                addresses: addresses
                    .iter()
                    .map(|ip| NetworkAddress {
                        network: String::new(),
                        address: ip_bytes(*ip),
                    })
                    .collect(),
                ports: ports
                    .iter()
                    .map(|p| Port {
                        service_port: p.port as u32,
                        target_port: match &p.target_port {
                            None => p.port as u32,
                            Some(IntOrString::Int(t)) if (1..=65535).contains(t) => *t as u32,
                            // Named target ports are resolved per workload.
                            Some(_) => 0,
                        },
                    })
                    .collect(),
                ip_families: ip_families(&addresses) as i32,
                ..Default::default()
            };
            entries.push(Entry {
                resource_name: format!("{namespace}/{hostname}"),
                namespace,
                selector: spec.selector.clone().unwrap_or_default(),
                ports,
                proto,
            });
        }
        entries.sort_by(|a, b| a.resource_name.cmp(&b.resource_name));
        let mut by_namespace = std::collections::HashMap::<String, std::ops::Range<usize>>::new();
        for (i, e) in entries.iter().enumerate() {
            by_namespace
                .entry(e.namespace.clone())
                .and_modify(|r| r.end = i + 1)
                .or_insert(i..i + 1);
        }
        ServiceIndex {
            entries,
            by_namespace,
        }
    }

    /// Every service, sorted by resource name.
    pub(crate) fn services(&self) -> Vec<Service> {
        self.entries.iter().map(|e| e.proto.clone()).collect()
    }

    /// The services `pod` backs (same namespace, non-empty selector matching the pod's labels),
    /// keyed `namespace/hostname`, with each service port mapped to the pod's target port.
    pub(crate) fn for_pod(&self, pod: &Pod) -> BTreeMap<String, PortList> {
        let ns = selector::namespace(&pod.metadata);
        let labels = selector::labels(&pod.metadata);
        let range = self.by_namespace.get(ns).cloned().unwrap_or_default();
        self.entries[range]
            .iter()
            .filter(|e| e.namespace == ns && !e.selector.is_empty())
            .filter(|e| selector::matches(&e.selector, labels))
            .map(|e| {
                let ports = e
                    .ports
                    .iter()
                    .filter_map(|p| {
                        resolve_target_port(p, pod).map(|target| Port {
                            service_port: p.port as u32,
                            target_port: target,
                        })
                    })
                    .collect();
                (e.resource_name.clone(), PortList { ports })
            })
            .collect()
    }
}

/// The pod port a service port sends to: the numeric `targetPort`, the container port named by
/// a string `targetPort`, or the service port itself. `None` when a name matches no port.
fn resolve_target_port(port: &ServicePort, pod: &Pod) -> Option<u32> {
    match &port.target_port {
        None => Some(port.port as u32),
        Some(IntOrString::Int(t)) => u16::try_from(*t).ok().filter(|t| *t > 0).map(u32::from),
        Some(IntOrString::String(name)) => pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|cp| cp.name.as_deref() == Some(name.as_str()) && is_tcp(cp.protocol.as_deref()))
            .and_then(|cp| u16::try_from(cp.container_port).ok())
            .map(u32::from),
    }
}

fn is_tcp(protocol: Option<&str>) -> bool {
    matches!(protocol, None | Some("TCP"))
}

/// An IP as the 4 or 16 bytes the protos carry.
pub(crate) fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

fn ip_families(addresses: &[IpAddr]) -> IpFamilies {
    let v4 = addresses.iter().any(IpAddr::is_ipv4);
    let v6 = addresses.iter().any(IpAddr::is_ipv6);
    match (v4, v6) {
        (true, true) => IpFamilies::Dual,
        (true, false) => IpFamilies::Ipv4Only,
        (false, true) => IpFamilies::Ipv6Only,
        (false, false) => IpFamilies::Automatic,
    }
}
