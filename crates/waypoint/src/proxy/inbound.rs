//! The HBONE listener: mutual TLS with the waypoint's certificate, then one task per CONNECT
//! stream. A stream whose target is a VIP and port of a bound service is accepted, its protocol
//! detected, and it is served as HTTP/1.1 or HTTP/2 (hyper) through the request phases, or
//! passed through as TCP. Any other target is refused (404, or 503 before the first
//! configuration) with a log line saying why.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use mesh_proto::hbone::{self, Drain, InboundRequest, Responder};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use super::detect::{self, Detected, Rewind};
use super::phases::{self, Downstream};
use super::{ProxyInputs, passthrough};
use crate::config_model::Protocol;
use crate::telemetry::SourceLabels;

/// Pause after a failed `accept()` before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How often idle upstream connections are swept.
const SWEEP_INTERVAL: Duration = Duration::from_secs(15);

/// Accepts connections on `listener` until `drain` fires.
pub async fn serve(listener: TcpListener, inputs: Arc<ProxyInputs>, drain: Drain) {
    let sweeper = {
        let inputs = inputs.clone();
        let drain = drain.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_INTERVAL);
            loop {
                tokio::select! {
                    () = drain.signaled() => return,
                    _ = tick.tick() => inputs.upstreams.sweep_idle(),
                }
            }
        })
    };
    let mut next_id: u64 = 0;
    loop {
        let accepted = tokio::select! {
            () = drain.signaled() => break,
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        next_id += 1;
        let span = tracing::debug_span!("conn", id = next_id, %peer);
        tokio::spawn(connection(inputs.clone(), tcp, drain.clone()).instrument(span));
    }
    sweeper.abort();
    tracing::debug!("HBONE listener stopped");
}

async fn connection(inputs: Arc<ProxyInputs>, tcp: TcpStream, drain: Drain) {
    let _ = tcp.set_nodelay(true);
    let cfg = match inputs.server_tls().await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "no certificate to serve with; closing the connection");
            return;
        }
    };
    let tls = match tokio::time::timeout(
        hbone::settings::SERVER_HANDSHAKE_TIMEOUT,
        TlsAcceptor::from(cfg).accept(tcp),
    )
    .await
    {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "TLS handshake refused");
            return;
        }
        Err(_) => {
            tracing::warn!("TLS handshake timed out");
            return;
        }
    };
    let handler = {
        let drain = drain.clone();
        move |req: InboundRequest, resp: Responder| {
            let inputs = inputs.clone();
            let drain = drain.clone();
            async move { stream(inputs, req, resp, drain).await }
        }
    };
    if let Err(e) = hbone::serve_connection(tls, handler, drain).await {
        tracing::debug!(error = %e, "HBONE connection ended with an error");
    }
}

/// One CONNECT stream.
async fn stream(inputs: Arc<ProxyInputs>, req: InboundRequest, resp: Responder, drain: Drain) {
    let Some(config) = inputs.waypoint.load_full() else {
        tracing::warn!(target = %req.target, peer = %req.peer_identity, "refusing tunnel: no waypoint configuration received yet");
        resp.reject(http::StatusCode::SERVICE_UNAVAILABLE);
        return;
    };
    let Some((_, port)) = config.service_for(req.target) else {
        tracing::warn!(target = %req.target, peer = %req.peer_identity, "refusing tunnel: the target is not a service bound to this waypoint");
        resp.reject(http::StatusCode::NOT_FOUND);
        return;
    };
    drop(config);
    let mut tunnel = match resp.accept() {
        Ok(t) => t,
        Err(e) => {
            tracing::debug!(error = %e, "client went away before the tunnel opened");
            return;
        }
    };
    let src_workload = inputs
        .state
        .read()
        .workload_by_ip(req.peer_addr.ip())
        .filter(|w| w.identity == req.peer_identity);
    let source = SourceLabels::new(src_workload.as_deref(), &req.peer_identity);
    let (detected, prefix) = if port.protocol == Protocol::Tcp {
        (Detected::Tcp, bytes::Bytes::new())
    } else {
        match detect::detect(&mut tunnel, inputs.settings.detect_timeout).await {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(error = %e, "tunnel failed during protocol detection");
                return;
            }
        }
    };
    let ds = Arc::new(Downstream {
        inputs: inputs.clone(),
        target: req.target,
        peer_identity: req.peer_identity,
        peer_addr: req.peer_addr,
        src_workload,
        source,
        http2: detected == Detected::Http2,
    });
    let io = Rewind::new(prefix, tunnel);
    match detected {
        Detected::Tcp => passthrough::serve(ds, io).await,
        Detected::Http1 | Detected::Http2 => serve_http(ds, io, detected, drain).await,
    }
}

async fn serve_http<S>(ds: Arc<Downstream>, io: S, detected: Detected, drain: Drain)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = {
        let ds = ds.clone();
        service_fn(move |req| {
            let ds = ds.clone();
            async move { Ok::<_, Infallible>(phases::handle(ds, req).await) }
        })
    };
    let io = TokioIo::new(io);
    let result = if detected == Detected::Http2 {
        let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .serve_connection(io, svc);
        tokio::pin!(conn);
        tokio::select! {
            r = conn.as_mut() => r,
            () = drain.signaled() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        }
    } else {
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(60))
            .serve_connection(io, svc);
        tokio::pin!(conn);
        tokio::select! {
            r = conn.as_mut() => r,
            () = drain.signaled() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
}
