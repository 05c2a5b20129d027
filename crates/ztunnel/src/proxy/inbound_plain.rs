//! Inbound plaintext (15006): connections from clients outside the mesh, captured by the pod's
//! redirect rules. L4 authorization applies with no peer identity, so a STRICT
//! PeerAuthentication (compiled to "deny without principal") refuses them.

use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpStream;

use super::socket::original_dst;
use mesh_proto::relay::relay_tcp;

use super::{PodProxy, ProxyInputs};
use crate::metrics::{ConnectionLabels, PLAINTEXT, REPORTER_DESTINATION};
use crate::state::{Connection, Decision};

pub async fn handle(inputs: Arc<ProxyInputs>, pod: Arc<PodProxy>, stream: TcpStream) {
    let start = Instant::now();
    let (Ok(peer), Ok(dst)) = (stream.peer_addr(), original_dst(&stream)) else {
        tracing::warn!("inbound plaintext: cannot read the connection's addresses");
        return;
    };
    let Some(workload) = pod.workload(&inputs, Some(dst.ip())) else {
        tracing::warn!(target: "access", direction = "inbound", src.addr = %peer, dst.addr = %dst, "refused: unknown destination workload");
        return;
    };
    let (decision, src) = {
        let st = inputs.state.read();
        let conn = Connection {
            src_ip: peer.ip(),
            src_identity: None,
            dst_ip: dst.ip(),
            dst_port: dst.port(),
        };
        (st.authorize(&workload, &conn), st.workload_by_ip(peer.ip()))
    };
    if let Decision::Deny(reason) = decision {
        tracing::warn!(target: "access", direction = "inbound", src.addr = %peer, dst.addr = %dst, response_flags = "DENY", reason, "connection refused");
        return;
    }
    let app = match pod.sockets.connect(dst).await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(target: "access", direction = "inbound", src.addr = %peer, dst.addr = %dst, response_flags = "UF", error = %e, "connection failed");
            return;
        }
    };
    let labels = ConnectionLabels::new(
        REPORTER_DESTINATION,
        src.as_deref(),
        None,
        Some(&workload),
        None,
        PLAINTEXT,
    );
    inputs.metrics.open(&labels);
    let r = relay_tcp(&stream, &app).await;
    let (sent, recv) = r.as_ref().copied().unwrap_or((0, 0));
    inputs.metrics.close(&labels, sent, recv);
    tracing::info!(
        target: "access",
        direction = "inbound",
        src.addr = %peer,
        dst.addr = %dst,
        dst.workload = %workload.name,
        security = "plaintext",
        bytes_sent = sent,
        bytes_recv = recv,
        duration_ms = start.elapsed().as_millis() as u64,
        "connection complete"
    );
}
