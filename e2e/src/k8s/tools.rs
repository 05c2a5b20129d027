//! The command-line tools a user runs (helm, meshctl, kubectl, a node's shell), run as they
//! would be, with the suite's kubeconfig.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use super::{K8sError, Settings};

/// How a command ended and what it printed.
#[derive(Debug, Clone)]
pub struct CommandOutput {
    pub command: String,
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CommandOutput {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// stdout then stderr, for messages.
    pub fn combined(&self) -> String {
        let mut s = self.stdout.trim_end().to_string();
        let e = self.stderr.trim_end();
        if !e.is_empty() {
            if !s.is_empty() {
                s.push('\n');
            }
            s.push_str(e);
        }
        s
    }

    /// Ok with the output when the command succeeded, else an error with all of it.
    pub fn checked(self) -> Result<Self, K8sError> {
        if self.success() {
            Ok(self)
        } else {
            Err(K8sError::Command {
                command: self.command.clone(),
                status: self.status.to_string(),
                output: self.combined(),
            })
        }
    }
}

/// Runs `program args...` with `KUBECONFIG` set, for at most `timeout` (then killed).
pub async fn run(
    settings: &Settings,
    program: &Path,
    args: &[&str],
    timeout: Duration,
) -> Result<CommandOutput, K8sError> {
    run_with_env(
        program,
        args,
        &[("KUBECONFIG", settings.kubeconfig.as_os_str())],
        timeout,
    )
    .await
}

/// Runs `program args...` with extra environment, for at most `timeout` (then killed).
pub async fn run_with_env(
    program: &Path,
    args: &[&str],
    env: &[(&str, &std::ffi::OsStr)],
    timeout: Duration,
) -> Result<CommandOutput, K8sError> {
    let command = format!("{} {}", program.display(), args.join(" "));
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().map_err(|source| K8sError::Spawn {
        command: command.clone(),
        source,
    })?;
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| K8sError::Command {
            command: command.clone(),
            status: format!("killed after {timeout:?}"),
            output: String::new(),
        })?
        .map_err(|source| K8sError::Spawn {
            command: command.clone(),
            source,
        })?;
    Ok(CommandOutput {
        command,
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}
