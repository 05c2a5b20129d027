//! Removing a cluster: processes in its namespaces, the namespaces, its run and work
//! directories. Used when a cluster is dropped, when its creation fails half-way, and by
//! [`cleanup_stale`] for clusters whose owning process died without cleaning up.
//!
//! Ownership: each cluster writes `/run/ambient-mesh/<id>/owner` (pid and start time of the
//! process that created it) before creating anything else, so a cleanup in another process never
//! removes a live cluster.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::names::{ClusterId, cluster_of_netns};
use super::netns;

/// Per-cluster runtime directory root (unix sockets of the node agents and ztunnels).
pub const RUN_ROOT: &str = "/run/ambient-mesh";

/// Root of the clusters' work directories (configs, certificates, logs, captures).
pub fn work_root() -> PathBuf {
    std::env::temp_dir().join("ambient-mesh-e2e")
}

pub fn run_dir(id: &ClusterId) -> PathBuf {
    Path::new(RUN_ROOT).join(id.as_str())
}

pub fn work_dir(id: &ClusterId) -> PathBuf {
    work_root().join(id.as_str())
}

fn owner_file(id: &ClusterId) -> PathBuf {
    run_dir(id).join("owner")
}

/// Start time of a process (field 22 of /proc/<pid>/stat), to tell a reused pid apart.
fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19).map(str::to_string)
}

/// Marks the cluster as owned by this process.
pub fn write_owner(id: &ClusterId) -> std::io::Result<()> {
    let pid = std::process::id();
    std::fs::create_dir_all(run_dir(id))?;
    std::fs::write(
        owner_file(id),
        format!("{pid} {}\n", start_time(pid).unwrap_or_default()),
    )
}

/// Whether the process that created the cluster is still running.
pub fn owner_alive(id: &ClusterId) -> bool {
    let Ok(text) = std::fs::read_to_string(owner_file(id)) else {
        return false;
    };
    let mut parts = text.split_whitespace();
    let (Some(pid), Some(start)) = (
        parts.next().and_then(|p| p.parse::<u32>().ok()),
        parts.next(),
    ) else {
        return false;
    };
    start_time(pid).as_deref() == Some(start)
}

/// Removes everything of cluster `id`: kills the processes inside its namespaces, deletes the
/// namespaces (pods, then nodes, then the underlay), the run directory and (unless `keep_work`)
/// the work directory. Returns the problems met (empty when all went well).
pub fn remove_cluster(id: &ClusterId, keep_work: bool) -> Vec<String> {
    let mut problems = Vec::new();
    let prefix = id.netns_prefix();
    let mut mine: Vec<String> = netns::list()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    // Pods (`p`) before nodes (`n`) before the underlay (`u`).
    mine.sort_by_key(|n| match n.as_bytes().get(prefix.len()) {
        Some(b'p') => 0,
        Some(b'n') => 1,
        _ => 2,
    });
    for ns in &mine {
        for pid in netns::pids(ns) {
            if pid as u32 != std::process::id() {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
    for ns in &mine {
        if let Err(e) = netns::delete(ns) {
            problems.push(format!("deleting netns {ns}: {e}"));
        }
    }
    let run = run_dir(id);
    if run.exists()
        && let Err(e) = std::fs::remove_dir_all(&run)
    {
        problems.push(format!("removing {}: {e}", run.display()));
    }
    let work = work_dir(id);
    if !keep_work
        && work.exists()
        && let Err(e) = std::fs::remove_dir_all(&work)
    {
        problems.push(format!("removing {}: {e}", work.display()));
    }
    problems
}

/// Ids of every cluster that left something behind (netns, run dir or work dir).
pub fn known_clusters() -> BTreeSet<ClusterId> {
    let mut ids: BTreeSet<ClusterId> = netns::list()
        .iter()
        .filter_map(|n| cluster_of_netns(n))
        .collect();
    for dir in [PathBuf::from(RUN_ROOT), work_root()] {
        if let Ok(rd) = std::fs::read_dir(&dir) {
            ids.extend(
                rd.filter_map(|e| e.ok())
                    .filter_map(|e| ClusterId::parse(&e.file_name().to_string_lossy())),
            );
        }
    }
    ids
}

/// Removes the leftovers of clusters whose owning process is gone (crashed or killed test runs).
/// Live clusters of this or other processes are left alone. Returns the ids removed.
pub fn cleanup_stale() -> Vec<ClusterId> {
    let mut removed = Vec::new();
    for id in known_clusters() {
        if owner_alive(&id) {
            continue;
        }
        let problems = remove_cluster(&id, false);
        for p in &problems {
            tracing::warn!(cluster = %id, "stale cleanup: {p}");
        }
        removed.push(id);
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_start_time() {
        assert!(start_time(std::process::id()).is_some());
        assert!(start_time(u32::MAX).is_none());
    }
}
