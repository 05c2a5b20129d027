//! HBONE server: mutual-TLS accept loop and CONNECT stream dispatch.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2::RecvStream;
use h2::server::SendResponse;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use identity::Identity;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::Instrument;

use super::drain::Drain;
use super::error::HboneError;
use super::info::ConnectionInfo;
use super::settings::{self, SERVER_HANDSHAKE_TIMEOUT};
use super::stream::H2Stream;

/// Pause after a failed `accept()` (for example out of file descriptors) before trying again.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// One CONNECT request, as seen by a [`Handler`].
#[derive(Clone, Debug)]
pub struct InboundRequest {
    /// SPIFFE identity from the client certificate.
    pub peer_identity: Identity,
    /// TCP peer of the TLS connection.
    pub peer_addr: SocketAddr,
    /// Local address the TLS connection was accepted on.
    pub local_addr: SocketAddr,
    /// Destination from the `:authority` pseudo-header.
    pub target: SocketAddr,
    /// Request headers (pseudo-headers excluded).
    pub headers: HeaderMap,
}

/// Answers a CONNECT request: [`Responder::accept`] (200, then bytes flow) or
/// [`Responder::reject`]. Dropping it unanswered replies 503.
#[derive(Debug)]
pub struct Responder {
    respond: Option<SendResponse<Bytes>>,
    recv: Option<RecvStream>,
    info: Arc<ConnectionInfo>,
}

impl Responder {
    /// The connection the request arrived on.
    pub fn connection(&self) -> &Arc<ConnectionInfo> {
        &self.info
    }

    /// Replies 200 and returns the tunnel.
    pub fn accept(mut self) -> Result<H2Stream, HboneError> {
        let (Some(mut respond), Some(recv)) = (self.respond.take(), self.recv.take()) else {
            return Err(HboneError::Cancelled);
        };
        let send = respond.send_response(Response::new(()), false)?;
        Ok(H2Stream::new(send, recv, self.info.clone(), None))
    }

    /// Replies with `status` (for example 401, 403 or 503) and ends the stream. A 2xx status
    /// would read as success to the client, so it is replaced by 500.
    pub fn reject(mut self, status: StatusCode) {
        let status = if status.is_success() {
            tracing::warn!(%status, "reject called with a success status; replying 500");
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            status
        };
        if let Some(respond) = self.respond.take() {
            reply(respond, status);
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if let Some(respond) = self.respond.take() {
            tracing::debug!("CONNECT request dropped unanswered; replying 503");
            reply(respond, StatusCode::SERVICE_UNAVAILABLE);
        }
    }
}

/// Decides what to do with each CONNECT request of a connection.
pub trait Handler: Clone + Send + Sync + 'static {
    fn handle(&self, req: InboundRequest, resp: Responder) -> impl Future<Output = ()> + Send;
}

impl<F, Fut> Handler for F
where
    F: Fn(InboundRequest, Responder) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    fn handle(&self, req: InboundRequest, resp: Responder) -> impl Future<Output = ()> + Send {
        self(req, resp)
    }
}

/// Serves every CONNECT stream of one accepted TLS connection until the client closes it or
/// `drain` fires; on drain it sends GOAWAY and waits for open streams to finish. Each request
/// runs `handler` in its own task. Non-CONNECT requests get 405, a bad authority 400.
pub async fn serve_connection<H: Handler>(
    tls: TlsStream<TcpStream>,
    handler: H,
    drain: Drain,
) -> Result<(), HboneError> {
    let info = {
        let (tcp, conn) = tls.get_ref();
        Arc::new(ConnectionInfo::from_tls(tcp, conn)?)
    };
    tracing::debug!(peer_identity = %info.peer_identity, "HBONE connection established");
    let mut conn = tokio::time::timeout(
        SERVER_HANDSHAKE_TIMEOUT,
        settings::server_builder().handshake::<_, Bytes>(tls),
    )
    .await
    .map_err(|_| HboneError::Timeout {
        what: "HTTP/2 server handshake",
        after: SERVER_HANDSHAKE_TIMEOUT,
    })??;

    let mut signaled = pin!(drain.signaled());
    let mut draining = false;
    loop {
        let next = tokio::select! {
            next = conn.accept() => next,
            () = &mut signaled, if !draining => {
                tracing::debug!("draining HBONE connection");
                draining = true;
                conn.graceful_shutdown();
                continue;
            }
        };
        match next {
            None => return Ok(()),
            Some(Ok((request, respond))) => {
                let task = handle_request(
                    request,
                    respond,
                    info.clone(),
                    handler.clone(),
                    drain.clone(),
                );
                tokio::spawn(task.in_current_span());
            }
            Some(Err(e)) if e.is_go_away() && e.reason() == Some(h2::Reason::NO_ERROR) => {
                return Ok(());
            }
            Some(Err(e)) => return Err(e.into()),
        }
    }
}

