//! Mutual TLS between workloads over real loopback connections: who is accepted, who is refused,
//! and what each side reports.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::{CLIENT_GREETING, SERVER_GREETING, TD, ca, exchange, exchange_raw, id, issue};
use identity::tls::{SpiffeVerifier, provider};
use identity::{PeerPolicy, WorkloadCertificate, client_config, server_config};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};
use rustls::ClientConfig;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn any_in(td: &str) -> PeerPolicy {
    PeerPolicy::AnyInTrustDomain(td.to_string())
}

/// The handshake refused: the refusing side reports `error`, and no application bytes crossed.
fn assert_refused(outcome: &common::Outcome) {
    assert!(
        outcome.server.received.is_empty() && outcome.client.received.is_empty(),
        "application bytes crossed a refused connection: {outcome:?}"
    );
    assert!(
        outcome.client.error.is_some(),
        "client saw no failure: {outcome:?}"
    );
}

#[tokio::test]
async fn mutual_tls_succeeds_and_each_side_sees_the_other() {
    let ca = ca(TD);
    let server_cert = issue(&ca, "server");
    let client_cert = issue(&ca, "client");
    let server = server_config(&server_cert, any_in(TD)).unwrap();
    let client = client_config(&client_cert, PeerPolicy::only(id(TD, "server"))).unwrap();

    let out = exchange(server, client).await;

    assert_eq!(out.server.error, None, "{out:?}");
    assert_eq!(out.client.error, None, "{out:?}");
    assert_eq!(out.server.peer, Some(id(TD, "client")));
    assert_eq!(out.client.peer, Some(id(TD, "server")));
    assert_eq!(out.server.received, CLIENT_GREETING);
    assert_eq!(out.client.received, SERVER_GREETING);
}

#[tokio::test]
async fn negotiates_tls13_h2_and_hybrid_post_quantum_key_exchange() {
    let ca = ca(TD);
    let server = server_config(&issue(&ca, "server"), any_in(TD)).unwrap();
    let client = client_config(&issue(&ca, "client"), any_in(TD)).unwrap();
    let (listener, addr) = common::listen().await;
    let server_task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = tokio_rustls::TlsAcceptor::from(server)
            .accept(tcp)
            .await
            .unwrap();
        tls.write_all(b"x").await.unwrap();
        tls.shutdown().await.unwrap();
    });
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(client)
        .connect(common::server_name(), tcp)
        .await
        .unwrap();
    let mut buf = Vec::new();
    tls.read_to_end(&mut buf).await.unwrap();
    server_task.await.unwrap();

    let conn = tls.get_ref().1;
    assert_eq!(buf, b"x");
    assert_eq!(
        conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(conn.alpn_protocol(), Some(identity::ALPN_H2));
    let group = conn
        .negotiated_key_exchange_group()
        .expect("key exchange group");
    assert_eq!(group.name(), rustls::NamedGroup::X25519MLKEM768);
    // AES-128-GCM with SHA-256: hardware-accelerated hashing where SHA-384 is not.
    assert_eq!(
        conn.negotiated_cipher_suite().map(|s| s.suite()),
        Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
    );
}

#[tokio::test]
async fn client_refuses_server_with_unexpected_identity() {
    let ca = ca(TD);
    let server = server_config(&issue(&ca, "server"), any_in(TD)).unwrap();
    let client =
        client_config(&issue(&ca, "client"), PeerPolicy::only(id(TD, "database"))).unwrap();

    let out = exchange(server, client).await;

    assert_refused(&out);
    let err = out.client.error();
    assert!(
        err.contains("spiffe://cluster.local/ns/default/sa/server"),
        "{err}"
    );
    assert!(
        err.contains("expected spiffe://cluster.local/ns/default/sa/database"),
        "{err}"
    );
    assert!(
        out.server.error.is_some(),
        "server completed a refused handshake: {out:?}"
    );
}

#[tokio::test]
async fn server_refuses_client_outside_its_allow_list() {
    let ca = ca(TD);
    let allowed = vec![id(TD, "frontend"), id(TD, "batch")];
    let server = server_config(&issue(&ca, "server"), PeerPolicy::Only(allowed)).unwrap();
    let client = client_config(&issue(&ca, "intruder"), any_in(TD)).unwrap();

    let out = exchange(server, client).await;

    assert_refused(&out);
    let err = out.server.error();
    assert!(
        err.contains("peer identity spiffe://cluster.local/ns/default/sa/intruder is not allowed"),
        "{err}"
    );
    assert!(
        err.contains(
            "one of spiffe://cluster.local/ns/default/sa/frontend, \
             spiffe://cluster.local/ns/default/sa/batch"
        ),
        "{err}"
    );
    assert_eq!(out.server.peer, None);
}

#[tokio::test]
async fn server_refuses_client_from_another_ca() {
    let ours = ca(TD);
    let theirs = ca("other.example");
    let server = server_config(&issue(&ours, "server"), any_in(TD)).unwrap();
    // The client trusts our root, so only the server's check can fail.
    let foreign = issue(&theirs, "client");
    let client_cert = WorkloadCertificate::from_der(
        foreign.chain().to_vec(),
        foreign.private_key(),
        vec![theirs.root_der(), ours.root_der()],
    )
    .unwrap();
    let client = client_config(&client_cert, any_in(TD)).unwrap();

    let out = exchange(server, client).await;

    assert_refused(&out);
    assert!(out.server.error().contains("UnknownIssuer"), "{out:?}");
}

