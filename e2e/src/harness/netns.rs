//! Named network namespaces (`/var/run/netns/<name>`, as `ip netns` manages them), and reaching
//! into one from this process: a short-lived thread enters the namespace and creates the socket
//! there; the socket stays in that namespace whichever thread uses it afterwards.

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sched::{CloneFlags, setns};

use super::cmd::{self, CmdError};
use crate::http1::{self, HttpError, Response, Url};

/// Where `ip netns` keeps its namespace mounts.
pub const NETNS_DIR: &str = "/var/run/netns";

/// Errors of namespace handling.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error(transparent)]
    Cmd(#[from] CmdError),
    #[error("network namespace {name} does not exist ({path})")]
    Missing { name: String, path: String },
    #[error("cannot enter network namespace {name}: {reason}")]
    Enter { name: String, reason: String },
    #[error("in netns {name}: connecting to {addr} failed: {source}")]
    Connect {
        name: String,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("in netns {name}: GET {url}: {source}")]
    Http {
        name: String,
        url: String,
        #[source]
        source: HttpError,
    },
}

pub fn path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

pub fn exists(name: &str) -> bool {
    path(name).exists()
}

/// Names of every named network namespace on the machine.
pub fn list() -> Vec<String> {
    std::fs::read_dir(NETNS_DIR)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Creates the namespace and brings its loopback up.
pub fn create(name: &str) -> Result<(), NetnsError> {
    cmd::ip(&["netns", "add", name])?;
    cmd::ip(&["-n", name, "link", "set", "lo", "up"])?;
    Ok(())
}

/// Deletes the namespace if it exists.
pub fn delete(name: &str) -> Result<(), NetnsError> {
    if exists(name) {
        cmd::ip(&["netns", "delete", name])?;
    }
    Ok(())
}

/// Inode of the namespace: the same namespace keeps the same inode, a recreated one gets another.
pub fn inode(name: &str) -> Result<u64, NetnsError> {
    let p = path(name);
    std::fs::metadata(&p)
        .map(|m| m.ino())
        .map_err(|_| NetnsError::Missing {
            name: name.to_string(),
            path: p.display().to_string(),
        })
}

/// Pids of processes whose network namespace is this one.
pub fn pids(name: &str) -> Vec<i32> {
    cmd::run(
        Command::new("ip").args(["netns", "pids", name]),
        cmd::DEFAULT_TIMEOUT,
    )
    .map(|o| {
        o.stdout
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    })
    .unwrap_or_default()
}

/// Sets an IPv4 sysctl (`net.ipv4.ip_forward` style key) inside the namespace.
pub fn sysctl(name: &str, key: &str, value: &str) -> Result<(), NetnsError> {
    let file = format!("/proc/sys/{}", key.replace('.', "/"));
    cmd::run_ok(&mut cmd::in_netns(
        name,
        "sh",
        &["-c", &format!("echo {value} > {file}")],
    ))?;
    Ok(())
}

/// Runs `f` on a new thread that has entered the namespace.
pub fn run_in<T, F>(name: &str, f: F) -> Result<T, NetnsError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let p = path(name);
    let file = File::open(&p).map_err(|_| NetnsError::Missing {
        name: name.to_string(),
        path: p.display().to_string(),
    })?;
    let enter_err = |reason: String| NetnsError::Enter {
        name: name.to_string(),
        reason,
    };
    std::thread::spawn(move || {
        // Only this thread changes namespace; it ends when `f` returns.
        setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| e.to_string())?;
        Ok(f())
    })
    .join()
    .map_err(|_| enter_err("the thread panicked".into()))?
    .map_err(enter_err)
}

/// Opens a TCP connection from inside the namespace.
pub fn connect_tcp(
    name: &str,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<TcpStream, NetnsError> {
    let stream = run_in(name, move || TcpStream::connect_timeout(&addr, timeout))?;
    let stream = stream.map_err(|source| NetnsError::Connect {
        name: name.to_string(),
        addr,
        source,
    })?;
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    Ok(stream)
}

/// `GET url` from inside the namespace.
pub fn http_get(name: &str, url: &str, timeout: Duration) -> Result<Response, NetnsError> {
    let http_err = |source| NetnsError::Http {
        name: name.to_string(),
        url: url.to_string(),
        source,
    };
    let parsed = Url::parse(url).map_err(http_err)?;
    let addr: SocketAddr = parsed.authority().parse().map_err(|_| {
        http_err(HttpError::InvalidUrl {
            url: url.to_string(),
            reason: "the host must be an IP address".into(),
        })
    })?;
    let stream = connect_tcp(name, addr, timeout)?;
    http1::get(stream, &parsed.authority(), &parsed.path, &[]).map_err(http_err)
}
