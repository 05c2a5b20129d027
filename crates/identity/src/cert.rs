//! Workload certificates: a leaf for one SPIFFE identity, its chain, its key and the trust roots.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::crypto::aws_lc_rs;
use rustls::sign::CertifiedKey;
use rustls_pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
    TrustAnchor, UnixTime,
};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::spiffe::{Identity, SpiffeError};

/// Why certificate material could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("invalid PEM: {0}")]
    Pem(#[from] pem::PemError),
    #[error("expected a PEM block tagged CERTIFICATE, found {tag:?}")]
    NotACertificate { tag: String },
    #[error("the certificate chain is empty")]
    EmptyChain,
    #[error("no trust roots were given")]
    NoRoots,
    #[error("unsupported private key PEM block {tag:?} (expected PRIVATE KEY or EC PRIVATE KEY)")]
    UnsupportedKey { tag: String },
    #[error("private key is unusable: {0}")]
    Key(rustls::Error),
    #[error("the private key does not match the leaf certificate")]
    KeyMismatch,
    #[error("certificate is not valid X.509: {0}")]
    X509(String),
    #[error("certificate has no URI subject alternative name")]
    NoUriSan,
    #[error("certificate has {} URI subject alternative names ({}); exactly one is required", .0.len(), .0.join(", "))]
    MultipleUriSans(Vec<String>),
    #[error("certificate URI SAN is not a workload SPIFFE id: {0}")]
    Spiffe(#[from] SpiffeError),
    #[error("certificate chain does not verify against the trust roots: {0}")]
    Untrusted(webpki::Error),
}

struct Inner {
    identity: Identity,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Vec<CertificateDer<'static>>,
    not_before: SystemTime,
    not_after: SystemTime,
    serial: String,
}

/// A workload's leaf certificate with its chain, private key and trust roots. Cheap to clone.
#[derive(Clone)]
pub struct WorkloadCertificate {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for WorkloadCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadCertificate")
            .field("identity", &self.inner.identity.uri())
            .field("serial", &self.inner.serial)
            .field("not_before", &self.inner.not_before)
            .field("not_after", &self.inner.not_after)
            .field("chain_len", &self.inner.chain.len())
            .field("roots", &self.inner.roots.len())
            .finish_non_exhaustive()
    }
}

impl WorkloadCertificate {
    /// Builds a certificate from PEM: the chain (leaf first; each string may hold several
    /// blocks), the leaf's private key (PKCS#8 or SEC1) and the trust roots.
    ///
    /// Checks that the key matches the leaf, that the leaf names exactly one SPIFFE id, and that
    /// the chain is signed by one of the roots (signatures only: an expired certificate still
    /// loads, so that callers can decide what to do with it).
    pub fn from_pem(
        chain_pem: &[String],
        key_pem: &str,
        roots_pem: &[String],
    ) -> Result<Self, CertError> {
        let chain = parse_certs(chain_pem)?;
        let roots = parse_certs(roots_pem)?;
        let key = parse_key(key_pem)?;
        Self::from_der(chain, key, roots)
    }

    /// Same as [`WorkloadCertificate::from_pem`] for DER input.
    pub fn from_der(
        mut chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        roots: Vec<CertificateDer<'static>>,
    ) -> Result<Self, CertError> {
        let leaf_der = chain.first().ok_or(CertError::EmptyChain)?.clone();
        if roots.is_empty() {
            return Err(CertError::NoRoots);
        }
        // The root does not need to travel in the handshake.
        let mut i = 1;
        while i < chain.len() {
            if roots.contains(&chain[i]) {
                chain.remove(i);
            } else {
                i += 1;
            }
        }

        let leaf = parse_x509(&leaf_der)?;
        let identity = identity_of(&leaf)?;
        let not_before = to_system_time(leaf.validity().not_before.timestamp());
        let not_after = to_system_time(leaf.validity().not_after.timestamp());
        let serial = leaf.raw_serial_as_string();

        let signing_key = aws_lc_rs::sign::any_supported_type(&key).map_err(CertError::Key)?;
        CertifiedKey::new(vec![leaf_der.clone()], signing_key)
            .keys_match()
            .map_err(|_| CertError::KeyMismatch)?;

        // Verify signatures at a moment inside the leaf's validity, so that expiry is left to
        // the handshake.
        let mid = not_before + not_after.duration_since(not_before).unwrap_or_default() / 2;
        verify_chain(&chain, &roots, mid)?;

        Ok(WorkloadCertificate {
            inner: Arc::new(Inner {
                identity,
                chain,
                key,
                roots,
                not_before,
                not_after,
                serial,
            }),
        })
    }

    /// The SPIFFE identity from the leaf's URI SAN.
    pub fn identity(&self) -> &Identity {
        &self.inner.identity
    }

