//! What the watches have seen, kind by kind, and the snapshot built from it.
//!
//! A watch (re)starting lists every object of its kind; the listing is buffered and replaces
//! the kind's objects only once complete, so a snapshot never holds half a listing. An object
//! the mesh cannot read keeps its last good version, as in the manifest directory, and is
//! reported as an issue. A kind that cannot be watched (its CRD is not installed, or RBAC
//! forbids it) counts as empty and is reported too.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::kube::kinds::WatchedKind;
use crate::objects::{Object, ObjectKey};
use crate::snapshot::{ConfigIssue, Snapshot};

/// The `file` of the issues this source reports (objects from the API server have no file).
pub const ORIGIN: &str = "kubernetes-api";

/// An object the mesh cannot read, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Invalid {
    pub key: ObjectKey,
    pub reason: String,
}

/// What a watch reports.
#[derive(Debug)]
pub(crate) enum Update {
    /// The watch (re)started; a listing follows, ended by [`Update::Listed`].
    Relist(WatchedKind),
    /// An object was listed, added or changed.
    Applied(WatchedKind, Result<Object, Invalid>),
    Deleted(WatchedKind, ObjectKey),
    /// The listing that [`Update::Relist`] announced is complete.
    Listed(WatchedKind),
    /// The kind cannot be watched (not served, or forbidden); its objects are dropped.
    Unavailable(WatchedKind, String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    /// Never listed yet.
    Pending,
    Synced,
    Unavailable(String),
}

#[derive(Clone, Debug, Default, PartialEq)]
struct Objects {
    objects: BTreeMap<ObjectKey, Object>,
    /// Objects the mesh cannot read: the reason (the last good version, if any, is kept).
    invalid: BTreeMap<ObjectKey, String>,
}

impl Objects {
    /// Records `update`; `last_good` supplies the version kept for an invalid object.
    fn apply(&mut self, update: Result<Object, Invalid>, last_good: Option<&Objects>) {
        match update {
            Ok(obj) => {
                let key = obj.key();
                self.invalid.remove(&key);
                self.objects.insert(key, obj);
            }
            Err(Invalid { key, reason }) => {
                let kept = last_good.unwrap_or(self).objects.get(&key).cloned();
                match kept {
                    Some(obj) => {
                        self.objects.insert(key.clone(), obj);
                        self.invalid
                            .insert(key, format!("{reason} (keeping the last good version)"));
                    }
                    None => {
                        self.invalid.insert(key, reason);
                    }
                }
            }
        }
    }

    fn remove(&mut self, key: &ObjectKey) {
        self.objects.remove(key);
        self.invalid.remove(key);
    }
}

#[derive(Debug)]
struct KindState {
    phase: Phase,
    live: Objects,
    /// The listing in progress, if any.
    listing: Option<Objects>,
}

/// The state of every watched kind.
#[derive(Debug)]
pub(crate) struct Store {
    kinds: BTreeMap<WatchedKind, KindState>,
}

impl Store {
    pub fn new(kinds: &[WatchedKind]) -> Self {
        Store {
            kinds: kinds
                .iter()
                .map(|k| {
                    let state = KindState {
                        phase: Phase::Pending,
                        live: Objects::default(),
                        listing: None,
                    };
                    (*k, state)
                })
                .collect(),
        }
    }

    /// Applies an update; returns whether the next snapshot differs.
    pub fn apply(&mut self, update: Update) -> bool {
        let kind = match &update {
            Update::Relist(k)
            | Update::Applied(k, _)
            | Update::Deleted(k, _)
            | Update::Listed(k)
            | Update::Unavailable(k, _) => *k,
        };
        let Some(state) = self.kinds.get_mut(&kind) else {
            return false;
        };
        match update {
            Update::Relist(_) => {
                state.listing = Some(Objects::default());
                false
            }
            Update::Applied(_, obj) => match &mut state.listing {
                Some(listing) => {
                    listing.apply(obj, Some(&state.live));
                    false
                }
                None => {
                    let before = state.live.clone();
                    state.live.apply(obj, None);
                    before != state.live
                }
            },
            Update::Deleted(_, key) => {
                if let Some(listing) = &mut state.listing {
                    listing.remove(&key);
                }
                let known =
                    state.live.objects.contains_key(&key) || state.live.invalid.contains_key(&key);
                state.live.remove(&key);
                known
            }
            Update::Listed(_) => {
                let listed = state.listing.take().unwrap_or_default();
                let changed = state.phase != Phase::Synced || listed != state.live;
                state.live = listed;
                state.phase = Phase::Synced;
                changed
            }
            Update::Unavailable(_, reason) => {
                let phase = Phase::Unavailable(reason);
                let changed = state.phase != phase || state.live != Objects::default();
                state.phase = phase;
                state.live = Objects::default();
                state.listing = None;
                changed
            }
        }
    }

    /// Whether every kind has been listed once or found unavailable.
    pub fn settled(&self) -> bool {
        self.kinds.values().all(|s| s.phase != Phase::Pending)
    }

    /// Kinds not listed yet.
    pub fn pending(&self) -> Vec<WatchedKind> {
        self.kinds
            .iter()
            .filter(|(_, s)| s.phase == Phase::Pending)
            .map(|(k, _)| *k)
            .collect()
    }

    pub fn snapshot(&self, generation: u64) -> Snapshot {
        let mut snap = Snapshot {
            generation,
            ..Default::default()
        };
        for (kind, state) in &self.kinds {
            if let Phase::Unavailable(reason) = &state.phase {
                snap.issues.push(ConfigIssue {
                    file: PathBuf::from(ORIGIN),
                    object: None,
                    reason: format!(
                        "{} ({kind} objects) cannot be watched, so none are served: {reason}",
                        kind.resource_label()
                    ),
                });
            }
            for (key, obj) in &state.live.objects {
                snap.objects.insert(key.clone(), obj.clone());
            }
            for (key, reason) in &state.live.invalid {
                snap.issues.push(ConfigIssue {
                    file: PathBuf::from(ORIGIN),
                    object: Some(key.to_string()),
                    reason: reason.clone(),
                });
            }
        }
        snap
    }
}

#[cfg(test)]
mod tests;
