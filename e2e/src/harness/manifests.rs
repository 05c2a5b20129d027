//! The manifests the harness writes into istiod's config directory, in place of the Kubernetes
//! API server: Namespaces, Pods (as a kubelet reports them), Services, and raw user YAML.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// Errors of the config directory.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot write manifest {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot render manifest: {0}")]
    Render(String),
    #[error("invalid manifest file name {0:?} (use letters, digits, '-', '_', '.')")]
    BadName(String),
}

/// A directory of YAML manifests. Writes are atomic (temporary file then rename) so a reader
/// polling the directory never sees half a file.
#[derive(Debug, Clone)]
pub struct ConfigDir {
    path: PathBuf,
}

impl ConfigDir {
    pub fn create(path: &Path) -> Result<Self, ManifestError> {
        std::fs::create_dir_all(path).map_err(|source| ManifestError::Write {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self {
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn file(&self, name: &str) -> Result<PathBuf, ManifestError> {
        let ok = !name.is_empty()
            && !name.starts_with('.')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            return Err(ManifestError::BadName(name.to_string()));
        }
        Ok(self.path.join(format!("{name}.yaml")))
    }

    /// Writes `<name>.yaml` with `yaml`.
    pub fn write(&self, name: &str, yaml: &str) -> Result<PathBuf, ManifestError> {
        let file = self.file(name)?;
        // Hidden and without a .yaml extension until renamed.
        let tmp = self.path.join(format!(".{name}.tmp"));
        let err = |source| ManifestError::Write {
            path: file.display().to_string(),
            source,
        };
        std::fs::write(&tmp, yaml).map_err(err)?;
        std::fs::rename(&tmp, &file).map_err(err)?;
        Ok(file)
    }

    /// Writes an object (rendered as YAML) to `<name>.yaml`.
    pub fn write_object(&self, name: &str, object: &Value) -> Result<PathBuf, ManifestError> {
        let yaml = to_yaml(object)?;
        self.write(name, &yaml)
    }

    /// Removes `<name>.yaml`; false if it was not there.
    pub fn remove(&self, name: &str) -> Result<bool, ManifestError> {
        let file = self.file(name)?;
        match std::fs::remove_file(&file) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(ManifestError::Write {
                path: file.display().to_string(),
                source,
            }),
        }
    }

    pub fn read(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.file(name).ok()?).ok()
    }
}

/// Renders a JSON value as YAML.
pub fn to_yaml(v: &Value) -> Result<String, ManifestError> {
    serde_saphyr::to_string(v).map_err(|e| ManifestError::Render(e.to_string()))
}

/// File name of an object's manifest: `<kind>-<namespace>-<name>`.
pub fn object_file(kind: &str, namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        format!("{}-{name}", kind.to_ascii_lowercase())
    } else {
        format!("{}-{namespace}-{name}", kind.to_ascii_lowercase())
    }
}

pub fn namespace(name: &str, labels: &BTreeMap<String, String>) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": { "name": name, "labels": labels },
    })
}

/// What a Pod manifest says; `ip == None` is a pod still being set up (phase Pending).
#[derive(Debug, Clone)]
pub struct PodManifest {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub node: String,
    pub service_account: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub ip: Option<Ipv4Addr>,
    pub host_ip: Ipv4Addr,
    /// Container ports, for readers that look at them.
    pub ports: Vec<u16>,
}

pub fn pod(p: &PodManifest) -> Value {
    let ready = p.ip.is_some();
    let mut status = json!({
        "phase": if ready { "Running" } else { "Pending" },
        "hostIP": p.host_ip.to_string(),
        "conditions": [
            { "type": "PodScheduled", "status": "True" },
            { "type": "Initialized", "status": if ready { "True" } else { "False" } },
            { "type": "ContainersReady", "status": if ready { "True" } else { "False" } },
            { "type": "Ready", "status": if ready { "True" } else { "False" } },
        ],
    });
    if let Some(ip) = p.ip {
        status["podIP"] = json!(ip.to_string());
        status["podIPs"] = json!([{ "ip": ip.to_string() }]);
    }
    let ports: Vec<Value> = p
        .ports
        .iter()
        .map(|port| json!({ "containerPort": port, "protocol": "TCP" }))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": p.name,
            "namespace": p.namespace,
            "uid": p.uid,
            "labels": p.labels,
            "annotations": p.annotations,
        },
        "spec": {
            "nodeName": p.node,
            "serviceAccountName": p.service_account,
            "containers": [{ "name": "app", "image": "mesh-echo", "ports": ports }],
        },
        "status": status,
    })
}

/// A ClusterIP Service: `ports` are (port, targetPort) pairs, named `tcp-<port>`.
pub fn service(
    name: &str,
    namespace: &str,
    selector: &BTreeMap<String, String>,
    cluster_ip: Ipv4Addr,
    ports: &[(u16, u16)],
) -> Value {
    service_manifest(&ServiceManifest {
        name,
        namespace,
        labels: &BTreeMap::new(),
        selector,
        cluster_ip,
        ports,
        port_names: &BTreeMap::new(),
    })
}

/// What a Service manifest says.
#[derive(Debug, Clone, Copy)]
pub struct ServiceManifest<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub selector: &'a BTreeMap<String, String>,
    pub cluster_ip: Ipv4Addr,
    /// (port, targetPort) pairs.
    pub ports: &'a [(u16, u16)],
    /// Port names by port; unnamed ports are `tcp-<port>` (the name tells Istio the protocol:
    /// `http`, `http-*`, `grpc-*`, `tcp-*`, ...).
    pub port_names: &'a BTreeMap<u16, String>,
}

