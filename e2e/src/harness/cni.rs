//! A kubelet-like CNI runtime: the node's conflist, and ADD/DEL calls of its plugins in order,
//! run inside the node's network namespace exactly as a container runtime would call them.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use super::cmd::{self, CmdError};
use super::prereq::DEBIAN_CNI_DIR;

/// Name of the conflist file the harness writes (the cni-agent chains itself into it).
pub const CONFLIST_FILE: &str = "10-mesh-bridge.conflist";
/// Network name in the conflist.
pub const NETWORK_NAME: &str = "mesh-pods";
pub const CNI_VERSION: &str = "1.0.0";
/// Pod interface name.
pub const POD_IFNAME: &str = "eth0";
/// How long one plugin call may take.
pub const PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Errors of the CNI runtime.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("no usable CNI network configuration in {dir}: {reason}")]
    Conflist { dir: String, reason: String },
    #[error("CNI {command} of plugin `{plugin}` failed (exit {code:?}): {msg}{}{}",
        if details.is_empty() { String::new() } else { format!(" ({details})") },
        if stderr.trim().is_empty() { String::new() } else { format!("; stderr: {}", stderr.trim()) })]
    Plugin {
        plugin: String,
        command: String,
        code: Option<i32>,
        msg: String,
        details: String,
        stderr: String,
    },
    #[error("CNI plugin `{plugin}` returned an unusable result: {reason}")]
    Result { plugin: String, reason: String },
    #[error(transparent)]
    Cmd(#[from] CmdError),
    #[error("CNI file error at {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The conflist a node starts with: a `bridge` (cni0, gateway, host-local IPAM with a default
/// route). The cni-agent appends its own plugin to it.
pub fn bridge_conflist(pod_cidr: &str, gateway: Ipv4Addr, ipam_data_dir: &Path) -> Value {
    json!({
        "cniVersion": CNI_VERSION,
        "name": NETWORK_NAME,
        "plugins": [{
            "type": "bridge",
            "bridge": "cni0",
            "isGateway": true,
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{ "subnet": pod_cidr, "gateway": gateway.to_string() }]],
                "routes": [{ "dst": "0.0.0.0/0" }],
                "dataDir": ipam_data_dir.display().to_string(),
            }
        }]
    })
}

/// Identity of the pod sandbox a call is about.
#[derive(Debug, Clone)]
pub struct SandboxRef {
    pub container_id: String,
    pub netns_path: PathBuf,
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl SandboxRef {
    /// The `CNI_ARGS` value Kubernetes runtimes pass.
    pub fn cni_args(&self) -> String {
        format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
            self.namespace, self.name, self.container_id, self.uid
        )
    }
}

/// What an ADD produced, kept for the DEL (as runtimes cache it).
#[derive(Debug, Clone)]
pub struct Attachment {
    pub conflist_file: PathBuf,
    pub conflist: Value,
    /// Final result of the chain.
    pub result: Value,
    pub ip: Ipv4Addr,
    /// Plugin types called, in order.
    pub plugins: Vec<String>,
}

/// One node's CNI setup.
#[derive(Debug, Clone)]
pub struct NodeCni {
    pub node_netns: String,
    pub conf_dir: PathBuf,
    pub bin_dir: PathBuf,
}

