//! Errors of the benchmark harness.

use crate::harness::HarnessError;

/// Why a benchmark step failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Harness(#[from] HarnessError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool} is missing: {hint}")]
    MissingTool { tool: String, hint: String },
    #[error("{tool} failed: {reason}")]
    Tool { tool: String, reason: String },
    #[error("cannot parse {what}: {reason}")]
    Parse { what: String, reason: String },
    #[error("cannot read /proc/{pid}/{file}: {reason}")]
    Proc {
        pid: u32,
        file: &'static str,
        reason: String,
    },
    #[error("{what} did not happen within {waited_ms} ms: {last}")]
    Timeout {
        what: String,
        waited_ms: u128,
        last: String,
    },
    #[error("control plane: {0}")]
    ControlPlane(String),
    #[error("chart: {0}")]
    Chart(String),
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl BenchError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }

    pub(crate) fn tool(tool: &str, reason: impl Into<String>) -> Self {
        Self::Tool {
            tool: tool.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn parse(what: &str, reason: impl Into<String>) -> Self {
        Self::Parse {
            what: what.to_string(),
            reason: reason.into(),
        }
    }
}
