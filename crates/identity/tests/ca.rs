//! The CA: root handling and CSR signing rules.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

use common::{TD, ca, id};
use identity::ca::{ROOT_CERT_FILE, ROOT_KEY_FILE};
use identity::cert::subject_alt_names;
use identity::tls::{SpiffeVerifier, provider};
use identity::{CaError, CertificateAuthority, PeerPolicy, WorkloadCertificate, generate_csr};
use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};
use rustls::pki_types::UnixTime;
use x509_parser::prelude::{FromDer, X509Certificate};

/// A CSR with arbitrary SANs, as a misbehaving client could send.
fn csr_with(sans: Vec<SanType>) -> String {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = sans;
    params.serialize_request(&key).unwrap().pem().unwrap()
}

fn uri(s: &str) -> SanType {
    SanType::URI(s.to_string().try_into().unwrap())
}

fn dns(s: &str) -> SanType {
    SanType::DnsName(s.to_string().try_into().unwrap())
}

const TTL: Duration = Duration::from_secs(3600);

#[test]
fn signed_leaf_carries_exactly_the_uri_san_and_chains_to_the_root() {
    let ca = ca(TD);
    let web = id(TD, "web");
    let bundle = generate_csr(&web).unwrap();
    let before = SystemTime::now();
    let chain = ca.sign_csr(&bundle.csr_pem, &web, TTL).unwrap();

    assert_eq!(chain.len(), 2, "leaf and root");
    assert_eq!(chain[1], ca.root_pem());
    let leaf_der = pem::parse(&chain[0]).unwrap().into_contents();
    assert_eq!(
        subject_alt_names(&leaf_der).unwrap(),
        vec!["URI:spiffe://cluster.local/ns/default/sa/web".to_string()]
    );

    let (_, leaf) = X509Certificate::from_der(&leaf_der).unwrap();
    let bc = leaf
        .basic_constraints()
        .unwrap()
        .expect("basic constraints");
    assert!(!bc.value.ca, "leaf must not be a CA");
    let ku = leaf.key_usage().unwrap().expect("key usage").value;
    assert!(ku.digital_signature() && ku.key_encipherment());
    assert!(!ku.key_cert_sign() && !ku.crl_sign());
    let eku = leaf.extended_key_usage().unwrap().expect("EKU").value;
    assert!(eku.server_auth && eku.client_auth);
    let nb = leaf.validity().not_before.timestamp();
    let na = leaf.validity().not_after.timestamp();
    let now = before
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        nb < now - 60,
        "not_before {nb} should be backdated from {now} for skew"
    );
    assert!(
        (na - (now + 3600)).abs() <= 5,
        "not_after {na} should be about now + ttl"
    );

    // The chain verifies for both TLS roles against the root, and the key matches.
    let cert = WorkloadCertificate::from_pem(&chain, &bundle.key_pem, &[ca.root_pem()]).unwrap();
    assert_eq!(cert.identity(), &web);
    let verifier =
        SpiffeVerifier::new(&[ca.root_der()], PeerPolicy::only(web.clone()), &provider()).unwrap();
    for usage in [
        webpki::KeyUsage::server_auth(),
        webpki::KeyUsage::client_auth(),
    ] {
        let seen = verifier
            .verify_peer(&cert.chain()[0], &cert.chain()[1..], UnixTime::now(), usage)
            .unwrap();
        assert_eq!(seen, web);
    }
    // ..and not against another root, even one with the same name.
    let other = common::ca(TD);
    let stranger =
        SpiffeVerifier::new(&[other.root_der()], PeerPolicy::only(web), &provider()).unwrap();
    let err = stranger
        .verify_peer(
            &cert.chain()[0],
            &[],
            UnixTime::now(),
            webpki::KeyUsage::client_auth(),
        )
        .unwrap_err();
    assert!(err.to_string().contains("BadSignature"), "{err}");
}

#[test]
fn csr_with_dns_san_is_refused() {
    let ca = ca(TD);
    let err = ca
        .sign_csr(
            &csr_with(vec![dns("evil.example.com")]),
            &id(TD, "web"),
            TTL,
        )
        .unwrap_err();
    assert!(matches!(err, CaError::ForbiddenSan { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("DNS:evil.example.com"), "{msg}");
    assert!(
        msg.contains("spiffe://cluster.local/ns/default/sa/web"),
        "{msg}"
    );
}

#[test]
fn csr_with_an_extra_san_is_refused() {
    let ca = ca(TD);
    let web = id(TD, "web");
    for extra in [
        uri("spiffe://cluster.local/ns/default/sa/admin"),
        dns("web.local"),
    ] {
        let csr = csr_with(vec![uri(&web.uri()), extra]);
        let err = ca.sign_csr(&csr, &web, TTL).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, CaError::TooManySans { .. }), "{msg}");
        assert!(msg.contains("2 subject alternative names"), "{msg}");
        assert!(msg.contains("only the single URI SAN spiffe://cluster.local/ns/default/sa/web"));
    }
}

