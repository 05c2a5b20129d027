//! The Kubernetes API server as a configuration source.
//!
//! One kube-rs watcher per kind (Namespaces, Pods, Services, Nodes, and the Gateway API and
//! Istio security CRDs) feeds a store that publishes the same [`Snapshot`] the manifest
//! directory does: core kinds arrive as k8s-openapi types, custom kinds as dynamic objects
//! converted by the manifest parser ([`crate::parse::parse_object`]), so everything after
//! ingestion is one code path.
//!
//! - The first snapshot is published once every kind has been listed (or found unavailable);
//!   [`KubeSource::start`] waits for it.
//! - Later changes are coalesced for [`KubeSourceOptions::coalesce`] and published as new
//!   generations; consumers debounce further as they see fit.
//! - A kind the API server does not serve (Gateway API CRDs not installed) or that RBAC
//!   forbids counts as empty: the source logs a warning, reports an issue in every snapshot
//!   until it can watch the kind, and retries with backoff while the other kinds are served.
//! - EndpointSlices are not watched: the mesh derives a Service's endpoints from its selector
//!   and the pods, as the manifest directory does, so Services without a selector (manually
//!   managed endpoints) have no endpoints in the mesh.

mod kinds;
mod store;
mod watches;

use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use kube::runtime::watcher;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use kinds::WatchedKind;
pub use store::ORIGIN;

use crate::snapshot::Snapshot;
use crate::source::ConfigSource;
use store::{Store, Update};
use watches::WatchSpec;

#[derive(Debug, thiserror::Error)]
pub enum KubeSourceError {
    #[error(
        "the Kubernetes API server did not list {pending} within {waited:?} (is it reachable, \
         and may this service account list them?)"
    )]
    SyncTimeout { waited: Duration, pending: String },
    #[error("the Kubernetes source stopped before its first snapshot")]
    Stopped,
}

/// What to watch and how.
#[derive(Clone, Debug)]
pub struct KubeSourceOptions {
    pub kinds: Vec<WatchedKind>,
    /// Field selector of the pod watch, e.g. `spec.nodeName=node-1` for a node agent.
    pub pod_field_selector: Option<String>,
    /// Changes arriving within this delay of each other are published as one snapshot.
    pub coalesce: Duration,
    /// How long [`KubeSource::start`] waits for every kind to be listed.
    pub sync_timeout: Duration,
    /// First and longest delay between retries of a failed watch.
    pub retry_min: Duration,
    pub retry_max: Duration,
}

impl Default for KubeSourceOptions {
    fn default() -> Self {
        KubeSourceOptions {
            kinds: WatchedKind::ALL.to_vec(),
            pod_field_selector: None,
            coalesce: Duration::from_millis(50),
            sync_timeout: Duration::from_secs(120),
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(30),
        }
    }
}

/// Watches the API server and publishes a snapshot on every change. Dropping it stops the
/// watches.
#[derive(Debug)]
pub struct KubeSource {
    rx: watch::Receiver<Arc<Snapshot>>,
    tasks: Vec<JoinHandle<()>>,
}

impl KubeSource {
    /// Starts one watch per kind and waits until each kind has been listed or found
    /// unavailable, then returns with the first snapshot published.
    pub async fn start(
        client: Client,
        options: KubeSourceOptions,
    ) -> Result<Self, KubeSourceError> {
        let (updates_tx, updates_rx) = mpsc::channel::<Update>(1024);
        let (tx, mut rx) = watch::channel(Arc::new(Snapshot::default()));
        let mut tasks = Vec::new();
        let mut kinds = options.kinds.clone();
        kinds.sort();
        kinds.dedup();
        for kind in &kinds {
            let mut config = watcher::Config::default();
            if *kind == WatchedKind::Pod
                && let Some(selector) = &options.pod_field_selector
            {
                config = config.fields(selector);
            }
            let spec = WatchSpec {
                kind: *kind,
                config,
                retry_min: options.retry_min,
                retry_max: options.retry_max.max(options.retry_min),
            };
            tasks.push(tokio::spawn(watches::watch_kind(
                client.clone(),
                spec,
                updates_tx.clone(),
            )));
        }
        drop(updates_tx);
        let (pending_tx, pending_rx) = watch::channel(kinds.clone());
        tasks.push(tokio::spawn(publish(
            updates_rx,
            Store::new(&kinds),
            tx,
            pending_tx,
            options.coalesce,
        )));
        let source = KubeSource {
            rx: rx.clone(),
            tasks,
        };
        match tokio::time::timeout(options.sync_timeout, rx.wait_for(|s| s.generation > 0)).await {
            Ok(Ok(_)) => Ok(source),
            Ok(Err(_)) => Err(KubeSourceError::Stopped),
            Err(_) => {
                let pending = pending_rx
                    .borrow()
                    .iter()
                    .map(|k| k.resource_label())
                    .collect::<Vec<_>>()
                    .join(", ");
                Err(KubeSourceError::SyncTimeout {
                    waited: options.sync_timeout,
                    pending,
                })
            }
        }
    }

    /// The snapshot published last.
    pub fn current(&self) -> Arc<Snapshot> {
        self.rx.borrow().clone()
    }
}

impl Drop for KubeSource {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl ConfigSource for KubeSource {
    fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.rx.clone()
    }
}

/// Applies updates and publishes: first once every kind is settled, then after each burst of
/// changes (a burst ends `coalesce` after its first update).
async fn publish(
    mut updates: mpsc::Receiver<Update>,
    mut store: Store,
    tx: watch::Sender<Arc<Snapshot>>,
    pending: watch::Sender<Vec<WatchedKind>>,
    coalesce: Duration,
) {
    let mut generation = 0u64;
    while let Some(update) = updates.recv().await {
        let mut changed = store.apply(update);
        let deadline = tokio::time::Instant::now() + coalesce;
        loop {
            match tokio::time::timeout_at(deadline, updates.recv()).await {
                Ok(Some(update)) => changed |= store.apply(update),
                Ok(None) => return,
                Err(_) => break,
            }
        }
        if generation == 0 {
            pending.send_replace(store.pending());
        }
        if store.settled() && (changed || generation == 0) {
            generation += 1;
            let snap = store.snapshot(generation);
            tracing::info!(
                generation,
                objects = snap.objects.len(),
                issues = snap.issues.len(),
                "configuration changed (Kubernetes)"
            );
            tx.send_replace(Arc::new(snap));
        }
    }
}
