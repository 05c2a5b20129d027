//! A stand-in for ztunnel: connects to the agent's ZDS socket (again whenever the connection
//! ends), acknowledges everything and reports what it received.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use mesh_proto::zds::{ZdsClient, ZdsMessage};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Connected,
    Add { uid: String, netns_inode: u64 },
    Keep { uid: String },
    Del { uid: String },
    SnapshotSent,
}

fn inode(fd: &OwnedFd) -> u64 {
    std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map(|m| m.ino())
        .unwrap_or(0)
}

pub struct FakeZtunnel {
    rx: mpsc::UnboundedReceiver<Event>,
    task: JoinHandle<()>,
}

impl FakeZtunnel {
    pub fn start(socket: PathBuf) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let Ok(mut client) = ZdsClient::connect(&socket).await else {
                    // Not listening yet (or restarting): try again shortly.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let _ = tx.send(Event::Connected);
                while let Ok(msg) = client.recv().await {
                    let event = match &msg {
                        ZdsMessage::Add { uid, netns, .. } => Event::Add {
                            uid: uid.clone(),
                            netns_inode: inode(netns),
                        },
                        ZdsMessage::Keep { uid } => Event::Keep { uid: uid.clone() },
                        ZdsMessage::Del { uid } => Event::Del { uid: uid.clone() },
                        ZdsMessage::SnapshotSent => Event::SnapshotSent,
                    };
                    if client.ack(Ok(())).await.is_err() {
                        break;
                    }
                    let _ = tx.send(event);
                }
            }
        });
        Self { rx, task }
    }

    /// The next event, failing the test after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Event {
        tokio::time::timeout(timeout, self.rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no ZDS message within {timeout:?}"))
            .expect("fake ztunnel stopped")
    }

    /// Skips connection and end-of-snapshot events; returns the next workload event.
    pub async fn next_workload(&mut self, timeout: Duration) -> Event {
        loop {
            match self.next(timeout).await {
                Event::Connected | Event::SnapshotSent => continue,
                other => return other,
            }
        }
    }
}

impl Drop for FakeZtunnel {
    fn drop(&mut self) {
        self.task.abort();
    }
}
