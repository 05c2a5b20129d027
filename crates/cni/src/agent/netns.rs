//! Pod network namespaces: opening them (checking what they are), running code inside them on a
//! dedicated thread, and finding the one that holds an address.

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("cannot open network namespace {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("{0} is not a network namespace")]
    NotNetns(PathBuf),
    #[error("network namespace {path} changed (inode {found}, recorded {expected})")]
    Changed {
        path: PathBuf,
        found: u64,
        expected: u64,
    },
    #[error("cannot enter network namespace {path}: {source}")]
    Enter { path: PathBuf, source: nix::Error },
    #[error("cannot list the addresses in {path}: {source}")]
    Addresses { path: PathBuf, source: nix::Error },
    #[error("cannot start a thread: {0}")]
    Thread(io::Error),
    #[error("the thread working in network namespace {0} panicked")]
    Panicked(PathBuf),
}

/// An open network namespace: the descriptor pins it, whatever happens to `path` afterwards.
#[derive(Debug)]
pub struct Netns {
    path: PathBuf,
    fd: OwnedFd,
    inode: u64,
}

impl Netns {
    /// Opens `path` (a `/var/run/netns/*` bind mount, `/proc/PID/ns/net`, ...).
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, NetnsError> {
        let path = path.into();
        let open_err = |source| NetnsError::Open {
            path: path.clone(),
            source,
        };
        let file = File::open(&path).map_err(open_err)?;
        let inode = file.metadata().map_err(open_err)?.ino();
        let fd = OwnedFd::from(file);
        // A namespace file lives on nsfs (whether opened through /proc or a bind mount); that
        // it is a *network* namespace is checked by the kernel when entering it.
        let fs = nix::sys::statfs::fstatfs(&fd).map_err(|e| open_err(e.into()))?;
        if fs.filesystem_type() != nix::sys::statfs::NSFS_MAGIC {
            return Err(NetnsError::NotNetns(path));
        }
        Ok(Self { path, fd, inode })
    }

