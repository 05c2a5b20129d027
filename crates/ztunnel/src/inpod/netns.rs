//! Running socket operations inside a pod's network namespace.
//!
//! A socket belongs to the network namespace it was created in, whatever thread later uses it.
//! Each pod gets one worker thread that has entered the pod's namespace; ztunnel asks it to
//! create sockets, then drives them from the async runtime like any other.

use std::os::fd::OwnedFd;
use std::sync::mpsc;
use std::thread;

use nix::sched::{CloneFlags, setns};
use tokio::sync::oneshot;

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("cannot enter the network namespace: {0}")]
    Enter(nix::Error),
    #[error("cannot start the namespace worker thread: {0}")]
    Spawn(std::io::Error),
    #[error("the namespace worker thread is gone")]
    Gone,
}

type Job = Box<dyn FnOnce() + Send>;

/// A handle to a network namespace with a worker thread inside it. Cloning shares the thread.
#[derive(Clone, Debug)]
pub struct Netns {
    tx: mpsc::Sender<Job>,
    inode: u64,
}

impl Netns {
    /// Starts a worker thread inside the namespace `fd` refers to.
    pub fn new(fd: OwnedFd, name: &str) -> Result<Self, NetnsError> {
        let inode = nix::sys::stat::fstat(&fd).map(|s| s.st_ino).unwrap_or(0);
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel();
        thread::Builder::new()
            .name(format!("netns-{}", truncate(name)))
            .spawn(move || {
                if let Err(e) = setns(&fd, CloneFlags::CLONE_NEWNET) {
                    let _ = ready_tx.send(Err(NetnsError::Enter(e)));
                    return;
                }
                let _ = ready_tx.send(Ok(()));
                drop(fd);
                while let Ok(job) = rx.recv() {
                    job();
                }
            })
            .map_err(NetnsError::Spawn)?;
        ready_rx.recv().map_err(|_| NetnsError::Gone)??;
        Ok(Netns { tx, inode })
    }

    /// Inode of the namespace, to tell two handles to the same namespace apart from others.
    pub fn inode(&self) -> u64 {
        self.inode
    }

    /// Runs `f` on the worker thread, inside the namespace.
    pub async fn run<F, R>(&self, f: F) -> Result<R, NetnsError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .map_err(|_| NetnsError::Gone)?;
        rx.await.map_err(|_| NetnsError::Gone)
    }
}

fn truncate(s: &str) -> &str {
    let end = s.char_indices().nth(8).map(|(i, _)| i).unwrap_or(s.len());
    &s[..end]
}
