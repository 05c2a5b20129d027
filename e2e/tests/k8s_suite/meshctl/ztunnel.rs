//! `dataplane enroll|release` of the step's namespace, and `ztunnel-config` while its pod is
//! enrolled: workloads, services, policies, certificates, connections, all; by node and by pod.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use e2e::k8s::exec::exec;
use e2e::k8s::{apply, eventually, mesh, workloads};
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::Api;
use serde_json::Value;

use super::cli::{Ctl, array, array_len, ensure_row, has_row, parse_json, str_of};
use super::{VERSION, WAYPOINT};
use crate::k8s_suite::apps::{HTTP_PORT, TCP_PORT, container_yaml};
use crate::k8s_suite::enrol::DATAPLANE_MODE;
use crate::k8s_suite::traffic::REDIRECTION_ANNOTATION;
use crate::k8s_suite::{PROPAGATION, ROLLOUT, Suite};

/// Time limit of a command in the probe pod.
const EXEC_TIMEOUT: Duration = Duration::from_secs(30);
/// The workload of the step's namespace.
const PROBE: &str = "probe";
/// An L4 policy for `ztunnel-config policies` to show; it denies a principal nobody has.
const PROBE_POLICY: &str = "probe-deny-nobody";

/// The namespace, Deployment and Service of the probe.
fn probe_manifests(ns: &str) -> String {
    format!(
        "apiVersion: v1
kind: Namespace
metadata:
  name: {ns}
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {PROBE}
  namespace: {ns}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {PROBE}
  namespace: {ns}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: {PROBE}}}
  template:
    metadata:
      labels: {{app: {PROBE}}}
    spec:
      serviceAccountName: {PROBE}
      containers:
{containers}---
apiVersion: v1
kind: Service
metadata:
  name: {PROBE}
  namespace: {ns}
spec:
  selector: {{app: {PROBE}}}
  ports:
    - {{name: tcp-echo, port: {TCP_PORT}, targetPort: {TCP_PORT}}}
    - {{name: http, port: {HTTP_PORT}, targetPort: {HTTP_PORT}, appProtocol: http}}
",
        containers = container_yaml("        ")
    )
}

fn probe_policy(ns: &str, td: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: {PROBE_POLICY}
  namespace: {ns}
spec:
  selector:
    matchLabels: {{app: {PROBE}}}
  action: DENY
  rules:
    - from:
        - source:
            principals: [\"{td}/ns/{ns}/sa/nobody\"]
"
    )
}

/// The probe pod of this step's namespace.
pub struct Probe {
    pub ns: String,
    pub name: String,
    pub node: String,
    pub ip: String,
}

impl Probe {
    /// Creates the namespace `ns` with the probe (not enrolled) and waits for its pod.
    pub async fn deploy(suite: &Suite, ns: &str) -> anyhow::Result<Self> {
        apply::apply_yaml(&suite.client, &probe_manifests(ns)).await?;
        eventually(
            &format!("deployment {ns}/{PROBE} to be available"),
            ROLLOUT,
            || workloads::deployment_ready(&suite.client, ns, PROBE),
        )
        .await?;
        let pods = workloads::pods(&suite.client, ns, &format!("app={PROBE}")).await?;
        let [pod] = pods.as_slice() else {
            anyhow::bail!("expected one {PROBE} pod in {ns}, found {}", pods.len());
        };
        let name = workloads::name(pod).to_string();
        Ok(Probe {
            ns: ns.to_string(),
            node: workloads::node(pod)
                .with_context(|| format!("pod {ns}/{name} has no node"))?
                .to_string(),
            ip: workloads::ip(pod)
                .with_context(|| format!("pod {ns}/{name} has no IP"))?
                .to_string(),
            name,
        })
    }
}

/// `dataplane enroll`, `ztunnel-config` while the pod is enrolled, `dataplane release`.
pub async fn dataplane_and_ztunnel(
    suite: &Suite,
    ctl: &Ctl<'_>,
    probe: &Probe,
) -> anyhow::Result<()> {
    let td = suite.settings.trust_domain.as_str();
    let ns2 = probe.ns.as_str();
    apply::apply_yaml(&suite.client, &probe_policy(ns2, td)).await?;
    enroll(suite, ctl, probe).await?;
    ztunnel_workloads(suite, ctl, probe).await?;
    ztunnel_services(suite, ctl, probe).await?;
    ztunnel_policies(suite, ctl, probe).await?;
    ztunnel_certificates(suite, ctl, probe).await?;
    ztunnel_connections_and_all(suite, ctl, probe).await?;
    apply::delete_yaml(&suite.client, &probe_policy(ns2, td)).await?;
    release(suite, ctl, probe).await
}