#[test]
fn csr_for_another_identity_is_refused() {
    let ca = ca(TD);
    let csr = generate_csr(&id(TD, "admin")).unwrap().csr_pem;
    let err = ca.sign_csr(&csr, &id(TD, "web"), TTL).unwrap_err();
    assert_eq!(
        err.to_string(),
        "CSR asks for the identity spiffe://cluster.local/ns/default/sa/admin but the caller is \
         spiffe://cluster.local/ns/default/sa/web"
    );
}

#[test]
fn csr_without_san_or_outside_the_trust_domain_or_garbled_is_refused() {
    let ca = ca(TD);
    let web = id(TD, "web");
    let err = ca.sign_csr(&csr_with(vec![]), &web, TTL).unwrap_err();
    assert!(
        err.to_string().contains("no subject alternative name"),
        "{err}"
    );

    let foreign = id("other.example", "web");
    let csr = generate_csr(&foreign).unwrap().csr_pem;
    let err = ca.sign_csr(&csr, &foreign, TTL).unwrap_err();
    assert_eq!(
        err.to_string(),
        "identity spiffe://other.example/ns/default/sa/web is outside this CA's trust domain \
         cluster.local"
    );

    let err = ca.sign_csr("not a csr", &web, TTL).unwrap_err();
    assert!(matches!(err, CaError::CsrParse(_)), "{err:?}");
}

#[test]
fn issue_with_validity_produces_the_requested_window() {
    let ca = ca(TD);
    let nb = SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    let na = nb + Duration::from_secs(600);
    let cert = ca.issue_with_validity(&id(TD, "old"), nb, na).unwrap();
    assert_eq!(cert.not_before(), nb);
    assert_eq!(cert.not_after(), na);
    assert!(cert.is_expired_at(SystemTime::now()));
    assert!(ca.issue_with_validity(&id(TD, "old"), na, nb).is_err());
}

#[test]
fn load_or_create_persists_the_root_with_private_permissions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ca");
    let created = CertificateAuthority::load_or_create(&path, TD).unwrap();
    for file in [ROOT_CERT_FILE, ROOT_KEY_FILE] {
        let mode = std::fs::metadata(path.join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file} has mode {mode:o}");
    }

    let loaded = CertificateAuthority::load_or_create(&path, TD).unwrap();
    assert_eq!(loaded.root_pem(), created.root_pem());
    // Certificates from the reloaded CA chain to the original root.
    let cert = loaded.issue(&id(TD, "web"), TTL).unwrap();
    WorkloadCertificate::from_pem(&cert.chain_pem(), &key_pem(&cert), &[created.root_pem()])
        .unwrap();
}

#[test]
fn load_or_create_refuses_partial_or_mismatched_material() {
    let dir = tempfile::tempdir().unwrap();
    CertificateAuthority::load_or_create(dir.path(), TD).unwrap();
    let other = tempfile::tempdir().unwrap();
    CertificateAuthority::load_or_create(other.path(), TD).unwrap();

    // A key from another root.
    std::fs::copy(
        other.path().join(ROOT_KEY_FILE),
        dir.path().join(ROOT_KEY_FILE),
    )
    .unwrap();
    let err = CertificateAuthority::load_or_create(dir.path(), TD).unwrap_err();
    assert!(
        err.to_string()
            .contains("does not match the root certificate"),
        "{err}"
    );

    std::fs::remove_file(dir.path().join(ROOT_KEY_FILE)).unwrap();
    let err = CertificateAuthority::load_or_create(dir.path(), TD).unwrap_err();
    assert!(
        err.to_string()
            .contains("holds root-cert.pem but not root-key.pem"),
        "{err}"
    );

    let err = CertificateAuthority::generate("Not A Domain").unwrap_err();
    assert!(err.to_string().contains("invalid trust domain"), "{err}");
}

fn key_pem(cert: &WorkloadCertificate) -> String {
    let der = cert.private_key();
    pem::encode(&pem::Pem::new("PRIVATE KEY", der.secret_der().to_vec()))
}
