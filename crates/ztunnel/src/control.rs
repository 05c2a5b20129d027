//! Connections to istiod: TLS that verifies istiod by its SPIFFE id, and gRPC channels over it.

use std::sync::Arc;

use identity::Identity;
use identity::tls::{PeerPolicy, SpiffeVerifier};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tonic::transport::{Channel, Endpoint};

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("the CA root file holds no usable certificate: {0}")]
    Roots(String),
    #[error("tls: {0}")]
    Tls(#[from] identity::tls::TlsError),
    #[error("rustls: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("invalid address {address:?}: {reason}")]
    Address { address: String, reason: String },
}

/// Splits a PEM bundle into one PEM string per certificate.
pub fn split_pem(bundle: &str) -> Result<Vec<String>, ControlError> {
    let ders = CertificateDer::pem_slice_iter(bundle.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ControlError::Roots(e.to_string()))?;
    if ders.is_empty() {
        return Err(ControlError::Roots("no CERTIFICATE block".into()));
    }
    Ok(ders
        .iter()
        .map(|d| pem::encode(&pem::Pem::new("CERTIFICATE", d.as_ref().to_vec())))
        .collect())
}

/// Client TLS to istiod: TLS 1.3, server verified against the mesh root and istiod's identity,
/// no client certificate (ztunnel authenticates with its token).
pub fn istiod_tls(
    root_pem: &str,
    istiod: &Identity,
) -> Result<Arc<rustls::ClientConfig>, ControlError> {
    let roots = CertificateDer::pem_slice_iter(root_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ControlError::Roots(e.to_string()))?;
    let provider = identity::tls::provider();
    let verifier = SpiffeVerifier::new(&roots, PeerPolicy::Only(vec![istiod.clone()]), &provider)?;
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![identity::tls::ALPN_H2.to_vec()];
    Ok(Arc::new(cfg))
}

/// A lazily connecting gRPC channel to `address` (`http://` plaintext, `https://` with `tls`).
pub fn channel(
    address: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<Channel, ControlError> {
    let bad = |reason: String| ControlError::Address {
        address: address.to_string(),
        reason,
    };
    match (address.strip_prefix("https://"), tls) {
        (Some(rest), Some(tls)) => {
            let ep =
                Endpoint::from_shared(format!("http://{rest}")).map_err(|e| bad(e.to_string()))?;
            Ok(ep.connect_with_connector_lazy(mesh_proto::xds::TlsChannelConnector::new(tls)))
        }
        (Some(_), None) => Err(bad("https needs the CA root".into())),
        (None, _) => Ok(Endpoint::from_shared(address.to_string())
            .map_err(|e| bad(e.to_string()))?
            .connect_lazy()),
    }
}
