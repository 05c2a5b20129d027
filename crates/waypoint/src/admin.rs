//! Admin (`127.0.0.1:15000`: `/config_dump`, `/logging`), readiness (`15021`) and metrics
//! (`15020`, served with ztunnel's endpoint helpers) on their own tasks, away from the data
//! path.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use mesh_proto::telemetry::{LogHandle, parse_filter};
use parking_lot::Mutex;
use serde::Serialize;

use crate::config::Config;
use crate::proxy::ProxyInputs;

type Resp = Response<Full<Bytes>>;

fn text(status: StatusCode, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

#[derive(Serialize)]
struct CertDump {
    identity: String,
    state: String,
    serial: Option<String>,
    failures: u32,
    last_error: Option<String>,
}

#[derive(Serialize)]
struct ConfigDump<'a> {
    config: &'a Config,
    waypoint: Option<&'a crate::config_model::WaypointConfig>,
    #[serde(flatten)]
    state: ztunnel::state::StateDump,
    circuits: Vec<crate::proxy::circuit::CircuitDump>,
    certificates: Vec<CertDump>,
    hbone_connections: usize,
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
                let waypoint = self.inputs.waypoint.load_full();
                let dump = ConfigDump {
                    config: &self.config,
                    waypoint: waypoint.as_deref(),
                    state: self.inputs.state.read().dump(),
                    circuits: self.inputs.circuits.dump(),
                    certificates: self
                        .inputs
                        .certs
                        .snapshot()
                        .into_iter()
                        .map(|c| CertDump {
                            identity: c.identity.to_string(),
                            state: c.state.to_string(),
                            serial: c.serial,
                            failures: c.failures,
                            last_error: c.last_error,
                        })
                        .collect(),
                    hbone_connections: self.inputs.upstreams.hbone_connections(),
                };
                match serde_json::to_vec_pretty(&dump) {
                    Ok(b) => {
                        let mut r = text(StatusCode::OK, b);
                        r.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static("application/json"),
                        );
                        r
                    }
                    Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
                }
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
                let Some(log) = &self.log else {
                    return text(StatusCode::NOT_IMPLEMENTED, "logging is not reloadable\n");
                };
                match parse_filter(&level).map(|f| log.reload(f)) {
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

/// Ready once workload discovery synced and the waypoint's configuration arrived.
pub fn readiness_handler(
    synced: Arc<AtomicBool>,
    inputs: Arc<ProxyInputs>,
) -> impl Fn(Request<Incoming>) -> Resp + Clone + Send + Sync + 'static {
    move |_req| {
        let x = synced.load(Ordering::Acquire);
        let c = inputs.waypoint.load().is_some();
        if x && c {
            text(StatusCode::OK, "ready\n")
        } else {
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: xds synced={x}, waypoint configuration received={c}\n"),
            )
        }
    }
}
