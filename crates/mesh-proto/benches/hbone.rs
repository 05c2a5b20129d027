//! In-process HBONE over loopback with mutual TLS: bulk throughput through one stream and the
//! round-trip latency of a small message on an established stream.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::HeaderMap;
use identity::{CertificateAuthority, Identity, PeerPolicy};
use mesh_proto::hbone::{self, Drain, DrainTrigger, H2Stream, Pool, PoolConfig, PoolKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const PAYLOAD: u64 = 64 << 20;
const CHUNK: usize = 256 << 10;
const SMALL: usize = 64;
/// Target port that selects the discarding handler; anything else echoes.
const SINK_PORT: u16 = 9;

struct Env {
    pool: Pool,
    key: PoolKey,
    client_tls: Arc<rustls::ClientConfig>,
    _trigger: DrainTrigger,
}

impl Env {
    async fn start() -> Self {
        identity::install_crypto_provider();
        let ca = CertificateAuthority::generate("cluster.local").expect("CA");
        let client_id = Identity::new("cluster.local", "bench", "client");
        let server_id = Identity::new("cluster.local", "bench", "server");
        let ttl = Duration::from_secs(3600);
        let client_cert = ca.issue(&client_id, ttl).expect("client cert");
        let server_cert = ca.issue(&server_id, ttl).expect("server cert");
        let server_tls = identity::server_config(
            &server_cert,
            PeerPolicy::AnyInTrustDomain("cluster.local".into()),
        )
        .expect("server config");
        let client_tls = identity::client_config(&client_cert, PeerPolicy::only(server_id.clone()))
            .expect("client config");

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (trigger, drain) = Drain::new();
        tokio::spawn(hbone::serve(
            listener,
            move || server_tls.clone(),
            handle,
            drain,
        ));
        Self {
            pool: Pool::new(PoolConfig::default()),
            key: PoolKey {
                src: client_id,
                dst: server_id,
                dst_addr: addr,
            },
            client_tls,
            _trigger: trigger,
        }
    }

    async fn open(&self, port: u16) -> H2Stream {
        let tls = self.client_tls.clone();
        self.pool
            .connect(
                self.key.clone(),
                SocketAddr::from(([10, 0, 0, 1], port)),
                HeaderMap::new(),
                || async { Ok(tls) },
            )
            .await
            .expect("connect")
    }

    /// Sends `len` bytes through a new stream and waits for the server's byte count.
    async fn send(&self, len: u64) {
        let mut stream = self.open(SINK_PORT).await;
        let chunk = vec![0x5au8; CHUNK];
        let mut sent = 0u64;
        while sent < len {
            let n = (len - sent).min(CHUNK as u64) as usize;
            stream.write_all(&chunk[..n]).await.expect("write");
            sent += n as u64;
        }
        stream.shutdown().await.expect("shutdown");
        let received = stream.read_u64().await.expect("count");
        assert_eq!(received, len);
    }
}

/// Discards the stream on the sink port and answers with the byte count; echoes otherwise.
async fn handle(req: hbone::InboundRequest, resp: hbone::Responder) {
    let Ok(mut stream) = resp.accept() else {
        return;
    };
    if req.target.port() == SINK_PORT {
        let mut buf = vec![0u8; CHUNK];
        let mut total = 0u64;
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => total += n as u64,
                Err(_) => return,
            }
        }
        let _ = stream.write_u64(total).await;
        let _ = stream.shutdown().await;
    } else {
        let (mut r, mut w) = stream.into_split();
        if tokio::io::copy(&mut r, &mut w).await.is_ok() {
            let _ = w.shutdown().await;
        }
    }
}

fn hbone_benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let env = rt.block_on(Env::start());

    let mut group = c.benchmark_group("hbone");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6));
    group.throughput(Throughput::Bytes(PAYLOAD));
    group.bench_function("throughput_64mib_one_stream", |b| {
        b.to_async(&rt).iter(|| env.send(PAYLOAD))
    });
    group.finish();

    let stream = Arc::new(tokio::sync::Mutex::new(rt.block_on(env.open(7))));
    let mut group = c.benchmark_group("hbone");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group.bench_function("round_trip_64b_established_stream", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let stream = stream.clone();
            async move {
                let mut stream = stream.lock().await;
                let msg = [0xa5u8; SMALL];
                let mut buf = [0u8; SMALL];
                let start = Instant::now();
                for _ in 0..iters {
                    stream.write_all(&msg).await.expect("write");
                    stream.read_exact(&mut buf).await.expect("read");
                }
                start.elapsed()
            }
        })
    });
    group.finish();
}

criterion_group!(benches, hbone_benches);
criterion_main!(benches);
