//! The real `cni-agent` binary in a scratch directory: configuration manifests, state, sockets.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cni::agent::state::{Status, read_status};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

pub const NODE: &str = "node-a";

/// The agent's directory layout.
pub struct AgentEnv {
    pub dir: tempfile::TempDir,
}

impl AgentEnv {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("config")).expect("mkdir config");
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn plugin_socket(&self) -> PathBuf {
        self.path().join("run/agent.sock")
    }

    pub fn zds_socket(&self) -> PathBuf {
        self.path().join("run/ztunnel.sock")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.path().join("state")
    }

    /// Writes (or replaces) one manifest file of the watched directory.
    pub fn write_manifest(&self, file: &str, yaml: &str) {
        let path = self.path().join("config").join(file);
        let tmp = self.path().join("config").join(format!(".{file}.tmp"));
        std::fs::write(&tmp, yaml).expect("write manifest");
        std::fs::rename(&tmp, &path).expect("rename manifest");
    }

    pub fn remove_manifest(&self, file: &str) {
        std::fs::remove_file(self.path().join("config").join(file)).expect("remove manifest");
    }

    pub fn status(&self) -> Option<Status> {
        read_status(&self.state_dir()).ok()
    }

    pub fn enrolled(&self, namespace: &str, name: &str) -> bool {
        self.status()
            .is_some_and(|s| s.is_enrolled(namespace, name))
    }
}

pub fn namespace_yaml(name: &str, ambient: bool) -> String {
    let labels = if ambient {
        "\n  labels:\n    istio.io/dataplane-mode: ambient"
    } else {
        ""
    };
    format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}{labels}\n")
}

pub fn pod_yaml(namespace: &str, name: &str, ip: Option<&str>, mode: Option<&str>) -> String {
    let labels = mode
        .map(|m| format!("\n  labels:\n    istio.io/dataplane-mode: {m}"))
        .unwrap_or_default();
    let status = ip
        .map(|ip| format!("status:\n  podIP: {ip}\n  podIPs:\n  - ip: {ip}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {namespace}{labels}\n\
         spec:\n  nodeName: {NODE}\n  serviceAccountName: {name}-sa\n  containers:\n  - name: app\n    image: app\n{status}"
    )
}

/// A running agent; stopped with SIGTERM when dropped. Its log is printed when a test fails.
pub struct AgentProc {
    child: Option<Child>,
    log: PathBuf,
}

impl AgentProc {
    /// Starts the agent on `env` with `extra` flags (`--skip-install` unless `install` is set).
    pub fn start(env: &AgentEnv, extra: &[&str]) -> Self {
        let log = env
            .path()
            .join(format!("agent-{}.log", super::next_index()));
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cni-agent"));
        cmd.arg("--node-name")
            .arg(NODE)
            .arg("--plugin-socket")
            .arg(env.plugin_socket())
            .arg("--zds-socket")
            .arg(env.zds_socket())
            .arg("--state-dir")
            .arg(env.state_dir())
            .arg("--config-dir")
            .arg(env.path().join("config"))
            .args([
                "--config-poll-ms",
                "100",
                "--resync-seconds",
                "1",
                "--no-proc-scan",
            ])
            .args(extra)
            .env("RUST_LOG", "info,cni=debug")
            .stdout(Stdio::null())
            .stderr(log_file);
        let child = cmd.spawn().expect("start cni-agent");
        let agent = Self {
            child: Some(child),
            log,
        };
        let sock = env.plugin_socket();
        super::wait_until("the agent's plugin socket", Duration::from_secs(20), || {
            sock.exists()
        });
        agent
    }

    /// SIGTERM, then waits for the exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid"));
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("---- cni-agent log ----\n{}", self.log());
        }
    }
}
