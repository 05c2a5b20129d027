//! The plugin's inputs: the `CNI_*` environment and the network configuration on stdin.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::result::{PluginError, SUPPORTED_VERSIONS, code};
use crate::api::DEFAULT_AGENT_SOCKET;

/// How long the plugin waits for the agent unless the configuration says otherwise.
pub const DEFAULT_AGENT_TIMEOUT: Duration = Duration::from_secs(30);

/// `CNI_COMMAND`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    /// CNI 1.1.0.
    Status,
    /// CNI 1.1.0.
    Gc,
}

impl Command {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            _ => return None,
        })
    }
}

/// The `CNI_*` variables.
#[derive(Clone, Debug)]
pub struct Env {
    pub command: Command,
    pub container_id: Option<String>,
    pub netns: Option<PathBuf>,
    pub ifname: Option<String>,
    pub args: CniArgs,
}

impl Env {
    /// Reads the variables through `var` (the process environment, or a map in tests).
    pub fn read(var: &dyn Fn(&str) -> Option<String>) -> Result<Self, PluginError> {
        let nonempty = |k: &str| var(k).filter(|v| !v.is_empty());
        let command = nonempty("CNI_COMMAND").ok_or_else(|| {
            PluginError::new(
                code::INVALID_ENVIRONMENT,
                "CNI_COMMAND is not set",
                "this is a CNI plugin: the container runtime runs it with CNI_COMMAND and the \
                 network configuration on stdin",
            )
        })?;
        let command = Command::parse(&command).ok_or_else(|| {
            PluginError::new(
                code::INVALID_ENVIRONMENT,
                "unknown CNI_COMMAND",
                format!("{command:?} is none of ADD, DEL, CHECK, VERSION, STATUS, GC"),
            )
        })?;
        let args = CniArgs::parse(nonempty("CNI_ARGS").as_deref().unwrap_or(""))?;
        Ok(Self {
            command,
            container_id: nonempty("CNI_CONTAINERID"),
            netns: nonempty("CNI_NETNS").map(PathBuf::from),
            ifname: nonempty("CNI_IFNAME"),
            args,
        })
    }

    /// A variable the command cannot do without.
    pub fn require<'a>(
        &self,
        name: &str,
        value: &'a Option<String>,
    ) -> Result<&'a str, PluginError> {
        value.as_deref().ok_or_else(|| {
            PluginError::new(
                code::INVALID_ENVIRONMENT,
                format!("{name} is not set"),
                format!("{name} is required for {:?}", self.command),
            )
        })
    }
}

/// `CNI_ARGS`: `KEY=VALUE` pairs separated by `;`.
#[derive(Clone, Debug, Default)]
pub struct CniArgs {
    pairs: BTreeMap<String, String>,
}

impl CniArgs {
    pub fn parse(s: &str) -> Result<Self, PluginError> {
        let mut pairs = BTreeMap::new();
        for item in s.split(';').filter(|i| !i.is_empty()) {
            let (k, v) = item.split_once('=').ok_or_else(|| {
                PluginError::new(
                    code::DECODE_FAILURE,
                    "malformed CNI_ARGS",
                    format!("{item:?} is not KEY=VALUE"),
                )
            })?;
            pairs.insert(k.to_string(), v.to_string());
        }
        Ok(Self { pairs })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// `(namespace, name)` of a Kubernetes pod, when the runtime passed them.
    pub fn pod(&self) -> Option<(&str, &str)> {
        Some((self.get("K8S_POD_NAMESPACE")?, self.get("K8S_POD_NAME")?))
    }
}

/// The plugin's network configuration (one entry of a conflist, completed by the runtime).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    #[serde(default)]
    pub name: Option<String>,
    /// The agent's socket for the plugin.
    #[serde(default = "default_agent_socket")]
    pub agent_socket: PathBuf,
    /// How long to wait for the agent's answer.
    #[serde(default)]
    pub agent_timeout_ms: Option<u64>,
    /// Namespaces whose pods pass through without asking the agent (the mesh's own, say).
    #[serde(default)]
    pub exclude_namespaces: Vec<String>,
    /// The previous plugin's result, kept byte for byte.
    #[serde(default)]
    pub prev_result: Option<Box<RawValue>>,
}

fn default_agent_socket() -> PathBuf {
    PathBuf::from(DEFAULT_AGENT_SOCKET)
}

impl NetConf {
    /// Parses stdin; the version must be one this plugin supports.
    pub fn parse(stdin: &[u8]) -> Result<Self, PluginError> {
        let conf: NetConf = serde_json::from_slice(stdin).map_err(|e| {
            PluginError::new(
                code::DECODE_FAILURE,
                "cannot decode the network configuration",
                e.to_string(),
            )
        })?;
        if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
            return Err(PluginError::new(
                code::INCOMPATIBLE_VERSION,
                "incompatible CNI version",
                format!(
                    "cniVersion {:?} is not one of {}",
                    conf.cni_version,
                    SUPPORTED_VERSIONS.join(", ")
                ),
            ));
        }
        Ok(conf)
    }

    pub fn agent_timeout(&self) -> Duration {
        self.agent_timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(DEFAULT_AGENT_TIMEOUT)
    }

    /// The pod addresses in `prevResult` (`ips[].address`, CIDR notation).
    pub fn prev_ips(&self) -> Result<Vec<IpAddr>, PluginError> {
        #[derive(Deserialize)]
        struct Prev {
            #[serde(default)]
            ips: Vec<IpConfig>,
        }
        #[derive(Deserialize)]
        struct IpConfig {
            address: String,
        }
        let Some(raw) = &self.prev_result else {
            return Ok(Vec::new());
        };
        let bad = |details: String| {
            PluginError::new(code::DECODE_FAILURE, "cannot decode prevResult", details)
        };
        let prev: Prev = serde_json::from_str(raw.get()).map_err(|e| bad(e.to_string()))?;
        prev.ips
            .iter()
            .map(|ip| {
                let addr = ip.address.split('/').next().unwrap_or_default();
                addr.parse::<IpAddr>()
                    .map_err(|e| bad(format!("address {:?}: {e}", ip.address)))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cni_args_give_the_pod() {
        let args = CniArgs::parse(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=cart-0;K8S_POD_INFRA_CONTAINER_ID=abc",
        )
        .expect("parse");
        assert_eq!(args.pod(), Some(("shop", "cart-0")));
        assert!(
            CniArgs::parse("IgnoreUnknown=1")
                .expect("parse")
                .pod()
                .is_none()
        );
        assert_eq!(
            CniArgs::parse("novalue").expect_err("bad").code,
            code::DECODE_FAILURE
        );
    }

    #[test]
    fn prev_result_ips_and_defaults() {
        let conf = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"n","type":"mesh-cni",
                "prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.1.0.5/24"},{"address":"fd00::5/64"}]}}"#,
        )
        .expect("parse");
        assert_eq!(
            conf.prev_ips().expect("ips"),
            vec![
                "10.1.0.5".parse::<IpAddr>().expect("ip"),
                "fd00::5".parse::<IpAddr>().expect("ip")
            ]
        );
        assert_eq!(conf.agent_socket, PathBuf::from(DEFAULT_AGENT_SOCKET));
        assert_eq!(conf.agent_timeout(), DEFAULT_AGENT_TIMEOUT);
    }

    #[test]
    fn unsupported_version_is_refused() {
        let err = NetConf::parse(br#"{"cniVersion":"9.9.9","name":"n"}"#).expect_err("refused");
        assert_eq!(err.code, code::INCOMPATIBLE_VERSION);
    }
}
