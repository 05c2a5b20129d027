//! The HBONE client pool against a real server: stream limits per connection, idle eviction and
//! recovery from connections the server closed.

mod hbone_support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hbone_support::{DEADLINE, Mesh, TestServer, echo, read_pattern, target, write_pattern};
use http::HeaderMap;
use mesh_proto::hbone::{self, Drain, DrainTrigger, Pool, PoolConfig};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Barrier;
use tokio::time::timeout;

/// An echo handler that records the TCP peer of every connection it serves streams on.
fn recording_echo(peers: Arc<Mutex<HashSet<SocketAddr>>>) -> impl hbone::Handler {
    move |req: hbone::InboundRequest, resp: hbone::Responder| {
        peers.lock().insert(req.peer_addr);
        echo(req, resp)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_streams_share_ceil_n_over_limit_connections() {
    const STREAMS: u32 = 1000;
    const LIMIT: u32 = 100;
    const PAYLOAD: u64 = 48 << 10;

    let mesh = Mesh::new();
    let peers = Arc::new(Mutex::new(HashSet::new()));
    let server_tls = mesh.server_tls();
    let server = TestServer::start(move || server_tls.clone(), recording_echo(peers.clone())).await;

    let pool = Pool::new(PoolConfig {
        max_streams_per_conn: LIMIT,
        ..PoolConfig::default()
    });
    let key = mesh.pool_key(server.addr);
    let client_tls = mesh.client_tls();
    // Every stream stays open until all of them are, so the pool must hold all 1000 at once.
    let all_open = Arc::new(Barrier::new(STREAMS as usize + 1));
    let mut tasks = Vec::new();
    for i in 0..STREAMS {
        let (pool, key, tls, all_open) = (
            pool.clone(),
            key.clone(),
            client_tls.clone(),
            all_open.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let stream = pool
                .connect(key, target(1000 + i as u16), HeaderMap::new(), || async {
                    Ok(tls)
                })
                .await;
            all_open.wait().await;
            let stream = stream.map_err(|e| format!("stream {i}: connect: {e}"))?;
            let seed = u64::from(i);
            let (mut r, mut w) = stream.into_split();
            let (sent, received) = tokio::join!(
                async {
                    write_pattern(&mut w, seed, PAYLOAD, 16 << 10).await?;
                    w.shutdown().await
                },
                read_pattern(&mut r, seed)
            );
            sent.map_err(|e| format!("stream {i}: write: {e}"))?;
            match received {
                Ok(n) if n == PAYLOAD => Ok(()),
                Ok(n) => Err(format!("stream {i}: echoed {n} of {PAYLOAD} bytes")),
                Err(e) => Err(format!("stream {i}: read: {e}")),
            }
        }));
    }
    timeout(DEADLINE, all_open.wait())
        .await
        .expect("all streams opened");
    let open_connections = pool.connections();

    let mut failures = Vec::new();
    for task in tasks {
        if let Err(e) = timeout(DEADLINE, task)
            .await
            .expect("stream finishes")
            .expect("task")
        {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "{} streams failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );

    let expected = STREAMS.div_ceil(LIMIT) as usize;
    assert_eq!(
        open_connections, expected,
        "pool connections with all streams open"
    );
    assert_eq!(
        peers.lock().len(),
        expected,
        "TCP connections the server saw"
    );
}

#[tokio::test]
async fn idle_connections_are_closed_and_replaced_on_demand() {
    let mesh = Mesh::new();
    let peers = Arc::new(Mutex::new(HashSet::new()));
    let server_tls = mesh.server_tls();
    let server = TestServer::start(move || server_tls.clone(), recording_echo(peers.clone())).await;

    let pool = Pool::new(PoolConfig {
        idle_timeout: Duration::from_millis(200),
        ..PoolConfig::default()
    });
    let key = mesh.pool_key(server.addr);
    let client_tls = mesh.client_tls();

    let round_trip = |payload: &'static [u8]| {
        let (pool, key, tls) = (pool.clone(), key.clone(), client_tls.clone());
        async move {
            let mut stream = pool
                .connect(key, target(80), HeaderMap::new(), || async { Ok(tls) })
                .await
                .expect("connect");
            stream.write_all(payload).await.expect("write");
            stream.shutdown().await.expect("shutdown");
            let mut echoed = Vec::new();
            stream.read_to_end(&mut echoed).await.expect("read");
            assert_eq!(echoed, payload);
        }
    };

    // Sequential streams reuse the connection while it is busy or recently used.
    round_trip(b"one").await;
    round_trip(b"two").await;
    assert_eq!(peers.lock().len(), 1);
    assert_eq!(pool.connections(), 1);

    test_support::eventually("idle connection closed", DEADLINE, || {
        pool.connections() == 0
    })
    .await;
    round_trip(b"three").await;
    assert_eq!(
        peers.lock().len(),
        2,
        "a new connection after the idle one was closed"
    );
}

/// A server whose connections can be closed one by one (GOAWAY) while the listener stays up.
struct ClosableServer {
    addr: SocketAddr,
    triggers: Arc<Mutex<Vec<DrainTrigger>>>,
}

impl ClosableServer {
    async fn start(tls: Arc<rustls::ServerConfig>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let triggers = Arc::new(Mutex::new(Vec::new()));
        let registry = triggers.clone();
        tokio::spawn(async move {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls);
            while let Ok((tcp, _)) = listener.accept().await {
                let (trigger, drain) = Drain::new();
                registry.lock().push(trigger);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        let _ = hbone::serve_connection(tls, echo, drain).await;
                    }
                });
            }
        });
        Self { addr, triggers }
    }

    fn accepted(&self) -> usize {
        self.triggers.lock().len()
    }

    /// Sends GOAWAY on every connection accepted so far.
    fn close_all(&self) {
        for trigger in self.triggers.lock().drain(..) {
            tokio::spawn(trigger.drain());
        }
    }
}

