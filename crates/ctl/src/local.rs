//! Local mode: the mesh configured by a directory of manifests (`--config-dir`), its components
//! reached directly: istiod's monitoring port, each ztunnel's admin port, the node agents'
//! status files.

pub mod manifest;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mesh_config::objects::kind;
use mesh_config::{DirSource, ObjectKey, Snapshot};

use crate::cni_status::{self, AgentStatus, CniStatusError};
use crate::istiod::IstiodClient;
use manifest::{EditReport, ManifestError, ManifestFile};

/// Prefix of the manifest files meshctl creates in the configuration directory.
pub const GENERATED_PREFIX: &str = "meshctl-";

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error(
        "configuration directory {0} does not exist or is not a directory; pass the directory \
         istiod reads (--config-dir)"
    )]
    NoConfigDir(PathBuf),
    #[error("--ztunnel-admin {0:?}: expected URL or NODE=URL (e.g. node1=http://127.0.0.1:15000)")]
    BadZtunnelAdmin(String),
    #[error(
        "{key} does not parse in {file}: {reason}. Fix that manifest first (`meshctl analyze \
         --config-dir {dir}` shows every problem)"
    )]
    BrokenManifest {
        key: String,
        file: PathBuf,
        reason: String,
        dir: PathBuf,
    },
    #[error("{path} already exists and does not define {key}; move it away or edit it by hand")]
    Occupied { path: PathBuf, key: String },
    #[error("{key} is not defined in {dir}")]
    NotFound { key: String, dir: PathBuf },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    CniStatus(#[from] CniStatusError),
}

/// The ztunnel admin endpoints given with `--ztunnel-admin`: one without a node name, and any
/// number named by node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ZtunnelAdmins {
    pub default: Option<String>,
    pub by_node: BTreeMap<String, String>,
}

impl ZtunnelAdmins {
    /// Reads `URL` and `NODE=URL` arguments.
    pub fn parse(args: &[String]) -> Result<Self, LocalError> {
        let mut out = ZtunnelAdmins::default();
        for arg in args {
            let arg = arg.trim();
            let (node, url) = match arg.split_once('=') {
                Some((node, url)) if !node.contains("://") => (Some(node.trim()), url.trim()),
                _ => (None, arg),
            };
            if url.is_empty() || !url.contains("://") || node.is_some_and(str::is_empty) {
                return Err(LocalError::BadZtunnelAdmin(arg.to_string()));
            }
            match node {
                Some(node) => {
                    out.by_node.insert(node.to_string(), url.to_string());
                }
                None => out.default = Some(url.to_string()),
            }
        }
        Ok(out)
    }

    pub fn is_empty(&self) -> bool {
        self.default.is_none() && self.by_node.is_empty()
    }

    /// Every endpoint, with its node name when given.
    pub fn all(&self) -> Vec<(Option<String>, String)> {
        self.by_node
            .iter()
            .map(|(n, u)| (Some(n.clone()), u.clone()))
            .chain(self.default.iter().map(|u| (None, u.clone())))
            .collect()
    }
}

/// Everything local mode reaches.
#[derive(Clone, Debug)]
pub struct LocalEnv {
    pub config_dir: PathBuf,
    pub istiod: Option<IstiodClient>,
    pub ztunnels: ZtunnelAdmins,
    /// `status.json` files (or agent state directories) of the node agents.
    pub cni_status: Vec<PathBuf>,
}

/// What writing an object into the configuration directory did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    Created(PathBuf),
    Updated(PathBuf),
    Unchanged(PathBuf),
}

impl PutOutcome {
    pub fn path(&self) -> &Path {
        match self {
            PutOutcome::Created(p) | PutOutcome::Updated(p) | PutOutcome::Unchanged(p) => p,
        }
    }

    pub fn verb(&self) -> &'static str {
        match self {
            PutOutcome::Created(_) => "created",
            PutOutcome::Updated(_) => "updated",
            PutOutcome::Unchanged(_) => "unchanged",
        }
    }
}

/// What a label change did to the manifest defining the object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelChange {
    /// The file edited or created; `None` when nothing needed writing and no file defines it.
    pub file: Option<PathBuf>,
    pub created: bool,
    pub edit: EditReport,
}

impl LocalEnv {
    /// Reads the configuration directory as istiod would.
    pub fn snapshot(&self) -> Result<Snapshot, LocalError> {
        if !self.config_dir.is_dir() {
            return Err(LocalError::NoConfigDir(self.config_dir.clone()));
        }
        Ok(DirSource::load_once(&self.config_dir))
    }

    /// The file meshctl writes a new object of `what` into.
    pub fn generated_path(&self, what: &str, namespace: &str, name: &str) -> PathBuf {
        let stem = if namespace.is_empty() {
            format!("{GENERATED_PREFIX}{what}-{name}")
        } else {
            format!("{GENERATED_PREFIX}{what}-{namespace}-{name}")
        };
        self.config_dir.join(format!("{stem}.yaml"))
    }

