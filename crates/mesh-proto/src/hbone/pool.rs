//! Client connection pool: HTTP/2 connections shared by many CONNECT streams.
//!
//! Connections are keyed by (source identity, destination identity, destination address). Each
//! carries at most `max_streams_per_conn` streams; when every connection of a key is full, a new
//! one is opened. Callers that arrive while a connection is being established wait for it
//! instead of opening their own. Connections that fail or go away are dropped from the pool, and
//! connections without streams for `idle_timeout` are closed.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use http::HeaderMap;
use identity::Identity;
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tracing::Instrument;

use super::client::{self, ClientConnection, Handshake};
use super::error::HboneError;
use super::info::ConnectionInfo;
use super::stream::H2Stream;

/// Stream attempts per `connect` call when pooled connections turn out to be dead.
const MAX_ATTEMPTS: usize = 3;

/// Which connections may carry a stream.
#[derive(Clone, Hash, Eq, PartialEq, Debug)]
pub struct PoolKey {
    /// Identity presented by this side (selects the client certificate).
    pub src: Identity,
    /// Identity the server must present.
    pub dst: Identity,
    /// HBONE address of the server (`ip:15008`).
    pub dst_addr: SocketAddr,
}

#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// Streams carried by one connection before another is opened.
    pub max_streams_per_conn: u32,
    /// A connection without streams for this long is closed.
    pub idle_timeout: Duration,
    /// Limit for TCP connect, TLS and HTTP/2 handshakes of a new connection.
    pub connect_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_streams_per_conn: 100,
            idle_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// A cloneable handle to a pool of HBONE client connections.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: PoolConfig,
    conns: Mutex<HashMap<PoolKey, Vec<Arc<PooledConn>>>>,
    next_id: AtomicU64,
}

#[derive(Clone)]
enum ConnState {
    Connecting,
    Ready {
        send: SendRequest<Bytes>,
        info: Arc<ConnectionInfo>,
    },
    Failed(Arc<HboneError>),
    Closed,
}

struct PooledConn {
    id: u64,
    key: PoolKey,
    state: watch::Sender<ConnState>,
    /// Stream slots handed out. Only incremented under the pool lock.
    streams: AtomicU32,
    idle_since: Mutex<Instant>,
    /// Signalled when the last stream slot is released.
    released: Notify,
}

/// A stream's claim on a pooled connection, released when the stream is dropped.
pub(crate) struct StreamSlot {
    conn: Arc<PooledConn>,
}

struct Checkout {
    conn: Arc<PooledConn>,
    slot: StreamSlot,
    must_dial: bool,
}

/// Marks a connection attempt as failed if the dialing caller goes away before it finishes, so
/// that callers waiting on it do not wait forever.
struct DialGuard<'a> {
    inner: &'a Inner,
    conn: &'a Arc<PooledConn>,
    armed: bool,
}

impl Pool {
    pub fn new(cfg: PoolConfig) -> Self {
        let cfg = PoolConfig {
            max_streams_per_conn: cfg.max_streams_per_conn.max(1),
            ..cfg
        };
        Self {
            inner: Arc::new(Inner {
                cfg,
                conns: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
            }),
        }
    }

    pub fn config(&self) -> &PoolConfig {
        &self.inner.cfg
    }

    /// Opens a CONNECT stream to `authority` over a pooled connection for `key`. When a new
    /// connection is needed, `tls` is awaited for the client config (only then) and a TCP
    /// connection is made to `key.dst_addr`.
    pub async fn connect<F, Fut>(
        &self,
        key: PoolKey,
        authority: SocketAddr,
        headers: HeaderMap,
        tls: F,
    ) -> Result<H2Stream, HboneError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Arc<rustls::ClientConfig>, HboneError>>,
    {
        let addr = key.dst_addr;
        self.connect_via(key, authority, headers, tls, move || {
            TcpStream::connect(addr)
        })
        .await
    }

