//! Monitoring and debug HTTP endpoints (port 15014):
//!
//! - `GET /ready`: 200 once the first configuration is served, 503 before.
//! - `GET /metrics`: Prometheus metrics (OpenMetrics text).
//! - `GET /debug/config_issues`: JSON list of `{file, object, reason}` for every invalid or
//!   converted configuration object.
//! - `GET /debug/xds`: JSON with the store's resources and the connected clients (subscriptions,
//!   last ACKed version, last NACK).
//! - `GET /debug/config_dump`: the running configuration (flags) as JSON.
//! - `GET /debug/waypoints`: JSON list of every waypoint's status (what a Kubernetes controller
//!   would write into `Gateway.status`): `namespace`, `name`, `resource` (the Waypoint xDS
//!   resource, or null), `waypoint_for`, `address` {`hostname`, `hbone_port`, `service_found`,
//!   `ready_endpoints`}, `addresses` [{`type`: Hostname, `value`}], `conditions` [{`type`:
//!   Accepted|Programmed, `status`: True|False, `reason`, `message`}], `bound_services`,
//!   `bound_workloads`, `refused`, `routes`, `policies`, `issues`. Waypoints named by `istio.io/use-waypoint` without a Gateway are
//!   listed with `Accepted=False` (reason `GatewayNotFound`).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use mesh_proto::proto::type_url;
use mesh_proto::xds::{ClientStatus, XdsServer};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::metrics::Metrics;
use crate::status::ControlPlaneStatus;

/// What the endpoints read.
#[derive(Clone)]
pub struct DebugState {
    pub status: Arc<ControlPlaneStatus>,
    pub xds: XdsServer,
    pub metrics: Arc<Metrics>,
    /// The running configuration, served as is.
    pub config: Value,
}

/// Serves the endpoints until `shutdown` completes.
pub async fn serve(listener: TcpListener, state: DebugState, shutdown: impl Future<Output = ()>) {
    let addr = listener.local_addr().ok();
    tracing::info!(?addr, "serving monitoring and debug endpoints");
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => return,
            r = listener.accept() => match r {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "monitoring accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, &req)) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(error = %e, "monitoring connection error");
            }
        });
    }
}

fn handle(state: &DebugState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET is supported\n".into(),
        );
    }
    match req.uri().path() {
        "/ready" | "/ready/" => {
            if state.status.is_ready() {
                text(StatusCode::OK, "ready\n".into())
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: configuration not projected yet\n".into(),
                )
            }
        }
        "/metrics" => {
            state
                .metrics
                .xds_connected
                .set(state.xds.clients().len() as i64);
            let mut resp = text(StatusCode::OK, state.metrics.encode());
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            resp
        }
        "/debug/config_issues" => json_response(&json!(state.status.issues())),
        "/debug/xds" => json_response(&xds_status(state)),
        "/debug/config_dump" => json_response(&json!({
            "version": env!("CARGO_PKG_VERSION"),
            "config": &state.config,
        })),
        "/debug/waypoints" => json_response(&json!(state.status.waypoints())),
        _ => text(
            StatusCode::NOT_FOUND,
            "endpoints: /ready /metrics /debug/config_issues /debug/xds /debug/config_dump \
             /debug/waypoints\n"
                .into(),
        ),
    }
}

fn xds_status(state: &DebugState) -> Value {
    let store = state.xds.store();
    json!({
        "store_version": store.version(),
        "projected": state.status.projected(),
        "resources": {
            type_url::ADDRESS: store.names(type_url::ADDRESS).len(),
            type_url::AUTHORIZATION: store.names(type_url::AUTHORIZATION).len(),
            type_url::WAYPOINT: store.names(type_url::WAYPOINT).len(),
        },
        "clients": state.xds.clients().iter().map(client_json).collect::<Vec<_>>(),
    })
}

fn client_json(c: &ClientStatus) -> Value {
    json!({
        "stream_id": c.stream_id,
        "node_id": c.node_id,
        "cluster": c.cluster,
        "peer": c.peer.as_ref().map(|p| p.uri()),
        "remote_addr": c.remote_addr.map(|a| a.to_string()),
        "connected_at_unix": c.connected_at.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        "types": c.types.iter().map(|t| json!({
            "type_url": t.type_url,
            "wildcard": t.wildcard,
            "names": t.names,
            "resources_sent": t.resources_sent,
            "last_acked_version": t.last_acked_version,
            "last_nack": t.last_nack,
            "awaiting_ack": t.awaiting_ack,
        })).collect::<Vec<_>>(),
    })
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn json_response(v: &Value) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec_pretty(v).unwrap_or_default();
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}
