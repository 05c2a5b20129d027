//! Outbound (15001): a pod's captured connection, sent to its destination over HBONE, to a
//! same-node pod directly, or passed through untouched when the destination is outside the mesh.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use identity::tls::PeerPolicy;
use mesh_proto::hbone::{HboneError, PoolKey};
use tokio::net::TcpStream;

use super::socket::original_dst;
use mesh_proto::relay::{relay_hbone, relay_tcp};

use super::{PodProxy, ProxyError, ProxyInputs, inbound};
use crate::metrics::{ConnectionLabels, MUTUAL_TLS, REPORTER_SOURCE};
use crate::state::{Tunnel, Upstream, WaypointTarget};

pub async fn handle(inputs: Arc<ProxyInputs>, pod: Arc<PodProxy>, stream: TcpStream) {
    let start = Instant::now();
    let src_addr = stream.peer_addr().ok();
    let dst = match original_dst(&stream) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "outbound: no original destination");
            return;
        }
    };
    let src = pod.workload(&inputs, src_addr.map(|a| a.ip()));
    let upstream = {
        let st = inputs.state.read();
        match st.resolve(dst, |n| rand::random_range(0..n)) {
            Some(u) => Ok(Some(u)),
            None if st.is_service_vip(dst.ip()) => {
                Err(ProxyError::NoHealthyUpstream(dst.to_string()))
            }
            None => Ok(None),
        }
    };
    let result: Result<((u64, u64), Option<Upstream>), ProxyError> = match upstream {
        Err(e) => Err(e),
        Ok(None) => passthrough(&pod, &stream, dst).await.map(|b| (b, None)),
        Ok(Some(up)) if up.workload.tunnel == Tunnel::None => {
            let target = up.target;
            passthrough(&pod, &stream, target)
                .await
                .map(|b| (b, Some(up)))
        }
        Ok(Some(up)) => {
            let mut labels = ConnectionLabels::new(
                REPORTER_SOURCE,
                src.as_deref(),
                Some(pod.identity.to_string()),
                Some(&up.workload),
                up.service.as_deref(),
                MUTUAL_TLS,
            );
            inputs.metrics.open(&labels);
            let local = if up.workload.node == inputs.node {
                inputs
                    .pod(&up.workload.uid)
                    .or_else(|| local_pod_by_name(&inputs, &up))
            } else {
                None
            };
            let waypoint = if local.is_none()
                || up.service.as_ref().is_some_and(|s| s.waypoint.is_some())
                || up.workload.waypoint.is_some()
            {
                inputs
                    .state
                    .read()
                    .waypoint_for(&up, |n| rand::random_range(0..n))
            } else {
                None
            };
            let r = match (waypoint, local) {
                (Some(Err(reason)), _) => Err(ProxyError::NoWaypoint(reason)),
                (Some(Ok(wp)), _) => via_waypoint(&inputs, &pod, &wp, dst, &stream).await,
                (None, Some(dst_pod)) => {
                    inbound::serve_local(
                        &inputs,
                        &dst_pod,
                        &pod.identity,
                        src_addr,
                        up.target,
                        &stream,
                    )
                    .await
                }
                (None, None) => hbone(&inputs, &pod, &up, &stream).await,
            };
            let (sent, recv) = r.as_ref().map(|b| *b).unwrap_or((0, 0));
            if let Err(e) = &r {
                labels.response_flags = e.response_flag();
            }
            inputs.metrics.close(&labels, sent, recv);
            r.map(|b| (b, Some(up)))
        }
    };
    match result {
        Ok(((sent, recv), up)) => tracing::info!(
            target: "access",
            direction = "outbound",
            src.addr = ?src_addr,
            src.identity = %pod.identity,
            dst.addr = %dst,
            dst.workload = up.as_ref().map(|u| u.workload.name.as_str()).unwrap_or("-"),
            dst.identity = up.as_ref().filter(|u| u.workload.tunnel == Tunnel::Hbone).map(|u| u.workload.identity.to_string()).unwrap_or_default(),
            bytes_sent = sent,
            bytes_recv = recv,
            duration_ms = start.elapsed().as_millis() as u64,
            "connection complete"
        ),
        Err(e) => tracing::warn!(
            target: "access",
            direction = "outbound",
            src.addr = ?src_addr,
            src.identity = %pod.identity,
            dst.addr = %dst,
            response_flags = e.response_flag(),
            error = %e,
            duration_ms = start.elapsed().as_millis() as u64,
            "connection failed"
        ),
    }
}

fn local_pod_by_name(inputs: &ProxyInputs, up: &Upstream) -> Option<Arc<PodProxy>> {
    inputs
        .pods
        .read()
        .values()
        .find(|p| p.name == up.workload.name && p.namespace == up.workload.namespace)
        .cloned()
}

/// Destination outside the mesh: connect directly from the pod's namespace.
async fn passthrough(
    pod: &PodProxy,
    stream: &TcpStream,
    dst: SocketAddr,
) -> Result<(u64, u64), ProxyError> {
    let upstream = pod.sockets.connect(dst).await?;
    Ok(relay_tcp(stream, &upstream).await?)
}

/// Destination in the mesh on another node: HBONE to its 15008 with the pod's certificate.
async fn hbone(
    inputs: &ProxyInputs,
    pod: &PodProxy,
    up: &Upstream,
    stream: &TcpStream,
) -> Result<(u64, u64), ProxyError> {
    let hbone_addr = SocketAddr::new(up.target.ip(), super::pod::HBONE_PORT);
    tunnel(
        inputs,
        pod,
        &up.workload.identity,
        hbone_addr,
        up.target,
        stream,
    )
    .await
}

/// Destination behind a waypoint: HBONE to the waypoint, asking for the original destination
/// (the service address when the client used one), so the waypoint applies its L7 config.
async fn via_waypoint(
    inputs: &ProxyInputs,
    pod: &PodProxy,
    wp: &WaypointTarget,
    original: SocketAddr,
    stream: &TcpStream,
) -> Result<(u64, u64), ProxyError> {
    tunnel(
        inputs,
        pod,
        &wp.workload.identity,
        wp.addr,
        original,
        stream,
    )
    .await
}

/// Opens a pooled HBONE stream to `hbone_addr` (expecting `peer`) for `authority`, and relays.
async fn tunnel(
    inputs: &ProxyInputs,
    pod: &PodProxy,
    peer: &identity::Identity,
    hbone_addr: SocketAddr,
    authority: SocketAddr,
    stream: &TcpStream,
) -> Result<(u64, u64), ProxyError> {
    let key = PoolKey {
        src: pod.identity.clone(),
        dst: peer.clone(),
        dst_addr: hbone_addr,
    };
    let certs = inputs.certs.clone();
    let src_id = pod.identity.clone();
    let dst_id = peer.clone();
    let dial_addr = key.dst_addr;
    let sockets = pod.sockets.clone();
    let tls = move || async move {
        let cert = certs
            .fetch(&src_id)
            .await
            .map_err(HboneError::certificate)?;
        identity::tls::client_config(&cert, PeerPolicy::Only(vec![dst_id]))
            .map_err(HboneError::certificate)
    };
    // Boxed: the set-up future (TLS handshake, certificate fetch) is large, and a connection's
    // task would otherwise keep its size for as long as it relays.
    let mut tunnel = Box::pin(pod.pool.connect_via(
        key,
        authority,
        http::HeaderMap::new(),
        tls,
        move || async move { sockets.connect(dial_addr).await },
    ))
    .await?;
    let (down, up) = relay_hbone(&mut tunnel, stream).await?;
    Ok((up, down))
}
