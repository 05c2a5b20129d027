//! Why the agent is being stopped: an uninstall, or a restart (upgrade, eviction, node drain,
//! a changed setting).
//!
//! The agent's pod is owned by its DaemonSet. When that DaemonSet is gone, is being deleted, or
//! is a different object of the same name than the one owning the pod, the mesh is being
//! uninstalled. So is it when the API server refuses the agent's own credentials (401/403):
//! `helm uninstall` deletes the ServiceAccount and its RBAC right after the DaemonSet, usually
//! before the pods receive SIGTERM. Anything else (the DaemonSet in place, the agent's pod
//! unknown, the API server unreachable) is a restart: enrolled pods must stay enrolled.

use std::fmt;
use std::time::Duration;

use kube::Client;
use kube::api::Api;
use mesh_config::k8s_openapi::api::apps::v1::DaemonSet;
use mesh_config::k8s_openapi::api::core::v1::Pod;
use mesh_config::k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

/// How long each API call of [`detect`] may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// What kind of stop this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitKind {
    Uninstall,
    Restart,
}

/// The verdict and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exit {
    pub kind: ExitKind,
    pub reason: String,
}

impl Exit {
    fn uninstall(reason: impl Into<String>) -> Self {
        Self {
            kind: ExitKind::Uninstall,
            reason: reason.into(),
        }
    }

    pub fn restart(reason: impl Into<String>) -> Self {
        Self {
            kind: ExitKind::Restart,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            ExitKind::Uninstall => "uninstall",
            ExitKind::Restart => "restart",
        };
        write!(f, "{kind}: {}", self.reason)
    }
}

/// The outcome of reading one object.
#[derive(Clone, Debug)]
pub enum Lookup<T> {
    Found(T),
    NotFound,
    /// 401 or 403: the agent's credentials or permissions are gone.
    Refused(String),
    /// Any other failure (timeout, connection refused, 5xx).
    Failed(String),
}

impl<T> Lookup<T> {
    fn of(result: Result<Result<T, kube::Error>, tokio::time::error::Elapsed>) -> Self {
        match result {
            Ok(Ok(obj)) => Lookup::Found(obj),
            Ok(Err(kube::Error::Api(s))) if s.code == 404 => Lookup::NotFound,
            Ok(Err(kube::Error::Api(s))) if matches!(s.code, 401 | 403) => {
                Lookup::Refused(format!("{} ({})", s.message, s.code))
            }
            Ok(Err(e)) => Lookup::Failed(e.to_string()),
            Err(_) => Lookup::Failed("the API server did not answer in time".into()),
        }
    }
}

/// The DaemonSet controlling `pod`, from its owner references.
pub fn daemonset_owner(pod: &Pod) -> Option<&OwnerReference> {
    pod.metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.kind == "DaemonSet" && o.api_version.starts_with("apps/"))
}

/// First step: the agent's own pod. `Ok`: its DaemonSet, to look at next.
pub fn judge_pod(pod: Lookup<Pod>) -> Result<OwnerReference, Exit> {
    match pod {
        Lookup::Found(pod) => daemonset_owner(&pod)
            .cloned()
            .ok_or_else(|| Exit::restart("the agent's pod has no DaemonSet owner")),
        Lookup::NotFound => Err(Exit::restart("the agent's pod is not found")),
        Lookup::Refused(why) => Err(Exit::uninstall(format!(
            "the API server refuses the agent's credentials: {why}"
        ))),
        Lookup::Failed(why) => Err(Exit::restart(format!("cannot read the agent's pod: {why}"))),
    }
}

