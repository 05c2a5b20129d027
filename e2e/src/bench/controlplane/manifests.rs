//! The synthetic mesh of the control-plane benchmark, as manifests in a config directory:
//! namespaces (enrolled), services, and pods spread over nodes, one file per object as the
//! harness writes them.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::harness::manifests::{self, ConfigDir, ManifestError, PodManifest};

/// Size of the synthetic mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scale {
    pub pods: usize,
    pub services: usize,
    pub nodes: usize,
    pub namespaces: usize,
}

impl Default for Scale {
    fn default() -> Self {
        Self {
            pods: 10_000,
            services: 1_000,
            nodes: 10,
            namespaces: 10,
        }
    }
}

/// One pod of the mesh, by index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    pub index: usize,
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub service: usize,
}

impl Scale {
    fn pods_per_service(&self) -> usize {
        self.pods.div_ceil(self.services.max(1)).max(1)
    }

    pub fn namespace(&self, service: usize) -> String {
        format!("cp-{}", service % self.namespaces.max(1))
    }

    pub fn pod(&self, index: usize) -> PodRef {
        let per = self.pods_per_service();
        let service = (index / per).min(self.services.saturating_sub(1));
        PodRef {
            index,
            name: format!("svc-{service}-{}", index % per),
            namespace: self.namespace(service),
            uid: format!("uid-{index:05}"),
            service,
        }
    }

    pub fn node_name(&self, pod: usize) -> String {
        format!("node{}", pod % self.nodes.max(1) + 1)
    }

    /// `10.100.x.y`, distinct for up to 62,500 pods.
    pub fn pod_ip(index: usize) -> Ipv4Addr {
        Ipv4Addr::new(
            10,
            100 + (index / 62_500) as u8,
            ((index / 250) % 250) as u8,
            (index % 250) as u8 + 1,
        )
    }

    pub fn service_vip(index: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 96, ((index / 250) % 250) as u8, (index % 250) as u8 + 1)
    }

    /// The manifest of pod `index`, labelled `version: <version>`.
    pub fn pod_manifest(&self, index: usize, version: &str) -> PodManifest {
        let p = self.pod(index);
        let node = index % self.nodes.max(1) + 1;
        PodManifest {
            name: p.name,
            namespace: p.namespace,
            uid: p.uid,
            node: self.node_name(index),
            service_account: format!("svc-{}", p.service),
            labels: BTreeMap::from([
                ("app".to_string(), format!("svc-{}", p.service)),
                ("version".to_string(), version.to_string()),
            ]),
            annotations: BTreeMap::new(),
            ip: Some(Self::pod_ip(index)),
            host_ip: Ipv4Addr::new(172, 30, 0, node as u8),
            ports: vec![8080],
        }
    }
}

/// Writes (or rewrites) pod `index` with `version`.
pub fn write_pod(
    dir: &ConfigDir,
    scale: &Scale,
    index: usize,
    version: &str,
) -> Result<(), ManifestError> {
    let m = scale.pod_manifest(index, version);
    dir.write_object(
        &manifests::object_file("Pod", &m.namespace, &m.name),
        &manifests::pod(&m),
    )?;
    Ok(())
}

/// Writes the whole mesh.
pub fn write_all(dir: &ConfigDir, scale: &Scale) -> Result<(), ManifestError> {
    let ambient = BTreeMap::from([(
        crate::harness::DATAPLANE_MODE.to_string(),
        crate::harness::AMBIENT.to_string(),
    )]);
    for n in 0..scale.namespaces {
        let ns = format!("cp-{n}");
        dir.write_object(
            &manifests::object_file("Namespace", "", &ns),
            &manifests::namespace(&ns, &ambient),
        )?;
    }
    for s in 0..scale.services {
        let name = format!("svc-{s}");
        let ns = scale.namespace(s);
        let selector = BTreeMap::from([("app".to_string(), name.clone())]);
        dir.write_object(
            &manifests::object_file("Service", &ns, &name),
            &manifests::service(&name, &ns, &selector, Scale::service_vip(s), &[(80, 8080)]),
        )?;
    }
    for p in 0..scale.pods {
        write_pod(dir, scale, p, "v0")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_are_spread_over_services_nodes_and_addresses() {
        let s = Scale::default();
        let first = s.pod(0);
        let last = s.pod(9_999);
        assert_eq!((first.service, last.service), (0, 999));
        assert_eq!(first.name, "svc-0-0");
        assert_eq!(last.name, "svc-999-9");
        assert_eq!(s.namespace(999), "cp-9");
        assert_eq!(s.node_name(9), "node10");
        let ips: std::collections::BTreeSet<Ipv4Addr> = (0..s.pods).map(Scale::pod_ip).collect();
        assert_eq!(ips.len(), s.pods);
        let vips: std::collections::BTreeSet<Ipv4Addr> =
            (0..s.services).map(Scale::service_vip).collect();
        assert_eq!(vips.len(), s.services);
        let m = s.pod_manifest(42, "v7");
        assert_eq!(m.labels["version"], "v7");
        assert_eq!(m.labels["app"], "svc-4");
    }
}
