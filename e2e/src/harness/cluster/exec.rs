//! Running things inside a pod's netns: commands, background apps, the echo client and server,
//! and inspecting the netns (listening ports, packet-filter rules).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::super::cmd::{self, Output};
use super::super::error::HarnessError;
use super::super::netns;
use super::super::poll;
use super::super::prereq;
use super::super::process::{Proc, tail_file};
use super::{App, Cluster, Pod};
use crate::echo::client::RepeatSummary;
use crate::echo::server::{EchoStats, STATS_PATH};

impl Cluster {
    /// PATH for commands in pods: the echo app's and the mesh binaries' directories first.
    fn pod_path(&self) -> String {
        let mut dirs: Vec<PathBuf> = Vec::new();
        if let Some(d) = self.echo_bin.parent() {
            dirs.push(d.to_path_buf());
        }
        dirs.push(self.bin_dir.clone());
        if let Some(p) = std::env::var_os("PATH") {
            dirs.extend(std::env::split_paths(&p));
        }
        std::env::join_paths(dirs)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Resolves `mesh-echo` to the configured echo binary; other programs go through PATH.
    fn program(&self, name: &str) -> PathBuf {
        if name == "mesh-echo" {
            self.echo_bin.clone()
        } else {
            PathBuf::from(name)
        }
    }

    /// Runs a command inside the pod's netns and returns its output whatever its exit status
    /// (deadline 60 s).
    pub fn exec(&self, pod: &Pod, args: &[&str]) -> Result<Output, HarnessError> {
        self.exec_timeout(pod, args, Duration::from_secs(60))
    }

    pub fn exec_timeout(
        &self,
        pod: &Pod,
        args: &[&str],
        timeout: Duration,
    ) -> Result<Output, HarnessError> {
        let (first, rest) = args
            .split_first()
            .ok_or_else(|| HarnessError::Invalid("exec needs a command".into()))?;
        let mut c = cmd::in_netns(&pod.netns, self.program(first), rest);
        c.env("PATH", self.pod_path())
            .env("POD_NAME", &pod.name)
            .env("POD_NAMESPACE", &pod.namespace);
        Ok(cmd::run(&mut c, timeout)?)
    }

    /// Starts a background process in the pod (stopped with the pod or the cluster); its output
    /// goes to a log file in the work dir.
    pub fn spawn(&self, pod: &Pod, name: &str, args: &[&str]) -> Result<App, HarnessError> {
        let (first, rest) = args
            .split_first()
            .ok_or_else(|| HarnessError::Invalid("spawn needs a command".into()))?;
        let id = {
            let mut st = self.state();
            st.next_app += 1;
            st.next_app
        };
        let log = self
            .work
            .join("apps")
            .join(format!("{}-{}-{name}-{id}.log", pod.namespace, pod.name));
        let program = self.program(first);
        let program = if program.is_absolute() {
            program
        } else {
            prereq::in_path(first).unwrap_or(program)
        };
        let env = vec![
            ("POD_NAME".to_string(), pod.name.clone()),
            ("POD_NAMESPACE".to_string(), pod.namespace.clone()),
            ("PATH".to_string(), self.pod_path()),
        ];
        let rest: Vec<String> = rest.iter().map(|s| s.to_string()).collect();
        let proc = Proc::spawn(
            &format!("{name} in {}", pod.key()),
            &pod.netns,
            &program,
            &rest,
            &env,
            &log,
        )?;
        let app = App {
            id,
            name: name.to_string(),
            pod: pod.key(),
            log,
        };
        self.state().apps.insert(id, (app.clone(), proc));
        Ok(app)
    }

    /// The exit status of a background process, once it has ended.
    pub fn app_exit_status(&self, app: &App) -> Option<std::process::ExitStatus> {
        self.state()
            .apps
            .get_mut(&app.id)
            .and_then(|(_, p)| p.exit_status())
    }

    /// Stops a background process.
    pub fn stop_app(&self, app: &App) {
        let proc = self.state().apps.remove(&app.id);
        drop(proc);
    }

    /// Runs `mesh-echo server` in the pod and waits until every port accepts connections.
    pub fn start_echo_server(
        &self,
        pod: &Pod,
        tcp: &[u16],
        http: &[u16],
    ) -> Result<App, HarnessError> {
        let mut args = vec!["mesh-echo".to_string(), "server".to_string()];
        for p in tcp {
            args.extend(["--tcp".to_string(), p.to_string()]);
        }
        for p in http {
            args.extend(["--http".to_string(), p.to_string()]);
        }
        args.extend(["--name".to_string(), pod.name.clone()]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let app = self.spawn(pod, "echo-server", &refs)?;
        for port in tcp.iter().chain(http) {
            self.wait_listening(pod, &app, *port)?;
        }
        Ok(app)
    }

    /// Waits until `127.0.0.1:port` inside the pod accepts a connection (fails at once if the
    /// app exits).
    pub fn wait_listening(&self, pod: &Pod, app: &App, port: u16) -> Result<(), HarnessError> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let res = poll::eventually(
            &format!("{} in {} to listen on {port}", app.name, pod.key()),
            Duration::from_secs(20),
            || {
                if let Some((_, p)) = self.state().apps.get_mut(&app.id)
                    && let Some(s) = p.exit_status()
                {
                    return Ok(Err(format!("it exited ({s})")));
                }
                netns::connect_tcp(&pod.netns, addr, Duration::from_secs(1))
                    .map(|_| Ok(()))
                    .map_err(|e| e.to_string())
            },
        );
        let fail = |reason: String| HarnessError::Component {
            component: format!("{} in pod {}", app.name, pod.key()),
            reason,
            log_tail: tail_file(&app.log, 20),
        };
        match res {
            Ok(Ok(())) => Ok(()),
            Ok(Err(exited)) => Err(fail(exited)),
            Err(e) => Err(fail(e.to_string())),
        }
    }

    /// `mesh-echo client tcp <to> --message <message>` in pod `from`: the echoed reply, or
    /// [`HarnessError::EchoFailed`] with the client's explanation.
    pub fn echo_tcp(
        &self,
        from: &Pod,
        to: SocketAddr,
        message: &str,
    ) -> Result<String, HarnessError> {
        let to_s = to.to_string();
        let out = self.exec_timeout(
            from,
            &[
                "mesh-echo",
                "client",
                "tcp",
                &to_s,
                "--message",
                message,
                "--timeout-ms",
                "5000",
            ],
            Duration::from_secs(30),
        )?;
        if out.success() {
            Ok(out
                .stdout
                .strip_suffix('\n')
                .unwrap_or(&out.stdout)
                .to_string())
        } else {
            Err(HarnessError::EchoFailed {
                from: from.key(),
                to: to_s,
                status: out.code(),
                stdout: out.stdout,
                stderr: out.stderr.trim().to_string(),
            })
        }
    }

    /// `mesh-echo client http <url>` in pod `from`: (status, body) for any HTTP answer, or
    /// [`HarnessError::EchoFailed`] when no answer came.
    pub fn http_get(&self, from: &Pod, url: &str) -> Result<(u16, String), HarnessError> {
        let out = self.exec_timeout(
            from,
            &["mesh-echo", "client", "http", url, "--timeout-ms", "5000"],
            Duration::from_secs(30),
        )?;
        let status = out
            .stdout
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("status: "))
            .and_then(|s| s.trim().parse::<u16>().ok());
        match status {
            Some(code) if out.success() || out.code() == Some(22) => {
                let body = out
                    .stdout
                    .split_once('\n')
                    .map(|x| x.1)
                    .unwrap_or("")
                    .to_string();
                Ok((code, body))
            }
            _ => Err(HarnessError::EchoFailed {
                from: from.key(),
                to: url.to_string(),
                status: out.code(),
                stdout: out.stdout,
                stderr: out.stderr.trim().to_string(),
            }),
        }
    }

