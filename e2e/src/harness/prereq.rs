//! What the harness needs from the machine (root, iproute2, iptables, the Debian CNI plugins,
//! tcpdump for captures) and where the mesh binaries are. Every check fails with a message that
//! says what is missing and how to get it.

use std::path::{Path, PathBuf};

/// Where Debian's `containernetworking-plugins` installs the standard plugins.
pub const DEBIAN_CNI_DIR: &str = "/usr/lib/cni";
/// Plugins the harness's conflist and runtime call.
pub const REQUIRED_CNI_PLUGINS: &[&str] = &["bridge", "host-local", "loopback"];
/// The mesh binaries a cluster with the mesh runs.
pub const MESH_BINARIES: &[&str] = &["istiod", "ztunnel", "cni-agent", "mesh-cni"];

/// A missing prerequisite.
#[derive(Debug, thiserror::Error)]
pub enum PrereqError {
    #[error(
        "the network-namespace harness needs root (running as uid {uid}); run the tests or the demo with sudo"
    )]
    NotRoot { uid: u32 },
    #[error(
        "`{tool}` not found in PATH; install the Debian package `{package}` (see scripts/deps-debian.txt, or `make deps`)"
    )]
    Tool { tool: String, package: String },
    #[error(
        "CNI plugin {path} missing; install the Debian package `containernetworking-plugins` (`make deps`)"
    )]
    CniPlugin { path: String },
    #[error(
        "mesh binary {path} missing; run `cargo build --workspace --bins` first (binaries are looked up in MESH_BIN_DIR, else $CARGO_TARGET_DIR/debug, else next to this executable)"
    )]
    Binary { path: String },
}

/// Fails unless the effective user is root.
pub fn require_root() -> Result<(), PrereqError> {
    let uid = nix::unistd::geteuid().as_raw();
    if uid == 0 {
        Ok(())
    } else {
        Err(PrereqError::NotRoot { uid })
    }
}

/// Whether `tool` is an executable in PATH.
pub fn in_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Fails unless `tool` is in PATH; `package` is the Debian package that provides it.
pub fn require_tool(tool: &str, package: &str) -> Result<PathBuf, PrereqError> {
    in_path(tool).ok_or_else(|| PrereqError::Tool {
        tool: tool.to_string(),
        package: package.to_string(),
    })
}

/// Root, iproute2, iptables, and the standard CNI plugins.
pub fn require_base() -> Result<(), PrereqError> {
    require_root()?;
    require_tool("ip", "iproute2")?;
    require_tool("ss", "iproute2")?;
    require_tool("iptables-save", "iptables")?;
    require_tool("iptables", "iptables")?;
    for p in REQUIRED_CNI_PLUGINS {
        let path = Path::new(DEBIAN_CNI_DIR).join(p);
        if !is_executable(&path) {
            return Err(PrereqError::CniPlugin {
                path: path.display().to_string(),
            });
        }
    }
    Ok(())
}

/// The directory holding the mesh binaries: `MESH_BIN_DIR`, else `$CARGO_TARGET_DIR/debug`,
/// else the directory of the running executable (or its parent when that is `deps/`, as for
/// test binaries).
pub fn default_bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("MESH_BIN_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(t).join("debug");
    }
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    if exe_dir.file_name().is_some_and(|n| n == "deps") {
        exe_dir.parent().map(Path::to_path_buf).unwrap_or(exe_dir)
    } else {
        exe_dir
    }
}

/// `dir/name`, which must be an executable file.
pub fn require_binary(dir: &Path, name: &str) -> Result<PathBuf, PrereqError> {
    let p = dir.join(name);
    if is_executable(&p) {
        Ok(p)
    } else {
        Err(PrereqError::Binary {
            path: p.display().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_things_are_named_with_the_fix() {
        let e = require_tool("no-such-tool-xyz", "some-pkg").unwrap_err();
        assert!(e.to_string().contains("some-pkg"), "{e}");
        let e = require_binary(Path::new("/nonexistent"), "istiod").unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("/nonexistent/istiod") && text.contains("cargo build --workspace --bins"),
            "{text}"
        );
        assert!(in_path("sh").is_some());
    }
}
