//! Pods: a network namespace attached by the node's CNI plugins, a Pod manifest for istiod, and
//! the commands and apps run inside it.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::super::cmd::{self, Output};
use super::super::cni::{Attachment, SandboxRef};
use super::super::error::HarnessError;
use super::super::manifests::{self, PodManifest};
use super::super::netns;
use super::super::poll;
use super::super::prereq;
use super::super::process::Proc;
use super::{Cluster, Node};

/// What to create.
#[derive(Debug, Clone, Default)]
pub struct PodSpec {
    pub name: String,
    pub namespace: String,
    /// Node name (`node1`, ...).
    pub node: String,
    pub service_account: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Container ports listed in the manifest.
    pub ports: Vec<u16>,
}

impl PodSpec {
    /// A pod on `node1` with service account `default`.
    pub fn new(name: &str, namespace: &str) -> Self {
        Self {
            name: name.into(),
            namespace: namespace.into(),
            node: "node1".into(),
            service_account: "default".into(),
            ..Default::default()
        }
    }

    pub fn on(mut self, node: &Node) -> Self {
        self.node = node.name.clone();
        self
    }

    pub fn node(mut self, name: &str) -> Self {
        self.node = name.into();
        self
    }

    pub fn service_account(mut self, sa: &str) -> Self {
        self.service_account = sa.into();
        self
    }

    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.labels.insert(k.into(), v.into());
        self
    }

    pub fn annotation(mut self, k: &str, v: &str) -> Self {
        self.annotations.insert(k.into(), v.into());
        self
    }

    pub fn port(mut self, p: u16) -> Self {
        self.ports.push(p);
        self
    }
}

/// A running pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    pub name: String,
    pub namespace: String,
    pub node: String,
    pub service_account: String,
    pub labels: BTreeMap<String, String>,
    pub ip: Ipv4Addr,
    /// Name of the pod's network namespace (`/var/run/netns/<netns>`).
    pub netns: String,
    pub uid: String,
    pub container_id: String,
}

impl Pod {
    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.ip, port))
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Inode of the pod's netns (unchanged as long as the pod keeps its sandbox).
    pub fn netns_inode(&self) -> Result<u64, HarnessError> {
        Ok(netns::inode(&self.netns)?)
    }
}

/// A background process in a pod.
#[derive(Debug, Clone)]
pub struct App {
    pub id: u32,
    pub name: String,
    /// `namespace/name` of the pod.
    pub pod: String,
    pub log: PathBuf,
}

#[derive(Debug)]
pub(super) struct PodRecord {
    pub pod: Pod,
    pub spec: PodSpec,
    pub sandbox: SandboxRef,
    pub attachment: Attachment,
    pub host_ip: Ipv4Addr,
}

fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

fn manifest_name(namespace: &str, name: &str) -> String {
    manifests::object_file("Pod", namespace, name)
}

impl Cluster {
    /// Creates a pod the way a kubelet would: the Pod object (pending) is written, the sandbox
    /// netns created, the node's CNI plugins called in order (ADD), then the Pod object updated
    /// with its IP and the Ready condition.
    pub fn add_pod(&self, spec: PodSpec) -> Result<Pod, HarnessError> {
        let node = self.node(&spec.node)?.clone();
        if spec.name.is_empty() || spec.namespace.is_empty() {
            return Err(HarnessError::Invalid(
                "a pod needs a name and a namespace".into(),
            ));
        }
        let index = {
            let mut st = self.state();
            if st
                .pods
                .contains_key(&(spec.namespace.clone(), spec.name.clone()))
            {
                return Err(HarnessError::Invalid(format!(
                    "pod {}/{} exists already",
                    spec.namespace, spec.name
                )));
            }
            st.next_pod += 1;
            st.next_pod
        };
        self.ensure_namespace(&spec.namespace)?;
        let netns_name = self.id.pod_netns(index);
        let sandbox = SandboxRef {
            container_id: random_hex(32),
            netns_path: netns::path(&netns_name),
            namespace: spec.namespace.clone(),
            name: spec.name.clone(),
            uid: format!(
                "{}-{}-{}-{}-{}",
                random_hex(4),
                random_hex(2),
                random_hex(2),
                random_hex(2),
                random_hex(6)
            ),
        };
        let mut manifest = PodManifest {
            name: spec.name.clone(),
            namespace: spec.namespace.clone(),
            uid: sandbox.uid.clone(),
            node: node.name.clone(),
            service_account: spec.service_account.clone(),
            labels: spec.labels.clone(),
            annotations: spec.annotations.clone(),
            ip: None,
            host_ip: node.ip,
            ports: spec.ports.clone(),
        };
        let file = manifest_name(&spec.namespace, &spec.name);
        self.config
            .write_object(&file, &manifests::pod(&manifest))?;
        // The sandbox: a bare netns; the loopback plugin brings `lo` up.
        if let Err(e) = cmd::ip(&["netns", "add", &netns_name]) {
            let _ = self.config.remove(&file);
            return Err(e.into());
        }
        tracing::info!(pod = %format!("{}/{}", spec.namespace, spec.name), node = %node.name, netns = %netns_name, "CNI ADD");
        let attachment = match node.cni.add(&sandbox) {
            Ok(a) => a,
            Err(e) => {
                let _ = netns::delete(&netns_name);
                let _ = self.config.remove(&file);
                return Err(if self.mesh {
                    HarnessError::Component {
                        component: format!(
                            "CNI ADD of pod {}/{} on {}",
                            spec.namespace, spec.name, node.name
                        ),
                        reason: e.to_string(),
                        log_tail: super::super::process::tail_file(&node.files.agent_log, 30),
                    }
                } else {
                    e.into()
                });
            }
        };
        manifest.ip = Some(attachment.ip);
        self.config
            .write_object(&file, &manifests::pod(&manifest))?;
        let pod = Pod {
            name: spec.name.clone(),
            namespace: spec.namespace.clone(),
            node: node.name.clone(),
            service_account: spec.service_account.clone(),
            labels: spec.labels.clone(),
            ip: attachment.ip,
            netns: netns_name,
            uid: sandbox.uid.clone(),
            container_id: sandbox.container_id.clone(),
        };
        tracing::info!(pod = %pod.key(), ip = %pod.ip, plugins = ?attachment.plugins, "pod ready");
        self.state().pods.insert(
            (pod.namespace.clone(), pod.name.clone()),
            PodRecord {
                pod: pod.clone(),
                spec,
                sandbox,
                attachment,
                host_ip: node.ip,
            },
        );
        Ok(pod)
    }

