//! Certificate verifiers for both ends of a mesh connection: webpki chain validation against the
//! trust roots, then the SPIFFE id against a [`PeerPolicy`].

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};

use super::{PeerPolicy, TlsError};
use crate::cert::{CertError, identity_from_der};
use crate::spiffe::Identity;

/// Why a peer's certificate was refused.
///
/// Carried as `rustls::Error::InvalidCertificate(CertificateError::Other(..))`, so the peer gets a
/// `bad_certificate` alert. rustls renders that variant with `Debug`, so `Debug` here prints the
/// same human-readable text as `Display`.
#[derive(thiserror::Error)]
pub enum PeerRejected {
    #[error("peer identity {seen} is not allowed; expected {expected}")]
    NotAllowed { seen: String, expected: String },
    #[error("peer certificate carries no usable SPIFFE id: {0}")]
    NoIdentity(#[from] CertError),
    #[error("peer certificate chain rejected: {0}")]
    Chain(webpki::Error),
}

impl std::fmt::Debug for PeerRejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl From<PeerRejected> for rustls::Error {
    fn from(e: PeerRejected) -> Self {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
    }
}

/// Verifies a peer's chain against fixed trust roots and its SPIFFE id against a policy.
/// Used as both the client's server verifier and the server's (mandatory) client verifier.
#[derive(Debug)]
pub struct SpiffeVerifier {
    anchors: Vec<TrustAnchor<'static>>,
    subjects: Vec<DistinguishedName>,
    policy: PeerPolicy,
    algs: WebPkiSupportedAlgorithms,
}

impl SpiffeVerifier {
    pub fn new(
        roots: &[CertificateDer<'static>],
        policy: PeerPolicy,
        provider: &CryptoProvider,
    ) -> Result<Self, TlsError> {
        if roots.is_empty() {
            return Err(TlsError::NoRoots);
        }
        let anchors: Vec<TrustAnchor<'static>> = roots
            .iter()
            .map(|r| webpki::anchor_from_trusted_cert(r).map(|a| a.to_owned()))
            .collect::<Result<_, _>>()
            .map_err(TlsError::BadRoot)?;
        let subjects = anchors
            .iter()
            .map(|a| DistinguishedName::from(a.subject.as_ref().to_vec()))
            .collect();
        Ok(SpiffeVerifier {
            anchors,
            subjects,
            policy,
            algs: provider.signature_verification_algorithms,
        })
    }

    pub fn policy(&self) -> &PeerPolicy {
        &self.policy
    }

    /// Chain then identity; returns the accepted identity.
    pub fn verify_peer(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: webpki::KeyUsage,
    ) -> Result<Identity, rustls::Error> {
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(chain_error)?;
        cert.verify_for_usage(
            self.algs.all,
            &self.anchors,
            intermediates,
            now,
            usage,
            None,
            None,
        )
        .map_err(chain_error)?;
        let seen = identity_from_der(end_entity).map_err(PeerRejected::from)?;
        self.policy.check(&seen)?;
        Ok(seen)
    }

    fn tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }
}

fn tls12_refused() -> rustls::Error {
    rustls::Error::General("TLS 1.2 is not supported: mesh connections require TLS 1.3".into())
}

/// Maps chain validation failures onto rustls' certificate errors so that the right alert is
/// sent; the rest keep webpki's description.
fn chain_error(e: webpki::Error) -> rustls::Error {
    use webpki::Error as W;
    let cert_err = match e {
        W::CertExpired { time, not_after } => CertificateError::ExpiredContext { time, not_after },
        W::CertNotValidYet { time, not_before } => {
            CertificateError::NotValidYetContext { time, not_before }
        }
        W::UnknownIssuer => CertificateError::UnknownIssuer,
        W::InvalidSignatureForPublicKey => CertificateError::BadSignature,
        W::BadDer | W::BadDerTime => CertificateError::BadEncoding,
        other => return PeerRejected::Chain(other).into(),
    };
    rustls::Error::InvalidCertificate(cert_err)
}

impl ServerCertVerifier for SpiffeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verify_peer(
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

impl ClientCertVerifier for SpiffeVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.subjects
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verify_peer(
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::client_auth(),
        )?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}
