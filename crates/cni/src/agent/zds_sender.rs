//! Hands pods to ztunnel over ZDS: the pod's identity and a descriptor of its network namespace.

use std::collections::BTreeSet;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use mesh_proto::zds::{WorkloadInfo, ZdsError, ZdsServer, ZdsServerOptions, ZdsStatus};
use tokio::sync::watch;

use super::netns::Netns;

/// A pod as ztunnel needs to know it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodWorkload {
    /// Key of the workload in ZDS: the pod's uid (`<namespace>/<name>` when it has none).
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub service_account: String,
}

impl PodWorkload {
    fn info(&self) -> WorkloadInfo {
        WorkloadInfo {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            service_account: self.service_account.clone(),
        }
    }
}

/// The agent's ZDS endpoint.
pub struct ZdsSender {
    server: ZdsServer,
}

impl ZdsSender {
    /// Listens on `path`; `restored` (pods enrolled before this process started) go into every
    /// snapshot so that a reconnecting ztunnel keeps serving them.
    pub fn bind(
        path: impl Into<PathBuf>,
        opts: ZdsServerOptions,
        restored: Vec<(PodWorkload, OwnedFd)>,
    ) -> Result<Self, ZdsError> {
        let initial = restored
            .into_iter()
            .map(|(w, fd)| (w.uid.clone(), w.info(), Some(fd)));
        Ok(Self {
            server: ZdsServer::bind_with(path, opts, initial)?,
        })
    }

    /// Sends the pod with its namespace and waits for ztunnel's ack.
    pub async fn add(&self, pod: &PodWorkload, netns: &Netns) -> Result<(), ZdsError> {
        let fd = netns.try_clone_fd()?;
        self.server.add(&pod.uid, pod.info(), fd).await
    }

    /// Tells ztunnel to stop serving the pod.
    pub async fn del(&self, uid: &str) -> Result<(), ZdsError> {
        self.server.del(uid).await
    }

    /// UIDs ztunnel has (or gets in its next snapshot).
    pub async fn known(&self) -> BTreeSet<String> {
        self.server.workloads().await.into_iter().collect()
    }

    pub fn status(&self) -> watch::Receiver<ZdsStatus> {
        self.server.status()
    }
}
