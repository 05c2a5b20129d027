//! Errors of the xDS client.

use std::error::Error as StdError;
use std::fmt;

/// Why an xDS client connection attempt or stream ended.
#[derive(Debug, thiserror::Error)]
pub enum XdsError {
    #[error("invalid xDS endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint { endpoint: String, reason: String },
    #[error("xDS endpoint {0:?} is https but no TLS client config was given")]
    TlsConfigMissing(String),
    #[error("invalid gRPC metadata entry {key:?}: {reason}")]
    InvalidMetadata { key: String, reason: String },
    #[error("connecting to {endpoint}: {}", Chain(source))]
    Connect {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("xDS stream failed: {0}")]
    Stream(#[from] tonic::Status),
    #[error("xDS stream closed by the server")]
    Closed,
}

/// Displays an error with all its causes (transport errors hide the useful part in `source`).
struct Chain<'a>(&'a dyn StdError);

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}
