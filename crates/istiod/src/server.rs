//! The gRPC listeners: delta ADS and the CA service, in plaintext (15010) and over TLS (15012).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use identity::Identity;
use mesh_proto::xds::XdsServer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::service::InterceptorLayer;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::ca_service::CaService;

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("gRPC server on {addr}: {source}")]
    Serve {
        addr: String,
        source: tonic::transport::Error,
    },
}

/// The services every gRPC listener offers.
#[derive(Clone)]
pub struct GrpcServices {
    pub xds: XdsServer,
    pub ca: CaService,
}

/// Serves xDS and the CA in plaintext until `shutdown` completes.
pub async fn serve_plaintext(
    listener: TcpListener,
    services: GrpcServices,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let addr = local(&listener);
    tracing::info!(%addr, "serving xDS and CA (plaintext)");
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(services.xds.into_service())
        .add_service(services.ca.into_service())
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
        .map_err(|source| ServerError::Serve { addr, source })
}

/// Serves xDS and the CA over TLS until `shutdown` completes. Handshakes run concurrently, so a
/// slow client does not hold up others.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    services: GrpcServices,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let addr = local(&listener);
    tracing::info!(%addr, "serving xDS and CA (TLS)");
    let (tx, rx) = mpsc::channel::<io::Result<TlsConn>>(64);
    let acceptor = TlsAcceptor::from(tls);
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = tokio::select! {
                _ = &mut stop_rx => break,
                r = listener.accept() => match r {
                    Ok(conn) => conn,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(TlsConn::new(stream))).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%remote, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                }
            });
        }
    });
    let signal = async move {
        shutdown.await;
        let _ = stop_tx.send(());
    };
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .layer(InterceptorLayer::new(expose_peer))
        .add_service(services.xds.into_service())
        .add_service(services.ca.into_service())
        .serve_with_incoming_shutdown(ReceiverStream::new(rx), signal)
        .await
        .map_err(|source| ServerError::Serve { addr, source })
}

fn local(listener: &TcpListener) -> String {
    listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Connection facts of a TLS connection, put into every request's extensions.
#[derive(Clone, Debug)]
pub struct TlsPeer {
    pub tcp: TcpConnectInfo,
    /// The verified SPIFFE identity of the client certificate, if one was presented.
    pub identity: Option<Identity>,
}

/// Copies [`TlsPeer`] into the extensions the services read: the TCP info (for
/// `Request::remote_addr`) and the peer [`Identity`] (for the xDS server).
#[allow(clippy::result_large_err)]
fn expose_peer(mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    if let Some(peer) = req.extensions().get::<TlsPeer>().cloned() {
        req.extensions_mut().insert(peer.tcp);
        if let Some(id) = peer.identity {
            req.extensions_mut().insert(id);
        }
    }
    Ok(req)
}

/// A server-side TLS connection that tonic can serve.
pub struct TlsConn {
    inner: TlsStream<TcpStream>,
    peer: TlsPeer,
}

impl TlsConn {
    fn new(inner: TlsStream<TcpStream>) -> Self {
        let (tcp, conn) = inner.get_ref();
        let peer = TlsPeer {
            tcp: TcpConnectInfo {
                local_addr: tcp.local_addr().ok(),
                remote_addr: tcp.peer_addr().ok(),
            },
            identity: identity::peer_identity(conn),
        };
        TlsConn { inner, peer }
    }

    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.peer.tcp.remote_addr
    }
}

impl Connected for TlsConn {
    type ConnectInfo = TlsPeer;

    fn connect_info(&self) -> TlsPeer {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
