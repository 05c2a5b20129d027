//! TCP + rustls connector for the xDS client's gRPC channel.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Connects to the URI's host and port and runs a TLS handshake with the given config. The
/// server name sent is the URI host (an IP address or DNS name); peer verification is the
/// config's business (SPIFFE identities, not host names).
///
/// Give tonic an `http://` endpoint URI when using this connector (set `origin` to the https
/// URI if the `:scheme` matters): with tonic's own TLS feature compiled in, an `https://` URI
/// makes tonic try its own TLS layer and fail with "Connecting to HTTPS without TLS enabled".
#[derive(Clone)]
pub struct TlsChannelConnector {
    tls: TlsConnector,
}

impl TlsChannelConnector {
    pub fn new(config: Arc<rustls::ClientConfig>) -> Self {
        Self {
            tls: TlsConnector::from(config),
        }
    }
}

type ConnectFuture =
    Pin<Box<dyn Future<Output = io::Result<TokioIo<TlsStream<TcpStream>>>> + Send + 'static>>;

impl tonic::codegen::Service<Uri> for TlsChannelConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| invalid(format!("xDS endpoint {uri} has no host")))?;
            let port = uri
                .port_u16()
                .ok_or_else(|| invalid(format!("xDS endpoint {uri} has no port")))?;
            // IPv6 literals come bracketed in URIs.
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            let name = ServerName::try_from(bare.to_owned())
                .map_err(|e| invalid(format!("xDS endpoint host {host:?}: {e}")))?;
            let tcp = TcpStream::connect((bare, port)).await?;
            tcp.set_nodelay(true)?;
            let tls = tls.connect(name, tcp).await?;
            Ok(TokioIo::new(tls))
        })
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}
