//! The steps of the Kubernetes suite and the runner that orders them, gathers diagnostics when
//! one fails and prints the summary.
//!
//! Steps, one module each: 1 [`install`], 2 [`plaintext`], 3 [`enrol`], 4 [`l4_policy`],
//! 5 [`waypoint`], 6 [`new_pods`], 7 [`meshctl`] (every meshctl command against the cluster),
//! 8 [`release`], 9 [`uninstall`] (runs whatever happened before, unless nothing was installed).

mod apps;
mod enrol;
mod install;
mod l4_policy;
mod meshctl;
mod new_pods;
mod plaintext;
mod release;
mod traffic;
mod uninstall;
mod waypoint;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context;
use e2e::k8s::node::NodeShell;
use e2e::k8s::{Settings, client, diagnostics};
use kube::Client;

pub use apps::Apps;

/// How long configuration changes (labels, policies, routes) may take to reach the data plane.
pub const PROPAGATION: Duration = Duration::from_secs(60);
/// How long pods may take to start.
pub const ROLLOUT: Duration = Duration::from_secs(180);

/// The suite's connection and what the steps hand to each other.
pub struct Suite {
    pub client: Client,
    pub settings: Settings,
    /// Node-level state before the install, by node (when nodes are reachable).
    pub before: BTreeMap<String, install::NodeSnapshot>,
    /// Whether `helm install` was attempted (so the uninstall step must run).
    pub install_attempted: bool,
    /// The sample apps, once step 2 deployed them.
    pub apps: Option<Apps>,
    /// Things worth knowing that are not failures (checks not possible on this cluster).
    pub notes: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

impl Suite {
    /// A shell on every node, or none with a note when nodes are out of reach.
    pub async fn node_shells(&self, purpose: &str) -> anyhow::Result<Vec<NodeShell>> {
        let Some(access) = self.settings.node_access.clone() else {
            self.note(format!(
                "not checked on the nodes (MESH_E2E_NODE_EXEC unset): {purpose}"
            ));
            return Ok(Vec::new());
        };
        let nodes: kube::Api<k8s_openapi::api::core::v1::Node> =
            kube::Api::all(self.client.clone());
        let list = nodes
            .list(&Default::default())
            .await
            .context("list nodes")?;
        Ok(list
            .items
            .iter()
            .filter_map(|n| n.metadata.name.as_deref())
            .map(|n| NodeShell::new(&access, n))
            .collect())
    }

    pub fn apps(&self) -> anyhow::Result<&Apps> {
        self.apps
            .as_ref()
            .context("the sample apps are not deployed (step 2 did not run)")
    }

    /// Records a note for the summary.
    pub fn note(&self, text: String) {
        self.notes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(text);
    }

