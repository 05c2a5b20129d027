//! Installs the plugin on the node: copies the `mesh-cni` binary into the CNI binary directory
//! and chains it into the node's CNI configuration, and undoes both.
//!
//! The configuration the runtime uses is the first `*.conf`, `*.conflist` or `*.json` file of
//! the configuration directory in name order. A conflist gets a
//! `{"type": "mesh-cni", "agentSocket": ..., "excludeNamespaces": [...]}` entry appended (any
//! older `mesh-cni` entry is replaced, so installing again changes nothing). A single-plugin
//! `.conf`/`.json` file is turned into a `.conflist` of the same name holding it and our entry.
//! The original bytes are kept in `<state-dir>/install/` and put back by [`uninstall`] when the
//! configuration still matches them (otherwise only our entry is removed).

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tracing::{debug, info};

use super::state::write_atomic;

/// The plugin's `type` and binary name.
pub const PLUGIN_TYPE: &str = "mesh-cni";

#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstallConfig {
    pub bin_dir: PathBuf,
    pub conf_dir: PathBuf,
    /// The plugin binary to copy.
    pub plugin_binary: PathBuf,
    /// Written into the plugin entry.
    pub agent_socket: PathBuf,
    pub exclude_namespaces: Vec<String>,
    /// Backups of the configuration live in `<state_dir>/install`.
    pub state_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("CNI configuration {path} is not valid: {reason}")]
    BadConfig { path: PathBuf, reason: String },
}

/// What [`install`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InstallReport {
    pub binary_updated: bool,
    /// The configuration we are chained into (`None`: there is none yet).
    pub conflist: Option<PathBuf>,
    pub conflist_changed: bool,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> InstallError + '_ {
    move |source| InstallError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn bad(path: &Path, reason: impl Into<String>) -> InstallError {
    InstallError::BadConfig {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// The plugin entry for `cfg`.
pub fn plugin_entry(cfg: &InstallConfig) -> Value {
    json!({
        "type": PLUGIN_TYPE,
        "agentSocket": cfg.agent_socket,
        "excludeNamespaces": cfg.exclude_namespaces,
    })
}

fn is_ours(plugin: &Value) -> bool {
    plugin.get("type").and_then(Value::as_str) == Some(PLUGIN_TYPE)
}

/// `list` with `entry` as its last plugin and no other entry of ours; `None` when it already is.
pub fn chain(list: &Value, entry: &Value) -> Result<Option<Value>, String> {
    let plugins = list
        .get("plugins")
        .and_then(Value::as_array)
        .ok_or("no \"plugins\" list")?;
    let ours = plugins.iter().filter(|p| is_ours(p)).count();
    if ours == 1 && plugins.last() == Some(entry) {
        return Ok(None);
    }
    let mut out = list.clone();
    if let Some(p) = out.get_mut("plugins").and_then(Value::as_array_mut) {
        p.retain(|p| !is_ours(p));
        p.push(entry.clone());
    }
    Ok(Some(out))
}

/// `list` without entries of ours; `None` when it has none.
pub fn unchain(list: &Value) -> Option<Value> {
    let plugins = list.get("plugins").and_then(Value::as_array)?;
    if !plugins.iter().any(is_ours) {
        return None;
    }
    let mut out = list.clone();
    if let Some(p) = out.get_mut("plugins").and_then(Value::as_array_mut) {
        p.retain(|p| !is_ours(p));
    }
    Some(out)
}

/// The configuration file the runtime uses: the first by name among `*.conf`, `*.conflist`,
/// `*.json` (hidden files skipped).
pub fn primary_config(conf_dir: &Path) -> Result<Option<PathBuf>, InstallError> {
    let entries = match std::fs::read_dir(conf_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(conf_dir)(e)),
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default();
            !name.starts_with('.')
                && ["conf", "conflist", "json"]
                    .iter()
                    .any(|ext| p.extension().is_some_and(|e| e == *ext))
        })
        .collect();
    files.sort();
    Ok(files.into_iter().next())
}

fn backup_dir(cfg: &InstallConfig) -> PathBuf {
    cfg.state_dir.join("install")
}

fn backup_path(cfg: &InstallConfig, file: &Path) -> PathBuf {
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
    backup_dir(cfg).join(format!("{}.orig", name.unwrap_or_default()))
}

fn read_json(path: &Path) -> Result<(Vec<u8>, Value), InstallError> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let value = serde_json::from_slice(&bytes).map_err(|e| bad(path, e.to_string()))?;
    Ok((bytes, value))
}

fn write_json(path: &Path, value: &Value) -> Result<(), InstallError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| bad(path, e.to_string()))?;
    bytes.push(b'\n');
    write_atomic(path, &bytes).map_err(io_err(path))
}

fn save_backup(cfg: &InstallConfig, file: &Path, bytes: &[u8]) -> Result<(), InstallError> {
    let dir = backup_dir(cfg);
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let path = backup_path(cfg, file);
    write_atomic(&path, bytes).map_err(io_err(&path))
}

