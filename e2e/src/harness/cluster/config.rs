//! Configuration a test writes: namespaces and their labels, Services, and raw manifests
//! (AuthorizationPolicy, PeerAuthentication, ...), all in istiod's config directory.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use super::super::error::HarnessError;
use super::super::manifests;
use super::Cluster;

/// A ClusterIP Service to create.
#[derive(Debug, Clone, Default)]
pub struct ServiceSpec {
    pub name: String,
    pub namespace: String,
    pub selector: BTreeMap<String, String>,
    /// (port, targetPort) pairs.
    pub ports: Vec<(u16, u16)>,
}

impl ServiceSpec {
    pub fn new(name: &str, namespace: &str) -> Self {
        Self {
            name: name.into(),
            namespace: namespace.into(),
            ..Default::default()
        }
    }

    pub fn select(mut self, k: &str, v: &str) -> Self {
        self.selector.insert(k.into(), v.into());
        self
    }

    pub fn port(mut self, port: u16, target: u16) -> Self {
        self.ports.push((port, target));
        self
    }
}

/// A created Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub namespace: String,
    pub vip: Ipv4Addr,
    pub ports: Vec<(u16, u16)>,
}

impl Service {
    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.vip, port))
    }

    /// `<name>.<namespace>.svc.cluster.local`.
    pub fn hostname(&self) -> String {
        format!("{}.{}.svc.cluster.local", self.name, self.namespace)
    }
}

impl Cluster {
    fn write_namespace(
        &self,
        ns: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), HarnessError> {
        self.config.write_object(
            &manifests::object_file("Namespace", "", ns),
            &manifests::namespace(ns, labels),
        )?;
        Ok(())
    }

    /// Creates the Namespace object unless it exists.
    pub(super) fn ensure_namespace(&self, ns: &str) -> Result<(), HarnessError> {
        let mut st = self.state();
        if !st.namespaces.contains_key(ns) {
            self.write_namespace(ns, &BTreeMap::new())?;
            st.namespaces.insert(ns.to_string(), BTreeMap::new());
        }
        Ok(())
    }

    /// Creates (or replaces) a Namespace with these labels.
    pub fn create_namespace(&self, ns: &str, labels: &[(&str, &str)]) -> Result<(), HarnessError> {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut st = self.state();
        self.write_namespace(ns, &labels)?;
        st.namespaces.insert(ns.to_string(), labels);
        Ok(())
    }

    /// Sets (`Some`) or removes (`None`) a namespace label, like `kubectl label ns`.
    pub fn label_namespace(
        &self,
        ns: &str,
        key: &str,
        value: Option<&str>,
    ) -> Result<(), HarnessError> {
        let mut st = self.state();
        let labels = st.namespaces.entry(ns.to_string()).or_default();
        match value {
            Some(v) => labels.insert(key.to_string(), v.to_string()),
            None => labels.remove(key),
        };
        let labels = labels.clone();
        tracing::info!(namespace = ns, key, ?value, "labelling namespace");
        self.write_namespace(ns, &labels)
    }

    pub fn namespace_labels(&self, ns: &str) -> Option<BTreeMap<String, String>> {
        self.state().namespaces.get(ns).cloned()
    }

    /// Writes `<name>.yaml` into istiod's config directory (like `kubectl apply -f`).
    pub fn apply_yaml(&self, name: &str, yaml: &str) -> Result<PathBuf, HarnessError> {
        tracing::info!(name, "applying manifest");
        Ok(self.config.write(name, yaml)?)
    }

    /// Removes `<name>.yaml`; false if it did not exist.
    pub fn delete_yaml(&self, name: &str) -> Result<bool, HarnessError> {
        tracing::info!(name, "deleting manifest");
        Ok(self.config.remove(name)?)
    }

    /// Creates a ClusterIP Service with the next free VIP.
    pub fn add_service(&self, spec: ServiceSpec) -> Result<Service, HarnessError> {
        self.ensure_namespace(&spec.namespace)?;
        let mut st = self.state();
        if st.next_vip >= 250 {
            return Err(HarnessError::Invalid("out of service VIPs".into()));
        }
        st.next_vip += 1;
        let vip = self.plan.service_vip(st.next_vip);
        self.config.write_object(
            &manifests::object_file("Service", &spec.namespace, &spec.name),
            &manifests::service(
                &spec.name,
                &spec.namespace,
                &spec.selector,
                vip,
                &spec.ports,
            ),
        )?;
        let svc = Service {
            name: spec.name.clone(),
            namespace: spec.namespace.clone(),
            vip,
            ports: spec.ports.clone(),
        };
        st.services.insert((spec.namespace, spec.name), svc.clone());
        Ok(svc)
    }

    pub fn delete_service(&self, svc: &Service) -> Result<(), HarnessError> {
        self.state()
            .services
            .remove(&(svc.namespace.clone(), svc.name.clone()));
        self.config.remove(&manifests::object_file(
            "Service",
            &svc.namespace,
            &svc.name,
        ))?;
        Ok(())
    }
}
