//! What the CNI plugin and the node agent say to each other over the agent's unix stream socket.
//!
//! One exchange per connection: the plugin writes one [`PluginRequest`] as a single line of JSON,
//! the agent answers with one [`PluginResponse`] line and closes. Lines are at most
//! [`MAX_LINE`] bytes.
//!
//! The agent decides whether a pod is enrolled; the plugin only reports the outcome to the
//! container runtime: `enrolled` and `notEnrolled` let the pod start, `error` fails its creation
//! (the runtime retries), so a pod that should be captured never starts un-captured.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Default path of the agent's socket for the plugin.
pub const DEFAULT_AGENT_SOCKET: &str = "/var/run/mesh-cni/agent.sock";

/// Version of this exchange; the agent refuses others.
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest line either side accepts.
pub const MAX_LINE: usize = 64 * 1024;

/// The CNI operation the plugin reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginCommand {
    Add,
    Del,
    Check,
}

/// A pod's network set-up as the plugin saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginRequest {
    pub version: u32,
    pub command: PluginCommand,
    pub pod_namespace: String,
    pub pod_name: String,
    /// `K8S_POD_UID` from `CNI_ARGS`, when the runtime passes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    pub container_id: String,
    /// `CNI_NETNS`: path of the pod's network namespace (may be absent on DEL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    /// The pod's addresses, from the previous plugin's result.
    #[serde(default)]
    pub ips: Vec<IpAddr>,
}

/// The agent's verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "camelCase")]
pub enum PluginResponse {
    /// The pod's traffic is redirected to ztunnel.
    Enrolled,
    /// The pod is not part of the mesh; nothing was changed.
    NotEnrolled,
    /// The pod should be enrolled and could not be (or the request was invalid).
    Error { message: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_is_stable() {
        let req = PluginRequest {
            version: PROTOCOL_VERSION,
            command: PluginCommand::Add,
            pod_namespace: "shop".into(),
            pod_name: "cart-0".into(),
            pod_uid: None,
            container_id: "c1".into(),
            netns: Some("/var/run/netns/p1".into()),
            ifname: Some("eth0".into()),
            ips: vec!["10.1.0.5".parse().expect("ip")],
        };
        assert_eq!(
            serde_json::to_string(&req).expect("json"),
            r#"{"version":1,"command":"add","podNamespace":"shop","podName":"cart-0","containerId":"c1","netns":"/var/run/netns/p1","ifname":"eth0","ips":["10.1.0.5"]}"#
        );
        let err = PluginResponse::Error {
            message: "boom".into(),
        };
        assert_eq!(
            serde_json::to_string(&err).expect("json"),
            r#"{"result":"error","message":"boom"}"#
        );
        let ok: PluginResponse =
            serde_json::from_str(r#"{"result":"notEnrolled"}"#).expect("parse");
        assert_eq!(ok, PluginResponse::NotEnrolled);
    }
}
