//! The agent's configuration source in Kubernetes mode: two watches (the pods of this node,
//! every namespace) feeding [`NodeObjects`], published as snapshots like the manifest directory
//! source does.

use std::sync::Arc;

use futures::{StreamExt, stream};
use kube::Client;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use mesh_config::k8s_openapi::api::core::v1::{Namespace, Pod};
use mesh_config::{ConfigSource, Snapshot};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::objects::NodeObjects;

/// Watches the API server; dropping it stops the watches.
pub struct KubeSource {
    tx: watch::Sender<Arc<Snapshot>>,
    synced: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl Drop for KubeSource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

enum Update {
    Pod(Result<watcher::Event<Pod>, watcher::Error>),
    Namespace(Result<watcher::Event<Namespace>, watcher::Error>),
}

impl KubeSource {
    /// Starts watching the pods of `node` (field selector `spec.nodeName=<node>`) and every
    /// namespace. The first snapshot is published once both were listed ([`Self::synced`]);
    /// until then subscribers see an empty generation-0 snapshot. Watch errors are logged and
    /// retried with backoff.
    pub fn start(client: Client, node: &str) -> Self {
        let tx = watch::Sender::new(Arc::new(Snapshot::default()));
        let (synced_tx, synced) = watch::channel(false);
        let pods = watcher(
            Api::<Pod>::all(client.clone()),
            watcher::Config::default().fields(&format!("spec.nodeName={node}")),
        )
        .default_backoff()
        .map(Update::Pod);
        let namespaces = watcher(Api::<Namespace>::all(client), watcher::Config::default())
            .default_backoff()
            .map(Update::Namespace);
        let mut updates = stream::select(pods.boxed(), namespaces.boxed());
        let mut objects = NodeObjects::new(node);
        let publish = tx.clone();
        let task = tokio::spawn(async move {
            while let Some(update) = updates.next().await {
                let changed = match update {
                    Update::Pod(Ok(event)) => objects.apply_pod(event),
                    Update::Namespace(Ok(event)) => objects.apply_namespace(event),
                    Update::Pod(Err(e)) => {
                        warn!(error = %e, "watching the pods of this node");
                        false
                    }
                    Update::Namespace(Err(e)) => {
                        warn!(error = %e, "watching namespaces");
                        false
                    }
                };
                if !changed || !objects.synced() {
                    continue;
                }
                let mut snap = objects.snapshot();
                publish.send_modify(|cur| {
                    snap.generation = cur.generation + 1;
                    debug!(
                        generation = snap.generation,
                        objects = snap.objects.len(),
                        "new snapshot"
                    );
                    *cur = Arc::new(snap);
                });
                if !*synced_tx.borrow() {
                    info!("pods and namespaces listed");
                    synced_tx.send_replace(true);
                }
            }
        });
        Self { tx, synced, task }
    }

    /// Resolves once the first complete snapshot is published.
    pub async fn synced(&self) {
        let mut rx = self.synced.clone();
        // The sender lives in the task, which only ends when the source is dropped.
        let _ = rx.wait_for(|s| *s).await;
    }

    /// The latest snapshot.
    pub fn current(&self) -> Arc<Snapshot> {
        self.tx.borrow().clone()
    }
}

impl ConfigSource for KubeSource {
    fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.tx.subscribe()
    }
}
