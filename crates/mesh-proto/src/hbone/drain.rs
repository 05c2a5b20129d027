//! Graceful-shutdown signal shared by listeners, connections and streams.

use std::future::Future;

use tokio::sync::watch;

/// Starts a drain and waits for it to finish. Dropping the trigger also signals the drain.
#[derive(Debug)]
pub struct DrainTrigger {
    tx: watch::Sender<bool>,
}

/// A cloneable handle held by every task that must finish before a drain completes.
#[derive(Clone, Debug)]
pub struct Drain {
    rx: watch::Receiver<bool>,
}

impl Drain {
    /// A new signal: the trigger starts the drain, the `Drain` is cloned into tasks.
    pub fn new() -> (DrainTrigger, Drain) {
        let (tx, rx) = watch::channel(false);
        (DrainTrigger { tx }, Drain { rx })
    }

    /// Resolves once the drain has started (or the trigger was dropped).
    pub async fn signaled(&self) {
        let mut rx = self.rx.clone();
        // An error means the trigger is gone, which counts as a drain.
        let _ = rx.wait_for(|draining| *draining).await;
    }

    /// Whether the drain has started.
    pub fn is_draining(&self) -> bool {
        *self.rx.borrow() || self.rx.has_changed().is_err()
    }
}

impl DrainTrigger {
    /// Signals every holder at once, and returns a future that completes when all `Drain`
    /// handles have been dropped.
    pub fn drain(self) -> impl Future<Output = ()> + Send + 'static {
        self.tx.send_replace(true);
        async move { self.tx.closed().await }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn drain_waits_for_every_holder() {
        let (trigger, drain) = Drain::new();
        let holder = drain.clone();
        assert!(!drain.is_draining());
        let task = tokio::spawn(async move {
            holder.signaled().await;
            assert!(holder.is_draining());
            // Keeps the handle a little after the signal, as a connection finishing would.
            tokio::task::yield_now().await;
            drop(holder);
        });
        drop(drain);
        tokio::time::timeout(Duration::from_secs(5), trigger.drain())
            .await
            .expect("drain completes once holders are gone");
        task.await.expect("holder task");
    }

    #[tokio::test]
    async fn dropped_trigger_counts_as_drain() {
        let (trigger, drain) = Drain::new();
        drop(trigger);
        assert!(drain.is_draining());
        tokio::time::timeout(Duration::from_secs(5), drain.signaled())
            .await
            .expect("signaled after trigger drop");
    }
}
