//! The mesh certificate authority: a self-signed ECDSA P-256 root that signs short-lived workload
//! certificates carrying exactly one SPIFFE URI SAN.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use rustls::crypto::aws_lc_rs;
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::cert::{CertError, WorkloadCertificate, der_to_pem};
use crate::csr::{CsrError, generate_csr};
use crate::spiffe::{Identity, is_valid_trust_domain};

/// File name of the root certificate inside the CA directory.
pub const ROOT_CERT_FILE: &str = "root-cert.pem";
/// File name of the root private key inside the CA directory.
pub const ROOT_KEY_FILE: &str = "root-key.pem";

/// How far in the past a workload certificate's not_before is set, to absorb clock skew.
pub const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

const ROOT_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error(
        "invalid trust domain {0:?}: only lowercase letters, digits, '.', '-' and '_' are allowed"
    )]
    InvalidTrustDomain(String),
    #[error("could not create the root certificate: {0}")]
    Generate(rcgen::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("CA directory {dir} holds {present} but not {missing}; provide both or neither")]
    Incomplete {
        dir: PathBuf,
        present: &'static str,
        missing: &'static str,
    },
    #[error("could not load the root CA from {dir}: {source}")]
    Load { dir: PathBuf, source: rcgen::Error },
    #[error("root key in {0} does not match the root certificate")]
    RootKeyMismatch(PathBuf),
    #[error("CSR is malformed, has an invalid signature or requests an unsupported extension: {0}")]
    CsrParse(rcgen::Error),
    #[error("CSR has no subject alternative name; it must carry exactly the URI SAN {expected}")]
    NoSan { expected: String },
    #[error(
        "CSR has {} subject alternative names ({}); only the single URI SAN {expected} is allowed",
        .sans.len(), .sans.join(", ")
    )]
    TooManySans { sans: Vec<String>, expected: String },
    #[error("CSR asks for the SAN {san}; only the URI SAN {expected} is allowed")]
    ForbiddenSan { san: String, expected: String },
    #[error("CSR asks for the identity {requested} but the caller is {expected}")]
    IdentityMismatch { requested: String, expected: String },
    #[error("identity {requested} is outside this CA's trust domain {trust_domain}")]
    WrongTrustDomain {
        requested: String,
        trust_domain: String,
    },
    #[error("CSR asks for a CA certificate; workload certificates cannot sign")]
    CsrRequestsCa,
    #[error("invalid validity: not_after must be later than not_before")]
    InvalidValidity,
    #[error("could not sign the certificate: {0}")]
    Sign(rcgen::Error),
    #[error(transparent)]
    Csr(#[from] CsrError),
    #[error("issued certificate is unusable: {0}")]
    Cert(#[from] CertError),
}

/// A root CA for one trust domain.
pub struct CertificateAuthority {
    trust_domain: String,
    root_der: CertificateDer<'static>,
    root_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Creates a new in-memory root for `trust_domain`.
    pub fn generate(trust_domain: &str) -> Result<Self, CaError> {
        let (ca, _key_pem) = Self::generate_with_key(trust_domain)?;
        Ok(ca)
    }

    fn generate_with_key(trust_domain: &str) -> Result<(Self, String), CaError> {
        check_trust_domain(trust_domain)?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(CaError::Generate)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, trust_domain);
        dn.push(DnType::CommonName, format!("{trust_domain} root CA"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = SystemTime::now();
        params.not_before = OffsetDateTime::from(now - CLOCK_SKEW);
        params.not_after = OffsetDateTime::from(now + ROOT_VALIDITY);
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key).map_err(CaError::Generate)?;
        let key_pem = key.serialize_pem();
        let ca = CertificateAuthority {
            trust_domain: trust_domain.to_string(),
            root_der: cert.der().clone(),
            root_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        };
        Ok((ca, key_pem))
    }

    /// Loads `root-cert.pem` and `root-key.pem` from `dir`, or creates them (mode 0600) when
    /// neither exists.
    pub fn load_or_create(dir: &Path, trust_domain: &str) -> Result<Self, CaError> {
        check_trust_domain(trust_domain)?;
        let cert_path = dir.join(ROOT_CERT_FILE);
        let key_path = dir.join(ROOT_KEY_FILE);
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => Self::load(dir, &cert_path, &key_path, trust_domain),
            (true, false) => Err(CaError::Incomplete {
                dir: dir.to_path_buf(),
                present: ROOT_CERT_FILE,
                missing: ROOT_KEY_FILE,
            }),
            (false, true) => Err(CaError::Incomplete {
                dir: dir.to_path_buf(),
                present: ROOT_KEY_FILE,
                missing: ROOT_CERT_FILE,
            }),
            (false, false) => {
                let (ca, key_pem) = Self::generate_with_key(trust_domain)?;
                fs::create_dir_all(dir).map_err(|source| CaError::Io {
                    path: dir.to_path_buf(),
                    source,
                })?;
                write_private(&key_path, &key_pem)?;
                write_private(&cert_path, &ca.root_pem)?;
                tracing::info!(dir = %dir.display(), %trust_domain, "created a new root CA");
                Ok(ca)
            }
        }
    }

    fn load(
        dir: &Path,
        cert_path: &Path,
        key_path: &Path,
        trust_domain: &str,
    ) -> Result<Self, CaError> {
        let read = |p: &Path| {
            fs::read_to_string(p).map_err(|source| CaError::Io {
                path: p.to_path_buf(),
                source,
            })
        };
        let cert_pem = read(cert_path)?;
        let key_pem = read(key_path)?;
        let load_err = |source| CaError::Load {
            dir: dir.to_path_buf(),
            source,
        };
        let key = KeyPair::from_pem(&key_pem).map_err(load_err)?;
        let block = pem::parse(&cert_pem).map_err(|e| CaError::Cert(e.into()))?;
        let root_der = CertificateDer::from(block.into_contents());
        let (_, parsed) = X509Certificate::from_der(&root_der)
            .map_err(|_| load_err(rcgen::Error::CouldNotParseCertificate))?;
        if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(CaError::RootKeyMismatch(dir.to_path_buf()));
        }
        let issuer = Issuer::from_ca_cert_der(&root_der, key).map_err(load_err)?;
        tracing::info!(dir = %dir.display(), %trust_domain, "loaded the root CA");
        Ok(CertificateAuthority {
            trust_domain: trust_domain.to_string(),
            root_pem: der_to_pem(&root_der),
            root_der,
            issuer,
        })
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The root certificate, PEM.
    pub fn root_pem(&self) -> String {
        self.root_pem.clone()
    }

    /// The root certificate, DER.
    pub fn root_der(&self) -> CertificateDer<'static> {
        self.root_der.clone()
    }

    /// Signs a PEM CSR whose only SAN must be `expected`'s URI; returns PEM chain leaf..root.
    ///
    /// Only the CSR's public key is used: the leaf's subject, extensions and validity are set
    /// here (not CA, digitalSignature + keyEncipherment, serverAuth + clientAuth, the URI SAN,
    /// not_before [`CLOCK_SKEW`] in the past, not_after `ttl` from now).
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        expected: &Identity,
        ttl: Duration,
    ) -> Result<Vec<String>, CaError> {
        self.check_identity(expected)?;
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(CaError::CsrParse)?;
        let expected_uri = expected.uri();
        match csr.params.subject_alt_names.as_slice() {
            [] => {
                return Err(CaError::NoSan {
                    expected: expected_uri,
                });
            }
            [SanType::URI(uri)] => {
                if uri.as_str() != expected_uri {
                    return Err(CaError::IdentityMismatch {
                        requested: uri.as_str().to_string(),
                        expected: expected_uri,
                    });
                }
            }
            [other] => {
                return Err(CaError::ForbiddenSan {
                    san: render_san(other),
                    expected: expected_uri,
                });
            }
            many => {
                return Err(CaError::TooManySans {
                    sans: many.iter().map(render_san).collect(),
                    expected: expected_uri,
                });
            }
        }
        if !matches!(csr.params.is_ca, IsCa::NoCa | IsCa::ExplicitNoCa) {
            return Err(CaError::CsrRequestsCa);
        }
        let now = SystemTime::now();
        let signed = CertificateSigningRequestParams {
            params: leaf_params(expected, now - CLOCK_SKEW, now + ttl)?,
            public_key: csr.public_key,
        }
        .signed_by(&self.issuer)
        .map_err(CaError::Sign)?;
        tracing::debug!(identity = %expected, ?ttl, "signed a workload certificate");
        Ok(vec![signed.pem(), self.root_pem.clone()])
    }

    /// Convenience for tests and local mode: key + CSR + sign.
    pub fn issue(&self, id: &Identity, ttl: Duration) -> Result<WorkloadCertificate, CaError> {
        let bundle = generate_csr(id)?;
        let chain = self.sign_csr(&bundle.csr_pem, id, ttl)?;
        Ok(WorkloadCertificate::from_pem(
            &chain,
            &bundle.key_pem,
            std::slice::from_ref(&self.root_pem),
        )?)
    }

    /// Issues a certificate with an explicit validity window (which may lie entirely in the past
    /// or the future), for tests of expiry handling.
    pub fn issue_with_validity(
        &self,
        id: &Identity,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<WorkloadCertificate, CaError> {
        self.check_identity(id)?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| CaError::Csr(CsrError::KeyGeneration(e)))?;
        let cert = leaf_params(id, not_before, not_after)?
            .signed_by(&key, &self.issuer)
            .map_err(CaError::Sign)?;
        Ok(WorkloadCertificate::from_pem(
            &[cert.pem()],
            &key.serialize_pem(),
            std::slice::from_ref(&self.root_pem),
        )?)
    }

    fn check_identity(&self, id: &Identity) -> Result<(), CaError> {
        if id.trust_domain != self.trust_domain {
            return Err(CaError::WrongTrustDomain {
                requested: id.uri(),
                trust_domain: self.trust_domain.clone(),
            });
        }
        Ok(())
    }
}

