//! Shared set-up for the HBONE tests: a CA with two workload identities, servers on loopback and
//! a deterministic byte pattern to check payloads.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use identity::{CertificateAuthority, Identity, PeerPolicy, WorkloadCertificate};
use mesh_proto::hbone::{self, Drain, DrainTrigger, Handler};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

pub const TRUST_DOMAIN: &str = "cluster.local";
pub const CERT_TTL: Duration = Duration::from_secs(3600);
/// Deadline for anything a test waits on.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// A CA and the certificates of a client and a server workload.
pub struct Mesh {
    pub ca: CertificateAuthority,
    pub client_id: Identity,
    pub server_id: Identity,
    pub client_cert: WorkloadCertificate,
    pub server_cert: WorkloadCertificate,
}

impl Mesh {
    pub fn new() -> Self {
        identity::install_crypto_provider();
        let ca = CertificateAuthority::generate(TRUST_DOMAIN).expect("generate CA");
        let client_id = Identity::new(TRUST_DOMAIN, "frontend", "web");
        let server_id = Identity::new(TRUST_DOMAIN, "backend", "api");
        let client_cert = ca.issue(&client_id, CERT_TTL).expect("issue client cert");
        let server_cert = ca.issue(&server_id, CERT_TTL).expect("issue server cert");
        Self {
            ca,
            client_id,
            server_id,
            client_cert,
            server_cert,
        }
    }

    /// Server config accepting any identity of the trust domain.
    pub fn server_tls(&self) -> Arc<rustls::ServerConfig> {
        server_tls(&self.server_cert)
    }

    /// Client config that only accepts the server identity.
    pub fn client_tls(&self) -> Arc<rustls::ClientConfig> {
        identity::client_config(&self.client_cert, PeerPolicy::only(self.server_id.clone()))
            .expect("client config")
    }

    pub fn pool_key(&self, dst_addr: SocketAddr) -> hbone::PoolKey {
        hbone::PoolKey {
            src: self.client_id.clone(),
            dst: self.server_id.clone(),
            dst_addr,
        }
    }
}

pub fn server_tls(cert: &WorkloadCertificate) -> Arc<rustls::ServerConfig> {
    identity::server_config(cert, PeerPolicy::AnyInTrustDomain(TRUST_DOMAIN.into()))
        .expect("server config")
}

/// An HBONE listener on an ephemeral loopback port, drained when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    trigger: Option<DrainTrigger>,
}

impl TestServer {
    pub async fn start<H, T>(tls: T, handler: H) -> Self
    where
        H: Handler,
        T: Fn() -> Arc<rustls::ServerConfig> + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (trigger, drain) = Drain::new();
        tokio::spawn(hbone::serve(listener, tls, handler, drain));
        Self {
            addr,
            trigger: Some(trigger),
        }
    }

    /// Starts draining and returns the future that completes once every connection is done.
    pub fn drain(mut self) -> impl std::future::Future<Output = ()> {
        let trigger = self.trigger.take();
        async move {
            if let Some(trigger) = trigger {
                trigger.drain().await;
            }
        }
    }
}

/// A target authority that does not need to exist: the tests' handlers never dial it.
pub fn target(port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 7], port))
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Fills `buf` with the pattern for `seed` starting at stream offset `offset`.
pub fn fill_pattern(seed: u64, offset: u64, buf: &mut [u8]) {
    let mut word = mix(seed ^ (offset >> 3));
    for (i, byte) in buf.iter_mut().enumerate() {
        let pos = offset + i as u64;
        if pos & 7 == 0 {
            word = mix(seed ^ (pos >> 3));
        }
        *byte = (word >> ((pos & 7) * 8)) as u8;
    }
}

/// Writes `len` bytes of the pattern for `seed` in chunks of `chunk` bytes.
pub async fn write_pattern<W: AsyncWrite + Unpin>(
    w: &mut W,
    seed: u64,
    len: u64,
    chunk: usize,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; chunk];
    let mut offset = 0u64;
    while offset < len {
        let n = (len - offset).min(chunk as u64) as usize;
        fill_pattern(seed, offset, &mut buf[..n]);
        w.write_all(&buf[..n]).await?;
        offset += n as u64;
    }
    Ok(())
}

/// Reads to end of stream and checks every byte against the pattern for `seed`. Returns the
/// number of bytes read; a mismatch is an `InvalidData` error naming the offset.
pub async fn read_pattern<R: AsyncRead + Unpin>(r: &mut R, seed: u64) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 256 << 10];
    let mut expected = vec![0u8; 256 << 10];
    let mut offset = 0u64;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok(offset);
        }
        fill_pattern(seed, offset, &mut expected[..n]);
        if buf[..n] != expected[..n] {
            let at = buf[..n]
                .iter()
                .zip(&expected[..n])
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "payload differs from pattern {seed} at offset {}",
                    offset + at as u64
                ),
            ));
        }
        offset += n as u64;
    }
}

/// Handler that accepts every request and echoes the stream back.
pub async fn echo(_req: hbone::InboundRequest, resp: hbone::Responder) {
    let Ok(stream) = resp.accept() else { return };
    let (mut r, mut w) = stream.into_split();
    if tokio::io::copy(&mut r, &mut w).await.is_ok() {
        let _ = w.shutdown().await;
    }
}