    /// `mesh-echo client http <url> --repeat <count>` in pod `from`: `count` GETs one after the
    /// other, each on a new connection, summarised (statuses, answering pods, errors).
    pub fn http_repeat(
        &self,
        from: &Pod,
        url: &str,
        count: u32,
    ) -> Result<RepeatSummary, HarnessError> {
        let n = count.to_string();
        let out = self.exec_timeout(
            from,
            &[
                "mesh-echo",
                "client",
                "http",
                url,
                "--repeat",
                &n,
                "--timeout-ms",
                "5000",
            ],
            Duration::from_secs(30) + Duration::from_millis(100) * count,
        )?;
        let last = out.stdout.lines().rev().find(|l| !l.trim().is_empty());
        match last.map(serde_json::from_str::<RepeatSummary>) {
            Some(Ok(sum)) => Ok(sum),
            _ => Err(HarnessError::EchoFailed {
                from: from.key(),
                to: url.to_string(),
                status: out.code(),
                stdout: out.stdout,
                stderr: out.stderr.trim().to_string(),
            }),
        }
    }

    /// The counters of the echo server listening on HTTP `port` in `pod` (`GET
    /// /_echo/stats` from inside the pod): requests it answered, and how many of them it failed
    /// on purpose (`--fail-every`).
    pub fn echo_stats(&self, pod: &Pod, port: u16) -> Result<EchoStats, HarnessError> {
        let url = format!("http://127.0.0.1:{port}{STATS_PATH}");
        let resp = netns::http_get(&pod.netns, &url, Duration::from_secs(5))?;
        let what = format!("echo server stats of pod {}", pod.key());
        if !resp.is_success() {
            return Err(HarnessError::BadStatus {
                what,
                status: resp.status,
                body: resp.text(),
            });
        }
        serde_json::from_slice(&resp.body).map_err(|e| HarnessError::Json {
            what,
            reason: e.to_string(),
        })
    }

