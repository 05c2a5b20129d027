//! The validating admission webhook (HTTPS, port 15017 in Kubernetes mode).
//!
//! - `POST /validate`: an `admission.k8s.io/v1` AdmissionReview for an AuthorizationPolicy or
//!   PeerAuthentication; answered with allowed or denied and a message ([`review`]).
//! - `GET /ready`: 200.
//!
//! The serving certificate ([`cert`]) names `<service>.<namespace>.svc` and is signed by the
//! mesh root, so the ValidatingWebhookConfiguration's `caBundle` is the root certificate; the
//! leader writes it there (see `crate::kube::webhook_config`).

pub mod cert;
pub mod review;
pub mod validate;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use mesh_config::Snapshot;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::model::ModelConfig;
use cert::{WEBHOOK_CERT_TTL, WebhookCert, WebhookCertError};

/// Path of the validation endpoint.
pub const VALIDATE_PATH: &str = "/validate";
/// Largest request body accepted (an object and its old version).
const MAX_BODY: usize = 8 << 20;
/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the webhook listens and the name it serves.
#[derive(Clone, Debug, Serialize)]
pub struct WebhookSettings {
    pub addr: SocketAddr,
    /// `<service>.<namespace>.svc`, the name the API server calls.
    pub host: String,
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookStartError {
    #[error(transparent)]
    Cert(#[from] WebhookCertError),
    #[error("cannot listen on {addr} (webhook): {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Issues the serving certificate (for `host` and `host.<domain suffix>`) from the root in
/// `ca_dir`, binds and starts serving; the tasks end once `stop` turns true. Returns the bound
/// address.
pub async fn start(
    settings: &WebhookSettings,
    ca_dir: &Path,
    state: WebhookState,
    stop: watch::Receiver<bool>,
) -> Result<(SocketAddr, Vec<JoinHandle<()>>), WebhookStartError> {
    let names = vec![
        settings.host.clone(),
        format!("{}.{}", settings.host, state.model.domain_suffix),
    ];
    let cert = WebhookCert::load(ca_dir, names, WEBHOOK_CERT_TTL)?;
    let tls = cert.server_config()?;
    let listener =
        TcpListener::bind(settings.addr)
            .await
            .map_err(|source| WebhookStartError::Bind {
                addr: settings.addr,
                source,
            })?;
    let addr = listener.local_addr().unwrap_or(settings.addr);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let renewal = {
        let stop = stopped(stop.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = cert.run_renewal() => {}
                _ = stop => {}
            }
        })
    };
    let server = tokio::spawn(serve(listener, tls, state, stopped(stop)));
    Ok((addr, vec![renewal, server]))
}

/// What the webhook decides with.
#[derive(Clone)]
pub struct WebhookState {
    pub model: ModelConfig,
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
}

/// Serves the webhook until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: WebhookState,
    shutdown: impl Future<Output = ()>,
) {
    let addr = listener.local_addr().ok();
    tracing::info!(?addr, "serving the validating webhook (HTTPS)");
    let acceptor = TlsAcceptor::from(tls);
    tokio::pin!(shutdown);
    loop {
        let (tcp, remote) = tokio::select! {
            _ = &mut shutdown => return,
            r = listener.accept() => match r {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "webhook accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (acceptor, state) = (acceptor.clone(), state.clone());
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%remote, error = %e, "webhook TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote, "webhook TLS handshake timed out");
                    return;
                }
            };
            let svc = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, req).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(%remote, error = %e, "webhook connection error");
            }
        });
    }
}

/// Answers one HTTP request.
pub async fn handle(state: &WebhookState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/ready") => text(StatusCode::OK, "ready\n"),
        (&Method::POST, VALIDATE_PATH) => {
            let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    return text(
                        StatusCode::BAD_REQUEST,
                        &format!("cannot read the request body: {e}\n"),
                    );
                }
            };
            let snapshot = state.snapshot.borrow().clone();
            match review::review(&body, &state.model, &snapshot) {
                Ok(answer) => match serde_json::to_vec(&answer) {
                    Ok(json) => {
                        let mut resp = Response::new(Full::new(Bytes::from(json)));
                        resp.headers_mut().insert(
                            header::CONTENT_TYPE,
                            header::HeaderValue::from_static("application/json"),
                        );
                        resp
                    }
                    Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
                },
                Err(e) => text(StatusCode::BAD_REQUEST, &format!("{e}\n")),
            }
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "endpoints: POST /validate, GET /ready\n",
        ),
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