/// Copies the binary when it differs, then chains the plugin into the primary configuration.
/// Safe to call repeatedly (the agent does, to survive the primary plugin rewriting its file).
pub fn install(cfg: &InstallConfig) -> Result<InstallReport, InstallError> {
    let mut report = InstallReport {
        binary_updated: install_binary(cfg)?,
        ..InstallReport::default()
    };
    let Some(file) = primary_config(&cfg.conf_dir)? else {
        debug!(dir = %cfg.conf_dir.display(), "no CNI configuration yet");
        return Ok(report);
    };
    let (bytes, value) = read_json(&file)?;
    let entry = plugin_entry(cfg);
    if file.extension().is_some_and(|e| e == "conflist") {
        let chained = chain(&value, &entry).map_err(|r| bad(&file, r))?;
        if let Some(new) = chained {
            if unchain(&value).is_none() {
                save_backup(cfg, &file, &bytes)?;
            }
            write_json(&file, &new)?;
            report.conflist_changed = true;
            info!(file = %file.display(), "chained mesh-cni into the CNI configuration");
        }
        report.conflist = Some(file);
    } else {
        // A single plugin configuration: wrap it in a list of the same name.
        let version = value.get("cniVersion").cloned().unwrap_or(json!("0.3.1"));
        let name = value
            .get("name")
            .cloned()
            .unwrap_or(json!("k8s-pod-network"));
        let list = json!({"cniVersion": version, "name": name, "plugins": [value, entry]});
        let target = file.with_extension("conflist");
        save_backup(cfg, &file, &bytes)?;
        write_json(&target, &list)?;
        std::fs::remove_file(&file).map_err(io_err(&file))?;
        info!(from = %file.display(), to = %target.display(), "converted the CNI configuration to a chained list");
        report.conflist = Some(target);
        report.conflist_changed = true;
    }
    Ok(report)
}

fn install_binary(cfg: &InstallConfig) -> Result<bool, InstallError> {
    use std::os::unix::fs::PermissionsExt;
    let src = &cfg.plugin_binary;
    let dst = cfg.bin_dir.join(PLUGIN_TYPE);
    let new = std::fs::read(src).map_err(io_err(src))?;
    if std::fs::read(&dst).is_ok_and(|old| old == new) {
        return Ok(false);
    }
    std::fs::create_dir_all(&cfg.bin_dir).map_err(io_err(&cfg.bin_dir))?;
    let tmp = cfg.bin_dir.join(format!(".{PLUGIN_TYPE}.tmp"));
    std::fs::write(&tmp, &new).map_err(io_err(&tmp))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, &dst).map_err(io_err(&dst))?;
    info!(path = %dst.display(), "installed the plugin binary");
    Ok(true)
}

/// Removes our entry from every conflist of the configuration directory (restoring the saved
/// original when it still matches, and turning converted lists back into their `.conf`), then
/// the binary.
pub fn uninstall(cfg: &InstallConfig) -> Result<(), InstallError> {
    let entries = match std::fs::read_dir(&cfg.conf_dir) {
        Ok(e) => e.flatten().map(|e| e.path()).collect::<Vec<_>>(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io_err(&cfg.conf_dir)(e)),
    };
    for file in entries
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "conflist"))
    {
        let Ok((_, value)) = read_json(file) else {
            continue;
        };
        let Some(unchained) = unchain(&value) else {
            continue;
        };
        restore_one(cfg, file, &unchained)?;
    }
    let bin = cfg.bin_dir.join(PLUGIN_TYPE);
    match std::fs::remove_file(&bin) {
        Ok(()) => info!(path = %bin.display(), "removed the plugin binary"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&bin)(e)),
    }
    Ok(())
}

fn restore_one(cfg: &InstallConfig, file: &Path, unchained: &Value) -> Result<(), InstallError> {
    // Converted from a single-plugin file?
    for ext in ["conf", "json"] {
        let original = file.with_extension(ext);
        let backup = backup_path(cfg, &original);
        if let Ok(bytes) = std::fs::read(&backup) {
            let single = unchained
                .get("plugins")
                .and_then(Value::as_array)
                .filter(|p| p.len() == 1)
                .and_then(|p| p.first());
            let matches = serde_json::from_slice::<Value>(&bytes).ok().as_ref() == single;
            if matches {
                write_atomic(&original, &bytes).map_err(io_err(&original))?;
                std::fs::remove_file(file).map_err(io_err(file))?;
            } else {
                write_json(file, unchained)?;
            }
            let _ = std::fs::remove_file(&backup);
            info!(file = %file.display(), "removed mesh-cni from the CNI configuration");
            return Ok(());
        }
    }
    let backup = backup_path(cfg, file);
    match std::fs::read(&backup) {
        Ok(bytes) if serde_json::from_slice::<Value>(&bytes).ok().as_ref() == Some(unchained) => {
            write_atomic(file, &bytes).map_err(io_err(file))?;
        }
        _ => write_json(file, unchained)?,
    }
    let _ = std::fs::remove_file(&backup);
    info!(file = %file.display(), "removed mesh-cni from the CNI configuration");
    Ok(())
}

#[cfg(test)]
mod tests;
