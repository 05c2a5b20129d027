//! Errors of the Kubernetes helpers; each says what was attempted on which object, so that a
//! failing step reads as a diagnosis.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    #[error(
        "KUBECONFIG is not set. The Kubernetes end-to-end suite installs the mesh into a cluster \
         and needs its kubeconfig: run `make e2e` (a local cluster of upstream components) or \
         `make e2e-kind`, or export KUBECONFIG=<file> of a disposable cluster"
    )]
    NoKubeconfig,
    #[error("cannot use the kubeconfig {path}: {reason}")]
    Kubeconfig { path: PathBuf, reason: String },
    #[error(
        "the cluster of KUBECONFIG={kubeconfig} is unreachable at {server}: {reason} (is it up? \
         `make cluster-up` starts the local one)"
    )]
    Unreachable {
        kubeconfig: PathBuf,
        server: String,
        reason: String,
    },
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("exec {command:?} in pod {pod}: {reason}")]
    Exec {
        pod: String,
        command: String,
        reason: String,
    },
    #[error("port-forward to {pod}:{port}: {reason}")]
    PortForward {
        pod: String,
        port: u16,
        reason: String,
    },
    #[error("{tool} not found: {hint}")]
    MissingTool { tool: String, hint: String },
    #[error("`{command}` failed ({status}):\n{output}")]
    Command {
        command: String,
        status: String,
        output: String,
    },
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("bad manifest ({what}): {reason}")]
    Manifest { what: String, reason: String },
    #[error(
        "timed out after {waited:?} ({attempts} attempts) waiting for {what}; last seen: {last}"
    )]
    Timeout {
        what: String,
        waited: Duration,
        attempts: u32,
        last: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

impl K8sError {
    /// An API error, with what was being done.
    pub fn api(what: impl Into<String>, source: kube::Error) -> Self {
        K8sError::Api {
            what: what.into(),
            source,
        }
    }

    /// Whether this is the API server's 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self, K8sError::Api { source: kube::Error::Api(s), .. } if s.is_not_found())
    }
}
