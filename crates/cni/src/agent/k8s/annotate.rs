//! The `ambient.istio.io/redirection=enabled` annotation: set (JSON merge patch) on each pod
//! once the agent enrolled it, removed once it released it.
//!
//! The wanted state is compared with what the watch shows ([`changes`]); only differences are
//! patched. A patch carries the pod's uid, which the API server refuses to change, so a pod
//! replaced by a namesake is never annotated for its predecessor.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use mesh_config::enrol::REDIRECTION_ENABLED;
use mesh_config::k8s_openapi::api::core::v1::Pod;
use mesh_config::{REDIRECTION_ANNOTATION, Snapshot};
use serde_json::{Value, json};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::agent::reconcile::EnrolledPods;
use crate::agent::state::PodKey;

/// Field manager of the agent's writes.
pub const FIELD_MANAGER: &str = "mesh-cni-agent";

/// How long a sent patch is given to show up in the watch before it is sent again.
const SETTLE: Duration = Duration::from_secs(30);
/// Delay before patches that failed are tried again.
const RETRY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum AnnotateError {
    #[error("annotating pod {pod}: {source}")]
    Patch { pod: PodKey, source: kube::Error },
    #[error("listing the pods of node {node}: {source}")]
    List { node: String, source: kube::Error },
}

/// One annotation to set or remove.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnotationChange {
    pub pod: PodKey,
    /// The pod's uid, checked by the API server.
    pub uid: Option<String>,
    /// Set (`true`) or remove.
    pub enable: bool,
}

/// The JSON merge patch setting (`enable`) or removing the annotation, with `uid` as a
/// precondition when given.
pub fn redirection_patch(uid: Option<&str>, enable: bool) -> Value {
    let value = if enable {
        json!(REDIRECTION_ENABLED)
    } else {
        Value::Null
    };
    let mut metadata = json!({ "annotations": { REDIRECTION_ANNOTATION: value } });
    if let Some(uid) = uid {
        metadata["uid"] = json!(uid);
    }
    json!({ "metadata": metadata })
}

fn key_of(pod: &Pod) -> PodKey {
    PodKey::new(
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default(),
    )
}

fn annotation(pod: &Pod) -> Option<&str> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(REDIRECTION_ANNOTATION)
        .map(String::as_str)
}

/// What to patch so that exactly the pods of `pods` enrolled (with the same uid) in `enrolled`
/// carry `ambient.istio.io/redirection=enabled`; the annotation is removed from the others,
/// whatever its value.
pub fn changes<'a>(
    pods: impl IntoIterator<Item = &'a Pod>,
    enrolled: &EnrolledPods,
) -> Vec<AnnotationChange> {
    pods.into_iter()
        .filter_map(|pod| {
            let key = key_of(pod);
            let want = enrolled
                .get(&key)
                .is_some_and(|uid| *uid == mesh_config::pod_uid(pod));
            let has = annotation(pod);
            let enable = match (want, has) {
                (true, Some(REDIRECTION_ENABLED)) | (false, None) => return None,
                (true, _) => true,
                (false, Some(_)) => false,
            };
            Some(AnnotationChange {
                pod: key,
                uid: pod.metadata.uid.clone(),
                enable,
            })
        })
        .collect()
}

/// Applies one change. `Ok(false)`: the pod is gone or was replaced, nothing to do.
pub async fn patch(client: &Client, change: &AnnotationChange) -> Result<bool, AnnotateError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &change.pod.namespace);
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    };
    let body = redirection_patch(change.uid.as_deref(), change.enable);
    match api
        .patch(&change.pod.name, &params, &Patch::Merge(&body))
        .await
    {
        Ok(_) => {
            info!(pod = %change.pod, enabled = change.enable, "redirection annotation updated");
            Ok(true)
        }
        Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409 | 422) => {
            debug!(pod = %change.pod, reason = %status.message, "pod gone or replaced; not annotated");
            Ok(false)
        }
        Err(source) => Err(AnnotateError::Patch {
            pod: change.pod.clone(),
            source,
        }),
    }
}

/// Removes the annotation from every pod of `node` that has it (read from the API server).
/// Returns how many pods were patched.
pub async fn clear_node(client: &Client, node: &str) -> Result<usize, AnnotateError> {
    let api: Api<Pod> = Api::all(client.clone());
    let list = api
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await
        .map_err(|source| AnnotateError::List {
            node: node.to_string(),
            source,
        })?;
    let mut cleared = 0;
    for change in changes(&list.items, &EnrolledPods::new()) {
        if patch(client, &change).await? {
            cleared += 1;
        }
    }
    Ok(cleared)
}