pub fn service_manifest(s: &ServiceManifest<'_>) -> Value {
    let ports: Vec<Value> = s
        .ports
        .iter()
        .map(|(port, target)| {
            let name = s
                .port_names
                .get(port)
                .cloned()
                .unwrap_or_else(|| format!("tcp-{port}"));
            json!({ "name": name, "port": port, "targetPort": target, "protocol": "TCP" })
        })
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": s.name, "namespace": s.namespace, "labels": s.labels },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": s.cluster_ip.to_string(),
            "clusterIPs": [s.cluster_ip.to_string()],
            "selector": s.selector,
            "ports": ports,
        },
    })
}

/// Class, listener and label of a waypoint Gateway.
pub const WAYPOINT_GATEWAY_CLASS: &str = "istio-waypoint";
pub const WAYPOINT_LISTENER: &str = "mesh";
pub const WAYPOINT_FOR: &str = "istio.io/waypoint-for";

/// A waypoint: a Gateway of class `istio-waypoint` with the listener `mesh`/15008/`HBONE`,
/// labelled `istio.io/waypoint-for: <waypoint_for>` (`service`, `workload`, `all`, `none`).
pub fn waypoint_gateway(name: &str, namespace: &str, waypoint_for: &str) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": { WAYPOINT_FOR: waypoint_for },
        },
        "spec": {
            "gatewayClassName": WAYPOINT_GATEWAY_CLASS,
            "listeners": [{ "name": WAYPOINT_LISTENER, "port": 15008, "protocol": "HBONE" }],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_manifest_carries_what_istiod_reads() {
        let m = PodManifest {
            name: "client".into(),
            namespace: "demo".into(),
            uid: "u1".into(),
            node: "node1".into(),
            service_account: "sleep".into(),
            labels: [("app".to_string(), "client".to_string())].into(),
            annotations: BTreeMap::new(),
            ip: Some(Ipv4Addr::new(10, 3, 1, 4)),
            host_ip: Ipv4Addr::new(172, 18, 3, 11),
            ports: vec![9000],
        };
        let yaml = to_yaml(&pod(&m)).unwrap();
        let back: Value = serde_saphyr::from_str(&yaml).unwrap();
        assert_eq!(back["kind"], "Pod");
        assert_eq!(back["spec"]["nodeName"], "node1");
        assert_eq!(back["spec"]["serviceAccountName"], "sleep");
        assert_eq!(back["status"]["podIP"], "10.3.1.4");
        assert_eq!(back["status"]["phase"], "Running");
        assert_eq!(back["metadata"]["labels"]["app"], "client");
        let ready = back["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        assert_eq!(ready["status"], "True");
        let pending = pod(&PodManifest { ip: None, ..m });
        assert_eq!(pending["status"]["phase"], "Pending");
        assert!(pending["status"].get("podIP").is_none());
    }

    #[test]
    fn config_dir_writes_atomically_and_removes() {
        let dir = std::env::temp_dir().join(format!("e2e-cfg-{}", std::process::id()));
        let cfg = ConfigDir::create(&dir).unwrap();
        let ns = namespace(
            "demo",
            &[("istio.io/dataplane-mode".to_string(), "ambient".to_string())].into(),
        );
        let f = cfg.write_object("namespace-demo", &ns).unwrap();
        assert!(f.ends_with("namespace-demo.yaml"));
        let text = cfg.read("namespace-demo").unwrap();
        assert!(text.contains("istio.io/dataplane-mode"), "{text}");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temporary file left: {names:?}");
        assert!(cfg.remove("namespace-demo").unwrap());
        assert!(!cfg.remove("namespace-demo").unwrap());
        assert!(cfg.write("../escape", "x").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn service_lists_ports_and_vip() {
        let s = service(
            "echo",
            "demo",
            &[("app".to_string(), "echo".to_string())].into(),
            Ipv4Addr::new(10, 3, 200, 1),
            &[(80, 8080)],
        );
        assert_eq!(s["spec"]["clusterIP"], "10.3.200.1");
        assert_eq!(s["spec"]["ports"][0]["targetPort"], 8080);
        assert_eq!(s["spec"]["selector"]["app"], "echo");
        assert_eq!(s["spec"]["ports"][0]["name"], "tcp-80");
    }

    #[test]
    fn named_ports_and_labels_reach_the_service() {
        let labels = [("istio.io/use-waypoint".to_string(), "wp".to_string())].into();
        let names = [(80, "http".to_string())].into();
        let s = service_manifest(&ServiceManifest {
            name: "echo",
            namespace: "demo",
            labels: &labels,
            selector: &BTreeMap::new(),
            cluster_ip: Ipv4Addr::new(10, 3, 200, 2),
            ports: &[(80, 8080), (9000, 9000)],
            port_names: &names,
        });
        assert_eq!(s["metadata"]["labels"]["istio.io/use-waypoint"], "wp");
        assert_eq!(s["spec"]["ports"][0]["name"], "http");
        assert_eq!(s["spec"]["ports"][1]["name"], "tcp-9000");
    }

    #[test]
    fn waypoint_gateway_has_the_mesh_listener() {
        let g = waypoint_gateway("waypoint", "demo", "service");
        let back: Value = serde_saphyr::from_str(&to_yaml(&g).unwrap()).unwrap();
        assert_eq!(back["kind"], "Gateway");
        assert_eq!(back["spec"]["gatewayClassName"], "istio-waypoint");
        assert_eq!(
            back["metadata"]["labels"]["istio.io/waypoint-for"],
            "service"
        );
        let l = &back["spec"]["listeners"][0];
        assert_eq!(
            (&l["name"], &l["port"], &l["protocol"]),
            (&json!("mesh"), &json!(15008), &json!("HBONE"))
        );
    }
}
