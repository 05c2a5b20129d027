//! Step 7: every `meshctl` command against the cluster, run as a user runs it (the suite's
//! kubeconfig in KUBECONFIG, no connection flag), judged by what it prints: `-o json` parsed
//! where it exists, the tables read row by row ([`cli`]), exit codes checked.
//!
//! - `version`: meshctl, istiod and every ztunnel report the workspace version, as the running
//!   binaries say;
//! - `waypoint list|status|generate` on step 5's waypoint, then `apply --wait` and `delete` of a
//!   second one in a namespace of this step, whose Deployment and pod go with it ([`waypoints`]);
//! - `dataplane enroll` of that namespace with one running pod, `ztunnel-config` (workloads,
//!   services, policies, certificates, connections, all; by node and by pod) while it is
//!   enrolled, `dataplane release` ([`ztunnel`]);
//! - `analyze`: clean on the sample namespace, then MESH0003 and MESH0004 with exit code 2 on
//!   deliberately broken objects, clean again once they are gone;
//! - `precheck` on the installed cluster; `completion`.
//!
//! The namespace of this step is deleted at its end, whatever happened.

mod cli;
mod waypoints;
mod ztunnel;

use std::time::Duration;

use anyhow::Context;
use e2e::k8s::{apply, diagnostics, eventually, mesh, workloads};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams};
use serde_json::Value;

use super::enrol::label_namespace;
use super::{ROLLOUT, Suite};
use cli::{Ctl, array, parse_json, str_of};
use ztunnel::Probe;

/// Time limit of one meshctl command (those that wait get their own `--timeout` below it).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(150);
/// Step 5's waypoint.
const WAYPOINT: &str = "waypoint";
/// Deliberately broken objects for `analyze`.
const L7_WITHOUT_WAYPOINT: &str = "l7-without-waypoint";
const MISSING_WAYPOINT: &str = "no-such-waypoint";
const USE_WAYPOINT: &str = "istio.io/use-waypoint";
/// The workspace version every component reports.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The namespace of this step (deleted at its end; the install step removes a leftover).
pub fn ctl_namespace(sample_namespace: &str) -> String {
    format!("{sample_namespace}-ctl")
}

