//! Helpers shared by the integration tests: privileges and tools, throw-away network
//! namespaces and host links, a fake node agent, polling with a deadline.

#![allow(dead_code)]

pub mod agent_proc;
pub mod chain;
pub mod fake_agent;
pub mod fake_ztunnel;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Fails the test with a clear message unless it runs as root.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (network namespaces, iptables); run the tests as root"
    );
}

/// Fails the test with a clear message unless `tool` is installed.
pub fn require_tool(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
        || Path::new(tool).is_file();
    assert!(
        found,
        "this test needs `{tool}` (Debian package {package}); install it, e.g. with `make deps`"
    );
}

/// Directory of Debian's CNI plugins.
pub const DEBIAN_CNI_DIR: &str = "/usr/lib/cni";

pub fn require_cni_plugins() {
    for p in ["bridge", "host-local", "loopback"] {
        require_tool(
            &format!("{DEBIAN_CNI_DIR}/{p}"),
            "containernetworking-plugins",
        );
    }
}

/// A name no other test (or test run) uses at the same time; at most 15 characters when
/// `tag` has at most 4.
pub fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{tag}{}x{n}", std::process::id() % 100_000)
}

/// A small index unique within this process (for subnets).
pub fn next_index() -> u32 {
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Runs a command, failing the test when it cannot start or exits non-zero.
pub fn run(cmd: &str, args: &[&str]) -> Output {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A named network namespace (`ip netns add`), deleted when dropped, also when the test fails.
pub struct TestNetns {
    pub name: String,
    pub path: PathBuf,
}

impl TestNetns {
    pub fn new(tag: &str) -> Self {
        require_root();
        require_tool("ip", "iproute2");
        let name = format!("mcni-{}", unique(tag));
        run("ip", &["netns", "add", &name]);
        let path = PathBuf::from("/var/run/netns").join(&name);
        Self { name, path }
    }

    /// Runs `args` inside the namespace.
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut full = vec!["netns", "exec", &self.name];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// `iptables-save -t nat` (or `ip6tables-save` when `v6`) inside the namespace.
    pub fn nat_rules(&self, v6: bool) -> String {
        require_tool("iptables-save", "iptables");
        let tool = if v6 {
            "ip6tables-save"
        } else {
            "iptables-save"
        };
        String::from_utf8_lossy(&self.exec(&[tool, "-t", "nat"]).stdout).into_owned()
    }

    /// Adds an interface holding `addr` (CIDR): one end of a veth pair kept inside.
    pub fn add_address(&self, addr: &str) {
        self.exec(&[
            "ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1",
        ]);
        self.exec(&["ip", "addr", "add", addr, "dev", "d0"]);
        self.exec(&["ip", "link", "set", "d0", "up"]);
    }

    pub fn inode(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&self.path).expect("stat netns").ino()
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A host interface (the bridge a test's CNI configuration creates), deleted when dropped.
pub struct HostLink(pub String);

impl Drop for HostLink {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).output();
    }
}

/// Our lines (chains, jumps, rules) in an `iptables-save` output.
pub fn mesh_lines(save: &str) -> Vec<String> {
    save.lines()
        .filter(|l| l.contains("MESH_"))
        .map(str::to_string)
        .collect()
}

/// Polls `cond` until it holds, failing with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The plugin binary under test and Debian's plugins, as `CNI_PATH`.
pub fn cni_path() -> Vec<PathBuf> {
    let plugin = PathBuf::from(env!("CARGO_BIN_EXE_mesh-cni"));
    vec![
        plugin.parent().expect("bin dir").to_path_buf(),
        PathBuf::from(DEBIAN_CNI_DIR),
    ]
}