    /// Prints a progress line (visible with `--nocapture`, as `make e2e` runs the suite).
    pub fn log(&self, line: impl AsRef<str>) {
        println!("[k8s-e2e] {}", line.as_ref());
    }
}

struct StepDef {
    n: u8,
    title: &'static str,
    /// Steps that must have passed for this one to run.
    needs: &'static [u8],
}

const STEPS: [StepDef; 9] = [
    StepDef {
        n: 1,
        title: "install: Gateway API CRDs, helm install, every component Ready",
        needs: &[],
    },
    StepDef {
        n: 2,
        title: "sample apps in an un-labelled namespace talk plaintext",
        needs: &[1],
    },
    StepDef {
        n: 3,
        title: "label the namespace: same pods, mutual TLS with both identities",
        needs: &[2],
    },
    StepDef {
        n: 4,
        title: "L4 AuthorizationPolicy ALLOW and DENY on running pods",
        needs: &[3],
    },
    StepDef {
        n: 5,
        title: "meshctl waypoint apply: HTTPRoute 90/10, L7 denial, istio_requests_total",
        needs: &[3],
    },
    StepDef {
        n: 6,
        title: "new pods enrolled at creation; dataplane-mode=none left alone",
        needs: &[3],
    },
    StepDef {
        n: 7,
        title: "meshctl: waypoint, ztunnel-config, dataplane, analyze, precheck, version",
        needs: &[3, 5],
    },
    StepDef {
        n: 8,
        title: "remove the label: plaintext, nothing left in the pods",
        needs: &[3],
    },
    StepDef {
        n: 9,
        title: "helm uninstall: nothing left behind",
        needs: &[],
    },
];

/// The last step, which runs whatever happened before (unless the install never began).
const UNINSTALL_STEP: u8 = 9;

enum Outcome {
    Passed(Duration),
    Failed(Duration, String),
    NotRun(String),
}

async fn run_step(n: u8, suite: &mut Suite) -> anyhow::Result<()> {
    match n {
        1 => install::run(suite).await,
        2 => plaintext::run(suite).await,
        3 => enrol::run(suite).await,
        4 => l4_policy::run(suite).await,
        5 => waypoint::run(suite).await,
        6 => new_pods::run(suite).await,
        7 => meshctl::run(suite).await,
        8 => release::run(suite).await,
        9 => uninstall::run(suite).await,
        _ => anyhow::bail!("no step {n}"),
    }
}

/// Runs every step; `Err` holds the report of a run where a step failed or could not run.
pub async fn run() -> Result<(), String> {
    let started = Instant::now();
    let settings = Settings::from_env().map_err(|e| format!("cannot start: {e}"))?;
    let (client, version) = client::connect(&settings)
        .await
        .map_err(|e| format!("cannot start: {e}"))?;
    let mut suite = Suite {
        client,
        settings,
        before: BTreeMap::new(),
        install_attempted: false,
        apps: None,
        notes: Default::default(),
    };
    suite.log(format!("cluster: Kubernetes {version}"));
    for line in suite.settings.describe().lines() {
        suite.log(line);
    }

    let mut outcomes: BTreeMap<u8, Outcome> = BTreeMap::new();
    let mut failures = String::new();
    for step in &STEPS {
        let missing: Vec<u8> = step
            .needs
            .iter()
            .copied()
            .filter(|d| !matches!(outcomes.get(d), Some(Outcome::Passed(_))))
            .collect();
        if !missing.is_empty() {
            let why = format!("not run: needs step {missing:?}");
            suite.log(format!("step {} SKIPPED ({why}): {}", step.n, step.title));
            outcomes.insert(step.n, Outcome::NotRun(why));
            continue;
        }
        if step.n == UNINSTALL_STEP
            && std::env::var_os("MESH_E2E_KEEP_INSTALL").is_some_and(|v| v == "1")
        {
            suite.log(format!(
                "step {UNINSTALL_STEP} not run: MESH_E2E_KEEP_INSTALL=1 keeps the mesh and the sample apps installed"
            ));
            outcomes.insert(
                step.n,
                Outcome::NotRun("not run: MESH_E2E_KEEP_INSTALL=1".into()),
            );
            continue;
        }
        if step.n == UNINSTALL_STEP && !suite.install_attempted {
            outcomes.insert(
                step.n,
                Outcome::NotRun("not run: nothing was installed".into()),
            );
            continue;
        }
        suite.log(format!("step {} START: {}", step.n, step.title));
        let t = Instant::now();
        let res = run_step(step.n, &mut suite).await;
        let took = t.elapsed();
        match res {
            Ok(()) => {
                suite.log(format!(
                    "step {} PASSED in {:.1}s",
                    step.n,
                    took.as_secs_f64()
                ));
                outcomes.insert(step.n, Outcome::Passed(took));
            }
            Err(e) => {
                let reason = format!("{e:#}");
                suite.log(format!(
                    "step {} FAILED in {:.1}s: {reason}",
                    step.n,
                    took.as_secs_f64()
                ));
                let dir = suite.settings.artifacts.join(format!("step-{}", step.n));
                let namespaces = [
                    suite.settings.istio_namespace.as_str(),
                    suite.settings.namespace.as_str(),
                ];
                let nodes = suite
                    .node_shells("the CNI agent's status in the diagnostics")
                    .await
                    .unwrap_or_default();
                let diag =
                    diagnostics::gather(&suite.client, &suite.settings, &namespaces, &nodes, &dir)
                        .await;
                let _ = writeln!(
                    failures,
                    "\n======== step {} failed: {}\n{reason}\n\n{diag}",
                    step.n, step.title
                );
                outcomes.insert(step.n, Outcome::Failed(took, reason));
            }
        }
    }

    let notes: Vec<String> = suite
        .notes
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .cloned()
        .collect();
    let summary = summary(&outcomes, &notes, started.elapsed());
    println!("{summary}");
    let all_passed = outcomes.values().all(|o| matches!(o, Outcome::Passed(_)));
    if all_passed {
        Ok(())
    } else {
        Err(format!("{failures}\n{summary}"))
    }
}

fn summary(outcomes: &BTreeMap<u8, Outcome>, notes: &[String], total: Duration) -> String {
    let mut s = String::from("\n======== Kubernetes end-to-end summary\n");
    for step in &STEPS {
        let line = match outcomes.get(&step.n) {
            Some(Outcome::Passed(d)) => format!("PASS  {:>6.1}s", d.as_secs_f64()),
            Some(Outcome::Failed(d, r)) => {
                let oneline = r.split_whitespace().collect::<Vec<_>>().join(" ");
                format!(
                    "FAIL  {:>6.1}s  {}",
                    d.as_secs_f64(),
                    truncate(&oneline, 240)
                )
            }
            Some(Outcome::NotRun(why)) => format!("----          {why}"),
            None => "----          not reached".into(),
        };
        let _ = writeln!(s, "step {}  {:<75} {line}", step.n, step.title);
    }
    for n in notes {
        let _ = writeln!(s, "note: {n}");
    }
    let _ = writeln!(s, "total: {:.1}s", total.as_secs_f64());
    s
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}...", s.chars().take(max).collect::<String>())
    }
}