    /// Runs `mesh-echo server` in the pod with `--fail-every <fail_every>` (one HTTP request in
    /// every N answered 503), and waits until every port accepts connections.
    pub fn start_flaky_echo_server(
        &self,
        pod: &Pod,
        http: &[u16],
        fail_every: u32,
    ) -> Result<App, HarnessError> {
        let mut args = vec!["mesh-echo".to_string(), "server".to_string()];
        for p in http {
            args.extend(["--http".to_string(), p.to_string()]);
        }
        args.extend([
            "--name".to_string(),
            pod.name.clone(),
            "--fail-every".to_string(),
            fail_every.to_string(),
        ]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let app = self.spawn(pod, "flaky-echo-server", &refs)?;
        for port in http {
            self.wait_listening(pod, &app, *port)?;
        }
        Ok(app)
    }

    /// TCP ports listened on inside the pod's netns (`ss -ltn`).
    pub fn listening_ports(&self, pod: &Pod) -> Result<Vec<u16>, HarnessError> {
        let out = cmd::run_ok(&mut cmd::in_netns(
            &pod.netns,
            "ss",
            &["-H", "-l", "-t", "-n"],
        ))?;
        let mut ports: Vec<u16> = out
            .stdout
            .lines()
            .filter_map(|l| l.split_whitespace().nth(3))
            .filter_map(|local| local.rsplit(':').next()?.parse().ok())
            .collect();
        ports.sort_unstable();
        ports.dedup();
        Ok(ports)
    }

    /// The packet-filtering rules inside the pod's netns: rules and user-defined chains from
    /// iptables-save, ip6tables-save, iptables-legacy-save and `nft list ruleset` (whichever
    /// exist). Tables and empty built-in chains are structure, not rules, and are left out, as
    /// are counters, so two snapshots compare.
    pub fn netns_rules(&self, pod: &Pod) -> Result<Vec<String>, HarnessError> {
        let mut lines = Vec::new();
        let tools: [(&str, &[&str]); 4] = [
            ("iptables-save", &[]),
            ("ip6tables-save", &[]),
            ("iptables-legacy-save", &[]),
            ("nft", &["list", "ruleset"]),
        ];
        for (tool, args) in tools {
            if prereq::in_path(tool).is_none() {
                continue;
            }
            let out = cmd::run_ok(&mut cmd::in_netns(&pod.netns, tool, args))?;
            let keep: fn(&str) -> bool = if tool == "nft" {
                is_nft_rule
            } else {
                is_iptables_rule
            };
            lines.extend(
                out.stdout
                    .lines()
                    .map(str::trim)
                    .filter(|l| keep(l))
                    .map(|l| format!("{tool}: {}", without_counters(l))),
            );
        }
        Ok(lines)
    }
}

/// Drops `packets N` / `bytes N` (nft counters) so snapshots compare.
fn without_counters(line: &str) -> String {
    let mut out = Vec::new();
    let mut words = line.split_whitespace();
    while let Some(w) = words.next() {
        if w == "packets" || w == "bytes" {
            words.next();
        } else {
            out.push(w);
        }
    }
    out.join(" ")
}

const BUILTIN_CHAINS: &[&str] = &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];

/// `-A ...` rules and user-defined chain declarations of an iptables-save output.
fn is_iptables_rule(line: &str) -> bool {
    if line.starts_with("-A ") || line.starts_with("-I ") {
        return true;
    }
    match line.strip_prefix(':') {
        Some(decl) => {
            let name = decl.split_whitespace().next().unwrap_or_default();
            !BUILTIN_CHAINS.contains(&name)
        }
        None => false,
    }
}

/// Lines of `nft list ruleset` other than tables, built-in chain headers, hooks and braces.
fn is_nft_rule(line: &str) -> bool {
    if line.is_empty() || line == "}" || line.starts_with('#') || line.starts_with("table ") {
        return false;
    }
    if line.starts_with("type ") && line.contains(" hook ") {
        return false;
    }
    if let Some(rest) = line.strip_prefix("chain ") {
        let name = rest.trim_end_matches('{').trim();
        return !BUILTIN_CHAINS.contains(&name);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_rules_and_custom_chains_count() {
        let save = "# Generated\n*nat\n:PREROUTING ACCEPT [3:180]\n:OUTPUT ACCEPT [0:0]\n:ISTIO_OUTPUT - [0:0]\n-A OUTPUT -j ISTIO_OUTPUT\nCOMMIT\n";
        let kept: Vec<&str> = save.lines().filter(|l| is_iptables_rule(l)).collect();
        assert_eq!(
            kept,
            vec![":ISTIO_OUTPUT - [0:0]", "-A OUTPUT -j ISTIO_OUTPUT"]
        );
        let empty = "*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n";
        assert!(empty.lines().all(|l| !is_iptables_rule(l)));
        let nft = "table ip nat {\n\tchain PREROUTING {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n\t}\n\tchain ISTIO_PRERT {\n\t\tmeta mark 0x539 counter packets 0 bytes 0 accept\n\t}\n}\n";
        let kept: Vec<&str> = nft
            .lines()
            .map(str::trim)
            .filter(|l| is_nft_rule(l))
            .collect();
        assert_eq!(
            kept,
            vec![
                "chain ISTIO_PRERT {",
                "meta mark 0x539 counter packets 0 bytes 0 accept"
            ]
        );
    }
}