    /// Like [`Pool::connect`], with the TCP connection made by `dial` (for example a socket
    /// created in another network namespace) when a new connection is needed.
    pub async fn connect_via<F, Fut, D, DFut>(
        &self,
        key: PoolKey,
        authority: SocketAddr,
        headers: HeaderMap,
        tls: F,
        dial: D,
    ) -> Result<H2Stream, HboneError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Arc<rustls::ClientConfig>, HboneError>>,
        D: FnOnce() -> DFut,
        DFut: Future<Output = io::Result<TcpStream>>,
    {
        let mut dialer = Some((tls, dial));
        let mut last_error = None;
        for _ in 0..MAX_ATTEMPTS {
            let Some(Checkout {
                conn,
                slot,
                must_dial,
            }) = self.inner.checkout(&key, dialer.is_some())
            else {
                break;
            };
            if must_dial {
                let Some((tls, dial)) = dialer.take() else {
                    // `checkout` only asks for a dial when one is available.
                    return Err(HboneError::Cancelled);
                };
                self.establish(&conn, tls, dial).await?;
            }
            let (send, info) = match conn.wait_ready().await {
                ConnState::Ready { send, info } => (send, info),
                ConnState::Failed(e) => return Err(HboneError::Shared(e)),
                ConnState::Connecting | ConnState::Closed => {
                    last_error = Some(HboneError::Io(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "pooled connection closed before use",
                    )));
                    continue;
                }
            };
            match client::open_stream(send, authority, headers.clone(), info, Some(slot)).await {
                Ok(stream) => return Ok(stream),
                Err(HboneError::H2(e)) if stream_never_started(&e) => {
                    // The connection is going away or refusing streams: leave it to finish the
                    // streams it has and use another one.
                    self.inner.retire(&conn, ConnState::Closed);
                    tracing::debug!(
                        error = %e,
                        conn = conn.id,
                        "retrying CONNECT on another connection"
                    );
                    last_error = Some(HboneError::H2(e));
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or(HboneError::Cancelled))
    }

    /// Open HTTP/2 connections (established, not closed), across all keys.
    pub fn connections(&self) -> usize {
        let conns = self.inner.conns.lock();
        conns
            .values()
            .flatten()
            .filter(|c| matches!(*c.state.borrow(), ConnState::Ready { .. }))
            .count()
    }

    /// Dials and handshakes a new connection for `conn`, then publishes it to waiting callers
    /// and spawns its driver task.
    async fn establish<F, Fut, D, DFut>(
        &self,
        conn: &Arc<PooledConn>,
        tls: F,
        dial: D,
    ) -> Result<(), HboneError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Arc<rustls::ClientConfig>, HboneError>>,
        D: FnOnce() -> DFut,
        DFut: Future<Output = io::Result<TcpStream>>,
    {
        let mut guard = DialGuard {
            inner: &self.inner,
            conn,
            armed: true,
        };
        let result = self.dial(&conn.key, tls, dial).await;
        guard.armed = false;
        match result {
            Ok(Handshake {
                send,
                conn: driver,
                info,
            }) => {
                tracing::debug!(
                    conn = conn.id,
                    dst = %conn.key.dst_addr,
                    peer_identity = %info.peer_identity,
                    "HBONE connection established"
                );
                conn.state.send_replace(ConnState::Ready { send, info });
                let span = tracing::debug_span!("hbone_outbound", conn = conn.id, dst = %conn.key.dst_addr);
                tokio::spawn(
                    drive(
                        Arc::downgrade(&self.inner),
                        conn.clone(),
                        driver,
                        self.inner.cfg.idle_timeout,
                    )
                    .instrument(span),
                );
                Ok(())
            }
            Err(e) => {
                tracing::debug!(error = %e, dst = %conn.key.dst_addr, "HBONE connection failed");
                let shared = Arc::new(e);
                self.inner.retire(conn, ConnState::Failed(shared.clone()));
                Err(HboneError::Shared(shared))
            }
        }
    }

    async fn dial<F, Fut, D, DFut>(
        &self,
        key: &PoolKey,
        tls: F,
        dial: D,
    ) -> Result<Handshake, HboneError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Arc<rustls::ClientConfig>, HboneError>>,
        D: FnOnce() -> DFut,
        DFut: Future<Output = io::Result<TcpStream>>,
    {
        let config = tls().await?;
        let timeout = self.inner.cfg.connect_timeout;
        let addr = key.dst_addr;
        let handshake = async {
            let tcp = dial()
                .await
                .map_err(|source| HboneError::Connect { addr, source })?;
            client::handshake(tcp, config).await
        };
        let handshake = tokio::time::timeout(timeout, handshake)
            .await
            .map_err(|_| HboneError::Timeout {
                what: "HBONE connect",
                after: timeout,
            })??;
        if handshake.info.peer_identity != key.dst {
            return Err(HboneError::PeerIdentity {
                addr,
                expected: key.dst.clone(),
                actual: handshake.info.peer_identity.clone(),
            });
        }
        Ok(handshake)
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("cfg", &self.inner.cfg)
            .field("connections", &self.connections())
            .finish()
    }
}

/// Whether an error opening a stream means the server never saw the request, so another
/// connection may be tried.
fn stream_never_started(e: &h2::Error) -> bool {
    e.is_go_away() || e.is_io() || e.reason() == Some(h2::Reason::REFUSED_STREAM)
}

impl Inner {
    /// Claims a stream slot on a connection of `key` with room, or registers a new connection
    /// (to be dialled by the caller) when `can_dial`.
    fn checkout(&self, key: &PoolKey, can_dial: bool) -> Option<Checkout> {
        let max = self.cfg.max_streams_per_conn;
        let mut conns = self.conns.lock();
        if let Some(list) = conns.get(key) {
            for conn in list {
                let usable = matches!(
                    *conn.state.borrow(),
                    ConnState::Connecting | ConnState::Ready { .. }
                );
                if usable && conn.streams.load(Ordering::Acquire) < max {
                    conn.streams.fetch_add(1, Ordering::AcqRel);
                    return Some(Checkout {
                        slot: StreamSlot { conn: conn.clone() },
                        conn: conn.clone(),
                        must_dial: false,
                    });
                }
            }
        }
        if !can_dial {
            return None;
        }
        let conn = Arc::new(PooledConn {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            key: key.clone(),
            state: watch::Sender::new(ConnState::Connecting),
            streams: AtomicU32::new(1),
            idle_since: Mutex::new(Instant::now()),
            released: Notify::new(),
        });
        conns.entry(key.clone()).or_default().push(conn.clone());
        Some(Checkout {
            slot: StreamSlot { conn: conn.clone() },
            conn,
            must_dial: true,
        })
    }