    /// The chain presented in handshakes, leaf first (roots removed).
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.inner.chain
    }

    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        self.inner.key.clone_key()
    }

    /// Trust roots used to verify peers.
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.inner.roots
    }

    pub fn not_before(&self) -> SystemTime {
        self.inner.not_before
    }

    pub fn not_after(&self) -> SystemTime {
        self.inner.not_after
    }

    /// The leaf's serial number as colon-separated hex.
    pub fn serial(&self) -> &str {
        &self.inner.serial
    }

    /// Whether `now` is past the leaf's not_after.
    pub fn is_expired_at(&self, now: SystemTime) -> bool {
        now > self.inner.not_after
    }

    /// The chain as PEM blocks, leaf first.
    pub fn chain_pem(&self) -> Vec<String> {
        self.inner.chain.iter().map(|c| der_to_pem(c)).collect()
    }

    /// The trust roots as PEM blocks.
    pub fn roots_pem(&self) -> Vec<String> {
        self.inner.roots.iter().map(|c| der_to_pem(c)).collect()
    }
}

/// PEM-encodes one DER certificate.
pub fn der_to_pem(der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new("CERTIFICATE", der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// Parses every CERTIFICATE block of every string.
pub fn parse_certs(pems: &[String]) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let mut out = Vec::new();
    for text in pems {
        for block in pem::parse_many(text)? {
            if block.tag() != "CERTIFICATE" {
                return Err(CertError::NotACertificate {
                    tag: block.tag().to_string(),
                });
            }
            out.push(CertificateDer::from(block.into_contents()));
        }
    }
    Ok(out)
}

/// Parses a PKCS#8, SEC1 or PKCS#1 private key.
pub fn parse_key(key_pem: &str) -> Result<PrivateKeyDer<'static>, CertError> {
    let block = pem::parse(key_pem)?;
    match block.tag() {
        "PRIVATE KEY" => Ok(PrivatePkcs8KeyDer::from(block.into_contents()).into()),
        "EC PRIVATE KEY" => Ok(PrivateSec1KeyDer::from(block.into_contents()).into()),
        "RSA PRIVATE KEY" => Ok(PrivatePkcs1KeyDer::from(block.into_contents()).into()),
        tag => Err(CertError::UnsupportedKey {
            tag: tag.to_string(),
        }),
    }
}

/// The SPIFFE identity named by a DER certificate's only URI SAN.
pub fn identity_from_der(der: &[u8]) -> Result<Identity, CertError> {
    identity_of(&parse_x509(der)?)
}

/// All subject alternative names of a DER certificate, rendered as `URI:..`, `DNS:..` etc.
pub fn subject_alt_names(der: &[u8]) -> Result<Vec<String>, CertError> {
    let cert = parse_x509(der)?;
    let sans = cert
        .subject_alternative_name()
        .map_err(|e| CertError::X509(e.to_string()))?;
    Ok(sans
        .map(|ext| ext.value.general_names.iter().map(render_name).collect())
        .unwrap_or_default())
}

fn render_name(name: &GeneralName<'_>) -> String {
    match name {
        GeneralName::URI(u) => format!("URI:{u}"),
        GeneralName::DNSName(d) => format!("DNS:{d}"),
        GeneralName::RFC822Name(e) => format!("email:{e}"),
        GeneralName::IPAddress(ip) => match ip.len() {
            4 => format!(
                "IP:{}",
                std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*ip).unwrap_or_default())
            ),
            16 => format!(
                "IP:{}",
                std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*ip).unwrap_or_default())
            ),
            _ => "IP:<malformed>".to_string(),
        },
        other => format!("{other:?}"),
    }
}

fn parse_x509(der: &[u8]) -> Result<X509Certificate<'_>, CertError> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| CertError::X509(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CertError::X509("trailing data after certificate".into()));
    }
    Ok(cert)
}

fn identity_of(cert: &X509Certificate<'_>) -> Result<Identity, CertError> {
    let sans = cert
        .subject_alternative_name()
        .map_err(|e| CertError::X509(e.to_string()))?;
    let uris: Vec<&str> = sans
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) => Some(*u),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    match uris.as_slice() {
        [] => Err(CertError::NoUriSan),
        [one] => Ok(one.parse()?),
        many => Err(CertError::MultipleUriSans(
            many.iter().map(|s| s.to_string()).collect(),
        )),
    }
}

fn to_system_time(unix: i64) -> SystemTime {
    if unix >= 0 {
        UNIX_EPOCH + Duration::from_secs(unix.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(unix.unsigned_abs())
    }
}

fn verify_chain(
    chain: &[CertificateDer<'static>],
    roots: &[CertificateDer<'static>],
    at: SystemTime,
) -> Result<(), CertError> {
    let anchors: Vec<TrustAnchor<'_>> = roots
        .iter()
        .map(webpki::anchor_from_trusted_cert)
        .collect::<Result<_, _>>()
        .map_err(CertError::Untrusted)?;
    let leaf = webpki::EndEntityCert::try_from(&chain[0]).map_err(CertError::Untrusted)?;
    let time = UnixTime::since_unix_epoch(at.duration_since(UNIX_EPOCH).unwrap_or_default());
    leaf.verify_for_usage(
        aws_lc_rs::default_provider()
            .signature_verification_algorithms
            .all,
        &anchors,
        &chain[1..],
        time,
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )
    .map_err(CertError::Untrusted)?;
    Ok(())
}
