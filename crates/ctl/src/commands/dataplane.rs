//! `meshctl dataplane enroll|release NAMESPACE`: set or remove `istio.io/dataplane-mode=ambient`
//! on the namespace, then wait until every pod reports enrolled or released.

use std::time::Instant;

use anyhow::bail;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::ListParams;
use mesh_config::enrol::{DATAPLANE_MODE_AMBIENT, REDIRECTION_ENABLED};
use mesh_config::{DATAPLANE_MODE, REDIRECTION_ANNOTATION, pod_enrolled, pod_host_network};
use serde::Serialize;

use crate::cli::{DataplaneArgs, DataplaneCommand};
use crate::cni_status::{self, AgentStatus, PodReport};
use crate::context::{Ctx, Mode};
use crate::kube_client::KubeEnv;
use crate::local::LocalEnv;
use crate::output::{self, Table};

use super::{EXIT_FAILED, EXIT_OK, POLL_INTERVAL};

pub async fn run(ctx: &Ctx, cmd: &DataplaneCommand) -> anyhow::Result<u8> {
    let (args, enroll) = match cmd {
        DataplaneCommand::Enroll(a) => (a, true),
        DataplaneCommand::Release(a) => (a, false),
    };
    match &ctx.mode {
        Mode::Local(env) => run_local(ctx, env, args, enroll).await,
        Mode::Kube(s) => run_kube(ctx, &Ctx::kube(s).await?, args, enroll).await,
    }
}

/// What a pod should end up as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
enum Want {
    Enrolled,
    Released,
    /// Host-network pods are never enrolled.
    HostNetwork,
    /// Not scheduled: no node agent serves it.
    Unscheduled,
    /// Being deleted: the node agent no longer enrolls it.
    Terminating,
}

/// One pod's outcome.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PodRow {
    name: String,
    node: String,
    want: Want,
    /// `enrolled`, `released`, `pending`, `waiting`, `skipped`, `not observed`.
    status: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    detail: String,
    done: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Outcome {
    namespace: String,
    label: String,
    /// `set`, `removed`, `unchanged`.
    label_change: String,
    observed: bool,
    complete: bool,
    pods: Vec<PodRow>,
}

fn want_of(pod: &Pod, ns: Option<&Namespace>) -> Want {
    if pod.metadata.deletion_timestamp.is_some() {
        Want::Terminating
    } else if pod_host_network(pod) {
        Want::HostNetwork
    } else if pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_none_or(str::is_empty)
    {
        Want::Unscheduled
    } else if pod_enrolled(pod, ns) {
        Want::Enrolled
    } else {
        Want::Released
    }
}

fn skipped_row(name: String, node: String, want: Want) -> Option<PodRow> {
    let detail = match want {
        Want::HostNetwork => "host-network pods are never enrolled",
        Want::Unscheduled => "no spec.nodeName: no node agent serves it",
        Want::Terminating => "terminating: the pod is being deleted",
        _ => return None,
    };
    Some(PodRow {
        name,
        node,
        want,
        status: "skipped".into(),
        detail: detail.into(),
        done: true,
    })
}

fn label_text(enroll: bool) -> String {
    if enroll {
        format!("{DATAPLANE_MODE}={DATAPLANE_MODE_AMBIENT}")
    } else {
        DATAPLANE_MODE.to_string()
    }
}

fn print_outcome(ctx: &Ctx, o: &Outcome, enroll: bool) -> anyhow::Result<()> {
    output::print(ctx.output, o, || {
        let mut text = match (o.label_change.as_str(), enroll) {
            ("unchanged", true) => {
                format!("namespace {} already labelled {}\n", o.namespace, o.label)
            }
            ("unchanged", false) => format!("namespace {} has no label {}\n", o.namespace, o.label),
            (_, true) => format!("namespace {} labelled {}\n", o.namespace, o.label),
            (_, false) => format!("namespace {}: label {} removed\n", o.namespace, o.label),
        };
        if o.pods.is_empty() {
            text.push_str(&format!("No pods in namespace {}.\n", o.namespace));
            return text;
        }
        let mut t = Table::new(["POD", "NODE", "EXPECTED", "STATUS", "DETAIL"]);
        for p in &o.pods {
            let want = match p.want {
                Want::Enrolled => "enrolled",
                Want::Released => "released",
                Want::HostNetwork | Want::Unscheduled | Want::Terminating => "-",
            };
            t.row([
                p.name.clone(),
                p.node.clone(),
                want.into(),
                p.status.clone(),
                p.detail.clone(),
            ]);
        }
        text.push_str(&t.render());
        text
    })?;
    Ok(())
}

