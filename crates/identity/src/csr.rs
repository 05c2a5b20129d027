//! Certificate signing requests for workload identities.

use rcgen::{CertificateParams, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};

use crate::spiffe::Identity;

#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    #[error("could not generate an ECDSA P-256 key: {0}")]
    KeyGeneration(rcgen::Error),
    #[error("SPIFFE id {id} cannot be encoded as a URI SAN: {source}")]
    Uri { id: String, source: rcgen::Error },
    #[error("could not serialize the CSR: {0}")]
    Serialize(rcgen::Error),
}

/// A PEM CSR and the PEM (PKCS#8) private key it was made with.
#[derive(Clone)]
pub struct CsrBundle {
    pub csr_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for CsrBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsrBundle")
            .field("csr_pem", &self.csr_pem)
            .finish_non_exhaustive()
    }
}

/// Generates a fresh ECDSA P-256 key and a CSR whose only SAN is `id`'s URI.
pub fn generate_csr(id: &Identity) -> Result<CsrBundle, CsrError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(CsrError::KeyGeneration)?;
    let uri = id.uri();
    let san = uri.clone().try_into().map_err(|source| CsrError::Uri {
        id: uri.clone(),
        source,
    })?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(san)];
    let csr = params
        .serialize_request(&key)
        .map_err(CsrError::Serialize)?;
    Ok(CsrBundle {
        csr_pem: csr.pem().map_err(CsrError::Serialize)?,
        key_pem: key.serialize_pem(),
    })
}
