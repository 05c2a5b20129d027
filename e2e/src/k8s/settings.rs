//! What the Kubernetes suite runs against, read from the environment in one place.
//!
//! | variable | meaning |
//! | --- | --- |
//! | `KUBECONFIG` | the cluster (required) |
//! | `MESH_E2E_CLUSTER` | `local` (e2e/cluster), `kind`, or unset: which values file of `charts/ambient/ci/` to install with |
//! | `MESH_E2E_VALUES` | a values file instead (overrides `MESH_E2E_CLUSTER`) |
//! | `MESH_E2E_NODE_EXEC` | how to run a shell command on a node: `host` (the node is this machine) or a command prefix such as `docker exec {node}`; unset: the node-level checks are not run, and the summary says so |
//! | `HELM`, `KUBECTL`, `MESHCTL` | the tools (default: `helm` and `kubectl` on `PATH`, `meshctl` from `MESH_BIN_DIR` / `$CARGO_TARGET_DIR/debug`) |
//! | `MESH_E2E_ARTIFACTS` | directory for logs and descriptions gathered on failure (default: `$TMPDIR/ambient-mesh-k8s-e2e/<time>`) |

use std::path::{Path, PathBuf};

use super::K8sError;
use crate::harness::prereq::default_bin_dir;

/// Which kind of cluster, for the chart values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterKind {
    /// The single-node cluster of upstream components (`e2e/cluster`): no cluster DNS.
    Local,
    /// kind: images loaded with `kind load`, never pulled.
    Kind,
    /// Anything else: the chart defaults.
    Other,
}

/// How shell commands reach a node's host (its CNI configuration, its network namespaces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeAccess {
    /// The node is this machine.
    Host,
    /// A command prefix; `{node}` is replaced by the node name (`docker exec {node}` on kind).
    Prefix(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub kubeconfig: PathBuf,
    pub cluster: ClusterKind,
    /// Values file of the umbrella chart (none: its defaults).
    pub values: Option<PathBuf>,
    /// Root of this repository (charts, scripts).
    pub repo_root: PathBuf,
    pub helm: PathBuf,
    pub kubectl: Option<PathBuf>,
    /// `meshctl`, or why it is missing.
    pub meshctl: Result<PathBuf, String>,
    pub node_access: Option<NodeAccess>,
    pub artifacts: PathBuf,
    /// Namespace of the sample apps.
    pub namespace: String,
    /// Namespace (and release name) of the mesh.
    pub istio_namespace: String,
    pub release: String,
    pub trust_domain: String,
}

impl Settings {
    /// Reads the environment; fails when KUBECONFIG or helm is missing.
    pub fn from_env() -> Result<Self, K8sError> {
        let kubeconfig = match std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
            Some(v) => PathBuf::from(v),
            None => return Err(K8sError::NoKubeconfig),
        };
        if !kubeconfig.is_file() {
            return Err(K8sError::Kubeconfig {
                path: kubeconfig,
                reason: "no such file (KUBECONFIG must name one kubeconfig file)".into(),
            });
        }
        let repo_root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let cluster = match var("MESH_E2E_CLUSTER").as_deref() {
            Some("local") => ClusterKind::Local,
            Some("kind") => ClusterKind::Kind,
            None | Some("") | Some("default") => ClusterKind::Other,
            Some(other) => {
                return Err(K8sError::Invalid(format!(
                    "MESH_E2E_CLUSTER={other:?}: expected local, kind or default"
                )));
            }
        };
        let ci = repo_root.join("charts/ambient/ci");
        let values = match var("MESH_E2E_VALUES") {
            Some(v) => Some(PathBuf::from(v)),
            None => match cluster {
                ClusterKind::Local => Some(ci.join("local-cluster-values.yaml")),
                ClusterKind::Kind => Some(ci.join("kind-values.yaml")),
                ClusterKind::Other => None,
            },
        };
        if let Some(v) = &values
            && !v.is_file()
        {
            return Err(K8sError::Invalid(format!(
                "values file {} does not exist",
                v.display()
            )));
        }
        let helm = tool("HELM", "helm").ok_or_else(|| K8sError::MissingTool {
            tool: "helm".into(),
            hint: "put it on PATH or set HELM (e2e/cluster/build.sh helm builds the pinned one; \
                   `e2e/cluster/build.sh --print-env` prints its directory)"
                .into(),
        })?;
        let kubectl = tool("KUBECTL", "kubectl");
        let meshctl = match var("MESHCTL") {
            Some(p) => Ok(PathBuf::from(p)),
            None => {
                let p = default_bin_dir().join("meshctl");
                if p.is_file() {
                    Ok(p)
                } else {
                    Err(format!(
                        "{} does not exist: run `cargo build --workspace --bins` or set MESHCTL",
                        p.display()
                    ))
                }
            }
        };
        let node_access = var("MESH_E2E_NODE_EXEC").map(|v| {
            if v == "host" {
                NodeAccess::Host
            } else {
                NodeAccess::Prefix(v.split_whitespace().map(str::to_string).collect())
            }
        });
        let artifacts = match var("MESH_E2E_ARTIFACTS") {
            Some(d) => PathBuf::from(d),
            None => {
                let stamp = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                std::env::temp_dir()
                    .join("ambient-mesh-k8s-e2e")
                    .join(stamp.to_string())
            }
        };
        Ok(Settings {
            kubeconfig,
            cluster,
            values,
            repo_root,
            helm,
            kubectl,
            meshctl,
            node_access,
            artifacts,
            namespace: var("MESH_E2E_NAMESPACE").unwrap_or_else(|| "mesh-e2e".into()),
            istio_namespace: "istio-system".into(),
            release: "ambient".into(),
            trust_domain: "cluster.local".into(),
        })
    }

    /// SPIFFE identity of a service account of the sample namespace.
    pub fn principal(&self, service_account: &str) -> String {
        format!(
            "spiffe://{}/ns/{}/sa/{service_account}",
            self.trust_domain, self.namespace
        )
    }

    /// One line per setting, for the test log.
    pub fn describe(&self) -> String {
        let opt = |p: &Option<PathBuf>| {
            p.as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "(none)".into())
        };
        format!(
            "KUBECONFIG={}\ncluster: {:?}, values: {}\nhelm: {}\nkubectl: {}\nmeshctl: {}\nnode access: {}\nartifacts: {}",
            self.kubeconfig.display(),
            self.cluster,
            opt(&self.values),
            self.helm.display(),
            opt(&self.kubectl),
            match &self.meshctl {
                Ok(p) => p.display().to_string(),
                Err(e) => format!("missing: {e}"),
            },
            match &self.node_access {
                None => "none (MESH_E2E_NODE_EXEC unset: node-level checks are not run)".into(),
                Some(NodeAccess::Host) => "host (the node is this machine)".into(),
                Some(NodeAccess::Prefix(p)) => p.join(" "),
            },
            self.artifacts.display(),
        )
    }
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// `$ENV_VAR`, else `name` found on PATH.
fn tool(env_var: &str, name: &str) -> Option<PathBuf> {
    if let Some(p) = var(env_var) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