impl NodeCni {
    /// Creates the conf and bin dirs, links Debian's plugins into the bin dir and writes the
    /// bridge conflist.
    pub fn prepare(&self, conflist: &Value) -> Result<(), CniError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| CniError::Io { path, source }
        };
        std::fs::create_dir_all(&self.conf_dir).map_err(io(&self.conf_dir))?;
        std::fs::create_dir_all(&self.bin_dir).map_err(io(&self.bin_dir))?;
        let plugins = std::fs::read_dir(DEBIAN_CNI_DIR).map_err(io(Path::new(DEBIAN_CNI_DIR)))?;
        for entry in plugins.filter_map(|e| e.ok()) {
            let link = self.bin_dir.join(entry.file_name());
            if !link.exists() {
                std::os::unix::fs::symlink(entry.path(), &link).map_err(io(&link))?;
            }
        }
        let file = self.conf_dir.join(CONFLIST_FILE);
        let text = serde_json::to_string_pretty(conflist).unwrap_or_default();
        std::fs::write(&file, text).map_err(io(&file))?;
        Ok(())
    }

    /// The network configuration a runtime would use now: the first `*.conflist`/`*.conf`/
    /// `*.json` file of the conf dir in lexical order.
    pub fn current_conflist(&self) -> Result<(PathBuf, Value), CniError> {
        let dir = self.conf_dir.display().to_string();
        let bad = |reason: String| CniError::Conflist {
            dir: dir.clone(),
            reason,
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.conf_dir)
            .map_err(|e| bad(e.to_string()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .is_some_and(|x| x == "conflist" || x == "conf" || x == "json")
            })
            .collect();
        files.sort();
        let file = files
            .into_iter()
            .next()
            .ok_or_else(|| bad("no *.conflist, *.conf or *.json file".into()))?;
        let text = std::fs::read_to_string(&file).map_err(|e| bad(e.to_string()))?;
        let mut v: Value = serde_json::from_str(&text)
            .map_err(|e| bad(format!("{}: invalid JSON: {e}", file.display())))?;
        if v.get("plugins").is_none() {
            // A single-plugin .conf file: treat it as a list of one.
            let name = v.get("name").cloned().unwrap_or(json!(NETWORK_NAME));
            let version = v.get("cniVersion").cloned().unwrap_or(json!(CNI_VERSION));
            v = json!({ "cniVersion": version, "name": name, "plugins": [v] });
        }
        if !v["plugins"].is_array() {
            return Err(bad(format!("{}: `plugins` is not a list", file.display())));
        }
        Ok((file, v))
    }

    /// Plugin types of the current conflist, in order.
    pub fn current_plugin_types(&self) -> Result<Vec<String>, CniError> {
        let (_, list) = self.current_conflist()?;
        Ok(plugin_types(&list))
    }

    /// Attaches a sandbox: `loopback` for `lo` (as container runtimes do), then every plugin
    /// of the current conflist with the previous result injected.
    pub fn add(&self, sb: &SandboxRef) -> Result<Attachment, CniError> {
        self.loopback(sb, "ADD")?;
        let (conflist_file, conflist) = self.current_conflist()?;
        let mut prev: Option<Value> = None;
        let mut called = Vec::new();
        for plugin in conflist["plugins"].as_array().into_iter().flatten() {
            let ty = plugin_type(plugin)?;
            let conf = plugin_netconf(&conflist, plugin, prev.as_ref());
            let result = self.exec(&ty, "ADD", &conf, sb, POD_IFNAME)?;
            called.push(ty.clone());
            prev = Some(result.ok_or_else(|| CniError::Result {
                plugin: ty,
                reason: "ADD printed no result".into(),
            })?);
        }
        let result = prev.ok_or_else(|| CniError::Conflist {
            dir: self.conf_dir.display().to_string(),
            reason: "the conflist has no plugins".into(),
        })?;
        let ip = result_ipv4(&result).ok_or_else(|| CniError::Result {
            plugin: called.last().cloned().unwrap_or_default(),
            reason: format!("no IPv4 address in {result}"),
        })?;
        Ok(Attachment {
            conflist_file,
            conflist,
            result,
            ip,
            plugins: called,
        })
    }

    /// Detaches a sandbox: DEL of the ADD-time plugins in reverse order with the cached result,
    /// then `loopback`. Every plugin is called even if one fails; the first error is returned.
    pub fn del(&self, sb: &SandboxRef, att: &Attachment) -> Result<(), CniError> {
        let mut first_err = None;
        let plugins: Vec<&Value> = att.conflist["plugins"]
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        for plugin in plugins.into_iter().rev() {
            let res = plugin_type(plugin).and_then(|ty| {
                let prev = (!att.result.is_null()).then_some(&att.result);
                let conf = plugin_netconf(&att.conflist, plugin, prev);
                self.exec(&ty, "DEL", &conf, sb, POD_IFNAME).map(|_| ())
            });
            if let Err(e) = res {
                tracing::warn!(error = %e, "CNI DEL failed");
                first_err.get_or_insert(e);
            }
        }
        if let Err(e) = self.loopback(sb, "DEL") {
            first_err.get_or_insert(e);
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Tears down a sandbox whose ADD failed (as runtimes do before retrying): DEL of every
    /// plugin of the current conflist in reverse order, without a previous result.
    pub fn teardown(&self, sb: &SandboxRef) -> Result<(), CniError> {
        let (conflist_file, conflist) = self.current_conflist()?;
        let att = Attachment {
            conflist_file,
            conflist,
            result: Value::Null,
            ip: Ipv4Addr::UNSPECIFIED,
            plugins: Vec::new(),
        };
        self.del(sb, &att)
    }

    fn loopback(&self, sb: &SandboxRef, command: &str) -> Result<(), CniError> {
        let conf = json!({ "cniVersion": CNI_VERSION, "name": "cni-loopback", "type": "loopback" });
        self.exec("loopback", command, &conf, sb, "lo").map(|_| ())
    }

    /// Calls one plugin binary inside the node netns; returns its parsed stdout (if any).
    fn exec(
        &self,
        plugin: &str,
        command: &str,
        conf: &Value,
        sb: &SandboxRef,
        ifname: &str,
    ) -> Result<Option<Value>, CniError> {
        let bin = self.bin_dir.join(plugin);
        let mut c = cmd::in_netns(&self.node_netns, &bin, &[]);
        c.env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &sb.container_id)
            .env("CNI_NETNS", &sb.netns_path)
            .env("CNI_IFNAME", ifname)
            .env("CNI_ARGS", sb.cni_args())
            .env("CNI_PATH", &self.bin_dir);
        let input = serde_json::to_vec(conf).unwrap_or_default();
        tracing::debug!(plugin, command, pod = %sb.name, conf = %conf, "calling CNI plugin");
        let out = cmd::run_with_input(&mut c, Some(&input), PLUGIN_TIMEOUT)?;
        let parsed: Option<Value> = serde_json::from_str(out.stdout.trim()).ok();
        if !out.success() {
            let field = |k: &str| {
                parsed
                    .as_ref()
                    .and_then(|v| v.get(k))
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
            };
            return Err(CniError::Plugin {
                plugin: plugin.to_string(),
                command: command.to_string(),
                code: out.code(),
                msg: field("msg").unwrap_or_else(|| out.stdout.trim().to_string()),
                details: field("details").unwrap_or_default(),
                stderr: out.stderr,
            });
        }
        if command == "ADD" && parsed.is_none() {
            return Err(CniError::Result {
                plugin: plugin.to_string(),
                reason: format!("stdout is not JSON: {:?}", out.stdout),
            });
        }
        Ok(parsed)
    }
}

