//! Readiness of Deployments, DaemonSets and pods, as `kubectl rollout status` judges it, with
//! a one-line account of what is not ready for messages.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, ListParams};

use super::K8sError;

/// Pods of `namespace` matching the label selector `selector` (empty: all).
pub async fn pods(client: &Client, namespace: &str, selector: &str) -> Result<Vec<Pod>, K8sError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let lp = if selector.is_empty() {
        ListParams::default()
    } else {
        ListParams::default().labels(selector)
    };
    api.list(&lp)
        .await
        .map(|l| l.items)
        .map_err(|e| K8sError::api(format!("list pods {selector:?} in {namespace}"), e))
}

/// One pod, if it exists.
pub async fn pod(client: &Client, namespace: &str, name: &str) -> Result<Option<Pod>, K8sError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    api.get_opt(name)
        .await
        .map_err(|e| K8sError::api(format!("get pod {namespace}/{name}"), e))
}

pub fn name(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap_or("?")
}

pub fn uid(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or("")
}

pub fn ip(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.pod_ip.as_deref()
}

pub fn node(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref()?.node_name.as_deref()
}

pub fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// Whether the pod's `Ready` condition is true.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Restarts of all its containers.
pub fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).sum())
        .unwrap_or(0)
}

/// `name phase ready=... restarts=N waiting=reason`, for messages.
pub fn summary(pod: &Pod) -> String {
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("?");
    let waiting: Vec<String> = status
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| {
            cs.iter()
                .filter_map(|c| {
                    let st = c.state.as_ref()?;
                    if let Some(w) = &st.waiting {
                        Some(format!(
                            "{} waiting: {}",
                            c.name,
                            w.reason.as_deref().unwrap_or("?")
                        ))
                    } else {
                        st.terminated.as_ref().map(|t| {
                            format!(
                                "{} terminated: {} (exit {})",
                                c.name,
                                t.reason.as_deref().unwrap_or("?"),
                                t.exit_code
                            )
                        })
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let mut s = format!(
        "{} {phase} ready={} restarts={}",
        name(pod),
        is_ready(pod),
        restarts(pod)
    );
    if !waiting.is_empty() {
        s.push_str(&format!(" [{}]", waiting.join("; ")));
    }
    s
}

/// Ok when the Deployment has all its replicas updated and ready; else what is missing.
pub async fn deployment_ready(client: &Client, namespace: &str, name: &str) -> Result<(), String> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let d = api
        .get_opt(name)
        .await
        .map_err(|e| format!("get deployment {namespace}/{name}: {e}"))?
        .ok_or_else(|| format!("deployment {namespace}/{name} does not exist"))?;
    let want = d.spec.replicas.unwrap_or(1);
    let st = d.status.unwrap_or_default();
    let (ready, updated) = (
        st.ready_replicas.unwrap_or(0),
        st.updated_replicas.unwrap_or(0),
    );
    let observed = st.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
    if observed && ready >= want && updated >= want {
        Ok(())
    } else {
        Err(format!(
            "deployment {namespace}/{name}: {ready}/{want} ready, {updated} updated"
        ))
    }
}

/// Ok when the DaemonSet runs a ready, updated pod on every node it should; else what is
/// missing.
pub async fn daemonset_ready(client: &Client, namespace: &str, name: &str) -> Result<(), String> {
    let api: Api<DaemonSet> = Api::namespaced(client.clone(), namespace);
    let d = api
        .get_opt(name)
        .await
        .map_err(|e| format!("get daemonset {namespace}/{name}: {e}"))?
        .ok_or_else(|| format!("daemonset {namespace}/{name} does not exist"))?;
    let st = d.status.unwrap_or_default();
    let want = st.desired_number_scheduled;
    let ready = st.number_ready;
    let updated = st.updated_number_scheduled.unwrap_or(0);
    let observed = st.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
    if observed && want > 0 && ready == want && updated == want {
        Ok(())
    } else {
        Err(format!(
            "daemonset {namespace}/{name}: {ready}/{want} ready, {updated} updated"
        ))
    }
}

/// Ok when every pod matching `selector` is ready (and there are `at_least` of them); else the
/// state of those that are not.
pub async fn pods_ready(
    client: &Client,
    namespace: &str,
    selector: &str,
    at_least: usize,
) -> Result<Vec<Pod>, String> {
    let list = pods(client, namespace, selector)
        .await
        .map_err(|e| e.to_string())?;
    let not_ready: Vec<String> = list.iter().filter(|p| !is_ready(p)).map(summary).collect();
    if list.len() < at_least {
        return Err(format!(
            "{} of {at_least} pods {selector:?} in {namespace} exist",
            list.len()
        ));
    }
    if not_ready.is_empty() {
        Ok(list)
    } else {
        Err(format!("not ready: {}", not_ready.join(", ")))
    }
}
