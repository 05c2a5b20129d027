//! Upstream connections: HTTP/1.1 or HTTP/2 spoken over an HBONE tunnel (mutual TLS with the
//! waypoint's certificate, the backend workload's identity required of the peer) to the
//! endpoint's ztunnel at `<pod ip>:15008`, `:authority` = `<pod ip>:<target port>`. Endpoints
//! outside the mesh are reached over plain TCP.
//!
//! HTTP/1.1 connections carry one request at a time and go back to an idle list when the
//! response body has been read to the end; HTTP/2 connections are shared by concurrent
//! requests. Tunnels themselves ride on pooled HBONE connections. Connections are kept per
//! (backend service, endpoint address, endpoint identity), so per-service connection limits can
//! be enforced (see [`super::circuit`]).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use identity::{CertificateManager, Identity, PeerPolicy};
use mesh_proto::hbone::{H2Stream, HboneError, Pool, PoolKey};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use ztunnel::state::Tunnel;

use super::circuit::{ConnectionPermit, ServiceCircuit};
use super::endpoints::Endpoint;
use super::retry::AttemptBody;
use super::{ProxyError, ProxySettings};

/// Which HTTP version to speak to a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamProtocol {
    Http1,
    Http2,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct ConnKey {
    service: String,
    target: SocketAddr,
    /// `None` for plaintext endpoints.
    identity: Option<Identity>,
}

struct H1Conn {
    sender: http1::SendRequest<AttemptBody>,
    idle_since: Instant,
    _permit: ConnectionPermit,
}

struct H2Conn {
    sender: http2::SendRequest<AttemptBody>,
    _permit: ConnectionPermit,
}

struct Inner {
    hbone: Pool,
    certs: CertificateManager,
    me: Identity,
    hbone_port: u16,
    idle_timeout: Duration,
    h1: Mutex<HashMap<ConnKey, Vec<H1Conn>>>,
    h2: Mutex<HashMap<ConnKey, H2Conn>>,
}

/// Upstream connection pools. Cheap to clone.
#[derive(Clone)]
pub struct Upstreams {
    inner: Arc<Inner>,
}