/// Second step: the DaemonSet `owner` names.
pub fn judge_daemonset(owner: &OwnerReference, ds: Lookup<DaemonSet>) -> Exit {
    let name = &owner.name;
    match ds {
        Lookup::Found(ds) if ds.metadata.uid.as_deref() != Some(owner.uid.as_str()) => {
            Exit::uninstall(format!("DaemonSet {name} was deleted (and created again)"))
        }
        Lookup::Found(ds) if ds.metadata.deletion_timestamp.is_some() => {
            Exit::uninstall(format!("DaemonSet {name} is being deleted"))
        }
        Lookup::Found(_) => Exit::restart(format!("DaemonSet {name} is in place")),
        Lookup::NotFound => Exit::uninstall(format!("DaemonSet {name} is deleted")),
        Lookup::Refused(why) => Exit::uninstall(format!(
            "the API server refuses the agent's credentials: {why}"
        )),
        Lookup::Failed(why) => Exit::restart(format!("cannot read DaemonSet {name}: {why}")),
    }
}

/// Decides for the agent's pod `namespace/pod_name`.
pub async fn detect(client: &Client, namespace: &str, pod_name: &str) -> Exit {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pod = Lookup::of(tokio::time::timeout(LOOKUP_TIMEOUT, pods.get(pod_name)).await);
    let owner = match judge_pod(pod) {
        Ok(owner) => owner,
        Err(exit) => return exit,
    };
    let sets: Api<DaemonSet> = Api::namespaced(client.clone(), namespace);
    let ds = Lookup::of(tokio::time::timeout(LOOKUP_TIMEOUT, sets.get(&owner.name)).await);
    judge_daemonset(&owner, ds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn owned_pod() -> Pod {
        serde_json::from_value(json!({"metadata": {
        "name": "cni-node-x", "namespace": "istio-system",
        "ownerReferences": [
            {"apiVersion": "v1", "kind": "Node", "name": "n", "uid": "n-1"},
            {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "istio-cni-node",
             "uid": "ds-1", "controller": true}
        ]}}))
        .expect("pod")
    }

    fn ds(uid: &str, deleting: bool) -> DaemonSet {
        let mut meta = json!({"name": "istio-cni-node", "namespace": "istio-system", "uid": uid});
        if deleting {
            meta["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        serde_json::from_value(json!({ "metadata": meta })).expect("daemonset")
    }

    #[test]
    fn the_pod_leads_to_its_daemonset() {
        let owner = judge_pod(Lookup::Found(owned_pod())).expect("owner");
        assert_eq!(
            (owner.name.as_str(), owner.uid.as_str()),
            ("istio-cni-node", "ds-1")
        );
        let mut bare = owned_pod();
        bare.metadata.owner_references = None;
        let exit = judge_pod(Lookup::Found(bare)).expect_err("no owner");
        assert_eq!(exit.kind, ExitKind::Restart);
        assert_eq!(
            judge_pod(Lookup::Refused("Unauthorized (401)".into()))
                .expect_err("refused")
                .kind,
            ExitKind::Uninstall
        );
        assert_eq!(
            judge_pod(Lookup::Failed("connection refused".into()))
                .expect_err("failed")
                .kind,
            ExitKind::Restart
        );
    }

    #[test]
    fn only_a_deleted_daemonset_is_an_uninstall() {
        let owner = judge_pod(Lookup::Found(owned_pod())).expect("owner");
        let kind = |l| judge_daemonset(&owner, l).kind;
        assert_eq!(kind(Lookup::Found(ds("ds-1", false))), ExitKind::Restart);
        assert_eq!(kind(Lookup::Found(ds("ds-1", true))), ExitKind::Uninstall);
        assert_eq!(kind(Lookup::Found(ds("ds-2", false))), ExitKind::Uninstall);
        assert_eq!(kind(Lookup::NotFound), ExitKind::Uninstall);
        assert_eq!(
            kind(Lookup::Refused("forbidden".into())),
            ExitKind::Uninstall
        );
        assert_eq!(kind(Lookup::Failed("timeout".into())), ExitKind::Restart);
        assert_eq!(
            judge_daemonset(&owner, Lookup::NotFound).to_string(),
            "uninstall: DaemonSet istio-cni-node is deleted"
        );
    }
}
