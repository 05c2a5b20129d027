//! Long-running processes the harness starts inside a namespace (istiod, cni-agent, ztunnel,
//! tcpdump, apps), with stdout and stderr appended to a log file.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// Errors of process handling.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot open log file {path}: {source}")]
    Log {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start {name} (`{cmd}`): {source}")]
    Spawn {
        name: String,
        cmd: String,
        #[source]
        source: std::io::Error,
    },
}

/// A running process; stopped (SIGTERM, then SIGKILL) when dropped.
#[derive(Debug)]
pub struct Proc {
    name: String,
    netns: String,
    child: Child,
    log: PathBuf,
    exited: Option<ExitStatus>,
}

impl Proc {
    /// Starts `program args` with `ip netns exec <netns>`, in its own process group, with
    /// `env` added, output appended to `log`.
    pub fn spawn(
        name: &str,
        netns: &str,
        program: &Path,
        args: &[String],
        env: &[(String, String)],
        log: &Path,
    ) -> Result<Self, ProcessError> {
        let log_err = |source| ProcessError::Log {
            path: log.display().to_string(),
            source,
        };
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir).map_err(log_err)?;
        }
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(log_err)?;
        let err = out.try_clone().map_err(log_err)?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", netns])
            .arg(program)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let text = super::cmd::describe(&cmd);
        tracing::debug!(name, cmd = %text, log = %log.display(), "starting process");
        let child = cmd.spawn().map_err(|source| ProcessError::Spawn {
            name: name.to_string(),
            cmd: text,
            source,
        })?;
        Ok(Self {
            name: name.to_string(),
            netns: netns.to_string(),
            child,
            log: log.to_path_buf(),
            exited: None,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn netns(&self) -> &str {
        &self.netns
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The exit status if the process has ended.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    pub fn is_running(&mut self) -> bool {
        self.exit_status().is_none()
    }

    /// Sends a signal to the process (not its group).
    pub fn signal(&mut self, sig: Signal) {
        if self.is_running() {
            let _ = kill(self.pgid(), sig);
        }
    }

    fn pgid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(i32::MAX))
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL to the whole group. Returns the exit status.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Some(s) = self.exit_status() {
            return Some(s);
        }
        let _ = kill(self.pgid(), Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(s) = self.exit_status() {
                let _ = killpg(self.pgid(), Signal::SIGKILL);
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        tracing::warn!(name = %self.name, "did not stop after SIGTERM within {grace:?}; killing");
        let _ = killpg(self.pgid(), Signal::SIGKILL);
        self.exited = self.child.wait().ok();
        self.exited
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail_file(&self.log, lines)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// The last `lines` lines of a text file ("(no log)" when it is missing or empty).
pub fn tail_file(path: &Path, lines: usize) -> String {
    let text = match std::fs::read(path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(_) => return format!("(no log at {})", path.display()),
    };
    let all: Vec<&str> = text.lines().collect();
    if all.is_empty() {
        return "(empty log)".to_string();
    }
    let start = all.len().saturating_sub(lines);
    let mut out = String::new();
    if start > 0 {
        out.push_str(&format!("... ({start} earlier lines)\n"));
    }
    out.push_str(&all[start..].join("\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        let dir = std::env::temp_dir().join(format!("e2e-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("log");
        std::fs::write(&f, "a\nb\nc\nd\n").unwrap();
        assert_eq!(tail_file(&f, 2), "... (2 earlier lines)\nc\nd");
        assert_eq!(tail_file(&f, 10), "a\nb\nc\nd");
        assert!(tail_file(&dir.join("missing"), 3).contains("no log"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