impl Upstreams {
    pub fn new(settings: &ProxySettings, certs: CertificateManager) -> Self {
        Upstreams {
            inner: Arc::new(Inner {
                hbone: Pool::new(settings.pool.clone()),
                certs,
                me: settings.identity.clone(),
                hbone_port: settings.hbone_port,
                idle_timeout: settings.upstream_idle_timeout,
                h1: Mutex::new(HashMap::new()),
                h2: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Open HBONE connections (TLS) to destination ztunnels.
    pub fn hbone_connections(&self) -> usize {
        self.inner.hbone.connections()
    }

    /// Opens a byte stream to `ep`: an HBONE tunnel, or TCP for endpoints outside the mesh.
    pub async fn open(&self, ep: &Endpoint) -> Result<Io, ProxyError> {
        let w = &ep.workload;
        if w.tunnel == Tunnel::None {
            return TcpStream::connect(ep.target)
                .await
                .map(Io::Tcp)
                .map_err(|source| ProxyError::ConnectTcp {
                    addr: ep.target,
                    source,
                });
        }
        let key = PoolKey {
            src: self.inner.me.clone(),
            dst: w.identity.clone(),
            dst_addr: SocketAddr::new(ep.target.ip(), self.inner.hbone_port),
        };
        let certs = self.inner.certs.clone();
        let me = self.inner.me.clone();
        let peer = w.identity.clone();
        let tls = move || async move {
            let cert = certs.fetch(&me).await.map_err(HboneError::certificate)?;
            identity::client_config(&cert, PeerPolicy::only(peer)).map_err(HboneError::certificate)
        };
        self.inner
            .hbone
            .connect(key, ep.target, http::HeaderMap::new(), tls)
            .await
            .map(Io::Hbone)
            .map_err(|source| ProxyError::Connect {
                addr: ep.target,
                source,
            })
    }

    /// Sends one request to `ep` and returns the response once its headers arrived.
    pub async fn send(
        &self,
        circuit: &Arc<ServiceCircuit>,
        ep: &Endpoint,
        protocol: UpstreamProtocol,
        req: Request<AttemptBody>,
    ) -> Result<Response<UpstreamBody>, ProxyError> {
        let key = ConnKey {
            service: circuit.service().to_string(),
            target: ep.target,
            identity: (ep.workload.tunnel == Tunnel::Hbone).then(|| ep.workload.identity.clone()),
        };
        match protocol {
            UpstreamProtocol::Http1 => self.send_h1(circuit, ep, key, req).await,
            UpstreamProtocol::Http2 => self.send_h2(circuit, ep, key, req).await,
        }
    }

    async fn send_h1(
        &self,
        circuit: &Arc<ServiceCircuit>,
        ep: &Endpoint,
        key: ConnKey,
        mut req: Request<AttemptBody>,
    ) -> Result<Response<UpstreamBody>, ProxyError> {
        let upstream_err = |source| ProxyError::Upstream {
            addr: ep.target,
            source,
        };
        // A pooled connection the backend closed meanwhile fails before the request is sent;
        // the request then goes over a new connection.
        while let Some(mut conn) = self.checkout_h1(&key).await {
            match conn.sender.try_send_request(req).await {
                Ok(resp) => return Ok(self.wrap_h1(key, conn, resp)),
                Err(mut e) => match e.take_message() {
                    Some(r) => {
                        tracing::debug!(error = %e.error(), "pooled upstream connection failed; using another");
                        req = r;
                    }
                    None => return Err(upstream_err(e.into_error())),
                },
            }
        }
        let permit = self.connection_permit(circuit)?;
        let io = self.open(ep).await?;
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(io))
            .await
            .map_err(upstream_err)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream HTTP/1.1 connection ended with an error");
            }
        });
        let mut conn = H1Conn {
            sender,
            idle_since: Instant::now(),
            _permit: permit,
        };
        let resp = conn.sender.send_request(req).await.map_err(upstream_err)?;
        Ok(self.wrap_h1(key, conn, resp))
    }

    fn wrap_h1(
        &self,
        key: ConnKey,
        conn: H1Conn,
        resp: Response<Incoming>,
    ) -> Response<UpstreamBody> {
        let (parts, body) = resp.into_parts();
        let release = Release {
            pool: Arc::downgrade(&self.inner),
            key,
            conn,
        };
        let release = if body.is_end_stream() {
            release.give_back();
            None
        } else {
            Some(release)
        };
        let body = UpstreamBody {
            inner: body,
            release,
        };
        Response::from_parts(parts, body)
    }

    /// An idle connection of `key` ready for a request.
    async fn checkout_h1(&self, key: &ConnKey) -> Option<H1Conn> {
        loop {
            let mut conn = {
                let mut idle = self.inner.h1.lock();
                let list = idle.get_mut(key)?;
                let c = list.pop();
                if list.is_empty() {
                    idle.remove(key);
                }
                c?
            };
            if conn.sender.is_closed() || conn.idle_since.elapsed() >= self.inner.idle_timeout {
                continue;
            }
            if conn.sender.ready().await.is_ok() {
                return Some(conn);
            }
        }
    }

    /// Counts a new connection for `circuit`, closing an idle one of the same service when at
    /// the limit.
    fn connection_permit(
        &self,
        circuit: &Arc<ServiceCircuit>,
    ) -> Result<ConnectionPermit, ProxyError> {
        if let Some(p) = circuit.open_connection() {
            return Ok(p);
        }
        let evicted = {
            let mut idle = self.inner.h1.lock();
            let key = idle
                .keys()
                .find(|k| k.service == circuit.service())
                .cloned();
            key.and_then(|k| {
                let list = idle.get_mut(&k)?;
                let c = list.pop();
                if list.is_empty() {
                    idle.remove(&k);
                }
                c
            })
        };
        drop(evicted);
        circuit.open_connection().ok_or_else(|| {
            ProxyError::Overflow(format!("{}: connection limit reached", circuit.service()))
        })
    }

