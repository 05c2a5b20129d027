//! Certificate rotation under continuous HBONE traffic: no stream fails, and connections made
//! after the swap present the new certificates in both directions.

mod hbone_support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use hbone_support::{CERT_TTL, DEADLINE, Mesh, TestServer, echo, server_tls, target};
use http::{HeaderMap, HeaderValue};
use identity::PeerPolicy;
use mesh_proto::hbone::{self, Pool, PoolConfig};
use parking_lot::{Mutex, RwLock};
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LOOPS: usize = 4;
/// Streams each loop completes before, and again after, the rotation.
const STREAMS_PER_PHASE: usize = 15;

/// One completed stream of a client loop.
struct Outcome {
    seq: u64,
    /// Certificate generation published before the stream's connection was made.
    generation: u64,
    server_leaf: CertificateDer<'static>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_traffic_fails_no_stream() {
    let mesh = Mesh::new();
    let new_server_cert = mesh
        .ca
        .issue(&mesh.server_id, CERT_TTL)
        .expect("new server cert");
    let new_client_cert = mesh
        .ca
        .issue(&mesh.client_id, CERT_TTL)
        .expect("new client cert");
    assert_ne!(new_server_cert.serial(), mesh.server_cert.serial());
    assert_ne!(new_client_cert.serial(), mesh.client_cert.serial());

    // The client leaf the server saw, by the stream's x-seq header.
    let client_leaves: Arc<Mutex<HashMap<u64, CertificateDer<'static>>>> = Arc::default();
    let recorded = client_leaves.clone();
    let handler = move |req: hbone::InboundRequest, resp: hbone::Responder| {
        let seq = req
            .headers
            .get("x-seq")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let (Some(seq), Some(leaf)) = (seq, resp.connection().peer_leaf()) {
            recorded.lock().insert(seq, leaf.clone());
        }
        echo(req, resp)
    };
    let server_slot = Arc::new(RwLock::new(mesh.server_tls()));
    let slot = server_slot.clone();
    let server = TestServer::start(move || slot.read().clone(), handler).await;
    let client_slot = Arc::new(RwLock::new(mesh.client_tls()));

    // A pooled stream opened before the rotation that keeps exchanging data through it.
    let pool = Pool::new(PoolConfig::default());
    let tls = client_slot.read().clone();
    let mut long_lived = pool
        .connect(
            mesh.pool_key(server.addr),
            target(9000),
            HeaderMap::new(),
            || async { Ok(tls) },
        )
        .await
        .expect("long-lived stream");

    let generation = Arc::new(AtomicU64::new(0));
    let next_seq = Arc::new(AtomicU64::new(0));
    let done_after = Arc::new(AtomicUsize::new(0));
    let done_total = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut loops = Vec::new();
    for _ in 0..LOOPS {
        let (generation, next_seq, done_after, done_total, stop, client_slot) = (
            generation.clone(),
            next_seq.clone(),
            done_after.clone(),
            done_total.clone(),
            stop.clone(),
            client_slot.clone(),
        );
        let addr = server.addr;
        loops.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let seq = next_seq.fetch_add(1, Ordering::SeqCst);
                // Read the generation before the config and the connection: a stream that saw
                // the new generation connects after both slots were swapped.
                let generation = generation.load(Ordering::SeqCst);
                let tls = client_slot.read().clone();
                let result = async {
                    let tcp = TcpStream::connect(addr).await?;
                    let mut headers = HeaderMap::new();
                    headers.insert("x-seq", HeaderValue::from(seq));
                    let (mut stream, _conn) =
                        hbone::connect_once(tcp, tls, target(80), headers).await?;
                    let payload = format!("stream {seq}").into_bytes();
                    stream.write_all(&payload).await?;
                    stream.shutdown().await?;
                    let mut echoed = Vec::new();
                    stream.read_to_end(&mut echoed).await?;
                    anyhow::ensure!(echoed == payload, "stream {seq}: echo differs");
                    let server_leaf = stream
                        .connection()
                        .peer_leaf()
                        .cloned()
                        .ok_or_else(|| anyhow::anyhow!("no server certificate"))?;
                    Ok::<_, anyhow::Error>(server_leaf)
                }
                .await;
                let server_leaf = result.map_err(|e| format!("stream {seq}: {e:#}"))?;
                outcomes.push(Outcome {
                    seq,
                    generation,
                    server_leaf,
                });
                done_total.fetch_add(1, Ordering::SeqCst);
                if generation == 1 {
                    done_after.fetch_add(1, Ordering::SeqCst);
                }
            }
            Ok::<_, String>(outcomes)
        }));
    }

    let mut round = 0;
    test_support::eventually("streams before the rotation", DEADLINE, || {
        done_total.load(Ordering::SeqCst) >= LOOPS * STREAMS_PER_PHASE
    })
    .await;
    ping(&mut long_lived, round).await;
    round += 1;

    // Rotate: new server and client certificates from the same CA, then publish the generation.
    *server_slot.write() = server_tls(&new_server_cert);
    *client_slot.write() =
        identity::client_config(&new_client_cert, PeerPolicy::only(mesh.server_id.clone()))
            .expect("new client config");
    generation.store(1, Ordering::SeqCst);

    // The long-lived stream keeps exchanging data while the loops run on new certificates.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while done_after.load(Ordering::SeqCst) < LOOPS * STREAMS_PER_PHASE {
        ping(&mut long_lived, round).await;
        round += 1;
        assert!(
            tokio::time::Instant::now() < deadline,
            "client loops stalled after the rotation"
        );
    }
    stop.store(true, Ordering::SeqCst);
    ping(&mut long_lived, round).await;

    let mut outcomes = Vec::new();
    for task in loops {
        let result = tokio::time::timeout(DEADLINE, task)
            .await
            .expect("client loop stops")
            .expect("client loop task");
        outcomes.extend(result.unwrap_or_else(|e| panic!("a stream failed: {e}")));
    }

    let old_server = &mesh.server_cert.chain()[0];
    let old_client = &mesh.client_cert.chain()[0];
    let new_server = &new_server_cert.chain()[0];
    let new_client = &new_client_cert.chain()[0];
    let client_leaves = client_leaves.lock();
    let (mut before, mut after) = (0, 0);
    for o in &outcomes {
        let client_leaf = client_leaves
            .get(&o.seq)
            .unwrap_or_else(|| panic!("server did not record stream {}", o.seq));
        if o.generation == 1 {
            after += 1;
            assert_eq!(&o.server_leaf, new_server, "stream {}: server cert", o.seq);
            assert_eq!(client_leaf, new_client, "stream {}: client cert", o.seq);
        } else {
            before += 1;
            assert!(o.server_leaf == *old_server || o.server_leaf == *new_server);
            assert!(client_leaf == old_client || client_leaf == new_client);
        }
    }
    assert!(
        before >= LOOPS * STREAMS_PER_PHASE,
        "{before} streams before"
    );
    assert!(after >= LOOPS * STREAMS_PER_PHASE, "{after} streams after");
    // The long-lived stream still runs over the connection made with the old certificates.
    assert_eq!(long_lived.connection().peer_leaf(), Some(old_server));
}

/// One echo exchange on the long-lived stream.
async fn ping(stream: &mut hbone::H2Stream, round: u32) {
    let msg = format!("ping {round:04}");
    stream
        .write_all(msg.as_bytes())
        .await
        .expect("long-lived write");
    let mut buf = vec![0u8; msg.len()];
    stream.read_exact(&mut buf).await.expect("long-lived read");
    assert_eq!(buf, msg.as_bytes());
}
