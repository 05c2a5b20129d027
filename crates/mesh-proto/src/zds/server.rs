//! The node agent's side of ZDS: listens, serves one ztunnel connection at a time (a newer
//! connection replaces the older one and gets a fresh snapshot), and sends workload updates.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tokio::sync::{Mutex, watch};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, info, warn};

use super::seqpacket::{Peek, SeqPacket, SeqPacketListener};
use super::{MAX_MESSAGE_SIZE, WorkloadInfo, ZdsError};
use crate::proto::workload::zds::{
    AddWorkload, DelWorkload, KeepWorkload, SnapshotSent, Version, WorkloadRequest,
    WorkloadResponse, ZdsHello, workload_request, workload_response,
};

/// Timeouts of the agent side.
#[derive(Clone, Debug)]
pub struct ZdsServerOptions {
    /// How long ztunnel may take to acknowledge one request.
    pub ack_timeout: Duration,
    /// How long a new connection may take to say hello.
    pub hello_timeout: Duration,
}

impl Default for ZdsServerOptions {
    fn default() -> Self {
        Self {
            ack_timeout: Duration::from_secs(5),
            hello_timeout: Duration::from_secs(5),
        }
    }
}

/// Whether a ztunnel is connected, and how many connections completed their snapshot so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZdsStatus {
    pub connected: bool,
    pub snapshots: u64,
}

/// Agent side of ZDS. Dropping it stops listening, closes the connection and removes the socket.
pub struct ZdsServer {
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

struct Shared {
    path: PathBuf,
    /// Inode of the socket file we created, so that dropping the server never removes a socket
    /// another process has bound at the same path since.
    inode: Option<u64>,
    opts: ZdsServerOptions,
    state: Mutex<State>,
    status: watch::Sender<ZdsStatus>,
}

#[derive(Default)]
struct State {
    /// What a new connection's snapshot contains: workloads ztunnel acknowledged (or restored).
    workloads: BTreeMap<String, Entry>,
    conn: Option<Current>,
}

struct Current {
    id: u64,
    sock: Arc<SeqPacket>,
}

struct Entry {
    info: WorkloadInfo,
    /// `None`: known but without a netns here; the snapshot says "keep" for it.
    netns: Option<OwnedFd>,
}

impl ZdsServer {
    /// Listens on `path` (a stale socket file there is replaced; missing parent directories are
    /// created). Must be called inside a tokio runtime.
    pub fn bind(path: impl Into<PathBuf>, opts: ZdsServerOptions) -> Result<Self, ZdsError> {
        Self::bind_with(path, opts, Vec::new())
    }