    /// Fails when the manifest of `key` exists but does not parse (writing a second definition
    /// would hide the problem).
    pub fn check_not_broken(&self, snap: &Snapshot, key: &ObjectKey) -> Result<(), LocalError> {
        let label = key.to_string();
        match snap
            .issues
            .iter()
            .find(|i| i.object.as_deref() == Some(label.as_str()))
        {
            Some(issue) => Err(LocalError::BrokenManifest {
                key: label,
                file: issue.file.clone(),
                reason: issue.reason.clone(),
                dir: self.config_dir.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Sets or removes a label of a Namespace where its manifest lives; writes a Namespace
    /// manifest when none exists and a label is to be set.
    pub fn set_namespace_label(
        &self,
        snap: &Snapshot,
        namespace: &str,
        label: &str,
        value: Option<&str>,
    ) -> Result<LabelChange, LocalError> {
        let key = ObjectKey::new(kind::NAMESPACE, "", namespace);
        self.check_not_broken(snap, &key)?;
        if let Some(file) = snap.sources.get(&key) {
            let mut manifest = ManifestFile::read(file)?;
            let edit = manifest.set_label(&key, label, value)?;
            if edit.changed {
                manifest.write()?;
            }
            return Ok(LabelChange {
                file: Some(file.clone()),
                created: false,
                edit,
            });
        }
        let Some(value) = value else {
            return Ok(LabelChange::default());
        };
        let path = self.generated_path("namespace", "", namespace);
        if path.exists() {
            return Err(LocalError::Occupied {
                path,
                key: key.to_string(),
            });
        }
        let yaml = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {namespace}\n  labels:\n    \
             {label}: {}\n",
            manifest::yaml_string(value)
        );
        manifest::write_atomic(&path, yaml.as_bytes())?;
        Ok(LabelChange {
            file: Some(path),
            created: true,
            edit: EditReport {
                changed: true,
                reformatted: false,
            },
        })
    }

    /// Writes `yaml` (the manifest of `key`): into the file that defines `key` already,
    /// replacing that document, or else into `new_file`.
    pub fn put_object(
        &self,
        snap: &Snapshot,
        key: &ObjectKey,
        yaml: &str,
        new_file: &Path,
    ) -> Result<PutOutcome, LocalError> {
        self.check_not_broken(snap, key)?;
        if let Some(file) = snap.sources.get(key) {
            let wanted = Snapshot::from_yaml(file, yaml);
            if wanted.get(key) == snap.get(key) {
                return Ok(PutOutcome::Unchanged(file.clone()));
            }
            let mut manifest = ManifestFile::read(file)?;
            manifest.replace(key, yaml)?;
            manifest.write()?;
            return Ok(PutOutcome::Updated(file.clone()));
        }
        let mut manifest = if new_file.exists() {
            ManifestFile::read(new_file)?
        } else {
            ManifestFile::empty(new_file)
        };
        if !manifest.is_blank() {
            return Err(LocalError::Occupied {
                path: new_file.to_path_buf(),
                key: key.to_string(),
            });
        }
        manifest.append(yaml);
        manifest.write()?;
        Ok(PutOutcome::Created(new_file.to_path_buf()))
    }

    /// Removes the document defining `key`; a file meshctl generated is deleted once empty.
    /// Returns the file and whether it was deleted.
    pub fn delete_object(
        &self,
        snap: &Snapshot,
        key: &ObjectKey,
    ) -> Result<(PathBuf, bool), LocalError> {
        let Some(file) = snap.sources.get(key) else {
            return Err(LocalError::NotFound {
                key: key.to_string(),
                dir: self.config_dir.clone(),
            });
        };
        let mut manifest = ManifestFile::read(file)?;
        manifest.remove(key)?;
        let generated = file
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(GENERATED_PREFIX));
        if generated && manifest.is_blank() {
            std::fs::remove_file(file).map_err(|source| ManifestError::Write {
                path: file.clone(),
                source,
            })?;
            return Ok((file.clone(), true));
        }
        manifest.write()?;
        Ok((file.clone(), false))
    }

    /// The status of every node agent given with `--cni-status`.
    pub fn cni_statuses(&self) -> Result<Vec<AgentStatus>, LocalError> {
        self.cni_status
            .iter()
            .map(|p| cni_status::read(p).map_err(LocalError::from))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ztunnel_admin_arguments() {
        let z = ZtunnelAdmins::parse(&[
            "http://127.0.0.1:15000".into(),
            "node2=http://10.0.0.2:15000".into(),
        ])
        .expect("valid");
        assert_eq!(z.default.as_deref(), Some("http://127.0.0.1:15000"));
        assert_eq!(z.by_node["node2"], "http://10.0.0.2:15000");
        assert_eq!(z.all().len(), 2);
        for bad in ["node1=", "=http://x:1", "127.0.0.1:15000"] {
            let err = ZtunnelAdmins::parse(&[bad.into()]).expect_err(bad);
            assert!(err.to_string().contains("NODE=URL"), "{err}");
        }
    }
}
