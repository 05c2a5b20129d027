//! The resources an xDS server holds, with change notification for the streams serving them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use prost_types::Any;
use tokio::sync::Notify;

/// One stored resource.
#[derive(Debug)]
pub(crate) struct StoredResource {
    /// Version string sent to clients: a digest of the resource's type URL and bytes, so that it
    /// is stable across server restarts and equal versions always mean equal content.
    pub(crate) version: String,
    pub(crate) any: Any,
}

/// The resources the server holds: per type URL, name -> (version, `Any`). Cheap to clone.
#[derive(Clone, Default)]
pub struct ResourceStore {
    inner: Arc<StoreInner>,
}

#[derive(Default)]
struct StoreInner {
    state: RwLock<StoreState>,
    watchers: Mutex<HashMap<u64, Arc<WatchShared>>>,
    next_watch_id: AtomicU64,
}

#[derive(Default)]
struct StoreState {
    version: u64,
    types: HashMap<String, BTreeMap<String, Arc<StoredResource>>>,
}

impl std::fmt::Debug for ResourceStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.inner.state.read();
        let mut d = f.debug_struct("ResourceStore");
        d.field("version", &state.version);
        for (type_url, resources) in &state.types {
            d.field(type_url, &resources.len());
        }
        d.finish()
    }
}

impl ResourceStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Atomically upserts and removes resources of one type. Only resources whose bytes changed
    /// get a new version; subscribers are notified of exactly the changed names. Returns the
    /// store-wide version after the change (unchanged when nothing changed). A name both upserted
    /// and removed ends up removed.
    pub fn apply(&self, type_url: &str, upserts: Vec<(String, Any)>, removals: Vec<String>) -> u64 {
        self.update(type_url, upserts, Removals::Names(removals))
    }

    /// Replaces the whole set of one type: names absent from `all` are removed.
    pub fn replace_all(&self, type_url: &str, all: Vec<(String, Any)>) -> u64 {
        self.update(type_url, all, Removals::AllOthers)
    }

    /// The version string and content of one resource.
    pub fn get(&self, type_url: &str, name: &str) -> Option<(String, Any)> {
        let state = self.inner.state.read();
        let r = state.types.get(type_url)?.get(name)?;
        Some((r.version.clone(), r.any.clone()))
    }

    /// Names of all resources of one type, sorted.
    pub fn names(&self, type_url: &str) -> Vec<String> {
        let state = self.inner.state.read();
        state
            .types
            .get(type_url)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The current store-wide version (0 before the first change).
    pub fn version(&self) -> u64 {
        self.inner.state.read().version
    }

    fn update(&self, type_url: &str, upserts: Vec<(String, Any)>, removals: Removals) -> u64 {
        let mut changed: HashSet<String> = HashSet::new();
        let version = {
            let mut state = self.inner.state.write();
            let next = state.version + 1;
            let map = state.types.entry(type_url.to_owned()).or_default();

            let mut keep: HashSet<&str> = HashSet::new();
            let mut to_insert = Vec::new();
            for (name, any) in &upserts {
                keep.insert(name.as_str());
                let same = map
                    .get(name)
                    .is_some_and(|r| r.any.type_url == any.type_url && r.any.value == any.value);
                if !same {
                    to_insert.push((name.clone(), any.clone()));
                }
            }
            let to_remove: Vec<String> = match removals {
                Removals::Names(names) => names,
                Removals::AllOthers => map
                    .keys()
                    .filter(|n| !keep.contains(n.as_str()))
                    .cloned()
                    .collect(),
            };
            for (name, any) in to_insert {
                let version = content_version(&any);
                changed.insert(name.clone());
                map.insert(name, Arc::new(StoredResource { version, any }));
            }
            for name in to_remove {
                if map.remove(&name).is_some() {
                    changed.insert(name);
                }
            }
            if map.is_empty() {
                state.types.remove(type_url);
            }
            if !changed.is_empty() {
                state.version = next;
            }
            state.version
        };
        if !changed.is_empty() {
            tracing::debug!(
                type_url,
                changed = changed.len(),
                version,
                "resources changed"
            );
            self.notify(type_url, &changed);
        }
        version
    }

    fn notify(&self, type_url: &str, names: &HashSet<String>) {
        let watchers = self.inner.watchers.lock();
        for w in watchers.values() {
            w.mark_dirty(type_url, names);
        }
    }

    /// Registers a watcher that records the names that change (for the types it declares
    /// interest in) until it is dropped.
    pub(crate) fn watch(&self) -> Watch {
        let id = self.inner.next_watch_id.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::new(WatchShared::default());
        self.inner.watchers.lock().insert(id, shared.clone());
        Watch {
            store: self.clone(),
            id,
            shared,
        }
    }

    /// Runs `f` against a consistent view of one type.
    pub(crate) fn read<R>(&self, type_url: &str, f: impl FnOnce(&TypeView<'_>) -> R) -> R {
        let state = self.inner.state.read();
        let view = TypeView {
            version: state.version,
            resources: state.types.get(type_url),
        };
        f(&view)
    }
}

enum Removals {
    Names(Vec<String>),
    AllOthers,
}

/// A read-locked view of one type's resources.
pub(crate) struct TypeView<'a> {
    pub(crate) version: u64,
    resources: Option<&'a BTreeMap<String, Arc<StoredResource>>>,
}

