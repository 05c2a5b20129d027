//! HBONE client: mutual-TLS + HTTP/2 handshake and opening CONNECT streams.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use h2::client::{Connection, SendRequest};
use http::{HeaderMap, Method, Request};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::error::HboneError;
use super::info::ConnectionInfo;
use super::pool::StreamSlot;
use super::settings;
use super::stream::H2Stream;

/// The HTTP/2 connection task of a client connection; it must be polled (spawned) for any
/// stream to make progress.
pub type ClientConnection = Connection<TlsStream<TcpStream>, Bytes>;

/// A completed client handshake.
pub(crate) struct Handshake {
    pub(crate) send: SendRequest<Bytes>,
    pub(crate) conn: ClientConnection,
    pub(crate) info: Arc<ConnectionInfo>,
}

/// TLS then HTTP/2 handshake over `tcp`. The server name sent is the peer's IP address; the
/// identity check is the job of `tls`'s certificate verifier.
pub(crate) async fn handshake(
    tcp: TcpStream,
    tls: Arc<rustls::ClientConfig>,
) -> Result<Handshake, HboneError> {
    let addr = tcp.peer_addr()?;
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "setting TCP_NODELAY failed");
    }
    let server_name = ServerName::IpAddress(addr.ip().into());
    let tls = TlsConnector::from(tls)
        .connect(server_name, tcp)
        .await
        .map_err(|source| HboneError::Tls { addr, source })?;
    let info = {
        let (tcp, conn) = tls.get_ref();
        Arc::new(ConnectionInfo::from_tls(tcp, conn)?)
    };
    let (send, conn) = settings::client_builder()
        .handshake::<_, Bytes>(tls)
        .await?;
    Ok(Handshake { send, conn, info })
}

/// Sends `CONNECT authority` and waits for the answer: a 2xx yields the tunnel, anything else
/// [`HboneError::Status`].
pub(crate) async fn open_stream(
    send: SendRequest<Bytes>,
    authority: SocketAddr,
    headers: HeaderMap,
    info: Arc<ConnectionInfo>,
    slot: Option<StreamSlot>,
) -> Result<H2Stream, HboneError> {
    let addr = info.peer_addr;
    let request = connect_request(authority, headers)?;
    let mut send = send.ready().await.map_err(|e| classify(e, addr))?;
    let (response, stream) = send
        .send_request(request, false)
        .map_err(|e| classify(e, addr))?;
    drop(send);
    let response = response.await.map_err(|e| classify(e, addr))?;
    let status = response.status();
    if !status.is_success() {
        return Err(HboneError::Status(status));
    }
    Ok(H2Stream::new(stream, response.into_body(), info, slot))
}

/// TLS 1.3 lets the client finish its handshake before the server has checked the client
/// certificate, so a refusal arrives as an alert during the first HTTP/2 exchange: report it as
/// the TLS failure it is. The TLS layer reports its errors (alerts included) as `InvalidData`,
/// and HTTP/2 keeps only the kind and text of i/o errors, so the kind is what identifies them.
fn classify(err: h2::Error, addr: SocketAddr) -> HboneError {
    let is_tls = err
        .get_io()
        .is_some_and(|io| io.kind() == std::io::ErrorKind::InvalidData);
    if !is_tls {
        return HboneError::H2(err);
    }
    let source = err
        .into_io()
        .unwrap_or_else(|| std::io::Error::other("TLS failure during the HTTP/2 exchange"));
    HboneError::Tls { addr, source }
}

fn connect_request(authority: SocketAddr, headers: HeaderMap) -> Result<Request<()>, HboneError> {
    let uri = http::Uri::builder()
        .authority(authority.to_string())
        .build()
        .map_err(|_| HboneError::BadAuthority(authority.to_string()))?;
    let mut request = Request::new(());
    *request.method_mut() = Method::CONNECT;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    Ok(request)
}

/// Opens one CONNECT stream over a new connection on `tcp`, without pooling. The returned task
/// drives the connection and ends once the stream is finished.
pub async fn connect_once(
    tcp: TcpStream,
    tls: Arc<rustls::ClientConfig>,
    authority: SocketAddr,
    headers: HeaderMap,
) -> Result<(H2Stream, JoinHandle<Result<(), HboneError>>), HboneError> {
    let Handshake { send, conn, info } = handshake(tcp, tls).await?;
    let task = tokio::spawn(async move { conn.await.map_err(HboneError::from) });
    let stream = open_stream(send, authority, headers, info, None).await?;
    Ok((stream, task))
}