async fn enroll(suite: &Suite, ctl: &Ctl<'_>, probe: &Probe) -> anyhow::Result<()> {
    let (ns2, name) = (probe.ns.as_str(), probe.name.as_str());
    let out = ctl
        .json(&["dataplane", "enroll", ns2, "--timeout", "90s"])
        .await?;
    let pods = array(&out["pods"], "the pods of meshctl dataplane enroll -o json")?;
    anyhow::ensure!(
        out["labelChange"] == "set"
            && out["complete"] == Value::Bool(true)
            && pods.len() == 1
            && str_of(&pods[0], "name") == name
            && str_of(&pods[0], "want") == "enrolled"
            && str_of(&pods[0], "status") == "enrolled",
        "meshctl dataplane enroll {ns2}: expected the label set and pod {name} (alone) \
         enrolled: {out:#}"
    );
    let labels = Api::<Namespace>::all(suite.client.clone())
        .get(ns2)
        .await?
        .metadata
        .labels
        .unwrap_or_default();
    anyhow::ensure!(
        labels.get(DATAPLANE_MODE).map(String::as_str) == Some("ambient"),
        "meshctl dataplane enroll said set, namespace {ns2} has labels {labels:?}"
    );
    let pod = workloads::pod(&suite.client, ns2, name)
        .await?
        .with_context(|| format!("pod {ns2}/{name} is gone"))?;
    anyhow::ensure!(
        workloads::annotation(&pod, REDIRECTION_ANNOTATION) == Some("enabled"),
        "meshctl dataplane enroll said enrolled, but {name} is not annotated \
         {REDIRECTION_ANNOTATION}=enabled"
    );
    suite.log(format!(
        "meshctl dataplane enroll {ns2}: pod {name} enrolled"
    ));
    Ok(())
}

/// `ztunnel-config workloads`, and the ztunnel chosen by node and by pod.
async fn ztunnel_workloads(suite: &Suite, ctl: &Ctl<'_>, probe: &Probe) -> anyhow::Result<()> {
    let (ns2, name, node) = (probe.ns.as_str(), probe.name.as_str(), probe.node.as_str());
    // istiod tells ztunnel that the pod speaks HBONE once it is enrolled.
    let workloads = eventually(
        &format!("meshctl ztunnel-config workloads {node} to list {ns2}/{name} with HBONE"),
        PROPAGATION,
        || async {
            let v = ctl
                .json(&["ztunnel-config", "workloads", node])
                .await
                .map_err(|e| format!("{e:#}"))?;
            let found = v.as_array().and_then(|l| {
                l.iter()
                    .find(|w| str_of(w, "namespace") == ns2 && str_of(w, "name") == name)
                    .cloned()
            });
            match found {
                Some(w) if str_of(&w, "tunnel") == "HBONE" => Ok(v),
                Some(w) => Err(format!("listed as {w}")),
                None => Err(format!("not listed among {} workloads", array_len(&v))),
            }
        },
    )
    .await?;
    let table = ctl.ok(&["ztunnel-config", "workloads", node]).await?.stdout;
    ensure_row(
        "meshctl ztunnel-config workloads",
        &table,
        &[ns2, name, &probe.ip, node, "None", "HBONE", "true"],
    )?;
    let ns = suite.settings.namespace.as_str();
    for p in suite.apps()?.pods.values() {
        ensure_row(
            "meshctl ztunnel-config workloads",
            &table,
            &[ns, &p.name, &p.ip, &p.node],
        )?;
    }
    suite.log(format!(
        "meshctl ztunnel-config workloads {node}: {} workloads, {ns2}/{name} with HBONE, the \
         sample pods",
        array_len(&workloads)
    ));

    // The ztunnel of the pod's node, whichever way the pod is named.
    let (slash, dot) = (format!("{ns2}/{name}"), format!("{name}.{ns2}"));
    for args in [
        vec!["-n", ns2, name],
        vec![slash.as_str()],
        vec![dot.as_str()],
    ] {
        let mut all = vec!["ztunnel-config", "all"];
        all.extend(args);
        let dump = ctl.json(&all).await?;
        anyhow::ensure!(
            dump["config"]["node_name"] == node,
            "meshctl {}: the dump of node {:?}, expected {node}",
            all.join(" "),
            dump["config"]["node_name"]
        );
        anyhow::ensure!(
            dump["workloads"]
                .as_array()
                .is_some_and(|l| l.iter().any(|w| str_of(w, "name") == name)),
            "meshctl {}: {name} is not among its workloads",
            all.join(" ")
        );
    }
    let filtered = ctl
        .json(&[
            "ztunnel-config",
            "workloads",
            node,
            "--workload-namespace",
            ns2,
        ])
        .await?;
    let only: Vec<&str> = array(&filtered, "workloads --workload-namespace")?
        .iter()
        .map(|w| str_of(w, "name"))
        .collect();
    anyhow::ensure!(
        only == [name],
        "meshctl ztunnel-config workloads {node} --workload-namespace {ns2}: {only:?}"
    );

    // No target: fine with one ztunnel, a request to choose with several.
    let ztunnels = mesh::ztunnels(&suite.client, &suite.settings.istio_namespace).await?;
    let bare = ctl
        .run(&["ztunnel-config", "workloads", "-o", "json"])
        .await?;
    if ztunnels.len() == 1 {
        let v = parse_json(&["ztunnel-config", "workloads"], &bare)?;
        anyhow::ensure!(
            bare.success() && array_len(&v) == array_len(&workloads),
            "meshctl ztunnel-config workloads (one ztunnel, no target): {}",
            bare.combined()
        );
    } else {
        anyhow::ensure!(
            !bare.success() && bare.stderr.contains("name a node or a pod"),
            "meshctl ztunnel-config workloads ({} ztunnels, no target): expected a request to \
             name a node or a pod, got ({}):\n{}",
            ztunnels.len(),
            bare.status,
            bare.combined()
        );
    }
    let wrong = ctl
        .run(&["ztunnel-config", "workloads", "no-such-node-or-pod"])
        .await?;
    anyhow::ensure!(
        !wrong.success() && wrong.stderr.contains("neither a node nor a pod"),
        "meshctl ztunnel-config workloads no-such-node-or-pod: expected a failure naming the \
         problem, got ({}):\n{}",
        wrong.status,
        wrong.combined()
    );
    suite.log(format!(
        "meshctl ztunnel-config by node {node}, -n {ns2} {name}, {ns2}/{name}, {name}.{ns2}: the \
         ztunnel of node {node}"
    ));
    Ok(())
}