impl TypeView<'_> {
    pub(crate) fn get(&self, name: &str) -> Option<&Arc<StoredResource>> {
        self.resources?.get(name)
    }

    pub(crate) fn names(&self) -> impl Iterator<Item = &String> {
        self.resources.into_iter().flat_map(|m| m.keys())
    }
}

/// The version string of a resource: the first 128 bits of SHA-256 over its type URL and bytes.
fn content_version(any: &Any) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(&(any.type_url.len() as u64).to_be_bytes());
    ctx.update(any.type_url.as_bytes());
    ctx.update(&any.value);
    let digest = ctx.finish();
    digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[derive(Default)]
struct WatchShared {
    state: Mutex<WatchState>,
    notify: Notify,
}

#[derive(Default)]
struct WatchState {
    interested: HashSet<String>,
    dirty: HashMap<String, HashSet<String>>,
}

impl WatchShared {
    fn mark_dirty(&self, type_url: &str, names: &HashSet<String>) {
        let mut st = self.state.lock();
        if !st.interested.contains(type_url) {
            return;
        }
        st.dirty
            .entry(type_url.to_owned())
            .or_default()
            .extend(names.iter().cloned());
        drop(st);
        self.notify.notify_one();
    }
}

/// A registration for change notifications; unregisters on drop. Pending changes coalesce: a
/// burst of writes to the same names leaves one entry per name, so a slow reader never makes
/// the writer wait or the backlog grow past the number of resources.
pub(crate) struct Watch {
    store: ResourceStore,
    id: u64,
    shared: Arc<WatchShared>,
}

impl Watch {
    /// Starts recording changes of `type_url`. Call before reading the type's initial state so
    /// that no change is missed.
    pub(crate) fn add_interest(&self, type_url: &str) {
        self.shared
            .state
            .lock()
            .interested
            .insert(type_url.to_owned());
    }

    /// Waits until changes are pending (returns at once if some already are).
    pub(crate) async fn changed(&self) {
        self.shared.notify.notified().await;
    }

    /// Takes the pending changed names, per type URL.
    pub(crate) fn take(&self) -> HashMap<String, HashSet<String>> {
        std::mem::take(&mut self.shared.state.lock().dirty)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.store.inner.watchers.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "type.googleapis.com/test.Thing";

    fn any(v: &[u8]) -> Any {
        Any {
            type_url: T.to_owned(),
            value: v.to_vec(),
        }
    }

    #[test]
    fn unchanged_bytes_keep_their_version() {
        let store = ResourceStore::new();
        let v1 = store.apply(
            T,
            vec![("a".into(), any(b"1")), ("b".into(), any(b"2"))],
            vec![],
        );
        let (va, _) = store.get(T, "a").expect("a stored");
        let v2 = store.apply(T, vec![("a".into(), any(b"1"))], vec![]);
        assert_eq!(v1, v2, "a no-op write must not bump the store version");
        assert_eq!(store.get(T, "a").expect("a stored").0, va);
        let v3 = store.apply(T, vec![("a".into(), any(b"3"))], vec![]);
        assert!(v3 > v2);
        assert_ne!(store.get(T, "a").expect("a stored").0, va);
    }

    #[test]
    fn equal_content_has_equal_version_across_stores() {
        let s1 = ResourceStore::new();
        let s2 = ResourceStore::new();
        s1.apply(T, vec![("x".into(), any(b"0"))], vec![]);
        s1.apply(T, vec![("a".into(), any(b"1"))], vec![]);
        s2.apply(T, vec![("a".into(), any(b"1"))], vec![]);
        assert_eq!(s1.get(T, "a").map(|r| r.0), s2.get(T, "a").map(|r| r.0));
    }

    #[test]
    fn replace_all_removes_missing_names_and_notifies_only_changes() {
        let store = ResourceStore::new();
        store.apply(
            T,
            vec![("a".into(), any(b"1")), ("b".into(), any(b"2"))],
            vec![],
        );
        let watch = store.watch();
        watch.add_interest(T);
        store.replace_all(T, vec![("a".into(), any(b"1")), ("c".into(), any(b"3"))]);
        assert_eq!(store.names(T), vec!["a".to_owned(), "c".to_owned()]);
        let dirty = watch.take();
        let mut names: Vec<_> = dirty[T].iter().cloned().collect();
        names.sort();
        assert_eq!(names, vec!["b".to_owned(), "c".to_owned()]);
    }

    #[test]
    fn changes_coalesce_and_uninterested_types_are_not_recorded() {
        let store = ResourceStore::new();
        let watch = store.watch();
        watch.add_interest(T);
        for i in 0..100u8 {
            store.apply(T, vec![("a".into(), any(&[i]))], vec![]);
            store.apply("other", vec![("z".into(), any(&[i]))], vec![]);
        }
        let dirty = watch.take();
        assert_eq!(dirty.len(), 1);
        assert_eq!(dirty[T].len(), 1);
        drop(watch);
        assert!(store.inner.watchers.lock().is_empty());
    }
}
