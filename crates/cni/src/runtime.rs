//! Runs a CNI network configuration list the way a container runtime does (libcni): each plugin
//! of the list is executed in order with the `CNI_*` environment, its own configuration (the
//! list's `name` and `cniVersion` added, and the previous plugin's result as `prevResult`) on
//! stdin. DEL runs the plugins in reverse order. Used by the tests and the local harnesses,
//! where there is no kubelet.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Map, Value};

/// Where and for whom the plugins run.
#[derive(Clone, Debug)]
pub struct RuntimeConf {
    pub container_id: String,
    pub netns: PathBuf,
    pub ifname: String,
    /// `CNI_ARGS` pairs, e.g. `K8S_POD_NAMESPACE`.
    pub args: Vec<(String, String)>,
    /// Directories searched for plugin binaries (`CNI_PATH`).
    pub cni_path: Vec<PathBuf>,
}

impl RuntimeConf {
    /// Kubernetes pod arguments, as the kubelet passes them.
    pub fn for_pod(
        container_id: &str,
        netns: impl Into<PathBuf>,
        namespace: &str,
        name: &str,
    ) -> Self {
        Self {
            container_id: container_id.to_string(),
            netns: netns.into(),
            ifname: "eth0".to_string(),
            args: vec![
                ("IgnoreUnknown".into(), "1".into()),
                ("K8S_POD_NAMESPACE".into(), namespace.into()),
                ("K8S_POD_NAME".into(), name.into()),
                ("K8S_POD_INFRA_CONTAINER_ID".into(), container_id.into()),
            ],
            cni_path: vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")],
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("invalid network configuration list: {0}")]
    InvalidList(String),
    #[error("plugin {0:?} not found in CNI_PATH")]
    NotFound(String),
    #[error("cannot run plugin {plugin}: {source}")]
    Spawn {
        plugin: String,
        #[source]
        source: std::io::Error,
    },
    #[error("plugin {plugin} failed ({command}, exit {exit:?}): code {code}: {msg}: {details}")]
    Plugin {
        plugin: String,
        command: &'static str,
        exit: Option<i32>,
        code: u64,
        msg: String,
        details: String,
    },
    #[error("plugin {plugin} printed an invalid result: {error}: {stdout:?}")]
    BadOutput {
        plugin: String,
        error: String,
        stdout: String,
    },
}

/// ADD: runs every plugin in order and returns the last result.
pub fn add(list: &Value, rt: &RuntimeConf) -> Result<Value, ExecError> {
    let (name, version, plugins) = parts(list)?;
    let mut prev: Option<Value> = None;
    for plugin in plugins {
        let conf = plugin_conf(plugin, name, version, prev.as_ref())?;
        let out = exec(&conf, "ADD", rt)?;
        prev = Some(out.ok_or_else(|| ExecError::BadOutput {
            plugin: plugin_type(&conf).unwrap_or_default().to_string(),
            error: "ADD printed no result".into(),
            stdout: String::new(),
        })?);
    }
    prev.ok_or_else(|| ExecError::InvalidList("no plugins".into()))
}

/// CHECK: runs every plugin in order with the ADD result as `prevResult`.
pub fn check(list: &Value, rt: &RuntimeConf, result: &Value) -> Result<(), ExecError> {
    let (name, version, plugins) = parts(list)?;
    for plugin in plugins {
        exec(
            &plugin_conf(plugin, name, version, Some(result))?,
            "CHECK",
            rt,
        )?;
    }
    Ok(())
}

/// DEL: runs every plugin in reverse order, with the ADD result as `prevResult` when known.
pub fn del(list: &Value, rt: &RuntimeConf, result: Option<&Value>) -> Result<(), ExecError> {
    let (name, version, plugins) = parts(list)?;
    for plugin in plugins.iter().rev() {
        exec(&plugin_conf(plugin, name, version, result)?, "DEL", rt)?;
    }
    Ok(())
}

fn parts(list: &Value) -> Result<(&str, &str, &Vec<Value>), ExecError> {
    let field = |k: &str| {
        list.get(k)
            .and_then(Value::as_str)
            .ok_or_else(|| ExecError::InvalidList(format!("{k:?} missing")))
    };
    let plugins = list
        .get("plugins")
        .and_then(Value::as_array)
        .filter(|p| !p.is_empty())
        .ok_or_else(|| ExecError::InvalidList("\"plugins\" missing or empty".into()))?;
    Ok((field("name")?, field("cniVersion")?, plugins))
}

fn plugin_conf(
    plugin: &Value,
    name: &str,
    version: &str,
    prev: Option<&Value>,
) -> Result<Value, ExecError> {
    let mut conf: Map<String, Value> = plugin
        .as_object()
        .cloned()
        .ok_or_else(|| ExecError::InvalidList("a plugin entry is not an object".into()))?;
    conf.insert("name".into(), Value::from(name));
    conf.insert("cniVersion".into(), Value::from(version));
    if let Some(prev) = prev {
        conf.insert("prevResult".into(), prev.clone());
    }
    Ok(Value::Object(conf))
}

fn plugin_type(conf: &Value) -> Option<&str> {
    conf.get("type").and_then(Value::as_str)
}

fn find_plugin(name: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    if name.contains('/') {
        return None;
    }
    dirs.iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// Executes one plugin; `Ok(None)` when it printed nothing.
pub fn exec(
    conf: &Value,
    command: &'static str,
    rt: &RuntimeConf,
) -> Result<Option<Value>, ExecError> {
    let ty = plugin_type(conf)
        .ok_or_else(|| ExecError::InvalidList("a plugin entry has no \"type\"".into()))?;
    let bin = find_plugin(ty, &rt.cni_path).ok_or_else(|| ExecError::NotFound(ty.into()))?;
    let output = run(&bin, conf, command, rt).map_err(|source| ExecError::Spawn {
        plugin: ty.into(),
        source,
    })?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let parsed: Option<Value> = if stdout.trim().is_empty() {
        None
    } else {
        Some(
            serde_json::from_str(&stdout).map_err(|e| ExecError::BadOutput {
                plugin: ty.into(),
                error: e.to_string(),
                stdout: stdout.clone(),
            })?,
        )
    };
    if !output.status.success() {
        let v = parsed.unwrap_or(Value::Null);
        let text = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        return Err(ExecError::Plugin {
            plugin: ty.into(),
            command,
            exit: output.status.code(),
            code: v.get("code").and_then(Value::as_u64).unwrap_or(0),
            msg: text("msg"),
            details: text("details"),
        });
    }
    Ok(parsed)
}

fn run(
    bin: &Path,
    conf: &Value,
    command: &str,
    rt: &RuntimeConf,
) -> std::io::Result<std::process::Output> {
    let args: Vec<String> = rt.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let path = std::env::join_paths(&rt.cni_path).map_err(std::io::Error::other)?;
    let mut child = Command::new(bin)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &rt.container_id)
        .env("CNI_NETNS", &rt.netns)
        .env("CNI_IFNAME", &rt.ifname)
        .env("CNI_ARGS", args.join(";"))
        .env("CNI_PATH", path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(conf.to_string().as_bytes())?;
    }
    child.wait_with_output()
}
