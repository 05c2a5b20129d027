//! Pods: a network namespace attached by the node's CNI plugins, a Pod manifest for istiod, and
//! the commands and apps run inside it.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::super::cmd;
use super::super::cni::{Attachment, SandboxRef};
use super::super::error::HarnessError;
use super::super::manifests::{self, PodManifest};
use super::super::netns;
use super::super::process::Proc;
use super::{Cluster, Node};

/// What to create.
#[derive(Debug, Clone, Default)]
pub struct PodSpec {
    pub name: String,
    pub namespace: String,
    /// Node name (`node1`, ...).
    pub node: String,
    pub service_account: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Container ports listed in the manifest.
    pub ports: Vec<u16>,
}

impl PodSpec {
    /// A pod on `node1` with service account `default`.
    pub fn new(name: &str, namespace: &str) -> Self {
        Self {
            name: name.into(),
            namespace: namespace.into(),
            node: "node1".into(),
            service_account: "default".into(),
            ..Default::default()
        }
    }

    pub fn on(mut self, node: &Node) -> Self {
        self.node = node.name.clone();
        self
    }

    pub fn node(mut self, name: &str) -> Self {
        self.node = name.into();
        self
    }

    pub fn service_account(mut self, sa: &str) -> Self {
        self.service_account = sa.into();
        self
    }

    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.labels.insert(k.into(), v.into());
        self
    }

    pub fn annotation(mut self, k: &str, v: &str) -> Self {
        self.annotations.insert(k.into(), v.into());
        self
    }

    pub fn port(mut self, p: u16) -> Self {
        self.ports.push(p);
        self
    }
}

/// A running pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    pub name: String,
    pub namespace: String,
    pub node: String,
    pub service_account: String,
    pub labels: BTreeMap<String, String>,
    pub ip: Ipv4Addr,
    /// Name of the pod's network namespace (`/var/run/netns/<netns>`).
    pub netns: String,
    pub uid: String,
    pub container_id: String,
}

impl Pod {
    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.ip, port))
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Inode of the pod's netns (unchanged as long as the pod keeps its sandbox).
    pub fn netns_inode(&self) -> Result<u64, HarnessError> {
        Ok(netns::inode(&self.netns)?)
    }
}

/// A background process in a pod.
#[derive(Debug, Clone)]
pub struct App {
    pub id: u32,
    pub name: String,
    /// `namespace/name` of the pod.
    pub pod: String,
    pub log: PathBuf,
}

#[derive(Debug)]
pub(super) struct PodRecord {
    pub pod: Pod,
    pub spec: PodSpec,
    pub sandbox: SandboxRef,
    pub attachment: Attachment,
    pub host_ip: Ipv4Addr,
}

/// How long [`Cluster::add_pod`] retries a failing CNI ADD.
const ADD_RETRY_WINDOW: Duration = Duration::from_secs(30);

fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

fn manifest_name(namespace: &str, name: &str) -> String {
    manifests::object_file("Pod", namespace, name)
}

impl Cluster {
    /// Creates a pod the way a kubelet would: the Pod object (pending) is written, the sandbox
    /// netns created, the node's CNI plugins called in order (ADD), then the Pod object updated
    /// with its IP and the Ready condition.
    pub fn add_pod(&self, spec: PodSpec) -> Result<Pod, HarnessError> {
        let node = self.node(&spec.node)?.clone();
        if spec.name.is_empty() || spec.namespace.is_empty() {
            return Err(HarnessError::Invalid(
                "a pod needs a name and a namespace".into(),
            ));
        }
        let index = {
            let mut st = self.state();
            if st
                .pods
                .contains_key(&(spec.namespace.clone(), spec.name.clone()))
            {
                return Err(HarnessError::Invalid(format!(
                    "pod {}/{} exists already",
                    spec.namespace, spec.name
                )));
            }
            st.next_pod += 1;
            st.next_pod
        };
        self.ensure_namespace(&spec.namespace)?;
        let netns_name = self.id.pod_netns(index);
        let mut sandbox = SandboxRef {
            container_id: random_hex(32),
            netns_path: netns::path(&netns_name),
            namespace: spec.namespace.clone(),
            name: spec.name.clone(),
            uid: format!(
                "{}-{}-{}-{}-{}",
                random_hex(4),
                random_hex(2),
                random_hex(2),
                random_hex(2),
                random_hex(6)
            ),
        };
        let mut manifest = PodManifest {
            name: spec.name.clone(),
            namespace: spec.namespace.clone(),
            uid: sandbox.uid.clone(),
            node: node.name.clone(),
            service_account: spec.service_account.clone(),
            labels: spec.labels.clone(),
            annotations: spec.annotations.clone(),
            ip: None,
            host_ip: node.ip,
            ports: spec.ports.clone(),
        };
        let file = manifest_name(&spec.namespace, &spec.name);
        self.config
            .write_object(&file, &manifests::pod(&manifest))?;
        let attachment = match self.attach_with_retries(&node, &mut sandbox, &netns_name) {
            Ok(a) => a,
            Err(e) => {
                let _ = self.config.remove(&file);
                return Err(e);
            }
        };
        manifest.ip = Some(attachment.ip);
        self.config
            .write_object(&file, &manifests::pod(&manifest))?;
        let pod = Pod {
            name: spec.name.clone(),
            namespace: spec.namespace.clone(),
            node: node.name.clone(),
            service_account: spec.service_account.clone(),
            labels: spec.labels.clone(),
            ip: attachment.ip,
            netns: netns_name,
            uid: sandbox.uid.clone(),
            container_id: sandbox.container_id.clone(),
        };
        tracing::info!(pod = %pod.key(), ip = %pod.ip, plugins = ?attachment.plugins, "pod ready");
        self.state().pods.insert(
            (pod.namespace.clone(), pod.name.clone()),
            PodRecord {
                pod: pod.clone(),
                spec,
                sandbox,
                attachment,
                host_ip: node.ip,
            },
        );
        Ok(pod)
    }

