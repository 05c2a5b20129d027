//! The harness's error type.

use std::time::Duration;

use super::capture::CaptureError;
use super::cmd::CmdError;
use super::cni::CniError;
use super::manifests::ManifestError;
use super::metrics::MetricsError;
use super::netns::NetnsError;
use super::poll::PollError;
use super::prereq::PrereqError;
use super::process::ProcessError;

/// Everything that can go wrong in the harness. Component failures carry the tail of the
/// component's log.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error(transparent)]
    Prereq(#[from] PrereqError),
    #[error(transparent)]
    Cmd(#[from] CmdError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error(transparent)]
    Cni(#[from] CniError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error(transparent)]
    Poll(#[from] PollError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{component}: {reason}\n--- {component} log (tail) ---\n{log_tail}")]
    Component {
        component: String,
        reason: String,
        log_tail: String,
    },
    #[error("cluster not ready after {waited:?}; still waiting for:\n{waiting}\n{diagnostics}")]
    NotReady {
        waited: Duration,
        waiting: String,
        diagnostics: String,
    },
    #[error("echo from pod {from} to {to} failed (exit {status:?}): {stderr}")]
    EchoFailed {
        from: String,
        to: String,
        status: Option<i32>,
        stdout: String,
        stderr: String,
    },
    #[error("{what} answered HTTP {status}: {body}")]
    BadStatus {
        what: String,
        status: u16,
        body: String,
    },
    #[error("{what}: invalid JSON: {reason}")]
    Json { what: String, reason: String },
    #[error("no {kind} named {name:?} in this cluster")]
    Unknown { kind: &'static str, name: String },
    #[error("{0}")]
    Invalid(String),
}

impl HarnessError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }

    /// Whether this is an echo that failed at the application level (refused, reset, closed
    /// without an echo, timed out) rather than a harness problem.
    pub fn is_echo_failure(&self) -> bool {
        matches!(self, Self::EchoFailed { .. })
    }
}