    async fn send_h2(
        &self,
        circuit: &Arc<ServiceCircuit>,
        ep: &Endpoint,
        key: ConnKey,
        req: Request<AttemptBody>,
    ) -> Result<Response<UpstreamBody>, ProxyError> {
        let upstream_err = |source| ProxyError::Upstream {
            addr: ep.target,
            source,
        };
        let existing = {
            let mut conns = self.inner.h2.lock();
            match conns.get(&key) {
                Some(c) if !c.sender.is_closed() => Some(c.sender.clone()),
                Some(_) => {
                    // Closed: give its place in the connection count back before redialling.
                    conns.remove(&key);
                    None
                }
                None => None,
            }
        };
        let mut sender = match existing {
            Some(s) => s,
            None => {
                let permit = self.connection_permit(circuit)?;
                let io = self.open(ep).await?;
                let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .keep_alive_interval(Duration::from_secs(30))
                    .handshake(TokioIo::new(io))
                    .await
                    .map_err(upstream_err)?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "upstream HTTP/2 connection ended with an error");
                    }
                });
                self.inner.h2.lock().insert(
                    key,
                    H2Conn {
                        sender: sender.clone(),
                        _permit: permit,
                    },
                );
                sender
            }
        };
        sender.ready().await.map_err(upstream_err)?;
        let resp = sender.send_request(req).await.map_err(upstream_err)?;
        let (parts, body) = resp.into_parts();
        Ok(Response::from_parts(
            parts,
            UpstreamBody {
                inner: body,
                release: None,
            },
        ))
    }

    /// Closes idle HTTP/1.1 connections past the idle timeout and forgets closed HTTP/2 ones.
    pub fn sweep_idle(&self) {
        let timeout = self.inner.idle_timeout;
        let dropped: Vec<H1Conn> = {
            let mut idle = self.inner.h1.lock();
            let mut out = Vec::new();
            for list in idle.values_mut() {
                let (keep, expired): (Vec<_>, Vec<_>) = std::mem::take(list)
                    .into_iter()
                    .partition(|c| !c.sender.is_closed() && c.idle_since.elapsed() < timeout);
                *list = keep;
                out.extend(expired);
            }
            idle.retain(|_, l| !l.is_empty());
            out
        };
        drop(dropped);
        self.inner.h2.lock().retain(|_, c| !c.sender.is_closed());
    }
}

/// Returns an HTTP/1.1 connection to the idle list once its response has been read.
struct Release {
    pool: Weak<Inner>,
    key: ConnKey,
    conn: H1Conn,
}

impl Release {
    fn give_back(self) {
        let Some(pool) = self.pool.upgrade() else {
            return;
        };
        if self.conn.sender.is_closed() {
            return;
        }
        let mut conn = self.conn;
        conn.idle_since = Instant::now();
        pool.h1.lock().entry(self.key).or_default().push(conn);
    }
}

/// A response body from a backend.
pub struct UpstreamBody {
    inner: Incoming,
    release: Option<Release>,
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        let finished = match &r {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => this.inner.is_end_stream(),
            Poll::Ready(Some(Err(_))) => {
                this.release = None;
                false
            }
            Poll::Pending => false,
        };
        if finished && let Some(rel) = this.release.take() {
            rel.give_back();
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A byte stream to an endpoint.
#[derive(Debug)]
pub enum Io {
    Hbone(H2Stream),
    Tcp(TcpStream),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Hbone(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tcp(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Hbone(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tcp(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Hbone(s) => Pin::new(s).poll_flush(cx),
            Io::Tcp(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Hbone(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tcp(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
