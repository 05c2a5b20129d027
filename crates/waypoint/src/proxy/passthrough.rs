//! Plain TCP through the waypoint: streams that are not HTTP go to an endpoint of the bound
//! service after L4 authorization (see [`crate::config_model::policy`] for how HTTP-only rules
//! apply), and are reported with `istio_tcp_*` metrics and an access log line.

use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite};

use super::ProxyError;
use super::endpoints;
use super::phases::Downstream;
use crate::config_model::{Decision, Subject, policy};
use crate::telemetry::metrics::tcp_labels;

/// Carries `stream` to an endpoint of the service its tunnel was opened for.
pub async fn serve<S>(ds: Arc<Downstream>, mut stream: S)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    let inputs = &ds.inputs;
    let result: Result<_, Failure> = async {
        let config = inputs
            .waypoint
            .load_full()
            .ok_or(ProxyError::NotConfigured)?;
        let (svc, port) = config
            .service_for(ds.target)
            .ok_or(ProxyError::NotBound(ds.target))?;
        let subject = Subject {
            principal: Some(&ds.peer_identity),
            port: port.port,
            http: None,
        };
        if let Decision::Deny(reason) = policy::evaluate(&config.policies, &svc.key, &subject) {
            return Err(Denied(reason).into());
        }
        let circuit = inputs.circuits.get(&svc.key, svc.circuit_breaker.as_ref());
        let candidates: Vec<_> =
            endpoints::endpoints(&inputs.state.read(), ds.target.ip(), port.port)
                .into_iter()
                .filter(|e| !circuit.is_ejected(&e.workload.uid))
                .collect();
        if candidates.is_empty() {
            return Err(ProxyError::NoHealthyUpstream(ds.target.to_string()).into());
        }
        let ep = candidates[rand::random_range(0..candidates.len())].clone();
        let svc_state = inputs.state.read().service_by_vip(ds.target.ip());
        let labels = tcp_labels(
            ds.src_workload.as_deref(),
            &ds.peer_identity,
            Some(&ep.workload),
            svc_state.as_deref(),
        );
        let _permit = circuit.open_connection().ok_or_else(|| {
            ProxyError::Overflow(format!("{}: connection limit reached", svc.key))
        })?;
        let mut upstream = match inputs.upstreams.open(&ep).await {
            Ok(u) => {
                circuit.report(&ep.workload.uid, false);
                u
            }
            Err(e) => {
                circuit.report(&ep.workload.uid, true);
                return Err(e.into());
            }
        };
        inputs.metrics.tcp.open(&labels);
        let copied = tokio::io::copy_bidirectional(&mut stream, &mut upstream).await;
        let (sent, received) = copied.as_ref().copied().unwrap_or((0, 0));
        inputs.metrics.tcp.close(&labels, sent, received);
        copied
            .map(|b| (b, ep))
            .map_err(|e| Failure::Proxy(ProxyError::Io(e)))
    }
    .await;
    match result {
        Ok(((sent, received), ep)) => tracing::info!(
            target: "access",
            protocol = "tcp",
            src.addr = %ds.peer_addr,
            src.identity = %ds.peer_identity,
            dst.addr = %ds.target,
            upstream = %ep.target,
            upstream.identity = %ep.workload.identity,
            bytes_received = sent,
            bytes_sent = received,
            duration_ms = start.elapsed().as_millis() as u64,
            "connection"
        ),
        Err(e) => tracing::warn!(
            target: "access",
            protocol = "tcp",
            src.addr = %ds.peer_addr,
            src.identity = %ds.peer_identity,
            dst.addr = %ds.target,
            response_flags = e.response_flag(),
            error = %e,
            duration_ms = start.elapsed().as_millis() as u64,
            "connection refused"
        ),
    }
}

/// An L4 denial, reported like Envoy's RBAC network filter.
#[derive(Debug)]
struct Denied(String);

#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("{0}")]
    Proxy(#[from] ProxyError),
    #[error("denied: {}", .0.0)]
    Denied(Denied),
}

impl From<Denied> for Failure {
    fn from(d: Denied) -> Self {
        Failure::Denied(d)
    }
}

impl Failure {
    fn response_flag(&self) -> &'static str {
        match self {
            Failure::Proxy(e) => e.response_flag(),
            Failure::Denied(_) => "-",
        }
    }
}
