//! A directory of YAML manifests as a configuration source, watched by polling.
//!
//! Every `*.yaml` / `*.yml` file below the directory is read (hidden files and directories, such
//! as a mounted ConfigMap's `..data`, are skipped). When a file stops parsing, its objects keep
//! their last good version: per object when the broken document still names its object, per
//! file when the file is not YAML at all. Each problem is reported as a [`ConfigIssue`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::objects::{Object, ObjectKey};
use crate::parse::parse_manifests;
use crate::snapshot::{ConfigIssue, Snapshot};
use crate::source::ConfigSource;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config directory {dir}: {source}")]
    Dir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("config directory {0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("cannot start the config directory watcher: {0}")]
    Spawn(std::io::Error),
}

/// A file modified this recently is read again at every scan even if its size and timestamp look
/// unchanged, since file-system timestamps are coarser than successive writes.
const RECENT: Duration = Duration::from_secs(2);

/// Watches a directory of manifests and publishes a snapshot on every change.
#[derive(Debug)]
pub struct DirSource {
    rx: watch::Receiver<Arc<Snapshot>>,
    // Dropping this sender stops the watcher thread.
    _stop: mpsc::Sender<()>,
}

impl DirSource {
    /// Loads `dir` (recursively, `*.yaml|*.yml`, multi-document), then watches it, checking every
    /// `interval`, and publishes a new snapshot on change. Never panics on bad manifests.
    pub fn start(dir: PathBuf, interval: Duration) -> Result<Self, ConfigError> {
        let meta = std::fs::metadata(&dir).map_err(|source| ConfigError::Dir {
            dir: dir.clone(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(ConfigError::NotADirectory(dir));
        }
        let mut state = DirState::default();
        state.scan(&dir);
        let mut generation = 1;
        let (tx, rx) = watch::channel(Arc::new(state.snapshot(generation)));
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("config-dir-watch".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stop_rx.recv_timeout(interval) {
                    if state.scan(&dir) {
                        generation += 1;
                        let snap = state.snapshot(generation);
                        tracing::info!(
                            dir = %dir.display(),
                            generation,
                            objects = snap.objects.len(),
                            issues = snap.issues.len(),
                            "configuration changed"
                        );
                        tx.send_replace(Arc::new(snap));
                    }
                }
            })
            .map_err(ConfigError::Spawn)?;
        Ok(DirSource { rx, _stop: stop_tx })
    }

    /// Reads `dir` once (for `meshctl analyze` and tests). A missing directory is an issue.
    pub fn load_once(dir: &Path) -> Snapshot {
        let mut state = DirState::default();
        state.scan(dir);
        state.snapshot(1)
    }

    /// The snapshot published last.
    pub fn current(&self) -> Arc<Snapshot> {
        self.rx.borrow().clone()
    }
}

impl ConfigSource for DirSource {
    fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.rx.clone()
    }
}

/// What a `stat` says about a file; any difference means it may have changed (the inode and
/// change time catch replacements and permission fixes that keep size and modification time).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Fingerprint {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
    changed: (i64, i64),
}

impl Fingerprint {
    fn of(m: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Fingerprint {
            modified: m.modified().ok(),
            len: m.len(),
            inode: m.ino(),
            changed: (m.ctime(), m.ctime_nsec()),
        }
    }
}

#[derive(Debug, Default)]
struct FileState {
    fingerprint: Option<Fingerprint>,
    /// `None` until the file has been read successfully (and after a failed read).
    content: Option<Vec<u8>>,
    /// Last good version of each object of the file.
    objects: BTreeMap<ObjectKey, Object>,
    issues: Vec<ConfigIssue>,
}

#[derive(Debug, Default)]
struct DirState {
    files: BTreeMap<PathBuf, FileState>,
    /// Problems with the directory itself.
    dir_issue: Option<ConfigIssue>,
}

impl DirState {
    /// Reads what changed since the last scan; returns whether the snapshot changed.
    fn scan(&mut self, dir: &Path) -> bool {
        let mut found = Vec::new();
        if let Err(e) = list_manifests(dir, &mut found) {
            // Keep serving what was read before; report the directory problem once.
            let issue = ConfigIssue {
                file: dir.to_path_buf(),
                object: None,
                reason: format!("cannot read directory: {e}"),
            };
            let changed = self.dir_issue.as_ref() != Some(&issue);
            if changed {
                tracing::warn!(%issue, "config directory unreadable; keeping the last good state");
            }
            self.dir_issue = Some(issue);
            return changed;
        }
        let mut changed = self.dir_issue.take().is_some();
        let before = self.files.len();
        let present: std::collections::HashSet<&PathBuf> = found.iter().collect();
        self.files.retain(|path, _| present.contains(path));
        changed |= self.files.len() != before;
        let now = SystemTime::now();
        for path in found {
            let state = self.files.entry(path.clone()).or_default();
            changed |= state.refresh(&path, now);
        }
        changed
    }