/// Keeps the annotations of the node's pods in line with the enrolled pods.
pub struct Annotator {
    client: Client,
    /// Patches sent and not yet seen in the watch: not sent again before [`SETTLE`].
    sent: HashMap<PodKey, (bool, Instant)>,
}

impl Annotator {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            sent: HashMap::new(),
        }
    }

    /// Patches the pods of `snap` whose annotation differs from `enrolled`; returns how many
    /// patches failed.
    pub async fn sync(&mut self, snap: &Snapshot, enrolled: &EnrolledPods) -> usize {
        let todo = changes(snap.pods(), enrolled);
        self.sent.retain(|k, _| todo.iter().any(|c| c.pod == *k));
        let mut failed = 0;
        for change in todo {
            if let Some((enable, at)) = self.sent.get(&change.pod)
                && *enable == change.enable
                && at.elapsed() < SETTLE
            {
                continue;
            }
            match patch(&self.client, &change).await {
                Ok(_) => {
                    self.sent
                        .insert(change.pod.clone(), (change.enable, Instant::now()));
                }
                Err(e) => {
                    warn!(error = %e, "cannot update the redirection annotation");
                    failed += 1;
                }
            }
        }
        failed
    }

    /// Syncs on every change of the pods or of the enrolled set, and periodically, until
    /// either channel closes.
    pub async fn run(
        mut self,
        mut config: watch::Receiver<Arc<Snapshot>>,
        mut enrolled: watch::Receiver<EnrolledPods>,
    ) {
        loop {
            let snap = config.borrow_and_update().clone();
            let pods = enrolled.borrow_and_update().clone();
            let failed = self.sync(&snap, &pods).await;
            let wait = if failed > 0 { RETRY } else { SETTLE };
            tokio::select! {
                r = config.changed() => if r.is_err() { return },
                r = enrolled.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str, name: &str, uid: &str, annotation: Option<&str>) -> Pod {
        let mut p: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns, "uid": uid}
        }))
        .expect("pod");
        if let Some(v) = annotation {
            p.metadata.annotations =
                Some([(REDIRECTION_ANNOTATION.to_string(), v.to_string())].into());
        }
        p
    }

    #[test]
    fn patches_set_and_remove_the_annotation_with_the_uid() {
        assert_eq!(
            serde_json::to_string(&redirection_patch(Some("u-1"), true)).expect("json"),
            r#"{"metadata":{"annotations":{"ambient.istio.io/redirection":"enabled"},"uid":"u-1"}}"#
        );
        assert_eq!(
            serde_json::to_string(&redirection_patch(Some("u-1"), false)).expect("json"),
            r#"{"metadata":{"annotations":{"ambient.istio.io/redirection":null},"uid":"u-1"}}"#
        );
        assert_eq!(
            serde_json::to_string(&redirection_patch(None, true)).expect("json"),
            r#"{"metadata":{"annotations":{"ambient.istio.io/redirection":"enabled"}}}"#
        );
    }

    #[test]
    fn only_differences_are_patched() {
        let pods = [
            pod("shop", "new", "u-new", None),
            pod("shop", "done", "u-done", Some("enabled")),
            pod("shop", "released", "u-rel", Some("enabled")),
            pod("shop", "odd", "u-odd", Some("disabled")),
            pod("shop", "plain", "u-plain", None),
            pod("shop", "replaced", "u-second", Some("enabled")),
        ];
        let enrolled: EnrolledPods = [
            (PodKey::new("shop", "new"), "u-new".to_string()),
            (PodKey::new("shop", "done"), "u-done".to_string()),
            (PodKey::new("shop", "odd"), "u-odd".to_string()),
            // Enrolled under the uid of an earlier pod of that name.
            (PodKey::new("shop", "replaced"), "u-first".to_string()),
        ]
        .into();
        let got: Vec<(String, bool)> = changes(&pods, &enrolled)
            .into_iter()
            .map(|c| (format!("{} {}", c.pod, c.uid.unwrap_or_default()), c.enable))
            .collect();
        assert_eq!(
            got,
            [
                ("shop/new u-new".to_string(), true),
                ("shop/released u-rel".to_string(), false),
                ("shop/odd u-odd".to_string(), true),
                ("shop/replaced u-second".to_string(), false),
            ]
        );
        assert!(
            changes(&pods[4..5], &EnrolledPods::new()).is_empty(),
            "nothing to remove"
        );
    }
}
