//! Admin (127.0.0.1:15000), metrics (15020) and readiness (15021) HTTP endpoints, on their own
//! tasks away from the data path.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_proto::telemetry::{LogHandle, parse_filter};
use parking_lot::Mutex;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::proxy::ProxyInputs;

type Resp = Response<Full<Bytes>>;

fn text(status: StatusCode, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

fn json(v: &impl Serialize) -> Resp {
    match serde_json::to_vec_pretty(v) {
        Ok(b) => {
            let mut r = text(StatusCode::OK, b);
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                "application/json".parse().expect("static"),
            );
            r
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Serves `handler` on `listener` until cancelled.
pub async fn serve<F>(listener: TcpListener, cancel: CancellationToken, handler: F)
where
    F: Fn(Request<Incoming>) -> Resp + Clone + Send + Sync + 'static,
{
    loop {
        let (stream, _) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r { Ok(s) => s, Err(_) => continue },
        };
        let h = handler.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let h = h.clone();
                async move { Ok::<_, Infallible>(h(req)) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// What `/config_dump` shows.
#[derive(Serialize)]
struct ConfigDump<'a> {
    version: &'static str,
    config: &'a Config,
    #[serde(flatten)]
    state: crate::state::StateDump,
    pods: Vec<PodDump>,
    certificates: Vec<CertDump>,
}

#[derive(Serialize)]
struct CertDump {
    identity: String,
    state: String,
    serial: Option<String>,
    /// Seconds since the Unix epoch.
    not_before: Option<u64>,
    not_after: Option<u64>,
    expires_in_seconds: Option<i64>,
    failures: u32,
    last_error: Option<String>,
}

fn epoch(t: Option<SystemTime>) -> Option<u64> {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
}

impl From<identity::manager::CertInfo> for CertDump {
    fn from(c: identity::manager::CertInfo) -> Self {
        let now = epoch(Some(SystemTime::now())).unwrap_or(0) as i64;
        CertDump {
            identity: c.identity.to_string(),
            state: format!("{:?}", c.state),
            serial: c.serial,
            not_before: epoch(c.not_before),
            not_after: epoch(c.not_after),
            expires_in_seconds: epoch(c.not_after).map(|t| t as i64 - now),
            failures: c.failures,
            last_error: c.last_error,
        }
    }
}

#[derive(Serialize)]
struct PodDump {
    uid: String,
    name: String,
    namespace: String,
    identity: String,
}

pub struct Admin {
    pub config: Arc<Config>,
    pub inputs: Arc<ProxyInputs>,
    pub log: Option<LogHandle>,
    pub log_level: Mutex<String>,
}

impl Admin {
    pub fn handle(&self, req: Request<Incoming>) -> Resp {
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/config_dump") => {
                let state = self.inputs.state.read().dump();
                let mut pods: Vec<PodDump> = self
                    .inputs
                    .pods
                    .read()
                    .values()
                    .map(|p| PodDump {
                        uid: p.uid.clone(),
                        name: p.name.clone(),
                        namespace: p.namespace.clone(),
                        identity: p.identity.to_string(),
                    })
                    .collect();
                pods.sort_by(|a, b| a.uid.cmp(&b.uid));
                json(&ConfigDump {
                    version: env!("CARGO_PKG_VERSION"),
                    config: &self.config,
                    state,
                    pods,
                    certificates: self
                        .inputs
                        .certs
                        .snapshot()
                        .into_iter()
                        .map(CertDump::from)
                        .collect(),
                })
            }
            (&Method::GET, "/logging") => {
                text(StatusCode::OK, format!("{}\n", self.log_level.lock()))
            }
            (&Method::POST, "/logging") => {
                let level = req
                    .uri()
                    .query()
                    .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("level=")))
                    .unwrap_or("")
                    .to_string();
                let Some(handle) = &self.log else {
                    return text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "logging is not adjustable in this process\n",
                    );
                };
                match parse_filter(&level).map(|f| handle.reload(f)) {
                    Ok(Ok(())) => {
                        *self.log_level.lock() = level.clone();
                        text(StatusCode::OK, format!("log level set to {level}\n"))
                    }
                    Ok(Err(e)) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
                    Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
                }
            }
            (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
            _ => text(
                StatusCode::NOT_FOUND,
                "endpoints: GET /config_dump, GET|POST /logging?level=<filter>, GET /healthz\n",
            ),
        }
    }
}

pub fn metrics_handler(
    registry: Arc<Registry>,
) -> impl Fn(Request<Incoming>) -> Resp + Clone + Send + Sync + 'static {
    move |req| {
        if req.uri().path() != "/metrics" && req.uri().path() != "/stats/prometheus" {
            return text(StatusCode::NOT_FOUND, "try /metrics\n");
        }
        let mut out = String::new();
        match prometheus_client::encoding::text::encode(&mut out, &registry) {
            Ok(()) => {
                let mut r = text(StatusCode::OK, out);
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8"
                        .parse()
                        .expect("static"),
                );
                r
            }
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
}

/// Ready once the xDS state synced and the node agent's snapshot arrived.
pub fn readiness_handler(
    xds: Arc<AtomicBool>,
    zds: Arc<AtomicBool>,
) -> impl Fn(Request<Incoming>) -> Resp + Clone + Send + Sync + 'static {
    move |_req| {
        let (x, z) = (xds.load(Ordering::Acquire), zds.load(Ordering::Acquire));
        if x && z {
            text(StatusCode::OK, "ready\n")
        } else {
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: xds synced={x}, node agent snapshot={z}\n"),
            )
        }
    }
}
