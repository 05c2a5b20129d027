//! Configuration a test writes: namespaces and their labels, Services, and raw manifests
//! (AuthorizationPolicy, PeerAuthentication, ...), all in istiod's config directory.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use super::super::error::HarnessError;
use super::super::manifests::{self, ServiceManifest};
use super::{Cluster, Pod};

/// A ClusterIP Service to create.
#[derive(Debug, Clone, Default)]
pub struct ServiceSpec {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub selector: BTreeMap<String, String>,
    /// (port, targetPort) pairs.
    pub ports: Vec<(u16, u16)>,
    /// Port names by port (the protocol for Istio: `http`, `grpc-*`, ...); others are
    /// `tcp-<port>`.
    pub port_names: BTreeMap<u16, String>,
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

    /// A port with a name, e.g. `http` so that a waypoint treats it as HTTP.
    pub fn named_port(mut self, name: &str, port: u16, target: u16) -> Self {
        self.ports.push((port, target));
        self.port_names.insert(port, name.into());
        self
    }

    /// A label on the Service object (e.g. `istio.io/use-waypoint`).
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.labels.insert(k.into(), v.into());
        self
    }
}

/// What `istio.io/use-waypoint` is set on.
#[derive(Debug, Clone, Copy)]
pub enum UseWaypointOn<'a> {
    Namespace(&'a str),
    Service(&'a Service),
    Pod(&'a Pod),
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
        // VIPs 249 and 250 are left to callers that write their own Service manifests.
        if st.next_vip >= 248 {
            return Err(HarnessError::Invalid("out of service VIPs".into()));
        }
        st.next_vip += 1;
        let vip = self.plan.service_vip(st.next_vip);
        self.write_service(&spec, vip)?;
        let svc = Service {
            name: spec.name.clone(),
            namespace: spec.namespace.clone(),
            vip,
            ports: spec.ports.clone(),
        };
        st.services.insert(
            (spec.namespace.clone(), spec.name.clone()),
            (svc.clone(), spec),
        );
        Ok(svc)
    }

    fn write_service(
        &self,
        spec: &ServiceSpec,
        vip: std::net::Ipv4Addr,
    ) -> Result<(), HarnessError> {
        self.config.write_object(
            &manifests::object_file("Service", &spec.namespace, &spec.name),
            &manifests::service_manifest(&ServiceManifest {
                name: &spec.name,
                namespace: &spec.namespace,
                labels: &spec.labels,
                selector: &spec.selector,
                cluster_ip: vip,
                ports: &spec.ports,
                port_names: &spec.port_names,
            }),
        )?;
        Ok(())
    }

    /// Rewrites a Service's manifest with a label set (`Some`) or removed (`None`), like
    /// `kubectl label svc`.
    pub fn label_service(
        &self,
        svc: &Service,
        key: &str,
        value: Option<&str>,
    ) -> Result<(), HarnessError> {
        let mut st = self.state();
        let (svc, spec) = st
            .services
            .get_mut(&(svc.namespace.clone(), svc.name.clone()))
            .ok_or_else(|| HarnessError::Unknown {
                kind: "service",
                name: format!("{}/{}", svc.namespace, svc.name),
            })?;
        match value {
            Some(v) => spec.labels.insert(key.into(), v.into()),
            None => spec.labels.remove(key),
        };
        tracing::info!(service = %format!("{}/{}", svc.namespace, svc.name), key, ?value, "labelling service");
        self.write_service(spec, svc.vip)
    }

    /// Labels of a Service created by [`Cluster::add_service`].
    pub fn service_labels(&self, svc: &Service) -> Option<BTreeMap<String, String>> {
        self.state()
            .services
            .get(&(svc.namespace.clone(), svc.name.clone()))
            .map(|(_, spec)| spec.labels.clone())
    }

    /// Sets `istio.io/use-waypoint` on a Namespace, Service or Pod to the waypoint named
    /// `waypoint` (a Gateway in the same namespace), to `none` (opt out), or removes it (`None`).
    pub fn use_waypoint(
        &self,
        on: UseWaypointOn<'_>,
        waypoint: Option<&str>,
    ) -> Result<(), HarnessError> {
        match on {
            UseWaypointOn::Namespace(ns) => {
                self.label_namespace(ns, super::super::USE_WAYPOINT, waypoint)
            }
            UseWaypointOn::Service(svc) => {
                self.label_service(svc, super::super::USE_WAYPOINT, waypoint)
            }
            UseWaypointOn::Pod(pod) => self.label_pod(pod, super::super::USE_WAYPOINT, waypoint),
        }
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
