//! HBONE end to end over loopback TCP with real mutual TLS: payload integrity, half-close,
//! rejection, identity checks, resets and drain.

mod hbone_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hbone_support::{DEADLINE, Mesh, TestServer, echo, read_pattern, target, write_pattern};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use identity::{Identity, PeerPolicy};
use mesh_proto::hbone::{self, HboneError, Pool, PoolConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::timeout;

const BIG: u64 = 64 << 20;
const CLIENT_SEED: u64 = 0x00c1_1e47;
const SERVER_SEED: u64 = 0x005e_4fe4;

/// What the server handler observed for one stream.
#[derive(Debug)]
struct Seen {
    peer_identity: Identity,
    target: std::net::SocketAddr,
    header: Option<HeaderValue>,
    received: std::io::Result<u64>,
    sent: std::io::Result<()>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_64_mib_both_directions_at_once() {
    let mesh = Mesh::new();
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
    let handler = move |req: hbone::InboundRequest, resp: hbone::Responder| {
        let seen_tx = seen_tx.clone();
        async move {
            let stream = resp.accept().expect("accept");
            let (mut r, mut w) = stream.into_split();
            let (received, sent) = tokio::join!(read_pattern(&mut r, CLIENT_SEED), async {
                write_pattern(&mut w, SERVER_SEED, BIG, 64 << 10).await?;
                w.shutdown().await
            });
            let _ = seen_tx.send(Seen {
                peer_identity: req.peer_identity,
                target: req.target,
                header: req.headers.get("x-test").cloned(),
                received,
                sent,
            });
        }
    };
    let server_tls = mesh.server_tls();
    let server = TestServer::start(move || server_tls.clone(), handler).await;

    let pool = Pool::new(PoolConfig::default());
    let mut headers = HeaderMap::new();
    headers.insert("x-test", HeaderValue::from_static("round-trip"));
    let client_tls = mesh.client_tls();
    let stream = pool
        .connect(
            mesh.pool_key(server.addr),
            target(8080),
            headers,
            || async { Ok(client_tls) },
        )
        .await
        .expect("connect");
    assert_eq!(stream.connection().peer_identity, mesh.server_id);
    assert_eq!(
        stream.connection().peer_leaf(),
        Some(&mesh.server_cert.chain()[0])
    );

    let (mut r, mut w) = stream.into_split();
    let (received, sent) = timeout(DEADLINE, async {
        tokio::join!(read_pattern(&mut r, SERVER_SEED), async {
            write_pattern(&mut w, CLIENT_SEED, BIG, 64 << 10).await?;
            w.shutdown().await
        })
    })
    .await
    .expect("transfer finishes");
    sent.expect("client sends 64 MiB");
    assert_eq!(received.expect("client receives the server pattern"), BIG);

    let seen = timeout(DEADLINE, seen_rx.recv())
        .await
        .expect("handler reports")
        .expect("handler ran");
    assert_eq!(
        seen.received.expect("server receives the client pattern"),
        BIG
    );
    seen.sent.expect("server sends 64 MiB");
    assert_eq!(seen.peer_identity, mesh.client_id);
    assert_eq!(seen.target, target(8080));
    assert_eq!(seen.header, Some(HeaderValue::from_static("round-trip")));
    assert_eq!(pool.connections(), 1);
}

#[tokio::test]
async fn half_close_still_receives_the_reply() {
    let mesh = Mesh::new();
    let handler = |_req: hbone::InboundRequest, resp: hbone::Responder| async move {
        let mut stream = resp.accept().expect("accept");
        let mut request = Vec::new();
        // Reads to end of stream: the reply can only be sent after the client's half-close.
        stream
            .read_to_end(&mut request)
            .await
            .expect("read request");
        let mut reply = b"reply to ".to_vec();
        reply.extend_from_slice(&request);
        stream.write_all(&reply).await.expect("write reply");
        stream.shutdown().await.expect("shutdown");
    };
    let server_tls = mesh.server_tls();
    let server = TestServer::start(move || server_tls.clone(), handler).await;

    let tcp = TcpStream::connect(server.addr).await.expect("tcp");
    let (mut stream, _conn) =
        hbone::connect_once(tcp, mesh.client_tls(), target(80), HeaderMap::new())
            .await
            .expect("connect");
    stream.write_all(b"ping").await.expect("write");
    stream.shutdown().await.expect("half-close");
    let mut reply = Vec::new();
    timeout(DEADLINE, stream.read_to_end(&mut reply))
        .await
        .expect("reply in time")
        .expect("read reply");
    assert_eq!(reply, b"reply to ping");
    let err = stream
        .write_all(b"more")
        .await
        .expect_err("write after shutdown");
    assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe);
}

#[tokio::test]
async fn handler_rejection_is_the_client_status() {
    let mesh = Mesh::new();
    let handler = |_req: hbone::InboundRequest, resp: hbone::Responder| async move {
        resp.reject(StatusCode::FORBIDDEN);
    };
    let server_tls = mesh.server_tls();
    let server = TestServer::start(move || server_tls.clone(), handler).await;

    let tcp = TcpStream::connect(server.addr).await.expect("tcp");
    let err = hbone::connect_once(tcp, mesh.client_tls(), target(80), HeaderMap::new())
        .await
        .expect_err("rejected");
    assert!(
        matches!(err, HboneError::Status(s) if s == StatusCode::FORBIDDEN),
        "{err:?}"
    );

    let pool = Pool::new(PoolConfig::default());
    let client_tls = mesh.client_tls();
    let err = pool
        .connect(
            mesh.pool_key(server.addr),
            target(80),
            HeaderMap::new(),
            || async { Ok(client_tls) },
        )
        .await
        .expect_err("rejected through the pool");
    assert_eq!(err.status(), Some(StatusCode::FORBIDDEN));
    assert!(!err.is_retryable());
}

/// Handler that counts calls and accepts.
fn counting_handler(calls: Arc<AtomicUsize>) -> impl hbone::Handler {
    move |req: hbone::InboundRequest, resp: hbone::Responder| {
        let calls = calls.clone();
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            echo(req, resp).await;
        }
    }
}