    /// Creates the sandbox netns and runs CNI ADD. A failed ADD is torn down (CNI DEL, netns
    /// removed) and retried with a new sandbox, with backoff, for up to 30 s, as a kubelet
    /// retries; the last error is returned with the node agent's log tail.
    fn attach_with_retries(
        &self,
        node: &Node,
        sandbox: &mut SandboxRef,
        netns_name: &str,
    ) -> Result<Attachment, HarnessError> {
        let window = if self.mesh {
            ADD_RETRY_WINDOW
        } else {
            Duration::ZERO
        };
        let deadline = Instant::now() + window;
        let mut backoff = Duration::from_millis(500);
        let mut attempt = 1;
        loop {
            // The sandbox: a bare netns; the loopback plugin brings `lo` up.
            cmd::ip(&["netns", "add", netns_name])?;
            tracing::info!(pod = %format!("{}/{}", sandbox.namespace, sandbox.name), node = %node.name, netns = %netns_name, attempt, "CNI ADD");
            let err = match node.cni.add(sandbox) {
                Ok(a) => return Ok(a),
                Err(e) => e,
            };
            if let Err(del) = node.cni.teardown(sandbox) {
                tracing::warn!(error = %del, "CNI DEL after a failed ADD failed");
            }
            let _ = netns::delete(netns_name);
            if Instant::now() + backoff >= deadline {
                return Err(if self.mesh {
                    HarnessError::Component {
                        component: format!(
                            "CNI ADD of pod {}/{} on {} ({attempt} attempts)",
                            sandbox.namespace, sandbox.name, node.name
                        ),
                        reason: err.to_string(),
                        log_tail: super::super::process::tail_file(&node.files.agent_log, 30),
                    }
                } else {
                    err.into()
                });
            }
            tracing::warn!(error = %err, ?backoff, "CNI ADD failed; retrying with a new sandbox");
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(5));
            attempt += 1;
            sandbox.container_id = random_hex(32);
        }
    }

    /// The CNI plugin types called when `pod` was added (shows whether `mesh-cni` was chained).
    pub fn pod_plugins(&self, pod: &Pod) -> Vec<String> {
        self.state()
            .pods
            .get(&(pod.namespace.clone(), pod.name.clone()))
            .map(|r| r.attachment.plugins.clone())
            .unwrap_or_default()
    }

    /// Deletes a pod like a kubelet: its apps stopped, CNI DEL in reverse order, the netns
    /// removed, then the Pod object.
    pub fn delete_pod(&self, pod: &Pod) -> Result<(), HarnessError> {
        let record = self
            .state()
            .pods
            .remove(&(pod.namespace.clone(), pod.name.clone()))
            .ok_or_else(|| HarnessError::Unknown {
                kind: "pod",
                name: pod.key(),
            })?;
        let apps: Vec<Proc> = {
            let mut st = self.state();
            let ids: Vec<u32> = st
                .apps
                .iter()
                .filter(|(_, (a, _))| a.pod == pod.key())
                .map(|(id, _)| *id)
                .collect();
            ids.iter()
                .filter_map(|id| st.apps.remove(id).map(|(_, p)| p))
                .collect()
        };
        drop(apps);
        let node = self.node(&record.pod.node)?;
        tracing::info!(pod = %pod.key(), "CNI DEL");
        let del = node.cni.del(&record.sandbox, &record.attachment);
        netns::delete(&record.pod.netns)?;
        self.config
            .remove(&manifest_name(&pod.namespace, &pod.name))?;
        del?;
        Ok(())
    }

    /// Rewrites a pod's manifest with a label set (`Some`) or removed (`None`), e.g. the
    /// pod-level `istio.io/dataplane-mode`.
    pub fn label_pod(&self, pod: &Pod, key: &str, value: Option<&str>) -> Result<(), HarnessError> {
        let mut st = self.state();
        let rec = st
            .pods
            .get_mut(&(pod.namespace.clone(), pod.name.clone()))
            .ok_or_else(|| HarnessError::Unknown {
                kind: "pod",
                name: pod.key(),
            })?;
        match value {
            Some(v) => rec.spec.labels.insert(key.into(), v.into()),
            None => rec.spec.labels.remove(key),
        };
        rec.pod.labels = rec.spec.labels.clone();
        let manifest = PodManifest {
            name: rec.spec.name.clone(),
            namespace: rec.spec.namespace.clone(),
            uid: rec.sandbox.uid.clone(),
            node: rec.pod.node.clone(),
            service_account: rec.spec.service_account.clone(),
            labels: rec.spec.labels.clone(),
            annotations: rec.spec.annotations.clone(),
            ip: Some(rec.pod.ip),
            host_ip: rec.host_ip,
            ports: rec.spec.ports.clone(),
        };
        self.config.write_object(
            &manifest_name(&pod.namespace, &pod.name),
            &manifests::pod(&manifest),
        )?;
        Ok(())
    }

    pub fn pods(&self) -> Vec<Pod> {
        self.state().pods.values().map(|r| r.pod.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_spec_builder_fills_fields() {
        let s = PodSpec::new("c", "demo")
            .node("node2")
            .service_account("sa")
            .label("app", "c")
            .port(80);
        assert_eq!(
            (s.node.as_str(), s.service_account.as_str()),
            ("node2", "sa")
        );
        assert_eq!(s.labels["app"], "c");
        assert_eq!(s.ports, vec![80]);
        assert_eq!(PodSpec::new("x", "y").service_account, "default");
    }
}
