//! Full mutual-TLS handshakes per second over loopback: TCP connect, TLS 1.3 handshake with both
//! certificates verified, one byte each way (so the server has verified the client too).

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use identity::{CertificateAuthority, Identity, PeerPolicy, client_config, server_config};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const TD: &str = "cluster.local";

fn handshakes(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let ca = CertificateAuthority::generate(TD).expect("CA");
    let ttl = Duration::from_secs(3600);
    let server_cert = ca
        .issue(&Identity::new(TD, "default", "server"), ttl)
        .expect("cert");
    let client_cert = ca
        .issue(&Identity::new(TD, "default", "client"), ttl)
        .expect("cert");
    let policy = PeerPolicy::AnyInTrustDomain(TD.to_string());
    let acceptor = TlsAcceptor::from(server_config(&server_cert, policy.clone()).expect("server"));
    let connector = TlsConnector::from(client_config(&client_cert, policy).expect("client"));

    let addr = rt.block_on(async {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(tcp).await {
                        let mut byte = [0u8; 1];
                        if tls.read_exact(&mut byte).await.is_ok() {
                            let _ = tls.write_all(&byte).await;
                            let _ = tls.shutdown().await;
                        }
                    }
                });
            }
        });
        addr
    });
    let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());

    let mut group = c.benchmark_group("mtls");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("full_handshake_loopback", |b| {
        b.to_async(&rt).iter(|| {
            let connector = connector.clone();
            let name = name.clone();
            async move {
                let tcp = TcpStream::connect(addr).await.expect("connect");
                tcp.set_nodelay(true).expect("nodelay");
                let mut tls = connector.connect(name, tcp).await.expect("handshake");
                tls.write_all(b"x").await.expect("write");
                let mut byte = [0u8; 1];
                tls.read_exact(&mut byte).await.expect("read");
            }
        });
    });
    group.finish();
}

criterion_group!(benches, handshakes);
criterion_main!(benches);
