//! The narrated demo behind `make demo`: two nodes, a client and a server pod in namespace
//! `demo`, plaintext first (a capture on the wire sees the payload), then the namespace is
//! enrolled and the same running pods talk over HBONE mutual TLS (the capture sees only TLS to
//! 15008; the identities come from ztunnel's metrics and config dump), then an
//! AuthorizationPolicy denies the client. Then L7: a waypoint is deployed for the namespace, an
//! HTTPRoute splits traffic 90/10 (measured over 1,000 requests), an AuthorizationPolicy on the
//! waypoint denies `GET /admin` while `GET /` passes, and a retry policy hides a backend that
//! fails every other request. Each step says what it does and what it saw; any surprise ends the
//! demo with an error.

mod l7;
mod narrate;
mod scenario;

use std::path::PathBuf;

pub use narrate::Narrator;
pub use scenario::run;

use crate::harness::HarnessError;

/// Options of the demo.
#[derive(Debug, Clone, Default)]
pub struct DemoOptions {
    /// Directory of the mesh binaries (default: the harness's default).
    pub bin_dir: Option<PathBuf>,
    /// The `mesh-echo` binary (default: `<bin dir>/mesh-echo`).
    pub echo_bin: Option<PathBuf>,
    /// Keep the work directory (logs, configs, captures) afterwards.
    pub keep: bool,
}

/// Why the demo stopped.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("step {step:?} did not behave as expected: {reason}")]
    Unexpected { step: String, reason: String },
    #[error("step {step:?} failed: {source}")]
    Harness {
        step: String,
        #[source]
        source: HarnessError,
    },
}