/// `ztunnel-config services`: the probe's, with its one endpoint; the sample's echo, through
/// step 5's waypoint.
async fn ztunnel_services(suite: &Suite, ctl: &Ctl<'_>, probe: &Probe) -> anyhow::Result<()> {
    let (ns2, node) = (probe.ns.as_str(), probe.node.as_str());
    let ns = suite.settings.namespace.as_str();
    let apps = suite.apps()?;
    let probe_vip = Api::<Service>::namespaced(suite.client.clone(), ns2)
        .get(PROBE)
        .await?
        .spec
        .and_then(|s| s.cluster_ip)
        .unwrap_or_default();
    let text = ctl.ok(&["ztunnel-config", "services", node]).await?.stdout;
    let ports = format!("{TCP_PORT},{HTTP_PORT}");
    ensure_row(
        "meshctl ztunnel-config services",
        &text,
        &[ns2, PROBE, &probe_vip, &ports, "None", "1/1"],
    )?;
    let waypoint = format!("{ns}/{WAYPOINT}");
    ensure_row(
        "meshctl ztunnel-config services",
        &text,
        &[ns, "echo", &apps.services["echo"], &ports, &waypoint, "2/2"],
    )?;
    let json = ctl.json(&["ztunnel-config", "services", node]).await?;
    let echo = array(&json, "ztunnel-config services -o json")?
        .iter()
        .find(|s| str_of(s, "namespace") == ns && str_of(s, "name") == "echo")
        .cloned()
        .unwrap_or_default();
    anyhow::ensure!(
        echo["waypoint"]["Service"]["hostname"]
            .as_str()
            .is_some_and(|h| h.starts_with(&format!("{WAYPOINT}.{ns}.svc"))),
        "meshctl ztunnel-config services -o json: service {ns}/echo does not use waypoint \
         {WAYPOINT}: {echo}"
    );
    suite.log(format!(
        "meshctl ztunnel-config services: {ns2}/{PROBE} 1/1, {ns}/echo 2/2 via {waypoint}"
    ));
    Ok(())
}

