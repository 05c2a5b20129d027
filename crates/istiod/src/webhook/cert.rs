//! The webhook's TLS serving certificate: DNS names (the API server calls
//! `https://<service>.<namespace>.svc`), signed by the mesh root so that the root certificate
//! is the webhook's CA bundle, and renewed at half-life.
//!
//! The mesh CA signs only SPIFFE identities, so this certificate is signed here with the root
//! key read from the CA directory (`root-cert.pem`, `root-key.pem`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::RwLock;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Lifetime of the webhook certificate.
pub const WEBHOOK_CERT_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Back-dating of `notBefore`, for clocks slightly behind.
const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);
/// Delay before retrying a failed renewal.
const RETRY: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum WebhookCertError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the CA root in {dir} is not usable for signing: {source}")]
    Root { dir: PathBuf, source: rcgen::Error },
    #[error("cannot issue the webhook certificate: {0}")]
    Issue(#[from] rcgen::Error),
    #[error("invalid TLS setup: {0}")]
    Tls(#[from] rustls::Error),
}

/// Serves the current certificate to every handshake; swapped on renewal.
pub struct WebhookCert {
    issuer: Issuer<'static, KeyPair>,
    names: Vec<String>,
    ttl: Duration,
    current: RwLock<Arc<CertifiedKey>>,
    not_after: RwLock<SystemTime>,
}

impl std::fmt::Debug for WebhookCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookCert")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for WebhookCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().clone())
    }
}

impl WebhookCert {
    /// Reads the root from `ca_dir` and issues the first certificate for `names`.
    pub fn load(
        ca_dir: &Path,
        names: Vec<String>,
        ttl: Duration,
    ) -> Result<Arc<Self>, WebhookCertError> {
        let read = |file: &str| {
            let path = ca_dir.join(file);
            std::fs::read_to_string(&path).map_err(|source| WebhookCertError::Read { path, source })
        };
        let cert_pem = read(identity::ca::ROOT_CERT_FILE)?;
        let key_pem = read(identity::ca::ROOT_KEY_FILE)?;
        let root = |source| WebhookCertError::Root {
            dir: ca_dir.to_path_buf(),
            source,
        };
        let key = KeyPair::from_pem(&key_pem).map_err(root)?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(root)?;
        let (certified, not_after) = issue(&issuer, &names, ttl)?;
        Ok(Arc::new(WebhookCert {
            issuer,
            names,
            ttl,
            current: RwLock::new(Arc::new(certified)),
            not_after: RwLock::new(not_after),
        }))
    }

    /// The DNS names the certificate carries.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The current leaf certificate (DER), for tests and debugging.
    pub fn leaf_der(&self) -> CertificateDer<'static> {
        self.current.read().cert[0].clone()
    }

    /// TLS 1.3 server configuration (HTTP/1.1) serving this certificate.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, WebhookCertError> {
        let config = rustls::ServerConfig::builder_with_provider(identity::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        Ok(Arc::new(config))
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
            match issue(&self.issuer, &self.names, self.ttl) {
                Ok((certified, not_after)) => {
                    *self.current.write() = Arc::new(certified);
                    *self.not_after.write() = not_after;
                    tracing::info!(names = ?self.names, "webhook certificate renewed");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "webhook certificate renewal failed; retrying");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }
}

fn issue(
    issuer: &Issuer<'static, KeyPair>,
    names: &[String],
    ttl: Duration,
) -> Result<(CertifiedKey, SystemTime), WebhookCertError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(names.to_vec())?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        names.first().map(String::as_str).unwrap_or("istiod"),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let now = SystemTime::now();
    let not_after = now + ttl;
    params.not_before = (now - CLOCK_SKEW).into();
    params.not_after = not_after.into();
    let cert = params.signed_by(&key, issuer)?;
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let certified = CertifiedKey::from_der(
        vec![cert.der().clone()],
        private,
        &identity::tls::provider(),
    )?;
    Ok((certified, not_after))
}
