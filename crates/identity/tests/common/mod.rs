//! Helpers shared by the integration tests: certificates from a test CA and a one-shot TLS
//! exchange over a real loopback TCP connection.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use identity::{CertificateAuthority, Identity, WorkloadCertificate};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ServerConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

pub const TD: &str = "cluster.local";
pub const SERVER_GREETING: &[u8] = b"hello from the server";
pub const CLIENT_GREETING: &[u8] = b"hello from the client";
const DEADLINE: Duration = Duration::from_secs(10);

pub fn id(td: &str, sa: &str) -> Identity {
    Identity::new(td, "default", sa)
}

pub fn ca(td: &str) -> CertificateAuthority {
    CertificateAuthority::generate(td).expect("generate CA")
}

pub fn issue(ca: &CertificateAuthority, sa: &str) -> WorkloadCertificate {
    ca.issue(&id(ca.trust_domain(), sa), Duration::from_secs(3600))
        .expect("issue certificate")
}

/// What one side of a connection observed.
#[derive(Debug)]
pub struct Side {
    /// The handshake or I/O error, if any.
    pub error: Option<String>,
    /// Peer identity after a completed handshake.
    pub peer: Option<Identity>,
    /// Application bytes received from the peer.
    pub received: Vec<u8>,
}

impl Side {
    pub fn error(&self) -> &str {
        self.error.as_deref().unwrap_or("")
    }
}

#[derive(Debug)]
pub struct Outcome {
    pub server: Side,
    pub client: Side,
}

/// Exchanges greetings over the stream: write ours, close our half, read the peer's to the end.
async fn converse<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    greeting: &[u8],
    side: &mut Side,
) {
    let result = async {
        stream.write_all(greeting).await?;
        stream.flush().await?;
        stream.shutdown().await?;
        stream.read_to_end(&mut side.received).await?;
        Ok::<_, std::io::Error>(())
    }
    .await;
    if let Err(e) = result {
        side.error = Some(e.to_string());
    }
}

async fn serve_once(listener: TcpListener, config: Arc<ServerConfig>) -> Side {
    let mut side = Side {
        error: None,
        peer: None,
        received: Vec::new(),
    };
    let (tcp, _) = listener.accept().await.expect("accept");
    match TlsAcceptor::from(config).accept(tcp).await {
        Ok(mut tls) => {
            side.peer = identity::peer_identity(tls.get_ref().1);
            converse(&mut tls, SERVER_GREETING, &mut side).await;
        }
        Err(e) => side.error = Some(e.to_string()),
    }
    side
}

pub async fn listen() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    (listener, addr)
}

pub fn server_name() -> ServerName<'static> {
    ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into())
}

/// Runs a TLS server for one connection and a TLS client against it.
pub async fn exchange(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> Outcome {
    let run = async {
        let (listener, addr) = listen().await;
        let server_task = tokio::spawn(serve_once(listener, server));
        let mut side = Side {
            error: None,
            peer: None,
            received: Vec::new(),
        };
        let tcp = TcpStream::connect(addr).await.expect("connect");
        match TlsConnector::from(client).connect(server_name(), tcp).await {
            Ok(mut tls) => {
                side.peer = identity::peer_identity(tls.get_ref().1);
                converse(&mut tls, CLIENT_GREETING, &mut side).await;
            }
            Err(e) => side.error = Some(e.to_string()),
        }
        Outcome {
            server: server_task.await.expect("server task"),
            client: side,
        }
    };
    tokio::time::timeout(DEADLINE, run)
        .await
        .expect("exchange finished within the deadline")
}

/// Runs a TLS server for one connection and hands the raw TCP client to `client`.
pub async fn exchange_raw<F, Fut>(server: Arc<ServerConfig>, client: F) -> (Side, Vec<u8>)
where
    F: FnOnce(TcpStream) -> Fut,
    Fut: std::future::Future<Output = Vec<u8>>,
{
    let run = async {
        let (listener, addr) = listen().await;
        let server_task = tokio::spawn(serve_once(listener, server));
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let received = client(tcp).await;
        (server_task.await.expect("server task"), received)
    };
    tokio::time::timeout(DEADLINE, run)
        .await
        .expect("exchange finished within the deadline")
}