    fn snapshot(&self, generation: u64) -> Snapshot {
        let mut snap = Snapshot {
            generation,
            ..Default::default()
        };
        snap.issues.extend(self.dir_issue.iter().cloned());
        for (path, file) in &self.files {
            snap.issues.extend(file.issues.iter().cloned());
            for (key, obj) in &file.objects {
                if let Some(first) = snap.sources.get(key) {
                    snap.issues.push(ConfigIssue {
                        file: path.clone(),
                        object: Some(key.to_string()),
                        reason: format!("duplicate of the object in {}; ignored", first.display()),
                    });
                    continue;
                }
                snap.sources.insert(key.clone(), path.clone());
                snap.objects.insert(key.clone(), obj.clone());
            }
        }
        snap
    }
}

impl FileState {
    /// Re-reads the file if it may have changed; returns whether its objects or issues changed.
    fn refresh(&mut self, path: &Path, now: SystemTime) -> bool {
        let fingerprint = std::fs::metadata(path).ok().map(|m| Fingerprint::of(&m));
        let recent = fingerprint
            .as_ref()
            .and_then(|f| f.modified)
            .is_none_or(|m| now.duration_since(m).map_or(true, |age| age < RECENT));
        // A file whose last read failed is retried at every scan.
        if self.content.is_some()
            && fingerprint.is_some()
            && fingerprint == self.fingerprint
            && !recent
        {
            return false;
        }
        self.fingerprint = fingerprint;
        let content = match std::fs::read(path) {
            Ok(c) => c,
            Err(e) => {
                self.content = None;
                return self.set_issues(vec![ConfigIssue {
                    file: path.to_path_buf(),
                    object: None,
                    reason: format!("cannot read file (keeping its last good objects): {e}"),
                }]);
            }
        };
        if self.content.as_ref() == Some(&content) {
            return false;
        }
        let changed = self.parse(path, &content);
        self.content = Some(content);
        changed
    }

    fn parse(&mut self, path: &Path, content: &[u8]) -> bool {
        let text = match std::str::from_utf8(content) {
            Ok(t) => t,
            Err(e) => {
                return self.set_issues(vec![ConfigIssue {
                    file: path.to_path_buf(),
                    object: None,
                    reason: format!("not UTF-8 (keeping its last good objects): {e}"),
                }]);
            }
        };
        let parsed = parse_manifests(text);
        let mut objects = BTreeMap::new();
        let mut issues = Vec::new();
        let whole_file_failed = parsed.errors.iter().any(|e| e.document.is_none());
        for err in &parsed.errors {
            let kept = match &err.key {
                Some(key) => self.objects.get(key).cloned(),
                None => None,
            };
            let note = if kept.is_some() || (whole_file_failed && !self.objects.is_empty()) {
                " (keeping the last good version)"
            } else {
                ""
            };
            issues.push(ConfigIssue {
                file: path.to_path_buf(),
                object: err.object_label(),
                reason: format!("{}{note}", err.reason),
            });
            if let (Some(key), Some(obj)) = (&err.key, kept) {
                objects.insert(key.clone(), obj);
            }
        }
        if whole_file_failed {
            objects = self.objects.clone();
        } else {
            for obj in parsed.objects {
                let key = obj.key();
                if objects.contains_key(&key) {
                    issues.push(ConfigIssue {
                        file: path.to_path_buf(),
                        object: Some(key.to_string()),
                        reason: "defined twice in this file; the first definition is used".into(),
                    });
                    continue;
                }
                objects.insert(key, obj);
            }
        }
        for issue in &issues {
            tracing::warn!(%issue, "invalid configuration");
        }
        let changed = self.objects != objects || issues != self.issues;
        self.objects = objects;
        self.issues = issues;
        changed
    }

    fn set_issues(&mut self, issues: Vec<ConfigIssue>) -> bool {
        for issue in &issues {
            tracing::warn!(%issue, "invalid configuration");
        }
        let changed = issues != self.issues;
        self.issues = issues;
        changed
    }
}

/// Collects manifest files below `dir` in a stable order.
fn list_manifests(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        // Follow symbolic links (mounted ConfigMaps link every file).
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            // An unreadable subdirectory must not hide the rest of the tree.
            if let Err(e) = list_manifests(&path, out) {
                tracing::warn!(dir = %path.display(), error = %e, "skipping unreadable directory");
            }
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
