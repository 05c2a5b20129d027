//! Raw HBONE connection setup, in process: per tunnel a fresh TCP connection to a ztunnel's
//! port 15008, the mutual TLS 1.3 and HTTP/2 handshakes, one CONNECT to the target with a
//! one-byte echo through it, then close. Nothing is pooled, so every tunnel costs the ztunnel a
//! full handshake. The client certificate is signed with the mesh CA's key (the harness's istiod
//! keeps it in its CA directory), for an identity of the trust domain.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use identity::{CertificateAuthority, Identity, PeerPolicy};
use mesh_proto::hbone;
use tokio::net::TcpStream;

use super::{FirstError, IO_TIMEOUT, RateReport, close_with_reset, echo_byte};
use crate::bench::error::BenchError;

/// Where to connect: the ztunnel's HBONE listener, and the `ip:port` each CONNECT asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub hbone: SocketAddr,
    pub authority: SocketAddr,
}

/// Who the client is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// Directory of the mesh CA (`root-cert.pem`, `root-key.pem`).
    pub ca_dir: PathBuf,
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
}

/// The client TLS configuration: a fresh certificate for the identity, accepting any server of
/// the trust domain.
pub fn client_tls(id: &ClientIdentity) -> Result<Arc<rustls::ClientConfig>, BenchError> {
    for f in ["root-cert.pem", "root-key.pem"] {
        let p = id.ca_dir.join(f);
        if !p.exists() {
            return Err(BenchError::tool(
                "hbone client",
                format!("no {} (the mesh CA directory)", p.display()),
            ));
        }
    }
    let fail = |e: String| BenchError::tool("hbone client", e);
    let ca = CertificateAuthority::load_or_create(Path::new(&id.ca_dir), &id.trust_domain)
        .map_err(|e| fail(e.to_string()))?;
    let me = Identity::new(&id.trust_domain, &id.namespace, &id.service_account);
    let cert = ca
        .issue(&me, Duration::from_secs(3600))
        .map_err(|e| fail(e.to_string()))?;
    identity::client_config(&cert, PeerPolicy::AnyInTrustDomain(id.trust_domain.clone()))
        .map_err(|e| fail(e.to_string()))
}

/// Opens one tunnel over a new connection and checks it with an echo.
pub async fn one(target: Target, tls: Arc<rustls::ClientConfig>) -> Result<(), String> {
    let tcp = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(target.hbone))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect {}: {e}", target.hbone))?;
    close_with_reset(&tcp);
    let opened = tokio::time::timeout(
        IO_TIMEOUT,
        hbone::connect_once(tcp, tls, target.authority, http::HeaderMap::new()),
    )
    .await
    .map_err(|_| "HBONE handshake timed out".to_string())?;
    let (mut stream, task) = opened.map_err(|e| format!("HBONE: {e}"))?;
    let echoed = echo_byte(&mut stream).await;
    drop(stream);
    task.abort();
    echoed.map_err(|e| format!("echo through the tunnel: {e}"))
}

/// Opens tunnels `concurrency` at a time for `duration`.
pub async fn run(
    target: Target,
    tls: Arc<rustls::ClientConfig>,
    duration: Duration,
    concurrency: usize,
) -> RateReport {
    let start = Instant::now();
    let deadline = start + duration;
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first = FirstError::default();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (done, errors, first, tls) = (done.clone(), errors.clone(), first.clone(), tls.clone());
        tasks.spawn(async move {
            while Instant::now() < deadline {
                match one(target, tls.clone()).await {
                    Ok(()) => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        first.set(e);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    RateReport::new(
        done.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
        start.elapsed().as_secs_f64(),
        first.get(),
    )
}
