//! The ZDS client loop: connect to the node agent, receive the snapshot then incremental
//! updates, start and stop pod proxies, and ack each message.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use identity::Identity;
use mesh_proto::zds::{WorkloadInfo, ZdsClient, ZdsMessage};
use tokio_util::sync::CancellationToken;

use super::netns::Netns;
use crate::proxy::socket::SocketFactory;
use crate::proxy::{PodProxy, ProxyInputs};

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

pub struct ZdsLoop {
    pub inputs: Arc<ProxyInputs>,
    pub socket: PathBuf,
    pub trust_domain: String,
    /// True once the first snapshot was fully received.
    pub synced: Arc<AtomicBool>,
}

impl ZdsLoop {
    pub async fn run(self, cancel: CancellationToken) {
        let mut backoff = BACKOFF_MIN;
        loop {
            let client = tokio::select! {
                _ = cancel.cancelled() => break,
                c = ZdsClient::connect(&self.socket) => c,
            };
            match client {
                Ok(mut client) => {
                    tracing::info!(socket = %self.socket.display(), "connected to the node agent (ZDS)");
                    backoff = BACKOFF_MIN;
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        r = self.serve(&mut client) => {
                            tracing::warn!(error = %r.err().map(|e| e.to_string()).unwrap_or_default(), "ZDS connection lost; reconnecting");
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(socket = %self.socket.display(), error = %e, "node agent not reachable yet");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
        let pods: Vec<_> = self.inputs.pods.write().drain().map(|(_, p)| p).collect();
        for p in pods {
            p.stop().await;
        }
    }

    async fn serve(&self, client: &mut ZdsClient) -> Result<(), mesh_proto::zds::ZdsError> {
        let mut seen = HashSet::new();
        let mut in_snapshot = true;
        loop {
            let msg = client.recv().await?;
            let result = match msg {
                ZdsMessage::Add { uid, info, netns } => {
                    if in_snapshot {
                        seen.insert(uid.clone());
                    }
                    self.add(uid, info, netns).await
                }
                ZdsMessage::Keep { uid } => {
                    seen.insert(uid);
                    Ok(())
                }
                ZdsMessage::Del { uid } => {
                    self.remove(&uid).await;
                    Ok(())
                }
                ZdsMessage::SnapshotSent => {
                    let stale: Vec<String> = self
                        .inputs
                        .pods
                        .read()
                        .keys()
                        .filter(|u| !seen.contains(*u))
                        .cloned()
                        .collect();
                    for uid in stale {
                        self.remove(&uid).await;
                    }
                    in_snapshot = false;
                    self.synced.store(true, Ordering::Release);
                    Ok(())
                }
            };
            if let Err(e) = &result {
                tracing::warn!(error = %e, "ZDS request failed");
            }
            client.ack(result).await?;
        }
    }

    async fn add(
        &self,
        uid: String,
        info: WorkloadInfo,
        fd: std::os::fd::OwnedFd,
    ) -> Result<(), String> {
        let netns = Netns::new(fd, &info.name).map_err(|e| e.to_string())?;
        if let Some(existing) = self.inputs.pod(&uid) {
            if let crate::proxy::socket::SocketFactory::Pod(ns) = &existing.sockets
                && ns.inode() == netns.inode()
            {
                return Ok(());
            }
            self.remove(&uid).await;
        }
        let sa = if info.service_account.is_empty() {
            "default"
        } else {
            info.service_account.as_str()
        };
        let id = Identity::new(self.trust_domain.clone(), info.namespace.clone(), sa);
        let pod = PodProxy::start(
            self.inputs.clone(),
            uid.clone(),
            info.name.clone(),
            info.namespace.clone(),
            id,
            SocketFactory::Pod(netns),
        )
        .await
        .map_err(|e| {
            format!(
                "cannot start the proxy for pod {}/{}: {e}",
                info.namespace, info.name
            )
        })?;
        self.inputs.pods.write().insert(uid, pod);
        Ok(())
    }

    async fn remove(&self, uid: &str) {
        let pod = self.inputs.pods.write().remove(uid);
        if let Some(pod) = pod {
            let shared = self
                .inputs
                .pods
                .read()
                .values()
                .any(|p| p.identity == pod.identity);
            if !shared {
                self.inputs.certs.forget(&pod.identity);
            }
            pod.stop().await;
        }
    }
}
