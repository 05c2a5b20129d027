//! The mesh components of a cluster: istiod in the underlay, a cni-agent and a ztunnel per
//! node; starting, stopping, readiness, and reading ztunnel's metrics and config dump.

use std::process::ExitStatus;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::super::components::{self, MESH_CNI_TYPE};
use super::super::error::HarnessError;
use super::super::metrics::Metrics;
use super::super::netns;
use super::super::poll;
use super::super::process::{Proc, tail_file};
use super::{Cluster, Node};

const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

impl Cluster {
    pub(super) fn require_mesh(&self) -> Result<(), HarnessError> {
        if self.mesh {
            Ok(())
        } else {
            Err(HarnessError::Invalid(
                "this cluster was built without the mesh (ClusterBuilder::mesh(false))".into(),
            ))
        }
    }

    /// Node tokens, istiod, its CA root, then a cni-agent and a ztunnel per node.
    pub(super) fn start_mesh(&self) -> Result<(), HarnessError> {
        self.check_flags()?;
        let mut tokens = Vec::new();
        for n in &self.nodes {
            let token = components::random_token();
            std::fs::write(&n.files.token_file, &token).map_err(HarnessError::io(format!(
                "writing {}",
                n.files.token_file.display()
            )))?;
            tokens.push((n.name.clone(), token));
        }
        let f = &self.istiod_files;
        std::fs::write(&f.tokens_file, components::node_tokens_file(&tokens))
            .map_err(HarnessError::io("writing the node tokens file"))?;
        std::fs::create_dir_all(&f.ca_dir).map_err(HarnessError::io("creating the CA dir"))?;
        self.start_istiod()?;
        self.wait_root_cert()?;
        for n in &self.nodes {
            self.start_cni_agent(n)?;
        }
        for n in &self.nodes {
            self.start_ztunnel(&n.name)?;
        }
        Ok(())
    }