/// A namespace-wide policy with HTTP attributes and no waypoint: ztunnel cannot enforce it.
fn l7_policy(ns: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: {L7_WITHOUT_WAYPOINT}
  namespace: {ns}
spec:
  action: ALLOW
  rules:
    - to:
        - operation:
            methods: [GET]
            paths: [/public/*]
"
    )
}

pub async fn run(suite: &mut Suite) -> anyhow::Result<()> {
    let suite = &*suite;
    let bin = suite
        .settings
        .meshctl
        .as_ref()
        .map_err(|e| anyhow::anyhow!("meshctl is missing: {e}"))?;
    let ctl = Ctl { suite, bin };
    let ns2 = ctl_namespace(&suite.settings.namespace);
    let mut result = steps(suite, &ctl, &ns2).await;
    if result.is_err() {
        // What the namespace held, before it goes (the runner gathers the others).
        let dir = suite.settings.artifacts.join("step-7").join(&ns2);
        let diag = diagnostics::gather(&suite.client, &suite.settings, &[&ns2], &[], &dir).await;
        result = result.map_err(|e| anyhow::anyhow!("{e:#}\n\n{diag}"));
    }
    let cleanup = delete_namespace(suite, &ns2).await;
    match (result, cleanup) {
        (Err(e), _) => Err(e),
        (Ok(()), Err(e)) => Err(e.context(format!("deleting namespace {ns2} at the end"))),
        (Ok(()), Ok(())) => Ok(()),
    }
}

async fn steps(suite: &Suite, ctl: &Ctl<'_>, ns2: &str) -> anyhow::Result<()> {
    version(suite, ctl).await?;
    completion(ctl).await?;
    waypoints::waypoints_of_step_5(suite, ctl).await?;

    let probe = Probe::deploy(suite, ns2).await?;
    suite.log(format!(
        "namespace {ns2}: pod {} ({}) on node {}",
        probe.name, probe.ip, probe.node
    ));

    waypoints::waypoint_apply_delete(suite, ctl, ns2).await?;
    ztunnel::dataplane_and_ztunnel(suite, ctl, &probe).await?;
    analyze(suite, ctl, ns2).await?;
    precheck(suite, ctl).await?;
    Ok(())
}

/// `meshctl version`: client, istiod and each ztunnel at the workspace version.
async fn version(suite: &Suite, ctl: &Ctl<'_>) -> anyhow::Result<()> {
    let v = ctl.json(&["version"]).await?;
    anyhow::ensure!(
        str_of(&v["client"], "version") == VERSION,
        "meshctl version: the client reports {:?}, the workspace is {VERSION}: {v:#}",
        v["client"]["version"]
    );
    let of = |list: &Value, component: &str| -> Vec<Value> {
        list.as_array()
            .into_iter()
            .flatten()
            .filter(|c| str_of(c, "component") == component)
            .cloned()
            .collect()
    };
    let istiods = of(&v["controlPlane"], "istiod");
    let ztunnels = of(&v["dataPlane"], "ztunnel");
    let running = mesh::ztunnels(&suite.client, &suite.settings.istio_namespace).await?;
    anyhow::ensure!(
        !istiods.is_empty(),
        "meshctl version reports no istiod: {v:#}"
    );
    anyhow::ensure!(
        ztunnels.len() == running.len(),
        "meshctl version reports {} ztunnels, {} run: {v:#}",
        ztunnels.len(),
        running.len()
    );
    // "ready" alone: the version is what the binary said (not its image tag, which the status
    // would mention).
    for c in istiods.iter().chain(&ztunnels) {
        anyhow::ensure!(
            str_of(c, "version") == VERSION && str_of(c, "status") == "ready",
            "meshctl version: {} {} reports version {:?} ({}), expected {VERSION} from the \
             running binary: {c}",
            str_of(c, "component"),
            str_of(c, "source"),
            c["version"],
            str_of(c, "status")
        );
    }
    for z in &ztunnels {
        let node = str_of(z, "node");
        anyhow::ensure!(
            running.iter().any(|p| workloads::node(p) == Some(node)),
            "meshctl version: a ztunnel on node {node:?}, where none runs: {z}"
        );
    }
    let short = ctl.ok(&["version", "--short"]).await?.stdout;
    for line in [
        format!("client version: {VERSION}"),
        format!("control plane version: {VERSION}"),
        format!("data plane version: {VERSION}"),
    ] {
        anyhow::ensure!(
            short.lines().any(|l| l.starts_with(&line)),
            "meshctl version --short: no line {line:?}:\n{short}"
        );
    }
    suite.log(format!(
        "meshctl version: client, {} istiod, {} ztunnel at {VERSION}",
        istiods.len(),
        ztunnels.len()
    ));
    Ok(())
}

/// `meshctl completion bash`: a script that completes meshctl's commands.
async fn completion(ctl: &Ctl<'_>) -> anyhow::Result<()> {
    let script = ctl.ok(&["completion", "bash"]).await?.stdout;
    anyhow::ensure!(
        script.contains("complete ") && script.contains("meshctl") && script.contains("waypoint"),
        "meshctl completion bash printed no completion for meshctl:\n{}",
        script.chars().take(400).collect::<String>()
    );
    Ok(())
}

/// Findings with `code` about `object` in `meshctl analyze -o json`'s report.
fn findings_of<'a>(report: &'a Value, code: &str, object: &str) -> Vec<&'a Value> {
    report["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| str_of(f, "code") == code && str_of(f, "object") == object)
        .collect()
}

/// `meshctl analyze` on the live cluster: clean, then two deliberate errors, clean again.
async fn analyze(suite: &Suite, ctl: &Ctl<'_>, ns2: &str) -> anyhow::Result<()> {
    let ns = suite.settings.namespace.as_str();
    let args = ["analyze", "-n", ns, "-o", "json"];
    let out = ctl.run(&args).await?;
    let report = parse_json(&args, &out)?;
    anyhow::ensure!(
        out.status.code() == Some(0) && report["errors"] == 0,
        "meshctl analyze -n {ns} (exit {:?}) finds errors in the sample as configured: {report:#}",
        out.status.code()
    );
    suite.log(format!(
        "meshctl analyze -n {ns}: exit 0, no error, {} warning(s)",
        report["warnings"]
    ));
    let table = ctl.ok(&["analyze", "-n", ns]).await?.stdout;
    anyhow::ensure!(
        table.contains("No validation issues found in cluster") || table.contains("0 errors"),
        "meshctl analyze -n {ns}:\n{table}"
    );

    apply::apply_yaml(&suite.client, &l7_policy(ns2)).await?;
    label_namespace(suite, ns2, USE_WAYPOINT, Some(MISSING_WAYPOINT)).await?;
    let args = ["analyze", "-n", ns2, "-o", "json"];
    let out = ctl.run(&args).await?;
    let report = parse_json(&args, &out)?;
    let policy = format!("AuthorizationPolicy {ns2}/{L7_WITHOUT_WAYPOINT}");
    let namespace = format!("Namespace {ns2}");
    let l7 = findings_of(&report, "MESH0003", &policy);
    let missing = findings_of(&report, "MESH0004", &namespace);
    anyhow::ensure!(
        out.status.code() == Some(2)
            && l7.len() == 1
            && missing.len() == 1
            && l7[0]["severity"] == "error"
            && str_of(missing[0], "message").contains(MISSING_WAYPOINT),
        "meshctl analyze -n {ns2} (exit {:?}): expected exit 2 with MESH0003 on {policy} and \
         MESH0004 on {namespace}: {report:#}",
        out.status.code()
    );
    let out = ctl.run(&["analyze", "-n", ns2]).await?;
    for line in [
        format!("Error [MESH0003] {policy}"),
        format!("Error [MESH0004] {namespace}"),
    ] {
        anyhow::ensure!(
            out.stdout.lines().any(|l| l == line),
            "meshctl analyze -n {ns2}: no line {line:?}:\n{}",
            out.combined()
        );
    }
    // -n limits the report: the sample namespace is still clean.
    let out = ctl.run(&["analyze", "-n", ns, "-o", "json"]).await?;
    anyhow::ensure!(
        out.status.code() == Some(0),
        "meshctl analyze -n {ns} reports the errors of {ns2}:\n{}",
        out.combined()
    );
    suite.log(format!(
        "meshctl analyze -n {ns2}: exit 2, MESH0003 on {policy}, MESH0004 on {namespace}"
    ));

    apply::delete_yaml(&suite.client, &l7_policy(ns2)).await?;
    label_namespace(suite, ns2, USE_WAYPOINT, None).await?;
    let out = ctl.run(&["analyze", "-n", ns2]).await?;
    anyhow::ensure!(
        out.status.code() == Some(0),
        "meshctl analyze -n {ns2} once the broken objects are gone (exit {:?}):\n{}",
        out.status.code(),
        out.combined()
    );
    suite.log(format!(
        "meshctl analyze -n {ns2}: clean again once they are removed"
    ));
    Ok(())
}

/// `meshctl precheck` on the cluster the mesh is installed in.
async fn precheck(suite: &Suite, ctl: &Ctl<'_>) -> anyhow::Result<()> {
    let args = ["precheck", "-o", "json"];
    let out = ctl.run(&args).await?;
    let report = parse_json(&args, &out)?;
    let checks = array(&report["checks"], "the checks of meshctl precheck -o json")?;
    let check = |name: &str| checks.iter().find(|c| str_of(c, "name") == name);
    let failed = checks.iter().any(|c| c["verdict"] == "FAIL");
    anyhow::ensure!(
        report["passed"] == Value::Bool(!failed)
            && out.status.code() == Some(if failed { 1 } else { 0 }),
        "meshctl precheck: exit {:?}, passed {}, though {} check failed: {report:#}",
        out.status.code(),
        report["passed"],
        if failed { "a" } else { "no" }
    );
    let server = suite.client.apiserver_version().await?.git_version;
    let k8s = check("Kubernetes version")
        .with_context(|| format!("meshctl precheck: no Kubernetes version check: {report:#}"))?;
    anyhow::ensure!(
        k8s["verdict"] == "PASS" && str_of(k8s, "message").contains(&server),
        "meshctl precheck: the Kubernetes version check should pass with {server}: {k8s}"
    );
    let gw = check("Gateway API CRDs")
        .with_context(|| format!("meshctl precheck: no Gateway API check: {report:#}"))?;
    anyhow::ensure!(
        gw["verdict"] == "PASS",
        "meshctl precheck: the Gateway API CRDs are installed (step 1), yet: {gw}"
    );
    let existing = check("existing installations").with_context(|| {
        format!("meshctl precheck: no existing installations check: {report:#}")
    })?;
    let message = str_of(existing, "message");
    anyhow::ensure!(
        existing["verdict"] == "WARN"
            && message.starts_with(&format!("this mesh {VERSION} is already installed"))
            && message.contains(&format!("helm release {}", suite.settings.release))
            && message.contains("istiod")
            && message.contains("ztunnel"),
        "meshctl precheck: the installed mesh should be reported as this mesh at {VERSION} \
         (helm release {}, istiod, ztunnel): {existing}",
        suite.settings.release
    );
    for c in checks {
        suite.log(format!(
            "  precheck {} {}: {}",
            str_of(c, "verdict"),
            str_of(c, "name"),
            str_of(c, "message")
        ));
    }
    let table = ctl.run(&["precheck"]).await?;
    anyhow::ensure!(
        table.status.code() == out.status.code()
            && table.stdout.contains(&format!("{} checks:", checks.len())),
        "meshctl precheck (table) disagrees with -o json:\n{}",
        table.combined()
    );
    suite.log(format!(
        "meshctl precheck: {} checks, exit {:?}",
        checks.len(),
        out.status.code()
    ));
    Ok(())
}

/// Deletes the namespace of this step and waits until it is gone.
async fn delete_namespace(suite: &Suite, ns: &str) -> anyhow::Result<()> {
    let api: Api<Namespace> = Api::all(suite.client.clone());
    match api.delete(ns, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.is_not_found() => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    eventually(
        &format!("namespace {ns} to be deleted"),
        ROLLOUT,
        || async {
            match api.get_opt(ns).await {
                Ok(None) => Ok(()),
                Ok(Some(n)) => Err(format!("phase {:?}", n.status.and_then(|s| s.phase))),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await?;
    suite.log(format!("namespace {ns} deleted"));
    Ok(())
}
