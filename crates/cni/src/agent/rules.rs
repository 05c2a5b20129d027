//! The redirect rules inside a pod's network namespace, in chains of their own in the `nat`
//! table so they can be replaced and removed without touching anything else:
//!
//! ```text
//! PREROUTING -> MESH_PREROUTING            OUTPUT -> MESH_OUTPUT
//!   mark 0x539/0xfff        RETURN           mark 0x539/0xfff         RETURN   (ztunnel's own)
//!   in lo                   RETURN           out lo                   RETURN   (loopback)
//!   tcp dport 15008         RETURN           udp dport 53  REDIRECT 15053      (DNS)
//!   tcp           REDIRECT 15006             tcp dport 53  REDIRECT 15053
//!                                            tcp           REDIRECT 15001
//! ```
//!
//! Installing declares (hence flushes) both chains and refills them, and keeps exactly one jump
//! to each, so installing again (after an agent restart, say) leaves no duplicates. The same
//! rules go to `ip6tables` unless IPv6 is disabled.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;

use serde::Serialize;

use super::netns::{Netns, NetnsError};

/// Our chain hooked from `PREROUTING` (inbound).
pub const CHAIN_PREROUTING: &str = "MESH_PREROUTING";
/// Our chain hooked from `OUTPUT` (outbound).
pub const CHAIN_OUTPUT: &str = "MESH_OUTPUT";

/// Ports and marks of the redirection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RedirectConfig {
    pub outbound_port: u16,
    pub inbound_plaintext_port: u16,
    pub hbone_port: u16,
    pub dns_port: u16,
    /// Socket mark of ztunnel's own connections, exempt from redirection.
    pub mark: u32,
    pub mark_mask: u32,
    pub capture_dns: bool,
    pub ipv6: bool,
}

impl Default for RedirectConfig {
    fn default() -> Self {
        Self {
            outbound_port: 15001,
            inbound_plaintext_port: 15006,
            hbone_port: 15008,
            dns_port: 15053,
            mark: 0x539,
            mark_mask: 0xfff,
            capture_dns: true,
            ipv6: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("cannot run {cmd}: {source}")]
    Spawn {
        cmd: &'static str,
        source: std::io::Error,
    },
    #[error("{cmd} failed in {netns} ({status}): {stderr}")]
    Failed {
        cmd: &'static str,
        netns: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("rule worker failed: {0}")]
    Join(String),
}

/// An address family and its tools.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn save_cmd(self) -> &'static str {
        match self {
            Family::V4 => "iptables-save",
            Family::V6 => "ip6tables-save",
        }
    }

    fn restore_cmd(self) -> &'static str {
        match self {
            Family::V4 => "iptables-restore",
            Family::V6 => "ip6tables-restore",
        }
    }
}

fn families(cfg: &RedirectConfig) -> &'static [Family] {
    if cfg.ipv6 {
        &[Family::V4, Family::V6]
    } else {
        &[Family::V4]
    }
}

fn jump_line(hook: &str, chain: &str) -> String {
    format!("-A {hook} -j {chain}")
}

fn count_lines(save: &str, line: &str) -> usize {
    save.lines().filter(|l| l.trim_end() == line).count()
}

fn chain_declared(save: &str, chain: &str) -> bool {
    let decl = format!(":{chain} ");
    save.lines().any(|l| l.starts_with(&decl))
}

/// The `iptables-restore --noflush` input that (re)installs our rules, given the current
/// `iptables-save -t nat` output of the namespace.
pub fn render_install(cfg: &RedirectConfig, current: &str) -> String {
    let mark = format!("-m mark --mark {:#x}/{:#x}", cfg.mark, cfg.mark_mask);
    let mut out = vec!["*nat".to_string()];
    for chain in [CHAIN_PREROUTING, CHAIN_OUTPUT] {
        out.push(format!(":{chain} - [0:0]"));
        out.push(format!("-F {chain}"));
    }
    for (hook, chain) in [("PREROUTING", CHAIN_PREROUTING), ("OUTPUT", CHAIN_OUTPUT)] {
        match count_lines(current, &jump_line(hook, chain)) {
            0 => out.push(format!("-I {hook} 1 -j {chain}")),
            n => out.extend((1..n).map(|_| format!("-D {hook} -j {chain}"))),
        }
    }
    let pre = |rule: String| format!("-A {CHAIN_PREROUTING} {rule}");
    out.push(pre(format!("{mark} -j RETURN")));
    out.push(pre("-i lo -j RETURN".into()));
    out.push(pre(format!("-p tcp --dport {} -j RETURN", cfg.hbone_port)));
    out.push(pre(format!(
        "-p tcp -j REDIRECT --to-ports {}",
        cfg.inbound_plaintext_port
    )));
    let outp = |rule: String| format!("-A {CHAIN_OUTPUT} {rule}");
    out.push(outp(format!("{mark} -j RETURN")));
    out.push(outp("-o lo -j RETURN".into()));
    if cfg.capture_dns {
        for proto in ["udp", "tcp"] {
            out.push(outp(format!(
                "-p {proto} --dport 53 -j REDIRECT --to-ports {}",
                cfg.dns_port
            )));
        }
    }
    out.push(outp(format!(
        "-p tcp -j REDIRECT --to-ports {}",
        cfg.outbound_port
    )));
    out.push("COMMIT".into());
    out.join("\n") + "\n"
}

