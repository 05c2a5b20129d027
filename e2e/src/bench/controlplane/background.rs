//! Processes the control-plane benchmark starts (istiod, a ztunnel), in the calling thread's
//! network namespace, output appended to a log file; stopped (SIGTERM, then SIGKILL) on drop.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use crate::bench::error::BenchError;
use crate::harness::process::tail_file;

#[derive(Debug)]
pub struct Background {
    pub name: String,
    pub log: PathBuf,
    child: Child,
}

impl Background {
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        log: &Path,
    ) -> Result<Self, BenchError> {
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
        };
        let out = open().map_err(BenchError::io(format!("opening {}", log.display())))?;
        let err = open().map_err(BenchError::io(format!("opening {}", log.display())))?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(BenchError::io(format!("starting {}", program.display())))?;
        Ok(Self {
            name: name.to_string(),
            log: log.to_path_buf(),
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Err` with the log tail if the process has exited.
    pub fn check_running(&mut self) -> Result<(), BenchError> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(BenchError::ControlPlane(format!(
                "{} exited ({status}):\n{}",
                self.name,
                tail_file(&self.log, 20)
            ))),
            Err(e) => Err(BenchError::io(format!("waiting for {}", self.name))(e)),
        }
    }

    fn pgid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(i32::MAX))
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        // Signals only while the child is unreaped, so its pid cannot belong to anyone else.
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let _ = kill(self.pgid(), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = killpg(self.pgid(), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}
