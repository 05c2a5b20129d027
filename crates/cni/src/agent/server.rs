//! The agent's socket for the CNI plugin (see [`crate::api`] for the exchange).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::reconcile::Agent;
use crate::api::{MAX_LINE, PluginRequest, PluginResponse};

/// How long a plugin may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("plugin socket {path}: {source}")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The listening socket; dropping it stops serving and removes the socket file.
pub struct PluginServer {
    path: PathBuf,
    /// Inode of our socket file: a socket bound at the same path since is not ours to remove.
    inode: Option<u64>,
    task: JoinHandle<()>,
}

impl Drop for PluginServer {
    fn drop(&mut self) {
        self.task.abort();
        let current = std::fs::metadata(&self.path).ok().map(|m| m.ino());
        if current.is_some() && current == self.inode {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl PluginServer {
    /// Listens on `path` (replacing a stale socket; only root may connect) and serves every
    /// connection with `agent`.
    pub fn start(path: &Path, agent: Arc<Agent>) -> Result<Self, ServerError> {
        let bind_err = |source| ServerError::Bind {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(bind_err)?;
        }
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(bind_err(e)),
        }
        let listener = UnixListener::bind(path).map_err(bind_err)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
        let task = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        tokio::spawn(serve(stream, agent.clone()));
                    }
                    Err(e) => {
                        warn!(error = %e, "plugin socket accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        Ok(Self {
            path: path.to_path_buf(),
            inode: std::fs::metadata(path).ok().map(|m| m.ino()),
            task,
        })
    }
}

async fn serve(stream: UnixStream, agent: Arc<Agent>) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read.take(MAX_LINE as u64));
    let mut line = String::new();
    let response = match tokio::time::timeout(READ_TIMEOUT, reader.read_line(&mut line)).await {
        Err(_) => PluginResponse::Error {
            message: "request not received in time".into(),
        },
        Ok(Err(e)) => PluginResponse::Error {
            message: format!("cannot read the request: {e}"),
        },
        Ok(Ok(_)) => match serde_json::from_str::<PluginRequest>(line.trim_end()) {
            Ok(req) => agent.handle_plugin(req).await,
            Err(e) => PluginResponse::Error {
                message: format!("malformed request: {e}"),
            },
        },
    };
    debug!(?response, "plugin response");
    let mut out = match serde_json::to_vec(&response) {
        Ok(v) => v,
        Err(e) => {
            warn!(error = %e, "cannot encode the plugin response");
            return;
        }
    };
    out.push(b'\n');
    if let Err(e) = write.write_all(&out).await {
        debug!(error = %e, "plugin went away before the answer");
    }
}
