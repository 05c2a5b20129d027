//! What is known about the mutual-TLS connection carrying HBONE streams.

use std::net::SocketAddr;

use identity::Identity;
use rustls::pki_types::CertificateDer;

use super::error::HboneError;

/// The authenticated peer and addresses of one HBONE connection; shared by all its streams.
#[derive(Clone, Debug)]
pub struct ConnectionInfo {
    /// SPIFFE identity of the peer (from its certificate's URI SAN).
    pub peer_identity: Identity,
    /// The peer's certificate chain, leaf first.
    pub peer_certificates: Vec<CertificateDer<'static>>,
    /// Local end of the TCP connection.
    pub local_addr: SocketAddr,
    /// Remote end of the TCP connection.
    pub peer_addr: SocketAddr,
}

impl ConnectionInfo {
    /// Collects the connection facts after a completed handshake.
    pub(crate) fn from_tls(
        tcp: &tokio::net::TcpStream,
        tls: &rustls::CommonState,
    ) -> Result<Self, HboneError> {
        let peer_addr = tcp.peer_addr()?;
        let local_addr = tcp.local_addr()?;
        let peer_identity = identity::tls::peer_identity(tls)
            .ok_or(HboneError::MissingPeerIdentity { addr: peer_addr })?;
        let peer_certificates = tls
            .peer_certificates()
            .map(|certs| certs.iter().map(|c| c.clone().into_owned()).collect())
            .unwrap_or_default();
        Ok(Self {
            peer_identity,
            peer_certificates,
            local_addr,
            peer_addr,
        })
    }

    /// The peer's leaf certificate.
    pub fn peer_leaf(&self) -> Option<&CertificateDer<'static>> {
        self.peer_certificates.first()
    }
}
