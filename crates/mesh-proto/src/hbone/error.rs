//! Errors of the HBONE client, server and pool.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use identity::Identity;

/// Which party an [`HboneError`] is attributed to, for logs and response flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureSide {
    /// This process: configuration, certificates, a cancelled or timed-out operation.
    Local,
    /// The network path: TCP connect, resets, closed connections.
    Network,
    /// The peer: TLS rejection, protocol errors, a non-2xx answer.
    Peer,
}

#[derive(Debug, thiserror::Error)]
pub enum HboneError {
    #[error("TCP connect to {addr} failed: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("TLS handshake with {addr} failed: {source}")]
    Tls { addr: SocketAddr, source: io::Error },
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    #[error("HTTP/2 error: {0}")]
    H2(#[from] h2::Error),
    #[error("peer answered CONNECT with status {0}")]
    Status(http::StatusCode),
    #[error("bad CONNECT authority {0:?} (expected ip:port)")]
    BadAuthority(String),
    #[error("peer {addr} presented no SPIFFE identity")]
    MissingPeerIdentity { addr: SocketAddr },
    #[error("peer {addr} presented identity {actual}, expected {expected}")]
    PeerIdentity {
        addr: SocketAddr,
        expected: Identity,
        actual: Identity,
    },
    #[error("{what} timed out after {after:?}")]
    Timeout { what: &'static str, after: Duration },
    #[error("workload certificate unavailable: {0}")]
    Certificate(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("connection attempt was cancelled")]
    Cancelled,
    /// The failure of a pooled connection attempt, shared by every caller that waited on it.
    #[error(transparent)]
    Shared(Arc<HboneError>),
}

impl HboneError {
    /// Wraps an error from the certificate source handed to the client.
    pub fn certificate(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Certificate(Box::new(err))
    }

    /// The underlying error, looking through [`HboneError::Shared`].
    pub fn root(&self) -> &HboneError {
        match self {
            Self::Shared(inner) => inner.root(),
            other => other,
        }
    }

    /// The status of a refused CONNECT, if that is what this error is.
    pub fn status(&self) -> Option<http::StatusCode> {
        match self.root() {
            Self::Status(status) => Some(*status),
            _ => None,
        }
    }

    /// Whether trying again (usually over a new connection) may succeed.
    pub fn is_retryable(&self) -> bool {
        match self.root() {
            Self::Connect { .. } | Self::Io(_) | Self::Timeout { .. } | Self::Cancelled => true,
            Self::H2(e) => {
                e.is_io() || e.is_go_away() || e.reason() == Some(h2::Reason::REFUSED_STREAM)
            }
            Self::Status(status) => status.is_server_error(),
            Self::Tls { .. }
            | Self::BadAuthority(_)
            | Self::MissingPeerIdentity { .. }
            | Self::PeerIdentity { .. }
            | Self::Certificate(_)
            | Self::Shared(_) => false,
        }
    }

    /// Which party the failure is attributed to.
    pub fn side(&self) -> FailureSide {
        match self.root() {
            Self::Connect { .. } | Self::Io(_) => FailureSide::Network,
            Self::H2(e) if e.is_io() => FailureSide::Network,
            Self::H2(_)
            | Self::Tls { .. }
            | Self::Status(_)
            | Self::MissingPeerIdentity { .. }
            | Self::PeerIdentity { .. }
            | Self::BadAuthority(_) => FailureSide::Peer,
            Self::Timeout { .. } | Self::Certificate(_) | Self::Cancelled | Self::Shared(_) => {
                FailureSide::Local
            }
        }
    }
}

/// Maps an HTTP/2 stream error to the `io::Error` a byte-stream reader or writer expects:
/// a reset stream is `ConnectionReset`, a connection going away `ConnectionAborted`.
pub(crate) fn h2_to_io(err: h2::Error) -> io::Error {
    if err.is_io() {
        return err
            .into_io()
            .unwrap_or_else(|| io::Error::other("HTTP/2 connection i/o error"));
    }
    if err.is_reset() {
        return io::Error::new(io::ErrorKind::ConnectionReset, err);
    }
    if err.is_go_away() {
        return io::Error::new(io::ErrorKind::ConnectionAborted, err);
    }
    io::Error::other(err)
}
