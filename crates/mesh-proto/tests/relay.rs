//! `relay_hbone` on both ends of a tunnel, as the node proxies use it: an application's TCP
//! connection relayed into an HBONE stream over mutual TLS, and out of it into a TCP server.

mod hbone_support;

use hbone_support::{DEADLINE, Mesh, TestServer, read_pattern, target, write_pattern};
use http::HeaderMap;
use mesh_proto::hbone;
use mesh_proto::relay::relay_hbone;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::timeout;

const UP: u64 = 24 << 20;
const DOWN: u64 = 8 << 20;
const CLIENT_SEED: u64 = 0x0c11;
const SERVER_SEED: u64 = 0x05e7;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_and_half_closes_cross_a_relayed_tunnel_both_ways() {
    let mesh = Mesh::new();

    // The destination application: reads the client's pattern to its end, then answers.
    let backend = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let backend_addr = backend.local_addr().expect("addr");
    let app = tokio::spawn(async move {
        let (mut s, _) = backend.accept().await.expect("accept");
        let got = read_pattern(&mut s, CLIENT_SEED)
            .await
            .expect("server reads");
        write_pattern(&mut s, SERVER_SEED, DOWN, 100_000)
            .await
            .expect("server writes");
        s.shutdown().await.expect("server shutdown");
        got
    });

    // The destination proxy: HBONE in, relayed to the application.
    let (counts_tx, counts_rx) = oneshot::channel();
    let counts_tx = std::sync::Arc::new(std::sync::Mutex::new(Some(counts_tx)));
    let handler = move |_req: hbone::InboundRequest, resp: hbone::Responder| {
        let tx = counts_tx.lock().expect("lock").take();
        async move {
            let mut stream = resp.accept().expect("accept");
            let tcp = TcpStream::connect(backend_addr).await.expect("dial app");
            let counts = relay_hbone(&mut stream, &tcp).await;
            if let Some(tx) = tx {
                let _ = tx.send(counts.map_err(|e| e.to_string()));
            }
        }
    };
    let server_tls = mesh.server_tls();
    let server = TestServer::start(move || server_tls.clone(), handler).await;

    // The source proxy: a captured TCP connection relayed into an HBONE stream.
    let captured = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let captured_addr = captured.local_addr().expect("addr");
    let client_tls = mesh.client_tls();
    let source = tokio::spawn(async move {
        let (tcp, _) = captured.accept().await.expect("accept");
        let up = TcpStream::connect(server.addr).await.expect("tcp");
        let (mut stream, _conn) = hbone::connect_once(up, client_tls, target(80), HeaderMap::new())
            .await
            .expect("connect");
        relay_hbone(&mut stream, &tcp).await
    });

    // The source application.
    let mut client = TcpStream::connect(captured_addr).await.expect("connect");
    let (mut r, mut w) = client.split();
    let (sent, received) = timeout(DEADLINE, async {
        tokio::join!(
            async {
                write_pattern(&mut w, CLIENT_SEED, UP, 64 << 10).await?;
                w.shutdown().await
            },
            read_pattern(&mut r, SERVER_SEED)
        )
    })
    .await
    .expect("transfer finishes");
    sent.expect("client sends");
    assert_eq!(received.expect("client reads the answer"), DOWN);
    let mut rest = [0u8; 1];
    assert_eq!(client.read(&mut rest).await.expect("eof"), 0);

    assert_eq!(
        app.await.expect("app"),
        UP,
        "the application got every byte"
    );
    // Source proxy: (stream → tcp, tcp → stream); destination proxy the same from its side.
    let src = source.await.expect("join").expect("source relay");
    assert_eq!(src, (DOWN, UP));
    let dst = timeout(DEADLINE, counts_rx)
        .await
        .expect("destination reports")
        .expect("sent")
        .expect("destination relay");
    assert_eq!(dst, (UP, DOWN));
}
