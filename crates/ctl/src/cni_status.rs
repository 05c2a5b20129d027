//! The node agent's published status (`<state-dir>/status.json` of `cni-agent`): which pods of
//! its node are enrolled, and which should be and are not yet.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// File name of the status inside the agent's state directory.
pub const STATUS_FILE: &str = "status.json";

#[derive(Debug, thiserror::Error)]
pub enum CniStatusError {
    #[error("cannot read the node agent status {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the node agent status {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    #[serde(default)]
    pub node: String,
    #[serde(default)]
    pub ztunnel_connected: bool,
    /// Unix time the agent wrote this status.
    #[serde(default)]
    pub updated: u64,
    #[serde(default)]
    pub enrolled: Vec<EnrolledPod>,
    #[serde(default)]
    pub pending: Vec<PendingPod>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnrolledPod {
    pub namespace: String,
    pub name: String,
    #[serde(default)]
    pub uid: String,
    #[serde(default)]
    pub service_account: String,
    #[serde(default)]
    pub ips: Vec<String>,
    #[serde(default)]
    pub since: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingPod {
    pub namespace: String,
    pub name: String,
    #[serde(default)]
    pub reason: String,
}

/// The status file a `--cni-status` argument names: the file itself, or `status.json` inside
/// the agent's state directory.
pub fn status_path(arg: &Path) -> PathBuf {
    if arg.is_dir() {
        arg.join(STATUS_FILE)
    } else {
        arg.to_path_buf()
    }
}

/// Reads one agent's status.
pub fn read(arg: &Path) -> Result<AgentStatus, CniStatusError> {
    let path = status_path(arg);
    let bytes = std::fs::read(&path).map_err(|source| CniStatusError::Read {
        path: path.clone(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| CniStatusError::Parse { path, source })
}

/// What the agents say about one pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodReport {
    Enrolled { node: String },
    Pending { node: String, reason: String },
    NotListed,
}

/// Merges the statuses of every agent for `namespace/name`.
pub fn report(statuses: &[AgentStatus], namespace: &str, name: &str) -> PodReport {
    for s in statuses {
        if s.enrolled
            .iter()
            .any(|p| p.namespace == namespace && p.name == name)
        {
            return PodReport::Enrolled {
                node: s.node.clone(),
            };
        }
    }
    for s in statuses {
        if let Some(p) = s
            .pending
            .iter()
            .find(|p| p.namespace == namespace && p.name == name)
        {
            return PodReport::Pending {
                node: s.node.clone(),
                reason: p.reason.clone(),
            };
        }
    }
    PodReport::NotListed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_file_or_a_state_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join(STATUS_FILE),
            r#"{"node":"n1","ztunnelConnected":true,"updated":5,
               "enrolled":[{"namespace":"a","name":"p","uid":"a/p","serviceAccount":"sa",
                            "netns":null,"ips":["10.0.0.1"],"since":1}],
               "pending":[{"namespace":"a","name":"q","reason":"no ztunnel"}]}"#,
        )
        .expect("write");
        let from_dir = read(dir.path()).expect("dir");
        let from_file = read(&dir.path().join(STATUS_FILE)).expect("file");
        assert_eq!(from_dir, from_file);
        let all = [from_dir];
        assert_eq!(
            report(&all, "a", "p"),
            PodReport::Enrolled { node: "n1".into() }
        );
        assert_eq!(
            report(&all, "a", "q"),
            PodReport::Pending {
                node: "n1".into(),
                reason: "no ztunnel".into()
            }
        );
        assert_eq!(report(&all, "a", "r"), PodReport::NotListed);
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = read(&dir.path().join("nope.json")).expect_err("missing");
        assert!(err.to_string().contains("nope.json"), "{err}");
    }
}