    /// Fails with every flag the harness passes that a binary's `--help` does not list.
    fn check_flags(&self) -> Result<(), HarnessError> {
        let mut problems = Vec::new();
        let f = &self.istiod_files;
        let n = &self.nodes[0];
        let root = f.root_cert();
        let checks = [
            (
                "istiod",
                components::istiod_args(f, &self.trust_domain, &self.log_level),
            ),
            (
                "cni-agent",
                components::cni_agent_args(&n.files, &f.config_dir, &self.log_level),
            ),
            (
                "ztunnel",
                components::ztunnel_args(
                    &n.files,
                    self.underlay_ip,
                    &root,
                    &self.trust_domain,
                    &self.log_level,
                ),
            ),
        ];
        for (bin, args) in checks {
            let unknown = components::unknown_flags(&self.bin_dir.join(bin), &args);
            if !unknown.is_empty() {
                problems.push(format!(
                    "{bin} does not accept {} (the harness starts it as `{bin} {}`)",
                    unknown.join(", "),
                    args.join(" ")
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(HarnessError::Component {
                component: "mesh command lines".into(),
                reason: format!(
                    "the binaries in {} do not match the harness contract (e2e/src/harness/components.rs):\n  {}",
                    self.bin_dir.display(),
                    problems.join("\n  ")
                ),
                log_tail: "(not started)".into(),
            })
        }
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![("RUST_LOG".into(), self.log_level.clone())]
    }

    pub fn start_istiod(&self) -> Result<(), HarnessError> {
        self.require_mesh()?;
        let f = &self.istiod_files;
        let proc = Proc::spawn(
            "istiod",
            &self.underlay_netns,
            &self.bin_dir.join("istiod"),
            &components::istiod_args(f, &self.trust_domain, &self.log_level),
            &self.env(),
            &f.log,
        )?;
        tracing::info!(pid = proc.pid(), "istiod started");
        self.state().istiod = Some(proc);
        Ok(())
    }

    /// Stops istiod (SIGTERM, then SIGKILL after 10 s); returns its exit status.
    pub fn stop_istiod(&self) -> Result<Option<ExitStatus>, HarnessError> {
        self.require_mesh()?;
        let proc = self.state().istiod.take();
        Ok(proc.and_then(|mut p| p.stop(Duration::from_secs(10))))
    }

    pub fn restart_istiod(&self) -> Result<(), HarnessError> {
        self.stop_istiod()?;
        self.start_istiod()
    }

    fn wait_root_cert(&self) -> Result<(), HarnessError> {
        let root = self.istiod_files.root_cert();
        let res = poll::eventually(
            &format!("istiod to write its CA root {}", root.display()),
            Duration::from_secs(60),
            || {
                if let Some(s) = self.state().istiod.as_mut().and_then(Proc::exit_status) {
                    return Ok(Err(format!("istiod exited ({s})")));
                }
                match std::fs::metadata(&root) {
                    Ok(m) if m.len() > 0 => Ok(Ok(())),
                    _ => Err("no root-cert.pem yet".to_string()),
                }
            },
        );
        let reason = match res {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(exited)) => exited,
            Err(e) => e.to_string(),
        };
        Err(HarnessError::Component {
            component: "istiod".into(),
            reason,
            log_tail: tail_file(&self.istiod_files.log, 40),
        })
    }

    fn start_cni_agent(&self, n: &Node) -> Result<(), HarnessError> {
        let proc = Proc::spawn(
            &format!("cni-agent {}", n.name),
            &n.netns,
            &self.bin_dir.join("cni-agent"),
            &components::cni_agent_args(&n.files, &self.istiod_files.config_dir, &self.log_level),
            &self.env(),
            &n.files.agent_log,
        )?;
        self.state().agents.insert(n.name.clone(), proc);
        Ok(())
    }

    /// Starts the ztunnel of node `node`.
    pub fn start_ztunnel(&self, node: &str) -> Result<(), HarnessError> {
        self.require_mesh()?;
        let n = self.node(node)?;
        let proc = Proc::spawn(
            &format!("ztunnel {}", n.name),
            &n.netns,
            &self.bin_dir.join("ztunnel"),
            &components::ztunnel_args(
                &n.files,
                self.underlay_ip,
                &self.istiod_files.root_cert(),
                &self.trust_domain,
                &self.log_level,
            ),
            &self.env(),
            &n.files.ztunnel_log,
        )?;
        tracing::info!(node, pid = proc.pid(), "ztunnel started");
        self.state().ztunnels.insert(n.name.clone(), proc);
        Ok(())
    }

    /// Stops the ztunnel of `node` (SIGTERM: graceful drain; SIGKILL after 10 s).
    pub fn stop_ztunnel(&self, node: &str) -> Result<Option<ExitStatus>, HarnessError> {
        self.require_mesh()?;
        let proc = self.state().ztunnels.remove(node);
        Ok(proc.and_then(|mut p| p.stop(Duration::from_secs(10))))
    }

    pub fn restart_ztunnel(&self, node: &str) -> Result<(), HarnessError> {
        self.stop_ztunnel(node)?;
        self.start_ztunnel(node)
    }

    /// `Ok` when istiod answers 200 on `/ready`.
    pub fn istiod_ready(&self) -> Result<(), String> {
        let url = components::istiod_ready_url(self.underlay_ip);
        probe(&self.underlay_netns, &url)
    }

    /// `Ok` when the node's ztunnel answers 200 on `/healthz/ready`.
    pub fn ztunnel_ready(&self, node: &Node) -> Result<(), String> {
        probe(
            &self.underlay_netns,
            &components::ztunnel_ready_url(node.ip),
        )
    }

    /// `Ok` when the node's conflist has the `mesh-cni` plugin chained.
    pub fn cni_chained(&self, node: &Node) -> Result<(), String> {
        let types = node.cni.current_plugin_types().map_err(|e| e.to_string())?;
        if types.iter().any(|t| t == MESH_CNI_TYPE) {
            Ok(())
        } else {
            Err(format!(
                "conflist plugins are {types:?}, no {MESH_CNI_TYPE}"
            ))
        }
    }

    /// First exited component, with its status.
    fn exited_component(&self) -> Option<(String, String, std::path::PathBuf)> {
        let mut st = self.state();
        if let Some(p) = st.istiod.as_mut()
            && let Some(s) = p.exit_status()
        {
            return Some(("istiod".into(), s.to_string(), p.log_path().to_path_buf()));
        }
        let st = &mut *st;
        for p in st.agents.values_mut().chain(st.ztunnels.values_mut()) {
            if let Some(s) = p.exit_status() {
                return Some((
                    p.name().to_string(),
                    s.to_string(),
                    p.log_path().to_path_buf(),
                ));
            }
        }
        None
    }

    /// Waits (up to the builder's ready timeout) until istiod is ready, every node's cni-agent
    /// has chained its plugin and every ztunnel is ready. Fails at once if a component exits.
    pub fn wait_ready(&self) -> Result<(), HarnessError> {
        self.wait_ready_within(self.ready_timeout)
    }

    pub fn wait_ready_within(&self, timeout: Duration) -> Result<(), HarnessError> {
        self.require_mesh()?;
        let start = Instant::now();
        let res = poll::eventually("the mesh to be ready", timeout, || {
            if let Some(exited) = self.exited_component() {
                return Ok(Err(exited));
            }
            let mut waiting = Vec::new();
            if let Err(e) = self.istiod_ready() {
                waiting.push(format!("  istiod /ready: {e}"));
            }
            for n in &self.nodes {
                if let Err(e) = self.cni_chained(n) {
                    waiting.push(format!("  {} cni-agent: {e}", n.name));
                }
                if let Err(e) = self.ztunnel_ready(n) {
                    waiting.push(format!("  {} ztunnel readiness: {e}", n.name));
                }
            }
            if waiting.is_empty() {
                Ok(Ok(()))
            } else {
                Err(waiting.join("\n"))
            }
        });
        match res {
            Ok(Ok(())) => {
                tracing::info!(cluster = %self.id, waited = ?start.elapsed(), "mesh ready");
                Ok(())
            }
            Ok(Err((name, status, log))) => Err(HarnessError::Component {
                component: name,
                reason: format!("exited ({status}) while waiting for the mesh to be ready"),
                log_tail: format!("{}\n\n{}", tail_file(&log, 40), self.diagnostics()),
            }),
            Err(e) => Err(HarnessError::NotReady {
                waited: e.waited,
                waiting: e.last,
                diagnostics: self.diagnostics(),
            }),
        }
    }

    /// Scrapes the node's ztunnel metrics (`GET <node-ip>:15020/metrics` from the underlay).
    pub fn ztunnel_metrics(&self, node: &Node) -> Result<Metrics, HarnessError> {
        let url = components::ztunnel_metrics_url(node.ip);
        let resp = netns::http_get(&self.underlay_netns, &url, HTTP_TIMEOUT)?;
        if !resp.is_success() {
            return Err(HarnessError::BadStatus {
                what: format!("{} ztunnel metrics", node.name),
                status: resp.status,
                body: resp.text(),
            });
        }
        Ok(Metrics::parse(&resp.text())?)
    }

    /// The node's ztunnel `config_dump` (`GET 127.0.0.1:15000/config_dump` in the node netns).
    pub fn ztunnel_config_dump(&self, node: &Node) -> Result<Value, HarnessError> {
        let resp = netns::http_get(
            &node.netns,
            &components::ztunnel_config_dump_url(),
            HTTP_TIMEOUT,
        )?;
        let what = format!("{} ztunnel config_dump", node.name);
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

    /// The node agent's published `status.json` (ztunnel connection, enrolled and pending pods).
    pub fn cni_agent_status(&self, node: &Node) -> Result<Value, HarnessError> {
        let file = node.files.agent_state_dir.join("status.json");
        let text = std::fs::read_to_string(&file)
            .map_err(HarnessError::io(format!("reading {}", file.display())))?;
        serde_json::from_str(&text).map_err(|e| HarnessError::Json {
            what: file.display().to_string(),
            reason: e.to_string(),
        })
    }

    /// Paths of the component logs, labelled.
    pub fn component_logs(&self) -> Vec<(String, std::path::PathBuf)> {
        let mut out = vec![("istiod".to_string(), self.istiod_files.log.clone())];
        for n in &self.nodes {
            out.push((format!("{} cni-agent", n.name), n.files.agent_log.clone()));
            out.push((format!("{} ztunnel", n.name), n.files.ztunnel_log.clone()));
        }
        out.extend(self.waypoint_logs());
        out
    }
}

/// `Ok` when `GET url` from inside `ns` answers 2xx.
pub(super) fn probe(ns: &str, url: &str) -> Result<(), String> {
    match netns::http_get(ns, url, HTTP_TIMEOUT) {
        Ok(r) if r.is_success() => Ok(()),
        Ok(r) => Err(format!("HTTP {} {}", r.status, r.text().trim())),
        Err(e) => Err(e.to_string()),
    }
}