    /// Like [`bind`](Self::bind), with workloads enrolled before this process started: they go
    /// into every snapshot, so a ztunnel connecting now does not drop them. An entry without a
    /// netns is sent as `KeepWorkload`.
    pub fn bind_with(
        path: impl Into<PathBuf>,
        opts: ZdsServerOptions,
        initial: impl IntoIterator<Item = (String, WorkloadInfo, Option<OwnedFd>)>,
    ) -> Result<Self, ZdsError> {
        let path = path.into();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => debug!(path = %path.display(), "removed stale zds socket"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        let listener = SeqPacketListener::bind(&path)?;
        let inode = std::fs::metadata(&path).ok().map(|m| m.ino());
        let workloads = initial
            .into_iter()
            .map(|(uid, info, netns)| (uid, Entry { info, netns }))
            .collect();
        let shared = Arc::new(Shared {
            path,
            inode,
            opts,
            state: Mutex::new(State {
                workloads,
                conn: None,
            }),
            status: watch::Sender::new(ZdsStatus::default()),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        info!(path = %shared.path.display(), "zds server listening");
        Ok(Self { shared, accept })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Connection status; receivers wake on every change.
    pub fn status(&self) -> watch::Receiver<ZdsStatus> {
        self.shared.status.subscribe()
    }

    /// UIDs of the workloads the next snapshot would contain.
    pub async fn workloads(&self) -> Vec<String> {
        self.shared
            .state
            .lock()
            .await
            .workloads
            .keys()
            .cloned()
            .collect()
    }

    /// Sends `AddWorkload` with `netns` to the connected ztunnel and waits for its ack.
    ///
    /// Fails with [`ZdsError::NotConnected`] when no ztunnel is connected and with
    /// [`ZdsError::Rejected`] carrying ztunnel's error text when it refuses. Only acknowledged
    /// workloads are remembered for later snapshots (replacing an older entry for `uid`).
    pub async fn add(&self, uid: &str, info: WorkloadInfo, netns: OwnedFd) -> Result<(), ZdsError> {
        let mut st = self.shared.state.lock().await;
        let req = WorkloadRequest {
            payload: Some(workload_request::Payload::Add(AddWorkload {
                uid: uid.to_string(),
                workload_info: Some(info.clone()),
            })),
        };
        self.shared
            .request_current(&mut st, &req, Some(netns.as_fd()))
            .await?;
        st.workloads.insert(
            uid.to_string(),
            Entry {
                info,
                netns: Some(netns),
            },
        );
        Ok(())
    }

    /// Forgets `uid` and, when a ztunnel is connected, sends it `DelWorkload` and waits for the
    /// ack. Succeeds without a connection: the next snapshot will not name the workload.
    pub async fn del(&self, uid: &str) -> Result<(), ZdsError> {
        let mut st = self.shared.state.lock().await;
        st.workloads.remove(uid);
        if st.conn.is_none() {
            return Ok(());
        }
        let req = WorkloadRequest {
            payload: Some(workload_request::Payload::Del(DelWorkload {
                uid: uid.to_string(),
            })),
        };
        self.shared.request_current(&mut st, &req, None).await
    }
}

impl Drop for ZdsServer {
    fn drop(&mut self) {
        self.accept.abort();
        let current = std::fs::metadata(&self.shared.path).ok().map(|m| m.ino());
        if current.is_some() && current == self.shared.inode {
            let _ = std::fs::remove_file(&self.shared.path);
        }
    }
}

impl Shared {
    /// One request on the current connection; an I/O failure or timeout drops the connection
    /// (a late ack would otherwise answer the next request).
    async fn request_current(
        &self,
        st: &mut State,
        req: &WorkloadRequest,
        fd: Option<BorrowedFd<'_>>,
    ) -> Result<(), ZdsError> {
        let Some(cur) = st.conn.as_ref() else {
            return Err(ZdsError::NotConnected);
        };
        match request(&cur.sock, req, fd, self.opts.ack_timeout).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(text)) => Err(ZdsError::Rejected(text)),
            Err(e) => {
                warn!(error = %e, "zds connection failed; dropping it");
                self.disconnect(st);
                Err(e)
            }
        }
    }

    fn disconnect(&self, st: &mut State) {
        if let Some(old) = st.conn.take() {
            old.sock.shutdown();
            self.status.send_modify(|s| s.connected = false);
        }
    }
}

async fn accept_loop(listener: SeqPacketListener, shared: Arc<Shared>) {
    // Connection tasks live in the set, so aborting this task ends them too.
    let mut conns = JoinSet::new();
    let mut next_id = 0u64;
    loop {
        tokio::select! {
            res = listener.accept() => match res {
                Ok(sock) => {
                    next_id += 1;
                    conns.spawn(serve_connection(shared.clone(), Arc::new(sock), next_id));
                }
                Err(e) => {
                    warn!(error = %e, "zds accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next() => {}
        }
    }
}

async fn serve_connection(shared: Arc<Shared>, sock: Arc<SeqPacket>, id: u64) {
    let hello = tokio::time::timeout(shared.opts.hello_timeout, read_hello(&sock)).await;
    match hello {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            warn!(conn = id, error = %e, "zds hello failed; closing");
            return;
        }
        Err(_) => {
            warn!(conn = id, "no zds hello in time; closing");
            return;
        }
    }
    {
        let mut st = shared.state.lock().await;
        if let Err(e) = send_snapshot(&sock, &st.workloads, shared.opts.ack_timeout).await {
            warn!(conn = id, error = %e, "zds snapshot failed; closing");
            return;
        }
        if let Some(old) = st.conn.replace(Current {
            id,
            sock: sock.clone(),
        }) {
            info!(
                old = old.id,
                new = id,
                "newer ztunnel connection replaces the older one"
            );
            old.sock.shutdown();
        }
        shared.status.send_modify(|s| {
            s.connected = true;
            s.snapshots += 1;
        });
        info!(
            conn = id,
            workloads = st.workloads.len(),
            "ztunnel connected, snapshot sent"
        );
    }
    watch_idle(&shared, &sock, id).await;
}

/// Notices when the peer of the current connection goes away between requests.
async fn watch_idle(shared: &Shared, sock: &SeqPacket, id: u64) {
    loop {
        let ready = sock.readable().await;
        let mut st = shared.state.lock().await;
        if st.conn.as_ref().map(|c| c.id) != Some(id) {
            return;
        }
        if ready.is_err() {
            shared.disconnect(&mut st);
            return;
        }
        match sock.poll_idle() {
            Ok(Peek::Idle) => {}
            Ok(Peek::Unexpected(n)) => {
                warn!(conn = id, bytes = n, "unsolicited zds message dropped");
            }
            Ok(Peek::Closed) => {
                info!(conn = id, "ztunnel disconnected");
                shared.disconnect(&mut st);
                return;
            }
            Err(e) => {
                warn!(conn = id, error = %e, "zds connection failed");
                shared.disconnect(&mut st);
                return;
            }
        }
    }
}

async fn read_hello(sock: &SeqPacket) -> Result<(), ZdsError> {
    let mut buf = vec![0u8; MAX_MESSAGE_SIZE];
    let (n, _fds) = sock.recv(&mut buf).await?;
    if n == 0 {
        return Err(ZdsError::Closed);
    }
    let hello = ZdsHello::decode(&buf[..n])?;
    if hello.version() != Version::V1 {
        return Err(ZdsError::Protocol(format!(
            "unsupported zds version {}",
            hello.version
        )));
    }
    Ok(())
}

async fn send_snapshot(
    sock: &SeqPacket,
    workloads: &BTreeMap<String, Entry>,
    ack_timeout: Duration,
) -> Result<(), ZdsError> {
    for (uid, entry) in workloads {
        let (payload, fd) = match &entry.netns {
            Some(fd) => (
                workload_request::Payload::Add(AddWorkload {
                    uid: uid.clone(),
                    workload_info: Some(entry.info.clone()),
                }),
                Some(fd.as_fd()),
            ),
            None => (
                workload_request::Payload::Keep(KeepWorkload { uid: uid.clone() }),
                None,
            ),
        };
        let req = WorkloadRequest {
            payload: Some(payload),
        };
        if let Err(text) = request(sock, &req, fd, ack_timeout).await? {
            // The workload stays remembered; the agent decides whether to remove it.
            warn!(uid, error = %text, "ztunnel rejected a snapshot workload");
        }
    }
    let done = WorkloadRequest {
        payload: Some(workload_request::Payload::SnapshotSent(SnapshotSent {})),
    };
    request(sock, &done, None, ack_timeout)
        .await?
        .map_err(ZdsError::Rejected)
}

/// Sends one request and waits for its ack: `Ok(Err(text))` when ztunnel answered with an error.
async fn request(
    sock: &SeqPacket,
    req: &WorkloadRequest,
    fd: Option<BorrowedFd<'_>>,
    ack_timeout: Duration,
) -> Result<Result<(), String>, ZdsError> {
    let bytes = req.encode_to_vec();
    if bytes.len() > MAX_MESSAGE_SIZE {
        return Err(ZdsError::Protocol(format!(
            "request of {} bytes exceeds {MAX_MESSAGE_SIZE}",
            bytes.len()
        )));
    }
    sock.send(&bytes, fd).await?;
    let mut buf = vec![0u8; MAX_MESSAGE_SIZE];
    let (n, _fds) = tokio::time::timeout(ack_timeout, sock.recv(&mut buf))
        .await
        .map_err(|_| ZdsError::AckTimeout(ack_timeout))??;
    if n == 0 {
        return Err(ZdsError::Closed);
    }
    match WorkloadResponse::decode(&buf[..n])?.payload {
        Some(workload_response::Payload::Ack(ack)) if ack.error.is_empty() => Ok(Ok(())),
        Some(workload_response::Payload::Ack(ack)) => Ok(Err(ack.error)),
        None => Err(ZdsError::Protocol("response without an ack".into())),
    }
}
