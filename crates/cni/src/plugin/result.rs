//! What the plugin prints: CNI error results with the specification's codes, and the VERSION
//! result.

use serde::Serialize;

/// CNI versions this plugin accepts in a network configuration.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The version reported when the configuration's own is unknown.
pub const LATEST_VERSION: &str = "1.0.0";

/// Error codes of the CNI specification (and this plugin's own, from 100).
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in the network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables (`CNI_COMMAND`, `CNI_CONTAINERID`, ...).
    pub const INVALID_ENVIRONMENT: u32 = 4;
    /// I/O failure.
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content (network configuration, `CNI_ARGS`).
    pub const DECODE_FAILURE: u32 = 6;
    /// Invalid network configuration.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later: a transient failure (here: the node agent is unreachable).
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS (1.1.0): the plugin cannot serve ADD requests now.
    pub const NOT_AVAILABLE: u32 = 50;
    /// The node agent could not enrol a pod that should be enrolled.
    pub const ENROLMENT_FAILED: u32 = 100;
}

/// A failure reported to the runtime as a CNI error result.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{msg}: {details}")]
pub struct PluginError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl PluginError {
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// The error result JSON for `cni_version`.
    pub fn to_json(&self, cni_version: &str) -> String {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct ErrorResult<'a> {
            cni_version: &'a str,
            code: u32,
            msg: &'a str,
            details: &'a str,
        }
        let res = ErrorResult {
            cni_version,
            code: self.code,
            msg: &self.msg,
            details: &self.details,
        };
        serde_json::to_string(&res).unwrap_or_else(|_| format!("{{\"code\":{}}}", self.code))
    }
}

/// The VERSION result.
pub fn version_result() -> String {
    serde_json::json!({
        "cniVersion": LATEST_VERSION,
        "supportedVersions": SUPPORTED_VERSIONS,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_result_shape() {
        let e = PluginError::new(code::DECODE_FAILURE, "bad config", "line 1");
        let v: serde_json::Value = serde_json::from_str(&e.to_json("0.4.0")).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"cniVersion": "0.4.0", "code": 6, "msg": "bad config", "details": "line 1"})
        );
    }
}