#[tokio::test]
async fn server_refuses_trusted_peer_from_another_trust_domain() {
    let ours = ca(TD);
    let theirs = ca("other.example");
    let both_roots = vec![ours.root_der(), theirs.root_der()];
    let mine = issue(&ours, "server");
    let server_cert = WorkloadCertificate::from_der(
        mine.chain().to_vec(),
        mine.private_key(),
        both_roots.clone(),
    )
    .unwrap();
    let foreign = issue(&theirs, "client");
    let client_cert =
        WorkloadCertificate::from_der(foreign.chain().to_vec(), foreign.private_key(), both_roots)
            .unwrap();
    let server = server_config(&server_cert, any_in(TD)).unwrap();
    let client = client_config(&client_cert, any_in(TD)).unwrap();

    let out = exchange(server, client).await;

    assert_refused(&out);
    let err = out.server.error();
    assert!(
        err.contains("spiffe://other.example/ns/default/sa/client"),
        "{err}"
    );
    assert!(
        err.contains("expected any identity in trust domain cluster.local"),
        "{err}"
    );
}

#[tokio::test]
async fn expired_client_certificate_is_refused() {
    let ca = ca(TD);
    let now = SystemTime::now();
    let expired = ca
        .issue_with_validity(
            &id(TD, "client"),
            now - Duration::from_secs(7200),
            now - Duration::from_secs(3600),
        )
        .unwrap();
    let server = server_config(&issue(&ca, "server"), any_in(TD)).unwrap();
    let client = client_config(&expired, any_in(TD)).unwrap();

    let out = exchange(server, client).await;

    assert_refused(&out);
    assert!(
        out.server.error().contains("certificate expired"),
        "{out:?}"
    );
}

#[tokio::test]
async fn expired_server_certificate_is_refused() {
    let ca = ca(TD);
    let now = SystemTime::now();
    let expired = ca
        .issue_with_validity(
            &id(TD, "server"),
            now - Duration::from_secs(7200),
            now - Duration::from_secs(60),
        )
        .unwrap();
    let server = server_config(&expired, any_in(TD)).unwrap();
    let client = client_config(&issue(&ca, "client"), any_in(TD)).unwrap();

    let out = exchange(server, client).await;

    assert_refused(&out);
    assert!(
        out.client.error().contains("certificate expired"),
        "{out:?}"
    );
}

/// A client certificate signed by its own key, naming an identity the server would accept.
fn self_signed_client() -> (
    Vec<rustls::pki_types::CertificateDer<'static>>,
    PrivateKeyDer<'static>,
) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "impostor");
    params.distinguished_name = dn;
    params.subject_alt_names = vec![SanType::URI(id(TD, "client").uri().try_into().unwrap())];
    let cert = params.self_signed(&key).unwrap();
    let key = PrivatePkcs8KeyDer::from(key.serialize_der()).into();
    (vec![cert.der().clone()], key)
}

#[tokio::test]
async fn self_signed_client_certificate_is_refused() {
    let ca = ca(TD);
    let server = server_config(&issue(&ca, "server"), any_in(TD)).unwrap();
    let provider = provider();
    let verifier = SpiffeVerifier::new(&[ca.root_der()], any_in(TD), &provider).unwrap();
    let (chain, key) = self_signed_client();
    let client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(chain, key)
        .unwrap();

    let out = exchange(server, Arc::new(client)).await;

    assert_refused(&out);
    assert!(out.server.error().contains("UnknownIssuer"), "{out:?}");
}

#[tokio::test]
async fn tls12_only_client_is_refused() {
    let ca = ca(TD);
    let server = server_config(&issue(&ca, "server"), any_in(TD)).unwrap();
    let client_cert = issue(&ca, "client");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = SpiffeVerifier::new(client_cert.roots(), any_in(TD), &provider).unwrap();
    let client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(client_cert.chain().to_vec(), client_cert.private_key())
        .unwrap();

    let out = exchange(server, Arc::new(client)).await;

    assert_refused(&out);
    assert!(out.server.error().contains("incompatible"), "{out:?}");
    assert!(out.client.error().contains("ProtocolVersion"), "{out:?}");
}

#[tokio::test]
async fn plaintext_client_is_refused() {
    let ca = ca(TD);
    let server = server_config(&issue(&ca, "server"), any_in(TD)).unwrap();

    let (server_side, received) = exchange_raw(server, |mut tcp| async move {
        let mut received = Vec::new();
        // Either write fails (connection reset) or the read ends; both mean refusal.
        if tcp
            .write_all(b"GET / HTTP/1.1\r\nHost: backend\r\n\r\n")
            .await
            .is_ok()
        {
            let _ = tcp.read_to_end(&mut received).await;
        }
        received
    })
    .await;

    assert!(
        server_side.error.is_some(),
        "server accepted plaintext: {server_side:?}"
    );
    assert!(server_side.received.is_empty());
    // At most a TLS alert record (content type 21) comes back, never application data.
    assert!(
        received.is_empty() || received[0] == 21,
        "plaintext client received {received:?}"
    );
    assert!(
        !received
            .windows(SERVER_GREETING.len())
            .any(|w| w == SERVER_GREETING)
    );
}

#[test]
fn configs_require_trust_roots_that_parse() {
    let ca = ca(TD);
    let cert = issue(&ca, "server");
    let bogus = rustls::pki_types::CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x01]);
    let err = SpiffeVerifier::new(&[bogus], any_in(TD), &provider()).unwrap_err();
    assert!(err.to_string().contains("trust root"), "{err}");
    assert!(server_config(&cert, any_in(TD)).is_ok());
}

#[test]
fn installing_the_process_provider_is_idempotent() {
    identity::install_crypto_provider();
    identity::install_crypto_provider();
    let installed = rustls::crypto::CryptoProvider::get_default().expect("a default provider");
    assert!(
        installed
            .kx_groups
            .iter()
            .any(|g| g.name() == rustls::NamedGroup::X25519MLKEM768)
    );
}