    /// Opens `path` and checks it is still the namespace recorded as `inode` (when known).
    pub fn open_expecting(path: &Path, inode: Option<u64>) -> Result<Self, NetnsError> {
        let ns = Self::open(path)?;
        match inode {
            Some(expected) if expected != ns.inode => Err(NetnsError::Changed {
                path: path.to_path_buf(),
                found: ns.inode,
                expected,
            }),
            _ => Ok(ns),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The namespace's inode: its identity on this host.
    pub fn inode(&self) -> u64 {
        self.inode
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// A second descriptor for the same namespace (to hand to ztunnel).
    pub fn try_clone_fd(&self) -> io::Result<OwnedFd> {
        self.fd.try_clone()
    }

    /// Runs `f` on a new thread that has entered this namespace; processes spawned by `f` start
    /// in it too. The calling thread is untouched.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
        std::thread::scope(|scope| {
            let worker = std::thread::Builder::new()
                .name("netns".into())
                .spawn_scoped(scope, || {
                    nix::sched::setns(self.fd.as_fd(), CloneFlags::CLONE_NEWNET).map_err(
                        |source| NetnsError::Enter {
                            path: self.path.clone(),
                            source,
                        },
                    )?;
                    Ok(f())
                })
                .map_err(NetnsError::Thread)?;
            worker
                .join()
                .map_err(|_| NetnsError::Panicked(self.path.clone()))?
        })
    }

    /// The addresses configured on the namespace's interfaces.
    pub fn addresses(&self) -> Result<Vec<IpAddr>, NetnsError> {
        let found = self.run(|| {
            nix::ifaddrs::getifaddrs().map(|addrs| {
                addrs
                    .filter_map(|a| a.address)
                    .filter_map(|a| {
                        if let Some(v4) = a.as_sockaddr_in() {
                            Some(IpAddr::V4(v4.ip()))
                        } else {
                            a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
                        }
                    })
                    .collect::<Vec<_>>()
            })
        })?;
        found.map_err(|source| NetnsError::Addresses {
            path: self.path.clone(),
            source,
        })
    }
}

/// Candidate namespace paths: the entries of `netns_dir` (named namespaces, such as
/// containerd's `cni-<uuid>` files) first, then, when `proc_dir` is given, `<proc_dir>/PID/ns/net`
/// for every process it lists; one path per namespace, without this process's own.
///
/// `proc_dir` is the host's `/proc`: in a container it is usually mounted elsewhere (for example
/// `/host/proc`), and the agent's own namespace is still recognised, through the container's
/// `/proc/self`.
pub fn candidates(netns_dir: &Path, proc_dir: Option<&Path>) -> Vec<PathBuf> {
    let mut seen = BTreeSet::new();
    if let Ok(own) = std::fs::metadata("/proc/self/ns/net") {
        seen.insert(own.ino());
    }
    let mut paths: Vec<PathBuf> = Vec::new();
    if let Ok(entries) = std::fs::read_dir(netns_dir) {
        let mut named: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        named.sort();
        paths.extend(named);
    }
    if let Some(proc_dir) = proc_dir
        && let Ok(entries) = std::fs::read_dir(proc_dir)
    {
        let mut pids: Vec<u32> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        // Lowest first: a pod's sandbox (pause) process usually predates its containers.
        pids.sort_unstable();
        paths.extend(
            pids.into_iter()
                .map(|pid| proc_dir.join(pid.to_string()).join("ns/net")),
        );
    }
    paths
        .into_iter()
        .filter(|p| {
            std::fs::metadata(p)
                .map(|m| seen.insert(m.ino()))
                .unwrap_or(false)
        })
        .collect()
}

/// The namespace holding one of `ips`, searched among [`candidates`].
pub fn find_by_ip(ips: &[IpAddr], netns_dir: &Path, proc_dir: Option<&Path>) -> Option<Netns> {
    if ips.is_empty() {
        return None;
    }
    candidates(netns_dir, proc_dir)
        .into_iter()
        .find_map(|path| {
            let ns = Netns::open(&path).ok()?;
            let addrs = ns.addresses().ok()?;
            addrs.iter().any(|a| ips.contains(a)).then_some(ns)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_own_namespace_and_rejects_other_files() {
        let ns = Netns::open("/proc/self/ns/net").expect("open own netns");
        let want = std::fs::metadata("/proc/self/ns/net").expect("stat").ino();
        assert_eq!(ns.inode(), want);
        assert!(matches!(
            Netns::open("/proc/self/status"),
            Err(NetnsError::NotNetns(_))
        ));
        assert!(matches!(
            Netns::open_expecting(Path::new("/proc/self/ns/net"), Some(want + 1)),
            Err(NetnsError::Changed { .. })
        ));
    }

    #[test]
    fn candidates_come_from_the_given_proc_dir_without_our_own() {
        // A fake proc dir holding "processes" whose ns/net files are not namespaces, and one
        // symlink to our own namespace: none of them is a candidate, and nothing is read from
        // the real /proc.
        let dir = tempfile::tempdir().expect("tempdir");
        let own = dir.path().join("7/ns");
        std::fs::create_dir_all(&own).expect("mkdir");
        std::os::unix::fs::symlink("/proc/self/ns/net", own.join("net")).expect("symlink");
        let other = dir.path().join("12/ns");
        std::fs::create_dir_all(&other).expect("mkdir");
        std::fs::write(other.join("net"), b"").expect("write");
        std::fs::create_dir_all(dir.path().join("self")).expect("mkdir");
        let netns_dir = tempfile::tempdir().expect("tempdir");
        let found = candidates(netns_dir.path(), Some(dir.path()));
        assert_eq!(found, vec![dir.path().join("12/ns/net")]);
        assert!(candidates(netns_dir.path(), None).is_empty());
    }
}
