//! The interface every configuration source offers, and an in-memory source for tests and tools.

use std::sync::Arc;

use tokio::sync::watch;

use crate::snapshot::Snapshot;

/// A source of configuration snapshots.
pub trait ConfigSource: Send + Sync {
    /// Latest snapshot; each published change wakes the receivers.
    fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>>;
}

/// A source whose snapshots are set by its owner.
#[derive(Debug)]
pub struct StaticSource {
    tx: watch::Sender<Arc<Snapshot>>,
}

impl StaticSource {
    pub fn new(snapshot: Snapshot) -> Self {
        StaticSource {
            tx: watch::Sender::new(Arc::new(snapshot)),
        }
    }

    /// Publishes `snapshot` with the next generation number.
    pub fn set(&self, mut snapshot: Snapshot) {
        self.tx.send_modify(|cur| {
            snapshot.generation = cur.generation + 1;
            *cur = Arc::new(snapshot);
        });
    }

    pub fn current(&self) -> Arc<Snapshot> {
        self.tx.borrow().clone()
    }
}

impl ConfigSource for StaticSource {
    fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.tx.subscribe()
    }
}
