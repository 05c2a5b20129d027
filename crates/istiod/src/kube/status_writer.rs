//! Writing the `status` of configuration objects from what the model reported about them.
//!
//! The statuses already on the API server are read once at start, so that condition
//! transition times survive a change of leader; after each projection, only the statuses that
//! differ from what was last written are applied (server-side apply of the `status`
//! subresource, field manager `istiod`). Runs on the leader.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use mesh_config::{ObjectKey, Snapshot, WatchedKind};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::kube::FIELD_MANAGER;
use crate::model::WaypointStatus;
use crate::status::ControlPlaneStatus;

/// Longest wait for the projection of a snapshot before writing statuses anyway.
const PROJECTION_WAIT: Duration = Duration::from_secs(10);

/// One family of statuses (policies, routes).
pub trait StatusSource: Send + Sync + 'static {
    /// The kinds whose statuses it writes.
    fn kinds(&self) -> &'static [WatchedKind];

    /// The status every object of those kinds in `snapshot` should have; `written` holds the
    /// statuses as they are now, to keep transition times.
    fn statuses(
        &self,
        snapshot: &Snapshot,
        status: &ControlPlaneStatus,
        written: &BTreeMap<ObjectKey, Value>,
        now: Timestamp,
    ) -> BTreeMap<ObjectKey, Value>;
}

/// The reasons the model gave, by object (`Kind namespace/name`).
pub fn issues_by_object(status: &ControlPlaneStatus) -> BTreeMap<String, Vec<String>> {
    let mut issues: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for issue in status.issues() {
        if let Some(object) = issue.object {
            issues.entry(object).or_default().push(issue.reason);
        }
    }
    issues
}

/// The waypoints (`namespace/name`) naming each entry of `listed(waypoint)` (its policies, its
/// routes).
pub fn waypoints_listing(
    status: &ControlPlaneStatus,
    listed: impl Fn(&WaypointStatus) -> &[String],
) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for wp in status.waypoints() {
        for entry in listed(&wp) {
            out.entry(entry.clone())
                .or_default()
                .push(format!("{}/{}", wp.namespace, wp.name));
        }
    }
    out
}

/// The statuses on the API server of every object of `kinds`.
async fn written(client: &Client, kinds: &[WatchedKind]) -> BTreeMap<ObjectKey, Value> {
    let mut out = BTreeMap::new();
    for kind in kinds {
        let api = Api::<DynamicObject>::all_with(client.clone(), &kind.api_resource());
        match api.list(&ListParams::default()).await {
            Ok(list) => {
                for obj in list.items {
                    let key = ObjectKey::new(
                        kind.kind(),
                        obj.namespace().unwrap_or_default(),
                        obj.name_any(),
                    );
                    out.insert(key, obj.data.get("status").cloned().unwrap_or(Value::Null));
                }
            }
            Err(e) => tracing::debug!(resource = %kind.resource_label(), error = %e, "cannot list"),
        }
    }
    out
}

async fn apply(
    client: &Client,
    kind: WatchedKind,
    key: &ObjectKey,
    status: &Value,
) -> Result<(), kube::Error> {
    let ar = kind.api_resource();
    let body = json!({
        "apiVersion": ar.api_version,
        "kind": ar.kind,
        "metadata": {"name": key.name, "namespace": key.namespace},
        "status": status,
    });
    Api::<DynamicObject>::namespaced_with(client.clone(), &key.namespace, &ar)
        .patch_status(
            &key.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map(|_| ())
}

/// Waits (bounded) until the model of `generation` is projected.
async fn projected(status: &ControlPlaneStatus, generation: u64) {
    let deadline = tokio::time::Instant::now() + PROJECTION_WAIT;
    while status.projected().generation < generation && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writes `source`'s statuses after every projection until the task is aborted or the
/// configuration source stops.
pub async fn run<S: StatusSource>(
    client: Client,
    mut snapshot: watch::Receiver<Arc<Snapshot>>,
    status: Arc<ControlPlaneStatus>,
    source: S,
) {
    let kinds = source.kinds();
    let mut current = written(&client, kinds).await;
    loop {
        let snap = snapshot.borrow_and_update().clone();
        projected(&status, snap.generation).await;
        let wanted = source.statuses(&snap, &status, &current, Timestamp::now());
        current.retain(|k, _| wanted.contains_key(k));
        for (key, next) in wanted {
            if current.get(&key) == Some(&next) {
                continue;
            }
            let Some(kind) = kinds.iter().copied().find(|k| k.kind() == key.kind) else {
                continue;
            };
            match apply(&client, kind, &key, &next).await {
                Ok(()) => {
                    tracing::debug!(object = %key, "status written");
                    current.insert(key, next);
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    tracing::debug!(object = %key, "no status written: the object (or its status subresource) is gone");
                }
                Err(e) => tracing::warn!(object = %key, error = %e, "cannot write the status"),
            }
        }
        if snapshot.changed().await.is_err() {
            return;
        }
    }
}
