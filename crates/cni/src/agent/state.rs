//! What the agent remembers across restarts, and the status it publishes.
//!
//! Both are JSON files in the state directory (default `/var/run/mesh-cni`), written atomically:
//!
//! - `pods.json`: every pod of this node the agent knows a network namespace for (from the CNI
//!   ADD, or found by address), and whether it is enrolled. Read back at start-up so that
//!   enrolled pods stay enrolled across agent restarts.
//! - `status.json` ([`Status`]): the observable state for people, `meshctl` and tests: whether
//!   ztunnel is connected, the enrolled pods, and the pods that should be enrolled but are not
//!   yet, with the reason. Rewritten after every change.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// File holding the pod records.
pub const PODS_FILE: &str = "pods.json";
/// File holding the published [`Status`].
pub const STATUS_FILE: &str = "status.json";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("state file {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// A pod of this node.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PodKey {
    pub namespace: String,
    pub name: String,
}

impl PodKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for PodKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What the agent knows about one pod.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRecord {
    /// Sandbox container id from the CNI ADD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// Path of the pod's network namespace and its inode (to notice a reused path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns_inode: Option<u64>,
    #[serde(default)]
    pub ips: Vec<IpAddr>,
    /// `K8S_POD_UID` from the CNI ADD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// Set while the pod's traffic is redirected and ztunnel serves it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrolled: Option<Enrolment>,
    /// Whether the configuration source has shown this pod (a pod that disappears from it
    /// after that was deleted).
    #[serde(default)]
    pub seen_in_config: bool,
}

/// How a pod is enrolled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Enrolment {
    /// The uid ztunnel knows the workload by.
    pub uid: String,
    pub service_account: String,
    /// Unix time of the enrolment.
    pub since: u64,
}

#[derive(Serialize, Deserialize)]
struct PodsFile {
    pods: Vec<PodEntry>,
}

#[derive(Serialize, Deserialize)]
struct PodEntry {
    #[serde(flatten)]
    key: PodKey,
    #[serde(flatten)]
    record: PodRecord,
}

/// The pod records, loaded from and saved to the state directory.
#[derive(Debug)]
pub struct StateStore {
    dir: PathBuf,
    pub pods: BTreeMap<PodKey, PodRecord>,
}

impl StateStore {
    /// Loads `dir/pods.json` (none yet: no pods). Creates `dir` when missing.
    pub fn load(dir: &Path) -> Result<Self, StateError> {
        std::fs::create_dir_all(dir).map_err(|source| StateError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(PODS_FILE);
        let pods = match std::fs::read(&path) {
            Ok(bytes) => {
                let file: PodsFile =
                    serde_json::from_slice(&bytes).map_err(|source| StateError::Parse {
                        path: path.clone(),
                        source,
                    })?;
                file.pods.into_iter().map(|e| (e.key, e.record)).collect()
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => return Err(StateError::Io { path, source }),
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            pods,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn save(&self) -> Result<(), StateError> {
        let file = PodsFile {
            pods: self
                .pods
                .iter()
                .map(|(key, record)| PodEntry {
                    key: key.clone(),
                    record: record.clone(),
                })
                .collect(),
        };
        write_json(&self.dir.join(PODS_FILE), &file)
    }

    pub fn write_status(&self, status: &Status) -> Result<(), StateError> {
        write_json(&self.dir.join(STATUS_FILE), status)
    }
}

/// The agent's published state (`status.json`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub node: String,
    pub ztunnel_connected: bool,
    /// Unix time of this status.
    pub updated: u64,
    pub enrolled: Vec<EnrolledPod>,
    /// Pods that should be enrolled and are not (yet).
    pub pending: Vec<PendingPod>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnrolledPod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub service_account: String,
    #[serde(default)]
    pub netns: Option<PathBuf>,
    #[serde(default)]
    pub ips: Vec<IpAddr>,
    pub since: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingPod {
    pub namespace: String,
    pub name: String,
    pub reason: String,
}

impl Status {
    /// Whether `namespace/name` is listed as enrolled.
    pub fn is_enrolled(&self, namespace: &str, name: &str) -> bool {
        self.enrolled
            .iter()
            .any(|p| p.namespace == namespace && p.name == name)
    }
}

/// Reads the status an agent published in `state_dir`.
pub fn read_status(state_dir: &Path) -> Result<Status, StateError> {
    let path = state_dir.join(STATUS_FILE);
    let bytes = std::fs::read(&path).map_err(|source| StateError::Io {
        path: path.clone(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| StateError::Parse { path, source })
}

/// Removes the agent's files from `state_dir` (records, status, the emptied backup directory of
/// the installation) and the directory itself when nothing else is left in it, for an uninstall.
pub fn remove_state(state_dir: &Path) -> Result<(), StateError> {
    for name in [PODS_FILE, STATUS_FILE] {
        let path = state_dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(StateError::Io { path, source }),
        }
    }
    // Not empty (sockets of a component still running, files of others): leave it.
    let _ = std::fs::remove_dir(state_dir.join("install"));
    let _ = std::fs::remove_dir(state_dir);
    Ok(())
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<(), StateError> {
    let io_err = |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| io_err(io::Error::other(e)))?;
    bytes.push(b'\n');
    write_atomic(path, &bytes).map_err(io_err)
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_a_reload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = StateStore::load(dir.path()).expect("load empty");
        assert!(store.pods.is_empty());
        let record = PodRecord {
            container_id: Some("c1".into()),
            netns: Some("/var/run/netns/p1".into()),
            netns_inode: Some(4026532000),
            ips: vec!["10.1.0.5".parse().expect("ip")],
            pod_uid: None,
            enrolled: Some(Enrolment {
                uid: "shop/cart-0".into(),
                service_account: "cart".into(),
                since: 1,
            }),
            seen_in_config: true,
        };
        store
            .pods
            .insert(PodKey::new("shop", "cart-0"), record.clone());
        store.save().expect("save");
        let again = StateStore::load(dir.path()).expect("reload");
        assert_eq!(
            again.pods.get(&PodKey::new("shop", "cart-0")),
            Some(&record)
        );
    }

    #[test]
    fn removing_the_state_leaves_other_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        let store = StateStore::load(&state).expect("load");
        store.save().expect("save");
        store.write_status(&Status::default()).expect("status");
        std::fs::write(state.join("agent.sock"), b"").expect("write");
        remove_state(&state).expect("remove");
        let left: Vec<String> = std::fs::read_dir(&state)
            .expect("dir kept")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, ["agent.sock"]);
        std::fs::remove_file(state.join("agent.sock")).expect("rm");
        remove_state(&state).expect("remove again");
        assert!(!state.exists());
    }

    #[test]
    fn corrupt_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(PODS_FILE), b"{not json").expect("write");
        let err = StateStore::load(dir.path()).expect_err("corrupt");
        assert!(err.to_string().contains(PODS_FILE), "{err}");
    }
}