/// The input that removes every jump to our chains and the chains themselves, or `None` when
/// nothing of ours is there.
pub fn render_remove(current: &str) -> Option<String> {
    let mut out = vec!["*nat".to_string()];
    for (hook, chain) in [("PREROUTING", CHAIN_PREROUTING), ("OUTPUT", CHAIN_OUTPUT)] {
        let n = count_lines(current, &jump_line(hook, chain));
        out.extend((0..n).map(|_| format!("-D {hook} -j {chain}")));
    }
    for chain in [CHAIN_PREROUTING, CHAIN_OUTPUT] {
        if chain_declared(current, chain) {
            out.push(format!("-F {chain}"));
            out.push(format!("-X {chain}"));
        }
    }
    if out.len() == 1 {
        return None;
    }
    out.push("COMMIT".into());
    Some(out.join("\n") + "\n")
}

/// The lines of an `iptables-save` output that are ours (chain declarations, jumps, rules).
pub fn our_lines(save: &str) -> Vec<&str> {
    save.lines()
        .filter(|l| l.contains(CHAIN_PREROUTING) || l.contains(CHAIN_OUTPUT))
        .collect()
}

/// Whether our chains and both jumps are in place (IPv4).
pub fn installed(netns: &Netns) -> Result<bool, RulesError> {
    let save = save(netns, Family::V4)?;
    Ok([("PREROUTING", CHAIN_PREROUTING), ("OUTPUT", CHAIN_OUTPUT)]
        .iter()
        .all(|(hook, chain)| {
            count_lines(&save, &jump_line(hook, chain)) == 1
                && save.lines().any(|l| l.starts_with(&format!("-A {chain} ")))
        }))
}

/// Installs (or refreshes) the rules inside `netns`.
pub fn install(netns: &Netns, cfg: &RedirectConfig) -> Result<(), RulesError> {
    for &family in families(cfg) {
        let current = save(netns, family)?;
        restore(netns, family, &render_install(cfg, &current))?;
    }
    Ok(())
}

/// Removes the rules from `netns`; `Ok(false)` when there were none.
pub fn remove(netns: &Netns, cfg: &RedirectConfig) -> Result<bool, RulesError> {
    let mut removed = false;
    for &family in families(cfg) {
        let current = save(netns, family)?;
        if let Some(text) = render_remove(&current) {
            restore(netns, family, &text)?;
            removed = true;
        }
    }
    Ok(removed)
}

/// [`install`] on a blocking thread.
pub async fn install_async(netns: Arc<Netns>, cfg: RedirectConfig) -> Result<(), RulesError> {
    tokio::task::spawn_blocking(move || install(&netns, &cfg))
        .await
        .map_err(|e| RulesError::Join(e.to_string()))?
}

/// [`remove`] on a blocking thread.
pub async fn remove_async(netns: Arc<Netns>, cfg: RedirectConfig) -> Result<bool, RulesError> {
    tokio::task::spawn_blocking(move || remove(&netns, &cfg))
        .await
        .map_err(|e| RulesError::Join(e.to_string()))?
}

/// `iptables-save -t nat` inside `netns`.
pub fn save(netns: &Netns, family: Family) -> Result<String, RulesError> {
    let cmd = family.save_cmd();
    let output = netns.run(|| Command::new(cmd).args(["-t", "nat"]).output())?;
    let output = output.map_err(|source| RulesError::Spawn { cmd, source })?;
    if !output.status.success() {
        return Err(failed(cmd, netns, output.status, &output.stderr));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn restore(netns: &Netns, family: Family, input: &str) -> Result<(), RulesError> {
    let cmd = family.restore_cmd();
    let output = netns.run(|| -> std::io::Result<std::process::Output> {
        let mut child = Command::new(cmd)
            .arg("--noflush")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(input.as_bytes())?;
        }
        child.wait_with_output()
    })?;
    let output = output.map_err(|source| RulesError::Spawn { cmd, source })?;
    if !output.status.success() {
        return Err(failed(cmd, netns, output.status, &output.stderr));
    }
    Ok(())
}

fn failed(
    cmd: &'static str,
    netns: &Netns,
    status: std::process::ExitStatus,
    stderr: &[u8],
) -> RulesError {
    RulesError::Failed {
        cmd,
        netns: netns.path().display().to_string(),
        status,
        stderr: String::from_utf8_lossy(stderr).trim().to_string(),
    }
}

#[cfg(test)]
mod tests;