/// Prints the outcome and the verdict; the exit code.
fn conclude(ctx: &Ctx, o: &Outcome, enroll: bool, args: &DataplaneArgs) -> anyhow::Result<u8> {
    print_outcome(ctx, o, enroll)?;
    if o.complete || !o.observed {
        return Ok(EXIT_OK);
    }
    let late: Vec<&str> = o
        .pods
        .iter()
        .filter(|p| !p.done)
        .map(|p| p.name.as_str())
        .collect();
    eprintln!(
        "error: {} of {} pods of namespace {} did not report {} within {:?}: {}. Check the node \
         agent (cni-agent) and ztunnel of their nodes",
        late.len(),
        o.pods.len(),
        o.namespace,
        if enroll { "enrolled" } else { "released" },
        args.timeout,
        late.join(", ")
    );
    Ok(EXIT_FAILED)
}

async fn run_local(
    ctx: &Ctx,
    env: &LocalEnv,
    args: &DataplaneArgs,
    enroll: bool,
) -> anyhow::Result<u8> {
    let ns = &args.namespace;
    let snap = env.snapshot()?;
    let had_namespace = snap.namespace(ns).is_some();
    if !had_namespace
        && !snap
            .pods()
            .any(|p| p.metadata.namespace.as_deref() == Some(ns))
        && enroll
    {
        eprintln!(
            "note: namespace {ns} has no manifest and no pods in {}; writing a Namespace manifest",
            env.config_dir.display()
        );
    }
    let change = env.set_namespace_label(
        &snap,
        ns,
        DATAPLANE_MODE,
        enroll.then_some(DATAPLANE_MODE_AMBIENT),
    )?;
    if change.edit.reformatted {
        eprintln!(
            "note: the Namespace document was rewritten from its parsed form (its layout was too \
             unusual to edit in place); its comments are gone"
        );
    }
    let label_change = match (change.edit.changed, enroll) {
        (false, _) => "unchanged",
        (true, true) => "set",
        (true, false) => "removed",
    };
    let observed = !env.cni_status.is_empty() && !args.no_wait;
    if !observed && !args.no_wait {
        eprintln!(
            "warning: not waiting: no --cni-status given, so the node agents' reports cannot be \
             read; pass each node's status.json to see the pods enrolled"
        );
    }
    let deadline = Instant::now() + args.timeout;
    loop {
        let snap = env.snapshot()?;
        let statuses: Option<Vec<AgentStatus>> = if observed {
            Some(env.cni_statuses()?)
        } else {
            None
        };
        let why = if args.no_wait {
            "--no-wait"
        } else {
            "no --cni-status given"
        };
        let pods = local_rows(&snap, ns, statuses.as_deref(), why);
        let complete = pods.iter().all(|p| p.done);
        let outcome = Outcome {
            namespace: ns.clone(),
            label: label_text(enroll),
            label_change: label_change.into(),
            observed,
            complete,
            pods,
        };
        if !observed || complete || Instant::now() >= deadline {
            return conclude(ctx, &outcome, enroll, args);
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

fn local_rows(
    snap: &mesh_config::Snapshot,
    ns: &str,
    statuses: Option<&[AgentStatus]>,
    unobserved: &str,
) -> Vec<PodRow> {
    let namespace = snap.namespace(ns);
    let mut rows = Vec::new();
    for pod in snap
        .pods()
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns))
    {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        let want = want_of(pod, namespace);
        if let Some(row) = skipped_row(name.clone(), node.clone(), want) {
            rows.push(row);
            continue;
        }
        let Some(statuses) = statuses else {
            rows.push(PodRow {
                name,
                node,
                want,
                status: "not observed".into(),
                detail: unobserved.into(),
                done: false,
            });
            continue;
        };
        if !statuses.iter().any(|s| s.node == node) {
            rows.push(PodRow {
                name,
                node: node.clone(),
                want,
                status: "not observed".into(),
                detail: format!("no --cni-status for node {node}"),
                done: true,
            });
            continue;
        }
        let report = cni_status::report(statuses, ns, &name);
        let (status, detail, done) = match (&report, want) {
            (PodReport::Enrolled { .. }, Want::Enrolled) => ("enrolled", String::new(), true),
            (PodReport::Enrolled { .. }, _) => (
                "waiting",
                "the node agent still lists it enrolled".into(),
                false,
            ),
            (PodReport::Pending { reason, .. }, Want::Enrolled) => {
                ("pending", reason.clone(), false)
            }
            (PodReport::NotListed, Want::Enrolled) => (
                "waiting",
                "the node agent does not list it yet".into(),
                false,
            ),
            (_, _) => ("released", String::new(), true),
        };
        rows.push(PodRow {
            name,
            node,
            want,
            status: status.into(),
            detail,
            done,
        });
    }
    rows
}

async fn run_kube(
    ctx: &Ctx,
    kube: &KubeEnv,
    args: &DataplaneArgs,
    enroll: bool,
) -> anyhow::Result<u8> {
    let ns = &args.namespace;
    let Some(before) = kube.get_namespace(ns).await? else {
        bail!("namespace {ns} does not exist");
    };
    if enroll
        && before
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("istio-injection"))
            .is_some_and(|v| v == "enabled")
    {
        eprintln!(
            "warning: namespace {ns} is also labelled istio-injection=enabled (sidecar mode); \
             ambient does not capture pods that have a sidecar"
        );
    }
    let had = mesh_config::namespace_enrolled(&before);
    kube.label_namespace(
        ns,
        &[(DATAPLANE_MODE, enroll.then_some(DATAPLANE_MODE_AMBIENT))],
    )
    .await?;
    let label_change = match (had == enroll, enroll) {
        (true, _) => "unchanged",
        (false, true) => "set",
        (false, false) => "removed",
    };
    let deadline = Instant::now() + args.timeout;
    loop {
        let namespace = kube.get_namespace(ns).await?;
        let pods = kube.pods(ns, &ListParams::default()).await?;
        let rows = kube_rows(&pods, namespace.as_ref());
        let complete = rows.iter().all(|p| p.done);
        let outcome = Outcome {
            namespace: ns.clone(),
            label: label_text(enroll),
            label_change: label_change.into(),
            observed: !args.no_wait,
            complete,
            pods: rows,
        };
        if args.no_wait || complete || Instant::now() >= deadline {
            return conclude(ctx, &outcome, enroll, args);
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

fn kube_rows(pods: &[Pod], ns: Option<&Namespace>) -> Vec<PodRow> {
    let mut rows = Vec::new();
    for pod in pods {
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .unwrap_or("");
        if matches!(phase, "Succeeded" | "Failed") {
            continue;
        }
        let name = pod.metadata.name.clone().unwrap_or_default();
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        let want = want_of(pod, ns);
        if let Some(row) = skipped_row(name.clone(), node.clone(), want) {
            rows.push(row);
            continue;
        }
        let redirected = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REDIRECTION_ANNOTATION))
            .is_some_and(|v| v == REDIRECTION_ENABLED);
        let (status, detail, done) = match (redirected, want) {
            (true, Want::Enrolled) => ("enrolled", String::new(), true),
            (false, Want::Enrolled) => (
                "waiting",
                format!("no {REDIRECTION_ANNOTATION}={REDIRECTION_ENABLED} yet"),
                false,
            ),
            (true, _) => (
                "waiting",
                format!("still annotated {REDIRECTION_ANNOTATION}={REDIRECTION_ENABLED}"),
                false,
            ),
            (false, _) => ("released", String::new(), true),
        };
        rows.push(PodRow {
            name,
            node,
            want,
            status: status.into(),
            detail,
            done,
        });
    }
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_config::Snapshot;

    const MANIFESTS: &str = "\
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: shop}
spec: {nodeName: n1}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: shop, labels: {istio.io/dataplane-mode: none}}
spec: {nodeName: n1}
---
apiVersion: v1
kind: Pod
metadata: {name: c, namespace: shop}
spec: {nodeName: n2}
---
apiVersion: v1
kind: Pod
metadata: {name: h, namespace: shop}
spec: {nodeName: n1, hostNetwork: true}
";

    #[test]
    fn local_rows_follow_the_agent_reports() {
        let snap = Snapshot::from_yaml("m.yaml", MANIFESTS);
        let statuses = vec![AgentStatus {
            node: "n1".into(),
            enrolled: vec![crate::cni_status::EnrolledPod {
                namespace: "shop".into(),
                name: "a".into(),
                ..Default::default()
            }],
            ..Default::default()
        }];
        let rows = local_rows(&snap, "shop", Some(&statuses), "");
        let by = |n: &str| rows.iter().find(|r| r.name == n).expect(n).clone();
        assert_eq!((by("a").status.as_str(), by("a").done), ("enrolled", true));
        assert_eq!(
            (by("b").want, by("b").status.as_str()),
            (Want::Released, "released")
        );
        assert_eq!(by("c").status, "not observed");
        assert!(by("c").detail.contains("n2"));
        assert_eq!(
            (by("h").want, by("h").status.as_str()),
            (Want::HostNetwork, "skipped")
        );
    }

    #[test]
    fn kube_rows_do_not_wait_for_terminating_pods() {
        let snap = Snapshot::from_yaml("m.yaml", MANIFESTS);
        let ns = snap.namespace("shop");
        let mut pods: Vec<Pod> = snap.pods().cloned().collect();
        let annotated = pods
            .iter_mut()
            .find(|p| p.metadata.name.as_deref() == Some("c"));
        annotated.expect("pod c").metadata.annotations = Some(
            [(
                REDIRECTION_ANNOTATION.to_string(),
                REDIRECTION_ENABLED.to_string(),
            )]
            .into(),
        );
        let going = pods
            .iter_mut()
            .find(|p| p.metadata.name.as_deref() == Some("a"));
        going.expect("pod a").metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        let rows = kube_rows(&pods, ns);
        let by = |n: &str| rows.iter().find(|r| r.name == n).expect(n).clone();
        assert_eq!(
            (by("a").want, by("a").status.as_str(), by("a").done),
            (Want::Terminating, "skipped", true)
        );
        assert_eq!((by("c").status.as_str(), by("c").done), ("enrolled", true));
        assert_eq!(by("b").status, "released");
        assert!(rows.iter().all(|r| r.done), "{rows:?}");
    }
}