fn check_trust_domain(td: &str) -> Result<(), CaError> {
    if is_valid_trust_domain(td) {
        Ok(())
    } else {
        Err(CaError::InvalidTrustDomain(td.to_string()))
    }
}

fn leaf_params(
    id: &Identity,
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<CertificateParams, CaError> {
    if not_after <= not_before {
        return Err(CaError::InvalidValidity);
    }
    let uri = id.uri();
    let san = uri.clone().try_into().map_err(|source| {
        CaError::Csr(CsrError::Uri {
            id: uri.clone(),
            source,
        })
    })?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(san)];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = OffsetDateTime::from(not_before);
    params.not_after = OffsetDateTime::from(not_after);
    params.serial_number = Some(random_serial());
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn render_san(san: &SanType) -> String {
    match san {
        SanType::URI(u) => format!("URI:{}", u.as_str()),
        SanType::DnsName(d) => format!("DNS:{}", d.as_str()),
        SanType::Rfc822Name(e) => format!("email:{}", e.as_str()),
        SanType::IpAddress(ip) => format!("IP:{ip}"),
        other => format!("{other:?}"),
    }
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    // Falls back to the current time if the system RNG fails, which keeps serials distinct.
    if aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut bytes)
        .is_err()
    {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        bytes = nanos.to_be_bytes();
    }
    // Positive and without a leading zero byte, as DER INTEGER serials should be.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

fn write_private(path: &Path, contents: &str) -> Result<(), CaError> {
    let io_err = |source| CaError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err)?;
    f.write_all(contents.as_bytes()).map_err(io_err)?;
    f.sync_all().map_err(io_err)
}
