//! Delta xDS over mutual TLS: the client's rustls connector against a tonic server behind a
//! tokio-rustls acceptor that hands the peer's SPIFFE identity to the xDS server.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use identity::{CertificateAuthority, Identity, PeerPolicy, client_config, server_config};
use mesh_proto::proto::discovery::{Node, Resource};
use mesh_proto::xds::{
    ClientConfig, ClientHandler, ResourceStore, ServerHooks, Subscription, XdsClient, XdsServer,
};
use parking_lot::Mutex;
use prost_types::Any;
use test_support::eventually;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::transport::server::Connected;

const T: &str = "type.googleapis.com/test.Thing";
const TD: &str = "cluster.local";
const WAIT: Duration = Duration::from_secs(10);

/// A server-side TLS connection whose connect info is the client's verified identity, so the
/// xDS server finds it in the request extensions.
struct PeerStream {
    tls: TlsStream<TcpStream>,
    peer: Identity,
}

impl Connected for PeerStream {
    type ConnectInfo = Identity;

    fn connect_info(&self) -> Identity {
        self.peer.clone()
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tls).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_shutdown(cx)
    }
}

#[derive(Default)]
struct PeerHooks {
    peers: Mutex<Vec<Option<Identity>>>,
}

impl ServerHooks for PeerHooks {
    fn on_connect(
        &self,
        _node: &Node,
        _metadata: &MetadataMap,
        peer: Option<&Identity>,
    ) -> Result<(), tonic::Status> {
        self.peers.lock().push(peer.cloned());
        Ok(())
    }
}

#[derive(Default)]
struct Names(Mutex<Vec<String>>);

impl ClientHandler for Names {
    fn apply(&self, _: &str, updated: Vec<Resource>, _: Vec<String>) -> Result<(), String> {
        self.0.lock().extend(updated.into_iter().map(|r| r.name));
        Ok(())
    }
}

struct Pki {
    istiod: Identity,
    ztunnel: Identity,
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    ca: CertificateAuthority,
}

fn pki() -> Pki {
    identity::install_crypto_provider();
    let ca = CertificateAuthority::generate(TD).expect("CA");
    let istiod = Identity::new(TD, "istio-system", "istiod");
    let ztunnel = Identity::new(TD, "istio-system", "ztunnel");
    let hour = Duration::from_secs(3600);
    let server_cert = ca.issue(&istiod, hour).expect("istiod certificate");
    let client_cert = ca.issue(&ztunnel, hour).expect("ztunnel certificate");
    Pki {
        server: server_config(&server_cert, PeerPolicy::AnyInTrustDomain(TD.to_owned()))
            .expect("server config"),
        client: client_config(&client_cert, PeerPolicy::only(istiod.clone()))
            .expect("client config"),
        istiod,
        ztunnel,
        ca,
    }
}

async fn start_tls_server(
    xds: XdsServer,
    tls: Arc<rustls::ServerConfig>,
) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    let (conns, incoming) = mpsc::channel::<io::Result<PeerStream>>(4);
    let acceptor = TlsAcceptor::from(tls);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            // Failed handshakes are dropped, as a real acceptor would.
            let Ok(tls) = acceptor.accept(tcp).await else {
                continue;
            };
            let Some(peer) = identity::peer_identity(tls.get_ref().1) else {
                continue;
            };
            if conns.send(Ok(PeerStream { tls, peer })).await.is_err() {
                break;
            }
        }
    });
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(xds.into_service())
            .serve_with_incoming_shutdown(ReceiverStream::new(incoming), async {
                let _ = stopped.await;
            }),
    );
    (addr, stop)
}

fn start_client(
    endpoint: String,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> (XdsClient, Arc<Names>, oneshot::Sender<()>) {
    let mut cfg = ClientConfig::new(
        endpoint,
        Node {
            id: "ztunnel-node".to_owned(),
            ..Node::default()
        },
    );
    cfg.tls = tls;
    cfg.subscriptions = vec![Subscription::wildcard(T)];
    cfg.backoff_initial = Duration::from_millis(10);
    cfg.backoff_max = Duration::from_millis(100);
    let names = Arc::new(Names::default());
    let client = XdsClient::new(cfg, names.clone());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(client.clone().run(async {
        let _ = stopped.await;
    }));
    (client, names, stop)
}

fn store_with_one() -> ResourceStore {
    let store = ResourceStore::new();
    store.apply(
        T,
        vec![(
            "a".to_owned(),
            Any {
                type_url: T.to_owned(),
                value: b"1".to_vec(),
            },
        )],
        vec![],
    );
    store
}

#[tokio::test]
async fn mutual_tls_stream_carries_the_client_identity() {
    let pki = pki();
    let hooks = Arc::new(PeerHooks::default());
    let xds = XdsServer::new(store_with_one(), hooks.clone());
    let (addr, _stop_server) = start_tls_server(xds.clone(), pki.server.clone()).await;
    let (_client, names, _stop_client) =
        start_client(format!("https://{addr}"), Some(pki.client.clone()));

    eventually("resource received over TLS", WAIT, || {
        *names.0.lock() == vec!["a".to_owned()]
    })
    .await;
    assert_eq!(*hooks.peers.lock(), vec![Some(pki.ztunnel.clone())]);
    assert_eq!(xds.clients()[0].peer.as_ref(), Some(&pki.ztunnel));
    xds.shutdown();
}

#[tokio::test]
async fn client_rejects_a_server_with_another_identity() {
    let pki = pki();
    // The server presents a certificate for a workload that is not istiod.
    let impostor = Identity::new(TD, "default", "impostor");
    let impostor_cert = pki
        .ca
        .issue(&impostor, Duration::from_secs(3600))
        .expect("impostor certificate");
    let impostor_tls = server_config(&impostor_cert, PeerPolicy::AnyInTrustDomain(TD.to_owned()))
        .expect("server config");
    let hooks = Arc::new(PeerHooks::default());
    let xds = XdsServer::new(store_with_one(), hooks.clone());
    let (addr, _stop_server) = start_tls_server(xds.clone(), impostor_tls).await;
    let (client, names, _stop_client) =
        start_client(format!("https://{addr}"), Some(pki.client.clone()));

    eventually("handshake failure reported", WAIT, || {
        client
            .last_error()
            .is_some_and(|e| e.contains(&impostor.uri()) && e.contains(&pki.istiod.uri()))
    })
    .await;
    assert!(names.0.lock().is_empty());
    assert!(
        hooks.peers.lock().is_empty(),
        "no stream reached the server"
    );
    xds.shutdown();
}

#[tokio::test]
async fn https_endpoint_without_tls_config_is_an_error() {
    let (client, names, _stop) = start_client("https://127.0.0.1:1".to_owned(), None);
    eventually("missing TLS config reported", WAIT, || {
        client
            .last_error()
            .is_some_and(|e| e.contains("no TLS client config"))
    })
    .await;
    assert!(names.0.lock().is_empty());
}
