//! One enrolled pod: its listeners inside the pod's namespace and its connection pool.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use identity::{Identity, WorkloadCertificate};
use mesh_proto::hbone::{Drain, DrainTrigger, Pool};
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::socket::SocketFactory;
use super::{ProxyError, ProxyInputs, inbound, inbound_plain, outbound};
use crate::dns;
use crate::state::Workload;

/// ztunnel's ports inside each pod namespace.
pub const OUTBOUND_PORT: u16 = 15001;
pub const INBOUND_PLAINTEXT_PORT: u16 = 15006;
pub const HBONE_PORT: u16 = 15008;
pub const DNS_PORT: u16 = 15053;

/// How long a stopping pod waits for its connections before closing them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

pub struct PodProxy {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub identity: Identity,
    pub sockets: SocketFactory,
    pub pool: Pool,
    server_tls: Mutex<Option<(Arc<WorkloadCertificate>, Arc<rustls::ServerConfig>)>>,
    /// Cloned into HBONE connections; taken and triggered when the pod is released.
    drain: Mutex<Option<Drain>>,
    drain_trigger: Mutex<Option<DrainTrigger>>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl PodProxy {
    /// Binds the pod's listeners inside its namespace and starts serving them.
    pub async fn start(
        inputs: Arc<ProxyInputs>,
        uid: String,
        name: String,
        namespace: String,
        identity: Identity,
        sockets: SocketFactory,
    ) -> Result<Arc<Self>, ProxyError> {
        let any = |port| SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
        let outbound_l = sockets.listen(any(OUTBOUND_PORT)).await?;
        let plain_l = sockets.listen(any(INBOUND_PLAINTEXT_PORT)).await?;
        let hbone_l = sockets.listen(any(HBONE_PORT)).await?;
        let dns_udp = sockets.udp(any(DNS_PORT)).await?;
        let dns_tcp = sockets.listen(any(DNS_PORT)).await?;
        let pool = Pool::new(inputs.pool.clone());
        let (drain_trigger, drain) = Drain::new();
        let pod = Arc::new(PodProxy {
            uid,
            name,
            namespace,
            identity,
            sockets,
            pool,
            server_tls: Mutex::new(None),
            drain: Mutex::new(Some(drain)),
            drain_trigger: Mutex::new(Some(drain_trigger)),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        let span = tracing::info_span!("pod", pod = %format!("{}/{}", pod.namespace, pod.name));
        pod.accept_loop(
            outbound_l,
            inputs.clone(),
            span.clone(),
            |i, p, s| async move { outbound::handle(i, p, s).await },
        );
        pod.accept_loop(
            plain_l,
            inputs.clone(),
            span.clone(),
            |i, p, s| async move { inbound_plain::handle(i, p, s).await },
        );
        pod.accept_loop(
            hbone_l,
            inputs.clone(),
            span.clone(),
            |i, p, s| async move { inbound::handle_connection(i, p, s).await },
        );
        let dns_server = dns::Server::new(inputs.state.clone(), pod.namespace.clone());
        let cancel = pod.cancel.clone();
        pod.tasks.spawn(
            async move {
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = dns_server.serve(dns_udp, dns_tcp) => {}
                }
            }
            .instrument(span.clone()),
        );
        // The pod's certificate is fetched now rather than on its first connection, so that the
        // first connection does not wait for the CA (and the certificate shows in config_dump).
        let certs = inputs.certs.clone();
        let id = pod.identity.clone();
        let cancel = pod.cancel.clone();
        pod.tasks.spawn(
            async move {
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    r = certs.fetch(&id) => if let Err(e) = r {
                        tracing::warn!(error = %e, "certificate not fetched at enrolment; retried on the first connection");
                    }
                }
            }
            .instrument(span.clone()),
        );
        tracing::info!(parent: &span, uid = %pod.uid, identity = %pod.identity, "pod enrolled: listeners up");
        Ok(pod)
    }

    fn accept_loop<F, Fut>(
        self: &Arc<Self>,
        l: TcpListener,
        inputs: Arc<ProxyInputs>,
        span: tracing::Span,
        f: F,
    ) where
        F: Fn(Arc<ProxyInputs>, Arc<PodProxy>, tokio::net::TcpStream) -> Fut
            + Send
            + Sync
            + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let pod = self.clone();
        let cancel = self.cancel.clone();
        let tasks = self.tasks.clone();
        self.tasks.spawn(
            async move {
                loop {
                    let accepted = tokio::select! {
                        _ = cancel.cancelled() => break,
                        r = l.accept() => r,
                    };
                    match accepted {
                        Ok((stream, _)) => {
                            // Relayed bytes go out as soon as they arrive.
                            let _ = stream.set_nodelay(true);
                            let fut = f(inputs.clone(), pod.clone(), stream);
                            let cancel = cancel.clone();
                            tasks.spawn(async move {
                                tokio::select! {
                                    _ = fut => {}
                                    _ = async { cancel.cancelled().await; tokio::time::sleep(DRAIN_TIMEOUT).await } => {}
                                }
                            }.in_current_span());
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            }
            .instrument(span),
        );
    }

    /// Stops the listeners and waits (bounded) for open connections to finish.
    pub async fn stop(&self) {
        self.cancel.cancel();
        self.drain.lock().take();
        let trigger = self.drain_trigger.lock().take();
        if let Some(t) = trigger {
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, t.drain()).await;
        }
        self.tasks.close();
        let _ =
            tokio::time::timeout(DRAIN_TIMEOUT + Duration::from_secs(1), self.tasks.wait()).await;
        tracing::info!(pod = %format!("{}/{}", self.namespace, self.name), "pod released: listeners closed");
    }

    /// A drain handle for a new connection; `None` once the pod is being released.
    pub fn drain(&self) -> Option<Drain> {
        self.drain.lock().clone()
    }

    /// The pod's workload, by one of its addresses or its uid.
    pub fn workload(&self, inputs: &ProxyInputs, ip: Option<IpAddr>) -> Option<Arc<Workload>> {
        let st = inputs.state.read();
        ip.and_then(|ip| st.workload_by_ip(ip))
            .filter(|w| w.name == self.name && w.namespace == self.namespace)
            .or_else(|| st.workload(&self.uid))
    }

    /// TLS server config with the pod's current certificate (rebuilt after rotation).
    pub async fn server_tls(
        &self,
        inputs: &ProxyInputs,
    ) -> Result<Arc<rustls::ServerConfig>, ProxyError> {
        let cert = inputs.certs.fetch(&self.identity).await?;
        let mut cached = self.server_tls.lock();
        if let Some((c, cfg)) = cached.as_ref()
            && Arc::ptr_eq(c, &cert)
        {
            return Ok(cfg.clone());
        }
        let cfg = identity::tls::server_config(
            &cert,
            identity::tls::PeerPolicy::AnyInTrustDomain(self.identity.trust_domain.clone()),
        )?;
        *cached = Some((cert, cfg.clone()));
        Ok(cfg)
    }
}