/// `ztunnel-config policies`: this step's L4 policy, as ztunnel enforces it.
async fn ztunnel_policies(suite: &Suite, ctl: &Ctl<'_>, probe: &Probe) -> anyhow::Result<()> {
    let (ns2, node) = (probe.ns.as_str(), probe.node.as_str());
    let text = eventually(
        &format!("meshctl ztunnel-config policies to show {ns2}/{PROBE_POLICY}"),
        PROPAGATION,
        || async {
            let text = ctl
                .ok(&["ztunnel-config", "policies", node])
                .await
                .map_err(|e| format!("{e:#}"))?
                .stdout;
            if has_row(&text, &[ns2, PROBE_POLICY]) {
                Ok(text)
            } else {
                Err(text)
            }
        },
    )
    .await?;
    ensure_row(
        "meshctl ztunnel-config policies",
        &text,
        &[ns2, PROBE_POLICY, "Deny", "WorkloadSelector", "1"],
    )?;
    let json = ctl
        .json(&[
            "ztunnel-config",
            "policies",
            node,
            "--workload-namespace",
            ns2,
        ])
        .await?;
    let names: Vec<&str> = array(&json, "ztunnel-config policies -o json")?
        .iter()
        .map(|p| str_of(p, "name"))
        .collect();
    anyhow::ensure!(
        names == [PROBE_POLICY],
        "meshctl ztunnel-config policies --workload-namespace {ns2} -o json: {names:?}"
    );
    suite.log(format!(
        "meshctl ztunnel-config policies: {ns2}/{PROBE_POLICY} Deny, 1 rule"
    ));
    Ok(())
}