#[tokio::test]
async fn client_refuses_a_server_with_another_identity() {
    let mesh = Mesh::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let server_tls = mesh.server_tls();
    let server =
        TestServer::start(move || server_tls.clone(), counting_handler(calls.clone())).await;

    let expected = Identity::new(hbone_support::TRUST_DOMAIN, "backend", "other");
    let tls = identity::client_config(&mesh.client_cert, PeerPolicy::only(expected.clone()))
        .expect("client config");
    let tcp = TcpStream::connect(server.addr).await.expect("tcp");
    let err = hbone::connect_once(tcp, tls, target(80), HeaderMap::new())
        .await
        .expect_err("server identity mismatch");
    assert!(matches!(err, HboneError::Tls { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&mesh.server_id.uri()), "{text}");
    assert!(text.contains(&expected.uri()), "{text}");

    // The pool checks the handshake result against the key even when the TLS config would
    // accept any identity of the trust domain.
    let pool = Pool::new(PoolConfig::default());
    let lax = identity::client_config(
        &mesh.client_cert,
        PeerPolicy::AnyInTrustDomain(hbone_support::TRUST_DOMAIN.into()),
    )
    .expect("client config");
    let mut key = mesh.pool_key(server.addr);
    key.dst = expected.clone();
    let err = pool
        .connect(key, target(80), HeaderMap::new(), || async { Ok(lax) })
        .await
        .expect_err("pool key identity mismatch");
    assert!(
        matches!(err.root(), HboneError::PeerIdentity { expected: e, actual: a, .. }
            if *e == expected && *a == mesh.server_id),
        "{err:?}"
    );
    assert_eq!(pool.connections(), 0);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn plaintext_client_is_refused_before_the_handler() {
    let mesh = Mesh::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let server_tls = mesh.server_tls();
    let server =
        TestServer::start(move || server_tls.clone(), counting_handler(calls.clone())).await;

    // HTTP/2 CONNECT without TLS.
    let tcp = TcpStream::connect(server.addr).await.expect("tcp");
    let result = timeout(DEADLINE, async {
        let (send, conn) = h2::client::handshake(tcp).await?;
        tokio::spawn(conn);
        let mut send = send.ready().await?;
        let request = Request::builder()
            .method(Method::CONNECT)
            .uri(
                http::Uri::builder()
                    .authority("10.0.0.7:80")
                    .build()
                    .expect("uri"),
            )
            .body(())
            .expect("request");
        let (response, _body) = send.send_request(request, false)?;
        response.await
    })
    .await
    .expect("plaintext attempt ends");
    let err = result.expect_err("plaintext CONNECT must fail");
    assert!(
        err.is_io() || err.is_go_away() || err.reason().is_some(),
        "{err:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);

    // The listener keeps serving TLS clients afterwards.
    let tcp = TcpStream::connect(server.addr).await.expect("tcp");
    let (mut stream, _conn) =
        hbone::connect_once(tcp, mesh.client_tls(), target(80), HeaderMap::new())
            .await
            .expect("TLS client still served");
    stream.write_all(b"x").await.expect("write");
    stream.shutdown().await.expect("shutdown");
    let mut echoed = Vec::new();
    stream.read_to_end(&mut echoed).await.expect("read");
    assert_eq!(echoed, b"x");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn server_reset_reads_as_connection_reset() {
    let mesh = Mesh::new();
    let handler = |_req: hbone::InboundRequest, resp: hbone::Responder| async move {
        let mut stream = resp.accept().expect("accept");
        let mut first = [0u8; 5];
        stream.read_exact(&mut first).await.expect("read");
        stream.reset();
    };
    let server_tls = mesh.server_tls();
    let server = TestServer::start(move || server_tls.clone(), handler).await;

    let tcp = TcpStream::connect(server.addr).await.expect("tcp");
    let (mut stream, _conn) =
        hbone::connect_once(tcp, mesh.client_tls(), target(80), HeaderMap::new())
            .await
            .expect("connect");
    stream.write_all(b"hello").await.expect("write");
    let mut buf = [0u8; 16];
    let err = timeout(DEADLINE, stream.read(&mut buf))
        .await
        .expect("read ends")
        .expect_err("reset by server");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    let err = stream
        .write_all(b"more")
        .await
        .expect_err("write after reset");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
}

#[tokio::test]
async fn client_reset_or_drop_reads_as_connection_reset_on_the_server() {
    let mesh = Mesh::new();
    let (kind_tx, mut kind_rx) = mpsc::unbounded_channel();
    let handler = move |_req: hbone::InboundRequest, resp: hbone::Responder| {
        let kind_tx = kind_tx.clone();
        async move {
            let mut stream = resp.accept().expect("accept");
            stream.write_all(b"ready").await.expect("write");
            let mut buf = [0u8; 16];
            let outcome = stream.read(&mut buf).await.map_err(|e| e.kind());
            let _ = kind_tx.send(outcome);
        }
    };
    let server_tls = mesh.server_tls();
    let server = TestServer::start(move || server_tls.clone(), handler).await;

    for explicit_reset in [true, false] {
        let tcp = TcpStream::connect(server.addr).await.expect("tcp");
        let (mut stream, _conn) =
            hbone::connect_once(tcp, mesh.client_tls(), target(80), HeaderMap::new())
                .await
                .expect("connect");
        let mut ready = [0u8; 5];
        stream.read_exact(&mut ready).await.expect("server ready");
        if explicit_reset {
            stream.reset();
        } else {
            // Dropped without shutdown: an abort, not an end of stream.
            drop(stream);
        }
        let outcome = timeout(DEADLINE, kind_rx.recv())
            .await
            .expect("server read ends")
            .expect("handler ran");
        assert_eq!(
            outcome,
            Err(std::io::ErrorKind::ConnectionReset),
            "explicit reset: {explicit_reset}"
        );
    }
}

#[tokio::test]
async fn non_connect_and_bad_authority_are_refused() {
    let mesh = Mesh::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let server_tls = mesh.server_tls();
    let server =
        TestServer::start(move || server_tls.clone(), counting_handler(calls.clone())).await;

    let tcp = TcpStream::connect(server.addr).await.expect("tcp");
    let connector = tokio_rustls::TlsConnector::from(mesh.client_tls());
    let name = rustls::pki_types::ServerName::IpAddress(server.addr.ip().into());
    let tls = connector.connect(name, tcp).await.expect("tls");
    let (send, conn) = h2::client::handshake(tls).await.expect("h2");
    tokio::spawn(conn);

    let get = Request::builder()
        .method(Method::GET)
        .uri(format!("https://{}/", server.addr))
        .body(())
        .expect("request");
    let mut send = send.ready().await.expect("ready");
    let (response, _) = send.send_request(get, true).expect("send GET");
    let response = response.await.expect("GET response");
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);

    let connect = Request::builder()
        .method(Method::CONNECT)
        .uri(
            http::Uri::builder()
                .authority("example.com:80")
                .build()
                .expect("uri"),
        )
        .body(())
        .expect("request");
    let mut send = send.ready().await.expect("ready");
    let (response, _) = send.send_request(connect, false).expect("send CONNECT");
    let response = response.await.expect("CONNECT response");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn drain_finishes_open_streams_and_stops_new_ones() {
    let mesh = Mesh::new();
    let server_tls = mesh.server_tls();
    let server = TestServer::start(move || server_tls.clone(), echo).await;
    let addr = server.addr;

    let pool = Pool::new(PoolConfig::default());
    let key = mesh.pool_key(addr);
    let client_tls = mesh.client_tls();
    let tls = client_tls.clone();
    let mut stream = pool
        .connect(key.clone(), target(80), HeaderMap::new(), || async {
            Ok(tls)
        })
        .await
        .expect("connect");
    stream.write_all(b"before").await.expect("write");
    let mut buf = [0u8; 6];
    stream.read_exact(&mut buf).await.expect("echo");
    assert_eq!(&buf, b"before");

    let drained = tokio::spawn(server.drain());
    // The listener stops: new TCP connections are refused.
    test_support::eventually("listener closed", DEADLINE, || {
        std::net::TcpStream::connect(addr).is_err()
    })
    .await;
    assert!(!drained.is_finished(), "drain waits for the open stream");

    // The open stream keeps working until the client ends it.
    stream
        .write_all(b"during")
        .await
        .expect("write while draining");
    stream
        .read_exact(&mut buf)
        .await
        .expect("echo while draining");
    assert_eq!(&buf, b"during");
    stream.shutdown().await.expect("shutdown");
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.expect("read to end");
    assert!(rest.is_empty());
    drop(stream);

    timeout(DEADLINE, drained)
        .await
        .expect("drain completes after the last stream")
        .expect("drain task");
    test_support::eventually("pool dropped the drained connection", DEADLINE, || {
        pool.connections() == 0
    })
    .await;
    let err = pool
        .connect(key, target(80), HeaderMap::new(), || async {
            Ok(client_tls)
        })
        .await
        .expect_err("server is gone");
    assert!(err.is_retryable(), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_waits_for_a_reader_that_does_not_read() {
    const TOTAL: u64 = 16 << 20;
    const SEED: u64 = 77;
    let window = u64::from(hbone::settings::STREAM_WINDOW);
    let mesh = Mesh::new();
    let gate = Arc::new(tokio::sync::Notify::new());
    let (result_tx, mut result_rx) = mpsc::unbounded_channel();
    let server_gate = gate.clone();
    let handler = move |_req: hbone::InboundRequest, resp: hbone::Responder| {
        let (gate, result_tx) = (server_gate.clone(), result_tx.clone());
        async move {
            let mut stream = resp.accept().expect("accept");
            // Reads nothing until the test opens the gate.
            gate.notified().await;
            let _ = result_tx.send(read_pattern(&mut stream, SEED).await);
        }
    };
    let server_tls = mesh.server_tls();
    let server = TestServer::start(move || server_tls.clone(), handler).await;

    let tcp = TcpStream::connect(server.addr).await.expect("tcp");
    let (mut stream, _conn) =
        hbone::connect_once(tcp, mesh.client_tls(), target(80), HeaderMap::new())
            .await
            .expect("connect");
    let written = Arc::new(AtomicUsize::new(0));
    let counter = written.clone();
    // The writer drops the stream right after shutdown, long before the peer has read the
    // data still queued: that data must be delivered all the same.
    let writer = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 << 10];
        let mut offset = 0u64;
        while offset < TOTAL {
            let n = (TOTAL - offset).min(buf.len() as u64) as usize;
            hbone_support::fill_pattern(SEED, offset, &mut buf[..n]);
            let accepted = stream.write(&buf[..n]).await?;
            offset += accepted as u64;
            counter.store(offset as usize, Ordering::SeqCst);
        }
        stream.shutdown().await
    });

    // The writer gets exactly the peer's stream window and then has to wait.
    test_support::eventually("writer fills the stream window", DEADLINE, || {
        written.load(Ordering::SeqCst) as u64 >= window
    })
    .await;
    assert_eq!(written.load(Ordering::SeqCst) as u64, window);
    assert!(!writer.is_finished());

    gate.notify_one();
    timeout(DEADLINE, writer)
        .await
        .expect("writer finishes once the peer reads")
        .expect("writer task")
        .expect("writes succeed");
    let received = timeout(DEADLINE, result_rx.recv())
        .await
        .expect("reader finishes")
        .expect("handler ran");
    assert_eq!(received.expect("server reads the pattern"), TOTAL);
}

#[tokio::test]
async fn server_refuses_a_client_identity_it_does_not_allow() {
    let mesh = Mesh::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let allowed = Identity::new(hbone_support::TRUST_DOMAIN, "frontend", "admin");
    let server_tls = identity::server_config(&mesh.server_cert, PeerPolicy::only(allowed))
        .expect("server config");
    let server =
        TestServer::start(move || server_tls.clone(), counting_handler(calls.clone())).await;

    let tcp = TcpStream::connect(server.addr).await.expect("tcp");
    let err = timeout(
        DEADLINE,
        hbone::connect_once(tcp, mesh.client_tls(), target(80), HeaderMap::new()),
    )
    .await
    .expect("attempt ends")
    .expect_err("client identity refused");
    // TLS 1.3 lets the client finish its handshake before the server has checked the client
    // certificate, so the refusal arrives as an alert on the first HTTP/2 exchange.
    assert!(matches!(err, HboneError::Tls { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("alert"), "{text}");
    assert_eq!(err.side(), hbone::FailureSide::Peer, "{err:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}
