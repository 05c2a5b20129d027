//! rustls configurations for mutual TLS 1.3 between workloads, verifying peers by SPIFFE id.

mod verifier;

use std::fmt;
use std::sync::Arc;

use rustls::client::Resumption;
use rustls::crypto::{CryptoProvider, aws_lc_rs};
use rustls::server::NoServerSessionStorage;
use rustls::{ClientConfig, CommonState, ServerConfig};

use crate::cert::{WorkloadCertificate, identity_from_der};
use crate::spiffe::Identity;

pub use verifier::{PeerRejected, SpiffeVerifier};

/// ALPN protocol offered and accepted by both configs (HBONE runs HTTP/2).
pub const ALPN_H2: &[u8] = b"h2";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("the certificate has no trust roots to verify peers against")]
    NoRoots,
    #[error("trust root is not a usable certificate: {0}")]
    BadRoot(webpki::Error),
    #[error("invalid policy: {0}")]
    Policy(String),
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
}

/// Which peers a config accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerPolicy {
    /// Any workload identity in this trust domain.
    AnyInTrustDomain(String),
    /// Exactly one of these identities.
    Only(Vec<Identity>),
}

impl PeerPolicy {
    /// Accepts only `id`.
    pub fn only(id: Identity) -> Self {
        PeerPolicy::Only(vec![id])
    }

    /// Whether `seen` is acceptable; the error names the seen and the expected identities.
    pub fn check(&self, seen: &Identity) -> Result<(), PeerRejected> {
        let allowed = match self {
            PeerPolicy::AnyInTrustDomain(td) => &seen.trust_domain == td,
            PeerPolicy::Only(ids) => ids.contains(seen),
        };
        if allowed {
            Ok(())
        } else {
            Err(PeerRejected::NotAllowed {
                seen: seen.uri(),
                expected: self.to_string(),
            })
        }
    }
}

impl fmt::Display for PeerPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerPolicy::AnyInTrustDomain(td) => write!(f, "any identity in trust domain {td}"),
            PeerPolicy::Only(ids) => match ids.as_slice() {
                [] => f.write_str("no identity at all (empty allow list)"),
                [one] => write!(f, "{one}"),
                many => {
                    f.write_str("one of ")?;
                    for (i, id) in many.iter().enumerate() {
                        if i > 0 {
                            f.write_str(", ")?;
                        }
                        write!(f, "{id}")?;
                    }
                    Ok(())
                }
            },
        }
    }
}

/// The aws-lc-rs provider restricted to TLS 1.3 cipher suites, AES-128-GCM-SHA256 first (its
/// SHA-256 runs on the SHA extensions of current CPUs, SHA-384 does not: faster handshakes and
/// bulk), with X25519MLKEM768 offered first and X25519 as the fallback key exchange.
pub fn provider() -> Arc<CryptoProvider> {
    use aws_lc_rs::cipher_suite::{
        TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
    };
    let base = aws_lc_rs::default_provider();
    Arc::new(CryptoProvider {
        cipher_suites: vec![
            TLS13_AES_128_GCM_SHA256,
            TLS13_AES_256_GCM_SHA384,
            TLS13_CHACHA20_POLY1305_SHA256,
        ],
        kx_groups: vec![
            aws_lc_rs::kx_group::X25519MLKEM768,
            aws_lc_rs::kx_group::X25519,
        ],
        ..base
    })
}

/// Installs the stock aws-lc-rs provider as the process default, for TLS clients that do not
/// pass a provider explicitly (Kubernetes, OTLP). Idempotent; call at process start. The mesh
/// configs built here do not depend on it: they carry [`provider`] explicitly.
pub fn install_crypto_provider() {
    // An error only means a provider is already installed.
    let _ = aws_lc_rs::default_provider().install_default();
}

/// Server side of mutual TLS: TLS 1.3 only, ALPN h2, a client certificate is mandatory and must
/// chain to `cert.roots()` and carry a SPIFFE id accepted by `peers`.
pub fn server_config(
    cert: &WorkloadCertificate,
    peers: PeerPolicy,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let verifier = Arc::new(SpiffeVerifier::new(cert.roots(), peers, &provider)?);
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(cert.chain().to_vec(), cert.private_key())?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    // Every connection verifies the peer afresh against the current policy.
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// Client side of mutual TLS: TLS 1.3 only, ALPN h2, presents `cert` and accepts servers whose
/// chain verifies against `cert.roots()` and whose SPIFFE id is accepted by `peers`. The server
/// name given to the connector is not used for verification (connect with the IP address).
pub fn client_config(
    cert: &WorkloadCertificate,
    peers: PeerPolicy,
) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = provider();
    let verifier = Arc::new(SpiffeVerifier::new(cert.roots(), peers, &provider)?);
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(cert.chain().to_vec(), cert.private_key())?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// Identity of the peer after the handshake (leaf URI SAN).
pub fn peer_identity(conn: &CommonState) -> Option<Identity> {
    let leaf = conn.peer_certificates()?.first()?;
    identity_from_der(leaf).ok()
}