fn plugin_type(plugin: &Value) -> Result<String, CniError> {
    plugin["type"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| CniError::Result {
            plugin: "?".into(),
            reason: format!("plugin entry without a type: {plugin}"),
        })
}

/// Plugin types of a conflist, in order.
pub fn plugin_types(list: &Value) -> Vec<String> {
    list["plugins"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["type"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The network configuration one plugin of a list gets on stdin: its own entry plus the list's
/// `name` and `cniVersion`, and `prevResult` when there is one.
pub fn plugin_netconf(list: &Value, plugin: &Value, prev: Option<&Value>) -> Value {
    let mut conf = plugin.clone();
    if let Some(obj) = conf.as_object_mut() {
        obj.insert("name".into(), list["name"].clone());
        obj.insert("cniVersion".into(), list["cniVersion"].clone());
        match prev {
            Some(p) => {
                obj.insert("prevResult".into(), p.clone());
            }
            None => {
                obj.remove("prevResult");
            }
        }
    }
    conf
}

/// First IPv4 address of a CNI result (`ips[].address`, CIDR notation).
pub fn result_ipv4(result: &Value) -> Option<Ipv4Addr> {
    result["ips"].as_array()?.iter().find_map(|ip| {
        ip["address"]
            .as_str()?
            .split('/')
            .next()?
            .parse::<Ipv4Addr>()
            .ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netconf_injects_name_version_and_prev_result() {
        let list = bridge_conflist("10.1.1.0/24", Ipv4Addr::new(10, 1, 1, 1), Path::new("/x"));
        let plugin = &list["plugins"][0];
        let first = plugin_netconf(&list, plugin, None);
        assert_eq!(first["name"], NETWORK_NAME);
        assert_eq!(first["cniVersion"], CNI_VERSION);
        assert_eq!(first["type"], "bridge");
        assert!(first.get("prevResult").is_none());
        assert_eq!(first["ipam"]["ranges"][0][0]["subnet"], "10.1.1.0/24");
        let prev = json!({"ips": [{"address": "10.1.1.5/24"}]});
        let chained = json!({"type": "mesh-cni", "agentSocket": "/run/x.sock"});
        let second = plugin_netconf(&list, &chained, Some(&prev));
        assert_eq!(second["prevResult"], prev);
        assert_eq!(second["agentSocket"], "/run/x.sock");
        assert_eq!(plugin_types(&list), vec!["bridge"]);
    }

    #[test]
    fn reads_the_pod_ip_from_a_result() {
        let r = json!({"cniVersion": "1.0.0", "ips": [
            {"interface": 2, "address": "fd00::5/64"},
            {"interface": 2, "address": "10.4.2.7/24", "gateway": "10.4.2.1"}
        ]});
        assert_eq!(result_ipv4(&r), Some(Ipv4Addr::new(10, 4, 2, 7)));
        assert_eq!(result_ipv4(&json!({})), None);
    }

    #[test]
    fn cni_args_carry_the_kubernetes_keys() {
        let sb = SandboxRef {
            container_id: "abc".into(),
            netns_path: "/var/run/netns/p".into(),
            namespace: "demo".into(),
            name: "client".into(),
            uid: "u-1".into(),
        };
        assert_eq!(
            sb.cni_args(),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=client;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1"
        );
    }

    #[test]
    fn picks_the_first_conf_file_and_wraps_single_confs() {
        let dir = std::env::temp_dir().join(format!("e2e-cni-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("20-b.conflist"),
            r#"{"cniVersion":"1.0.0","name":"b","plugins":[{"type":"b"}]}"#,
        )
        .unwrap();
        std::fs::write(
            dir.join("05-a.conf"),
            r#"{"cniVersion":"1.0.0","name":"a","type":"ptp"}"#,
        )
        .unwrap();
        std::fs::write(dir.join("00-ignored.txt"), "not a conf").unwrap();
        let node = NodeCni {
            node_netns: "x".into(),
            conf_dir: dir.clone(),
            bin_dir: dir.clone(),
        };
        let (file, list) = node.current_conflist().unwrap();
        assert!(file.ends_with("05-a.conf"));
        assert_eq!(list["name"], "a");
        assert_eq!(plugin_types(&list), vec!["ptp"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