/// Accepts TCP connections until `drain` fires. Each connection gets a task that completes the
/// TLS handshake with the config `tls` returns at that moment (so rotated certificates apply to
/// new connections) and then runs [`serve_connection`].
pub async fn serve<H, T>(listener: TcpListener, tls: T, handler: H, drain: Drain)
where
    H: Handler,
    T: Fn() -> Arc<rustls::ServerConfig> + Send + Sync + 'static,
{
    let mut next_id: u64 = 0;
    loop {
        let accepted = tokio::select! {
            () = drain.signaled() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "HBONE accept failed");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                continue;
            }
        };
        next_id += 1;
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "setting TCP_NODELAY failed");
        }
        let acceptor = TlsAcceptor::from(tls());
        let span = tracing::debug_span!("hbone_inbound", conn = next_id, %peer);
        tokio::spawn(
            accept_connection(acceptor, tcp, handler.clone(), drain.clone()).instrument(span),
        );
    }
    tracing::debug!("HBONE listener stopped");
}

async fn accept_connection<H: Handler>(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    handler: H,
    drain: Drain,
) {
    let tls = match tokio::time::timeout(SERVER_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "HBONE TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::warn!(after = ?SERVER_HANDSHAKE_TIMEOUT, "HBONE TLS handshake timed out");
            return;
        }
    };
    match serve_connection(tls, handler, drain).await {
        Ok(()) => tracing::debug!("HBONE connection closed"),
        Err(e) => tracing::debug!(error = %e, "HBONE connection ended with an error"),
    }
}

async fn handle_request<H: Handler>(
    request: Request<RecvStream>,
    respond: SendResponse<Bytes>,
    info: Arc<ConnectionInfo>,
    handler: H,
    _drain: Drain,
) {
    let (parts, body) = request.into_parts();
    if parts.method != Method::CONNECT {
        tracing::debug!(method = %parts.method, "non-CONNECT request on the HBONE port");
        reply(respond, StatusCode::METHOD_NOT_ALLOWED);
        return;
    }
    let authority = parts.uri.authority().map(|a| a.as_str()).unwrap_or("");
    let target = match parse_authority(authority) {
        Ok(target) => target,
        Err(e) => {
            tracing::debug!(error = %e, "rejecting CONNECT");
            reply(respond, StatusCode::BAD_REQUEST);
            return;
        }
    };
    let req = InboundRequest {
        peer_identity: info.peer_identity.clone(),
        peer_addr: info.peer_addr,
        local_addr: info.local_addr,
        target,
        headers: parts.headers,
    };
    let responder = Responder {
        respond: Some(respond),
        recv: Some(body),
        info,
    };
    handler.handle(req, responder).await;
}

/// Parses a CONNECT authority: `ip:port`, with IPv6 in brackets (`[::1]:80`).
pub fn parse_authority(authority: &str) -> Result<SocketAddr, HboneError> {
    authority
        .parse()
        .map_err(|_| HboneError::BadAuthority(authority.to_string()))
}

fn reply(mut respond: SendResponse<Bytes>, status: StatusCode) {
    let mut response = Response::new(());
    *response.status_mut() = status;
    if let Err(e) = respond.send_response(response, true) {
        tracing::debug!(error = %e, %status, "sending CONNECT response failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_is_ip_and_port() {
        assert_eq!(
            parse_authority("10.1.2.3:8080").expect("v4"),
            SocketAddr::from(([10, 1, 2, 3], 8080))
        );
        assert_eq!(
            parse_authority("[fd00::7]:443").expect("v6"),
            "[fd00::7]:443".parse::<SocketAddr>().expect("addr")
        );
        for bad in [
            "example.com:80",
            "10.1.2.3",
            "fd00::7:443",
            "",
            "10.1.2.3:99999",
        ] {
            let err = parse_authority(bad).expect_err(bad);
            assert!(err.to_string().contains("expected ip:port"), "{err}");
        }
    }
}
