//! istiod's own TLS serving certificate for the secure gRPC port, issued by its CA for
//! `spiffe://<td>/ns/<istiod-namespace>/sa/istiod` and renewed at half-life.
//!
//! Clients verify istiod by that SPIFFE identity (the certificate carries only the URI SAN; the
//! CA signs nothing else). Client certificates are optional: callers authenticate with bearer
//! tokens, and a client certificate from the mesh CA, when presented, is verified and exposed
//! as the peer identity.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use identity::{CaError, CertificateAuthority, Identity, WorkloadCertificate};
use parking_lot::RwLock;
use rustls::RootCertStore;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;

/// Lifetime of istiod's serving certificate.
pub const SERVING_CERT_TTL: Duration = Duration::from_secs(24 * 3600);
/// Delay before retrying a failed renewal.
const RETRY: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ServingCertError {
    #[error("cannot issue istiod's serving certificate: {0}")]
    Issue(#[from] CaError),
    #[error("invalid TLS setup: {0}")]
    Tls(#[from] rustls::Error),
    #[error("invalid client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// Hands the current certificate to every handshake; swapped on renewal.
#[derive(Debug)]
pub struct ServingCert {
    ca: Arc<CertificateAuthority>,
    id: Identity,
    ttl: Duration,
    current: RwLock<Arc<CertifiedKey>>,
    not_after: RwLock<SystemTime>,
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().clone())
    }
}

fn certified(cert: &WorkloadCertificate) -> Result<CertifiedKey, ServingCertError> {
    let provider = identity::tls::provider();
    Ok(CertifiedKey::from_der(
        cert.chain().to_vec(),
        cert.private_key(),
        &provider,
    )?)
}

impl ServingCert {
    /// Issues the first certificate for `namespace/istiod`.
    pub fn new(
        ca: Arc<CertificateAuthority>,
        namespace: &str,
        ttl: Duration,
    ) -> Result<Arc<Self>, ServingCertError> {
        let id = Identity::new(ca.trust_domain(), namespace, "istiod");
        let cert = ca.issue(&id, ttl)?;
        Ok(Arc::new(ServingCert {
            current: RwLock::new(Arc::new(certified(&cert)?)),
            not_after: RwLock::new(cert.not_after()),
            ca,
            id,
            ttl,
        }))
    }

    pub fn identity(&self) -> &Identity {
        &self.id
    }

    /// The TLS 1.3 server configuration (ALPN h2) serving this certificate.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, ServingCertError> {
        let provider = identity::tls::provider();
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.root_der())?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![identity::ALPN_H2.to_vec()];
        Ok(Arc::new(config))
    }

    fn renew(&self) -> Result<(), ServingCertError> {
        let cert = self.ca.issue(&self.id, self.ttl)?;
        *self.current.write() = Arc::new(certified(&cert)?);
        *self.not_after.write() = cert.not_after();
        Ok(())
    }

    /// Renews the certificate at half of its remaining life, forever.
    pub async fn run_renewal(self: Arc<Self>) {
        loop {
            let remaining = self
                .not_after
                .read()
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            tokio::time::sleep(remaining / 2).await;
            match self.renew() {
                Ok(()) => tracing::info!(identity = %self.id, "serving certificate renewed"),
                Err(e) => {
                    tracing::warn!(identity = %self.id, error = %e, "serving certificate renewal failed; retrying");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }
}
