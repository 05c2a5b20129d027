//! The `mesh-echo` binary as a container runs it: it stops at once on SIGTERM (a pod deletion)
//! instead of waiting out the grace period, and `listeners` reports the sockets bound in its
//! network namespace.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;

use e2e::harness::eventually;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const EXE: &str = env!("CARGO_BIN_EXE_mesh-echo");

/// Starts `mesh-echo server` on an ephemeral port, waits until it listens, sends `signal` and
/// returns how it exited.
fn stop_with(signal: Signal) -> std::process::ExitStatus {
    let mut child = Command::new(EXE)
        .args(["server", "--tcp", "0"])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mesh-echo");
    let mut stderr = std::io::BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    stderr
        .read_line(&mut line)
        .expect("read the first log line");
    assert!(line.contains("listening"), "first log line: {line:?}");
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    kill(pid, signal).expect("kill");
    let waited = eventually(
        &format!("mesh-echo to exit after {signal}"),
        Duration::from_secs(10),
        || match child.try_wait() {
            Ok(Some(s)) => Ok(s),
            Ok(None) => Err("still running".into()),
            Err(e) => Err(e.to_string()),
        },
    );
    match waited {
        Ok(s) => s,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{e}");
        }
    }
}

#[test]
fn server_exits_cleanly_on_sigterm() {
    let status = stop_with(Signal::SIGTERM);
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

#[test]
fn server_exits_cleanly_on_sigint() {
    let status = stop_with(Signal::SIGINT);
    assert!(status.success(), "exit status after SIGINT: {status}");
}

#[test]
fn listeners_prints_a_socket_bound_here() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let out = Command::new(EXE).arg("listeners").output().expect("run");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().any(|l| l == addr.to_string()),
        "{addr} not listed:\n{text}"
    );
}
