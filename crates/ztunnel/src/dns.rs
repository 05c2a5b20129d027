//! DNS proxy on 15053 inside each pod: answers A/AAAA for mesh services from the state and
//! forwards every other query to the node's resolver.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

use crate::state::SharedState;

const TTL: u32 = 30;
const FORWARD_TIMEOUT: Duration = Duration::from_secs(3);
const CLUSTER_DOMAIN: &str = "cluster.local";

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("malformed query: {0}")]
    Malformed(String),
    #[error("no upstream resolver configured")]
    NoUpstream,
    #[error("upstream resolver: {0}")]
    Upstream(#[from] std::io::Error),
}

#[derive(Clone)]
pub struct Server {
    state: SharedState,
    namespace: String,
    upstream: Option<SocketAddr>,
}

impl Server {
    pub fn new(state: SharedState, namespace: String) -> Self {
        Server {
            state,
            namespace,
            upstream: system_resolver(),
        }
    }

    pub async fn serve(self, udp: UdpSocket, tcp: TcpListener) {
        let udp_srv = self.clone();
        let udp_task = async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = udp.recv_from(&mut buf).await else {
                    continue;
                };
                if let Some(resp) = udp_srv.answer(&buf[..n]).await {
                    let _ = udp.send_to(&resp, peer).await;
                }
            }
        };
        let tcp_task = async move {
            loop {
                let Ok((mut s, _)) = tcp.accept().await else {
                    continue;
                };
                let srv = self.clone();
                tokio::spawn(async move {
                    loop {
                        let Ok(len) = s.read_u16().await else { return };
                        let mut q = vec![0u8; usize::from(len)];
                        if s.read_exact(&mut q).await.is_err() {
                            return;
                        }
                        let Some(resp) = srv.answer(&q).await else {
                            return;
                        };
                        let Ok(len) = u16::try_from(resp.len()) else {
                            return;
                        };
                        if s.write_u16(len).await.is_err() || s.write_all(&resp).await.is_err() {
                            return;
                        }
                    }
                });
            }
        };
        tokio::join!(udp_task, tcp_task);
    }

    /// The wire-format answer to a wire-format query, or `None` when nothing can be said.
    pub async fn answer(&self, query: &[u8]) -> Option<Vec<u8>> {
        let msg = match Message::from_vec(query) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "dns: malformed query");
                return None;
            }
        };
        if let Some(local) = self.local_answer(&msg) {
            return local.to_vec().ok();
        }
        match self.forward(query).await {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::debug!(error = %e, "dns: forwarding failed");
                let mut resp =
                    Message::error_msg(msg.metadata.id, OpCode::Query, ResponseCode::ServFail);
                resp.add_queries(msg.queries.iter().cloned());
                resp.to_vec().ok()
            }
        }
    }

    /// Answers from the mesh state when the name is a service (FQDN or a short form).
    fn local_answer(&self, msg: &Message) -> Option<Message> {
        let q = msg.queries.first()?;
        if !matches!(q.query_type(), RecordType::A | RecordType::AAAA) {
            return None;
        }
        let asked = q.name().to_ascii();
        let asked = asked.trim_end_matches('.').to_ascii_lowercase();
        let st = self.state.read();
        let svc = self
            .candidates(&asked)
            .into_iter()
            .find_map(|c| st.service_by_hostname(&c))?;
        let mut resp = Message::new(msg.metadata.id, MessageType::Response, OpCode::Query);
        resp.metadata.authoritative = true;
        resp.metadata.recursion_desired = msg.metadata.recursion_desired;
        resp.metadata.recursion_available = true;
        resp.add_queries(msg.queries.iter().cloned());
        let name: Name = q.name().clone();
        for ip in &svc.vips {
            let rdata = match (ip, q.query_type()) {
                (IpAddr::V4(v4), RecordType::A) => RData::A(A(*v4)),
                (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA(*v6)),
                _ => continue,
            };
            resp.add_answer(Record::from_rdata(name.clone(), TTL, rdata));
        }
        Some(resp)
    }

    /// The names a pod in `namespace` may mean: the name itself, then the search path.
    fn candidates(&self, asked: &str) -> Vec<String> {
        let mut c = vec![asked.to_string()];
        if !asked.ends_with(CLUSTER_DOMAIN) {
            let dots = asked.matches('.').count();
            if dots == 0 {
                c.push(format!("{asked}.{}.svc.{CLUSTER_DOMAIN}", self.namespace));
            } else if dots == 1 {
                c.push(format!("{asked}.svc.{CLUSTER_DOMAIN}"));
            } else if asked.ends_with(".svc") {
                c.push(format!("{asked}.{CLUSTER_DOMAIN}"));
            }
        }
        c
    }

    async fn forward(&self, query: &[u8]) -> Result<Vec<u8>, DnsError> {
        let upstream = self.upstream.ok_or(DnsError::NoUpstream)?;
        let bind: SocketAddr = if upstream.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        }
        .parse()
        .expect("literal");
        let sock = UdpSocket::bind(bind).await?;
        sock.send_to(query, upstream).await?;
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(FORWARD_TIMEOUT, sock.recv(&mut buf))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"))??;
        buf.truncate(n);
        Ok(buf)
    }
}

/// First nameserver of ztunnel's own /etc/resolv.conf (the node's resolver).
fn system_resolver() -> Option<SocketAddr> {
    let conf = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    conf.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .next()
}

#[cfg(test)]
mod tests;