#[tokio::test]
async fn connections_closed_by_the_server_are_dropped_and_replaced() {
    let mesh = Mesh::new();
    let server = ClosableServer::start(mesh.server_tls()).await;
    let pool = Pool::new(PoolConfig::default());
    let key = mesh.pool_key(server.addr);
    let client_tls = mesh.client_tls();
    let mut accepted = 0;

    for round in 0..3 {
        let tls = client_tls.clone();
        let mut stream = pool
            .connect(key.clone(), target(80), HeaderMap::new(), || async {
                Ok(tls)
            })
            .await
            .unwrap_or_else(|e| panic!("round {round}: connect: {e}"));
        stream.write_all(b"ping").await.expect("write");
        stream.shutdown().await.expect("shutdown");
        let mut echoed = Vec::new();
        stream.read_to_end(&mut echoed).await.expect("read");
        assert_eq!(echoed, b"ping");
        drop(stream);
        accepted += server.accepted();
        assert_eq!(pool.connections(), 1);
        server.close_all();
        test_support::eventually("closed connection leaves the pool", DEADLINE, || {
            pool.connections() == 0
        })
        .await;
    }
    assert_eq!(accepted, 3, "one new connection per round");
}

#[tokio::test]
async fn refused_stream_is_retried_on_a_new_connection() {
    let mesh = Mesh::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = tokio_rustls::TlsAcceptor::from(mesh.server_tls());
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    // A bare HTTP/2 server: its first connection answers the first CONNECT and refuses every
    // later one with RST_STREAM(REFUSED_STREAM); later connections answer everything.
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let index = counter.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut conn) = h2::server::handshake(tls).await else {
                    return;
                };
                let mut open = Vec::new();
                while let Some(Ok((request, mut respond))) = conn.accept().await {
                    if index == 0 && !open.is_empty() {
                        respond.send_reset(h2::Reason::REFUSED_STREAM);
                        continue;
                    }
                    if let Ok(send) = respond.send_response(http::Response::new(()), false) {
                        open.push((request, send));
                    }
                }
            });
        }
    });

    let pool = Pool::new(PoolConfig::default());
    let key = mesh.pool_key(addr);
    let tls = mesh.client_tls();
    let connect = || {
        let (pool, key, tls) = (pool.clone(), key.clone(), tls.clone());
        async move {
            pool.connect(key, target(80), HeaderMap::new(), || async { Ok(tls) })
                .await
        }
    };
    let first = connect().await.expect("first stream");
    let second = connect()
        .await
        .expect("second stream, retried on a new connection");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    assert_ne!(
        first.connection().local_addr,
        second.connection().local_addr,
        "the refused stream moved to another connection"
    );
    // The refusing connection is no longer offered; the first stream still holds it open.
    assert_eq!(pool.connections(), 1);
    let third = connect().await.expect("third stream");
    assert_eq!(
        third.connection().local_addr,
        second.connection().local_addr
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}