    /// The CNI plugin types called when `pod` was added (shows whether `mesh-cni` was chained).
    pub fn pod_plugins(&self, pod: &Pod) -> Vec<String> {
        self.state()
            .pods
            .get(&(pod.namespace.clone(), pod.name.clone()))
            .map(|r| r.attachment.plugins.clone())
            .unwrap_or_default()
    }

    /// Deletes a pod like a kubelet: its apps stopped, CNI DEL in reverse order, the netns
    /// removed, then the Pod object.
    pub fn delete_pod(&self, pod: &Pod) -> Result<(), HarnessError> {
        let record = self
            .state()
            .pods
            .remove(&(pod.namespace.clone(), pod.name.clone()))
            .ok_or_else(|| HarnessError::Unknown {
                kind: "pod",
                name: pod.key(),
            })?;
        let apps: Vec<Proc> = {
            let mut st = self.state();
            let ids: Vec<u32> = st
                .apps
                .iter()
                .filter(|(_, (a, _))| a.pod == pod.key())
                .map(|(id, _)| *id)
                .collect();
            ids.iter()
                .filter_map(|id| st.apps.remove(id).map(|(_, p)| p))
                .collect()
        };
        drop(apps);
        let node = self.node(&record.pod.node)?;
        tracing::info!(pod = %pod.key(), "CNI DEL");
        let del = node.cni.del(&record.sandbox, &record.attachment);
        netns::delete(&record.pod.netns)?;
        self.config
            .remove(&manifest_name(&pod.namespace, &pod.name))?;
        del?;
        Ok(())
    }

    /// Rewrites a pod's manifest with a label set (`Some`) or removed (`None`), e.g. the
    /// pod-level `istio.io/dataplane-mode`.
    pub fn label_pod(&self, pod: &Pod, key: &str, value: Option<&str>) -> Result<(), HarnessError> {
        let mut st = self.state();
        let rec = st
            .pods
            .get_mut(&(pod.namespace.clone(), pod.name.clone()))
            .ok_or_else(|| HarnessError::Unknown {
                kind: "pod",
                name: pod.key(),
            })?;
        match value {
            Some(v) => rec.spec.labels.insert(key.into(), v.into()),
            None => rec.spec.labels.remove(key),
        };
        rec.pod.labels = rec.spec.labels.clone();
        let manifest = PodManifest {
            name: rec.spec.name.clone(),
            namespace: rec.spec.namespace.clone(),
            uid: rec.sandbox.uid.clone(),
            node: rec.pod.node.clone(),
            service_account: rec.spec.service_account.clone(),
            labels: rec.spec.labels.clone(),
            annotations: rec.spec.annotations.clone(),
            ip: Some(rec.pod.ip),
            host_ip: rec.host_ip,
            ports: rec.spec.ports.clone(),
        };
        self.config.write_object(
            &manifest_name(&pod.namespace, &pod.name),
            &manifests::pod(&manifest),
        )?;
        Ok(())
    }

    pub fn pods(&self) -> Vec<Pod> {
        self.state().pods.values().map(|r| r.pod.clone()).collect()
    }

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
            log_tail: super::super::process::tail_file(&app.log, 20),
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

    /// The packet-filtering rules inside the pod's netns (iptables-save, ip6tables-save,
    /// iptables-legacy-save and nft, whichever exist), comments and counters removed, so two
    /// snapshots compare.
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
            lines.extend(
                out.stdout
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(|l| format!("{tool}: {}", strip_counters(l))),
            );
        }
        Ok(lines)
    }
}

/// Removes iptables-save chain counters (`[12:345]`) so snapshots compare.
fn strip_counters(line: &str) -> String {
    match (line.rfind('['), line.ends_with(']')) {
        (Some(i), true) if line.starts_with(':') => line[..i].trim_end().to_string(),
        _ => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_stripped_from_chain_lines_only() {
        assert_eq!(
            strip_counters(":PREROUTING ACCEPT [3:180]"),
            ":PREROUTING ACCEPT"
        );
        assert_eq!(
            strip_counters("-A X -m set --match-set s[1] src"),
            "-A X -m set --match-set s[1] src"
        );
    }

    #[test]
    fn pod_spec_builder_fills_fields() {
        let s = PodSpec::new("c", "demo")
            .node("node2")
            .service_account("sa")
            .label("app", "c")
            .port(80);
        assert_eq!(
            (s.node.as_str(), s.service_account.as_str()),
            ("node2", "sa")
        );
        assert_eq!(s.labels["app"], "c");
        assert_eq!(s.ports, vec![80]);
        assert_eq!(PodSpec::new("x", "y").service_account, "default");
    }
}
