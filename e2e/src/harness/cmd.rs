//! Running external commands (`ip`, `iptables-save`, CNI plugins, apps in a netns) with a
//! deadline and captured output.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

/// Default deadline of short administrative commands.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors of command execution.
#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    #[error("cannot run `{cmd}`: {source}")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{cmd}` failed ({status}): {}", summary(stderr, stdout))]
    Failed {
        cmd: String,
        status: String,
        stdout: String,
        stderr: String,
    },
    #[error(
        "`{cmd}` did not finish within {timeout:?} (killed): {}",
        summary(stderr, stdout)
    )]
    Timeout {
        cmd: String,
        timeout: Duration,
        stdout: String,
        stderr: String,
    },
}

fn summary(stderr: &str, stdout: &str) -> String {
    let text = if stderr.trim().is_empty() {
        stdout.trim()
    } else {
        stderr.trim()
    };
    if text.is_empty() {
        "no output".to_string()
    } else {
        text.to_string()
    }
}

/// What a finished command printed.
#[derive(Debug, Clone)]
pub struct Output {
    pub cmd: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Exit code, if the process exited normally.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// `Err(CmdError::Failed)` unless the command succeeded.
    pub fn ok(self) -> Result<Self, CmdError> {
        if self.success() {
            Ok(self)
        } else {
            Err(CmdError::Failed {
                cmd: self.cmd,
                status: self.status.to_string(),
                stdout: self.stdout,
                stderr: self.stderr,
            })
        }
    }
}

/// Renders a command line for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` with `input` on stdin (empty stdin when `None`), waits at most `timeout`, and
/// returns its output whatever the exit status.
pub fn run_with_input(
    cmd: &mut Command,
    input: Option<&[u8]>,
    timeout: Duration,
) -> Result<Output, CmdError> {
    let text = describe(cmd);
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    // Its own process group, so a timeout kills whatever it started too.
    .process_group(0);
    let mut child = cmd.spawn().map_err(|source| CmdError::Spawn {
        cmd: text.clone(),
        source,
    })?;
    if let (Some(data), Some(mut stdin)) = (input, child.stdin.take()) {
        let data = data.to_vec();
        // A separate thread so a child that does not read its stdin cannot block us.
        std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
    }
    let out = reader(child.stdout.take());
    let err = reader(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => break None,
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(_) => break None,
        }
    };
    let status = match status {
        Some(s) => s,
        None => {
            kill_group(child.id());
            let _ = child.kill();
            let _ = child.wait();
            return Err(CmdError::Timeout {
                cmd: text,
                timeout,
                stdout: join(out),
                stderr: join(err),
            });
        }
    };
    Ok(Output {
        cmd: text,
        status,
        stdout: join(out),
        stderr: join(err),
    })
}

fn kill_group(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
    }
}

type Reader = Option<mpsc::Receiver<String>>;

/// How long to wait for the rest of the output once the command has exited (a background
/// grandchild may keep the pipe open forever).
const DRAIN: Duration = Duration::from_secs(3);

fn reader<R: Read + Send + 'static>(pipe: Option<R>) -> Reader {
    pipe.map(|mut p| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = p.read_to_end(&mut buf);
            let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
        });
        rx
    })
}

fn join(r: Reader) -> String {
    r.and_then(|rx| rx.recv_timeout(DRAIN).ok())
        .unwrap_or_default()
}

/// Runs `cmd` (no stdin) and returns its output whatever the exit status.
pub fn run(cmd: &mut Command, timeout: Duration) -> Result<Output, CmdError> {
    run_with_input(cmd, None, timeout)
}

/// Runs `cmd` and fails unless it exits 0.
pub fn run_ok(cmd: &mut Command) -> Result<Output, CmdError> {
    run(cmd, DEFAULT_TIMEOUT)?.ok()
}

/// `ip <args>`, which must succeed.
pub fn ip(args: &[&str]) -> Result<Output, CmdError> {
    run_ok(Command::new("ip").args(args))
}

/// `ip netns exec <netns> <program> <args>`: a command that runs inside a network namespace.
pub fn in_netns<S: AsRef<std::ffi::OsStr>>(netns: &str, program: S, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", netns]).arg(program).args(args);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_output_and_status() {
        let o = run(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            DEFAULT_TIMEOUT,
        )
        .unwrap();
        assert_eq!(o.stdout, "out\n");
        assert_eq!(o.stderr, "err\n");
        assert_eq!(o.code(), Some(3));
        let e = o.ok().unwrap_err().to_string();
        assert!(e.contains("err") && e.contains("sh -c"), "{e}");
    }

    #[test]
    fn feeds_stdin() {
        let o = run_with_input(&mut Command::new("cat"), Some(b"abc"), DEFAULT_TIMEOUT).unwrap();
        assert_eq!(o.stdout, "abc");
    }

    #[test]
    fn kills_at_the_deadline() {
        let e = run(
            Command::new("sh").args(["-c", "echo started; sleep 30"]),
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(
            matches!(&e, CmdError::Timeout { stdout, .. } if stdout.contains("started")),
            "{e}"
        );
    }
}
