//! Inbound HBONE (15008): terminate mutual TLS with the pod's certificate, check the peer and
//! the target, apply L4 authorization, then connect to the application inside the pod.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::StatusCode;
use identity::Identity;
use mesh_proto::hbone::{InboundRequest, Responder, serve_connection};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use mesh_proto::relay::{relay_hbone, relay_tcp};

use super::{PodProxy, ProxyError, ProxyInputs};
use crate::metrics::{ConnectionLabels, MUTUAL_TLS, REPORTER_DESTINATION};
use crate::state::{Connection, Decision, Workload};

/// Accepts one TLS connection on the pod's HBONE port and serves its CONNECT streams.
pub async fn handle_connection(inputs: Arc<ProxyInputs>, pod: Arc<PodProxy>, tcp: TcpStream) {
    let peer = tcp.peer_addr().ok();
    let _ = tcp.set_nodelay(true);
    let cfg = match pod.server_tls(&inputs).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(?peer, error = %e, "inbound: no certificate for the pod; closing");
            return;
        }
    };
    let tls = match TlsAcceptor::from(cfg).accept(tcp).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(?peer, error = %e, "inbound: TLS handshake refused");
            return;
        }
    };
    let handler = {
        let inputs = inputs.clone();
        let pod = pod.clone();
        move |req: InboundRequest, resp: Responder| {
            let inputs = inputs.clone();
            let pod = pod.clone();
            async move { handle_request(&inputs, &pod, req, resp).await }
        }
    };
    let Some(drain) = pod.drain() else {
        return;
    };
    if let Err(e) = serve_connection(tls, handler, drain).await {
        tracing::debug!(?peer, error = %e, "inbound HBONE connection ended with an error");
    }
}

async fn handle_request(
    inputs: &ProxyInputs,
    pod: &PodProxy,
    req: InboundRequest,
    resp: Responder,
) {
    let start = Instant::now();
    let InboundRequest {
        peer_identity,
        peer_addr,
        target,
        ..
    } = req;
    let refuse = |status: StatusCode, e: &ProxyError| {
        tracing::warn!(
            target: "access",
            direction = "inbound",
            src.addr = %peer_addr,
            src.identity = %peer_identity,
            dst.addr = %target,
            response_flags = e.response_flag(),
            status = status.as_u16(),
            error = %e,
            "connection refused"
        );
    };
    let (dst, src) = match check(inputs, pod, &peer_identity, peer_addr, target) {
        Ok(v) => v,
        Err((status, e)) => {
            refuse(status, &e);
            resp.reject(status);
            return;
        }
    };
    let app = match connect_app(pod, target).await {
        Ok(a) => a,
        Err(e) => {
            refuse(StatusCode::SERVICE_UNAVAILABLE, &e);
            resp.reject(StatusCode::SERVICE_UNAVAILABLE);
            return;
        }
    };
    let mut stream = match resp.accept() {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "inbound: client went away before the tunnel opened");
            return;
        }
    };
    let labels = ConnectionLabels::new(
        REPORTER_DESTINATION,
        src.as_deref(),
        Some(peer_identity.to_string()),
        Some(&dst),
        None,
        MUTUAL_TLS,
    );
    inputs.metrics.open(&labels);
    let r = relay_hbone(&mut stream, &app).await;
    let (sent, recv) = r.as_ref().copied().unwrap_or((0, 0));
    inputs.metrics.close(&labels, sent, recv);
    tracing::info!(
        target: "access",
        direction = "inbound",
        src.addr = %peer_addr,
        src.identity = %peer_identity,
        dst.addr = %target,
        dst.workload = %dst.name,
        bytes_sent = sent,
        bytes_recv = recv,
        duration_ms = start.elapsed().as_millis() as u64,
        error = r.err().map(|e| e.to_string()).unwrap_or_default(),
        "connection complete"
    );
}

type Checked = (Arc<Workload>, Option<Arc<Workload>>);

/// The target must be this pod; then L4 authorization decides.
fn check(
    inputs: &ProxyInputs,
    pod: &PodProxy,
    peer: &Identity,
    peer_addr: SocketAddr,
    target: SocketAddr,
) -> Result<Checked, (StatusCode, ProxyError)> {
    let dst = pod
        .workload(inputs, Some(target.ip()))
        .filter(|w| w.ips.contains(&target.ip()))
        .ok_or((
            StatusCode::BAD_REQUEST,
            ProxyError::Denied(format!(
                "target {target} is not an address of pod {}/{}",
                pod.namespace, pod.name
            )),
        ))?;
    let st = inputs.state.read();
    let waypoints = st.waypoint_identities(&dst);
    if !waypoints.is_empty() && !waypoints.contains(peer) {
        return Err((
            StatusCode::UNAUTHORIZED,
            ProxyError::Denied(format!(
                "{peer} bypassed the waypoint: {} accepts traffic only from its waypoint",
                dst.name
            )),
        ));
    }
    let src = st.workload_by_ip(peer_addr.ip());
    let conn = Connection {
        src_ip: peer_addr.ip(),
        src_identity: Some(peer),
        dst_ip: target.ip(),
        dst_port: target.port(),
    };
    match st.authorize(&dst, &conn) {
        Decision::Allow => Ok((dst, src)),
        Decision::Deny(reason) => Err((StatusCode::FORBIDDEN, ProxyError::Denied(reason))),
    }
}

async fn connect_app(pod: &PodProxy, target: SocketAddr) -> Result<TcpStream, ProxyError> {
    Ok(pod.sockets.connect(target).await?)
}

/// Same-node short-circuit: a source pod on this node reaches a destination pod on this node
/// without leaving ztunnel; identity and policy are checked exactly as for HBONE.
pub async fn serve_local(
    inputs: &ProxyInputs,
    dst_pod: &PodProxy,
    src_identity: &Identity,
    src_addr: Option<SocketAddr>,
    target: SocketAddr,
    stream: &TcpStream,
) -> Result<(u64, u64), ProxyError> {
    let src_addr = src_addr.unwrap_or_else(|| SocketAddr::new(target.ip(), 0));
    let (dst, src) = check(inputs, dst_pod, src_identity, src_addr, target).map_err(|(_, e)| e)?;
    let app = connect_app(dst_pod, target).await?;
    let labels = ConnectionLabels::new(
        REPORTER_DESTINATION,
        src.as_deref(),
        Some(src_identity.to_string()),
        Some(&dst),
        None,
        MUTUAL_TLS,
    );
    inputs.metrics.open(&labels);
    let r = relay_tcp(stream, &app).await;
    let (sent, recv) = r.as_ref().copied().unwrap_or((0, 0));
    inputs.metrics.close(&labels, sent, recv);
    Ok(r?)
}