/// `ztunnel-config certificates`: ztunnel gets a pod's certificate for its first connection,
/// so the probe talks to the client (its pod address) and to echo-v1 (its Service, through
/// step 5's waypoint); then the ztunnel of each pod's node holds its valid certificate.
async fn ztunnel_certificates(suite: &Suite, ctl: &Ctl<'_>, probe: &Probe) -> anyhow::Result<()> {
    let apps = suite.apps()?;
    let peers = [apps.pod("client")?, apps.pod("echo-v1")?];
    let addrs = [
        format!("{}:{TCP_PORT}", peers[0].ip),
        apps.service("echo-v1", TCP_PORT)?,
    ];
    for (peer, addr) in peers.iter().zip(&addrs) {
        let message = "hello from the meshctl step";
        let cmd = [
            "mesh-echo",
            "client",
            "tcp",
            addr.as_str(),
            "--message",
            message,
            "--timeout-ms",
            "5000",
        ];
        let out = exec(&suite.client, &probe.ns, &probe.name, &cmd, EXEC_TIMEOUT).await?;
        anyhow::ensure!(
            out.success() && out.stdout.trim() == message,
            "TCP echo {} -> {} ({addr}) failed: {}",
            probe.name,
            peer.name,
            out.combined()
        );
    }
    let td = suite.settings.trust_domain.as_str();
    let held = [
        (
            format!("spiffe://{td}/ns/{}/sa/{PROBE}", probe.ns),
            probe.node.as_str(),
        ),
        (suite.settings.principal("client"), peers[0].node.as_str()),
        (suite.settings.principal("echo"), peers[1].node.as_str()),
    ];
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    for (id, node) in &held {
        let certs = ctl.json(&["ztunnel-config", "certificates", node]).await?;
        let cert = array(&certs, "ztunnel-config certificates -o json")?
            .iter()
            .find(|c| str_of(c, "identity") == id)
            .with_context(|| {
                format!(
                    "meshctl ztunnel-config certificates {node}: no certificate for {id}: \
                     {certs:#}"
                )
            })?;
        let not_before = cert["not_before"].as_u64().unwrap_or(u64::MAX);
        let not_after = cert["not_after"].as_u64().unwrap_or(0);
        anyhow::ensure!(
            str_of(cert, "state") == "Available"
                && not_before <= now + 60
                && not_after > now
                && cert["expires_in_seconds"].as_i64().is_some_and(|s| s > 0),
            "meshctl ztunnel-config certificates {node}: the certificate of {id} is not valid \
             now ({now}): {cert}"
        );
        let text = ctl
            .ok(&["ztunnel-config", "certificates", node])
            .await?
            .stdout;
        ensure_row(
            "meshctl ztunnel-config certificates",
            &text,
            &[id, "Available"],
        )?;
    }
    suite.log(format!(
        "meshctl ztunnel-config certificates: {} Available",
        held.iter()
            .map(|(id, _)| id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok(())
}

/// `ztunnel-config connections` (ztunnel cannot list them: meshctl must say so and show only
/// what it knows) and `ztunnel-config all`.
async fn ztunnel_connections_and_all(
    suite: &Suite,
    ctl: &Ctl<'_>,
    probe: &Probe,
) -> anyhow::Result<()> {
    let (ns2, name, node) = (probe.ns.as_str(), probe.name.as_str(), probe.node.as_str());
    let conns = ctl
        .json(&[
            "ztunnel-config",
            "connections",
            node,
            "--workload-namespace",
            ns2,
        ])
        .await?;
    anyhow::ensure!(
        str_of(&conns, "note").contains("does not report open connections"),
        "meshctl ztunnel-config connections -o json: no note that connections are not reported: \
         {conns:#}"
    );
    let served = array(&conns["pods"], "the pods of ztunnel-config connections")?;
    anyhow::ensure!(
        served.len() == 1
            && str_of(&served[0], "name") == name
            && served[0].get("connections").is_none(),
        "meshctl ztunnel-config connections --workload-namespace {ns2}: expected pod {name} \
         alone, without connection data: {conns:#}"
    );
    let text = ctl
        .ok(&["ztunnel-config", "connections", node])
        .await?
        .stdout;
    anyhow::ensure!(
        text.lines()
            .next()
            .is_some_and(|l| l.contains("does not report open connections")),
        "meshctl ztunnel-config connections: the first line must say that connections are not \
         reported:\n{text}"
    );
    ensure_row("meshctl ztunnel-config connections", &text, &[ns2, name])?;
    suite.log("meshctl ztunnel-config connections: says ztunnel does not report connections");

    let yaml = ctl
        .ok(&["ztunnel-config", "all", node, "-o", "yaml"])
        .await?
        .stdout;
    let doc: Value = serde_saphyr::from_str(&yaml)
        .with_context(|| format!("meshctl ztunnel-config all -o yaml is not YAML:\n{yaml}"))?;
    for key in ["workloads", "services", "policies", "certificates", "pods"] {
        anyhow::ensure!(
            doc[key].is_array(),
            "meshctl ztunnel-config all -o yaml: no list {key}"
        );
    }
    anyhow::ensure!(
        doc["version"] == VERSION && doc["config"]["node_name"] == node,
        "meshctl ztunnel-config all {node} -o yaml: version {:?}, node {:?}",
        doc["version"],
        doc["config"]["node_name"]
    );
    let table = ctl.ok(&["ztunnel-config", "all", node]).await?.stdout;
    for title in [
        "WORKLOADS",
        "SERVICES",
        "POLICIES",
        "CERTIFICATES",
        "CONNECTIONS",
    ] {
        anyhow::ensure!(
            table.lines().any(|l| l == title),
            "meshctl ztunnel-config all {node}: no section {title}:\n{table}"
        );
    }
    suite.log("meshctl ztunnel-config all: -o yaml parses, the table has every section");
    Ok(())
}

async fn release(suite: &Suite, ctl: &Ctl<'_>, probe: &Probe) -> anyhow::Result<()> {
    let (ns2, name) = (probe.ns.as_str(), probe.name.as_str());
    let out = ctl
        .json(&["dataplane", "release", ns2, "--timeout", "90s"])
        .await?;
    let pods = array(
        &out["pods"],
        "the pods of meshctl dataplane release -o json",
    )?;
    anyhow::ensure!(
        out["labelChange"] == "removed"
            && out["complete"] == Value::Bool(true)
            && pods.len() == 1
            && str_of(&pods[0], "name") == name
            && str_of(&pods[0], "status") == "released",
        "meshctl dataplane release {ns2}: expected the label removed and {name} released: {out:#}"
    );
    let ns_obj = Api::<Namespace>::all(suite.client.clone()).get(ns2).await?;
    anyhow::ensure!(
        !ns_obj
            .metadata
            .labels
            .unwrap_or_default()
            .contains_key(DATAPLANE_MODE),
        "meshctl dataplane release said removed, but namespace {ns2} keeps {DATAPLANE_MODE}"
    );
    let pod = workloads::pod(&suite.client, ns2, name)
        .await?
        .with_context(|| format!("pod {ns2}/{name} is gone"))?;
    anyhow::ensure!(
        workloads::annotation(&pod, REDIRECTION_ANNOTATION).is_none(),
        "meshctl dataplane release said released, but {name} is still annotated"
    );
    let again = ctl.ok(&["dataplane", "release", ns2]).await?.stdout;
    anyhow::ensure!(
        again.contains(&format!("namespace {ns2} has no label {DATAPLANE_MODE}")),
        "meshctl dataplane release, a second time:\n{again}"
    );
    suite.log(format!(
        "meshctl dataplane release {ns2}: label removed, {name} released and not annotated"
    ));
    Ok(())
}