    /// Removes `conn` from the pool and sets its final state (dropping its request handle, so
    /// the HTTP/2 connection closes once its streams are done).
    fn retire(&self, conn: &Arc<PooledConn>, state: ConnState) {
        {
            let mut conns = self.conns.lock();
            if let Some(list) = conns.get_mut(&conn.key) {
                list.retain(|c| !Arc::ptr_eq(c, conn));
                if list.is_empty() {
                    conns.remove(&conn.key);
                }
            }
        }
        conn.state.send_replace(state);
    }

    /// Retires `conn` if it has had no streams for `idle_timeout`.
    fn evict_if_idle(&self, conn: &Arc<PooledConn>, idle_timeout: Duration) -> bool {
        {
            // Slots are only claimed under this lock, so an idle connection stays idle until
            // it has been removed.
            let mut conns = self.conns.lock();
            if conn.streams.load(Ordering::Acquire) != 0
                || conn.idle_since.lock().elapsed() < idle_timeout
            {
                return false;
            }
            if let Some(list) = conns.get_mut(&conn.key) {
                list.retain(|c| !Arc::ptr_eq(c, conn));
                if list.is_empty() {
                    conns.remove(&conn.key);
                }
            }
        }
        tracing::debug!(conn = conn.id, "closing idle HBONE connection");
        conn.state.send_replace(ConnState::Closed);
        true
    }
}

impl PooledConn {
    async fn wait_ready(&self) -> ConnState {
        let mut rx = self.state.subscribe();
        let state = rx
            .wait_for(|s| !matches!(s, ConnState::Connecting))
            .await
            .map(|s| s.clone());
        state.unwrap_or(ConnState::Closed)
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        // Idle time is recorded before the count drops, so an evictor that sees no streams
        // also sees when the last one ended.
        *self.conn.idle_since.lock() = Instant::now();
        if self.conn.streams.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.conn.released.notify_one();
        }
    }
}

impl fmt::Debug for StreamSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamSlot")
            .field("conn", &self.conn.id)
            .finish()
    }
}

impl Drop for DialGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.inner.retire(
                self.conn,
                ConnState::Failed(Arc::new(HboneError::Cancelled)),
            );
        }
    }
}

/// Drives one pooled HTTP/2 connection, closes it after `idle_timeout` without streams, and
/// removes it from the pool when it ends.
async fn drive(
    pool: Weak<Inner>,
    conn: Arc<PooledConn>,
    driver: ClientConnection,
    idle_timeout: Duration,
) {
    let mut driver = pin!(driver);
    let mut evicted = false;
    loop {
        let idle_deadline = (!evicted && conn.streams.load(Ordering::Acquire) == 0)
            .then(|| *conn.idle_since.lock() + idle_timeout);
        let released = conn.released.notified();
        tokio::select! {
            result = &mut driver => {
                match result {
                    Ok(()) => tracing::debug!("HBONE connection closed"),
                    Err(e) => tracing::debug!(error = %e, "HBONE connection ended with an error"),
                }
                break;
            }
            () = released, if !evicted => {}
            () = tokio::time::sleep_until(idle_deadline.unwrap_or_else(Instant::now)),
                if idle_deadline.is_some() =>
            {
                evicted = match pool.upgrade() {
                    Some(pool) => pool.evict_if_idle(&conn, idle_timeout),
                    None => {
                        conn.state.send_replace(ConnState::Closed);
                        true
                    }
                };
            }
        }
    }
    match pool.upgrade() {
        Some(pool) => pool.retire(&conn, ConnState::Closed),
        None => {
            conn.state.send_replace(ConnState::Closed);
        }
    }
}
