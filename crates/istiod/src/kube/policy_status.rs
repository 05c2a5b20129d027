//! Status conditions on AuthorizationPolicies and PeerAuthentications, from what the model
//! reported about each one (Istio writes `status.conditions` on these CRDs the same way):
//!
//! - `ZtunnelAccepted` on policies ztunnel enforces (no `targetRefs`) and on
//!   PeerAuthentications: `True`/`Accepted` when taken as written, `False`/`UnsupportedValue`
//!   with the model's reasons when something is not enforced as written (L7 attributes,
//!   invalid values, a scope already taken, ...);
//! - `WaypointAccepted` on policies with `targetRefs`: `True`/`Accepted` naming the waypoints
//!   that enforce it, `False`/`TargetNotFound` when no waypoint does.
//!
//! Runs on the leader, after each projection; writes only what changed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use mesh_config::objects::kind;
use mesh_config::{Object, ObjectKey, Snapshot, WatchedKind};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::kube::FIELD_MANAGER;
use crate::kube::conditions::{self, Wanted};
use crate::status::ControlPlaneStatus;

/// Condition type on objects ztunnel enforces.
pub const ZTUNNEL_ACCEPTED: &str = "ZtunnelAccepted";
/// Condition type on policies attached to waypoints.
pub const WAYPOINT_ACCEPTED: &str = "WaypointAccepted";
/// Longest wait for the projection of a snapshot before writing statuses anyway.
const PROJECTION_WAIT: Duration = Duration::from_secs(10);

/// What decides one object's condition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyFacts {
    /// The policy has `targetRefs`: waypoints enforce it, not ztunnel.
    pub targets_waypoint: bool,
    /// Waypoints (`namespace/name`) that enforce it.
    pub enforced_by: Vec<String>,
    /// What the model reported about it.
    pub issues: Vec<String>,
}

/// The condition an object gets.
pub fn wanted(facts: &PolicyFacts) -> Wanted {
    let notes = facts.issues.join("; ");
    if facts.targets_waypoint {
        if facts.enforced_by.is_empty() {
            let mut message = "no waypoint enforces it: its targetRefs name no waypoint, or \
                               a Service without one"
                .to_string();
            if !notes.is_empty() {
                message = format!("{message}; {notes}");
            }
            return Wanted::new(WAYPOINT_ACCEPTED, false, "TargetNotFound", message);
        }
        let mut message = format!("bound to waypoint {}", facts.enforced_by.join(", "));
        if !notes.is_empty() {
            message = format!("{message}; {notes}");
        }
        return Wanted::new(WAYPOINT_ACCEPTED, true, "Accepted", message);
    }
    if notes.is_empty() {
        Wanted::new(ZTUNNEL_ACCEPTED, true, "Accepted", "attached to ztunnel")
    } else {
        Wanted::new(ZTUNNEL_ACCEPTED, false, "UnsupportedValue", notes)
    }
}

/// The `status` written on an object.
pub fn status_of(
    facts: &PolicyFacts,
    generation: Option<i64>,
    previous: &[Condition],
    now: Timestamp,
) -> Vec<Condition> {
    conditions::merge(vec![wanted(facts)], previous, generation, now)
}

/// The facts of every policy of `snapshot`, from the model's issues and waypoints.
pub fn facts(
    snapshot: &Snapshot,
    status: &ControlPlaneStatus,
) -> BTreeMap<ObjectKey, (Option<i64>, PolicyFacts)> {
    let mut issues: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for issue in status.issues() {
        if let Some(object) = issue.object {
            issues.entry(object).or_default().push(issue.reason);
        }
    }
    let mut enforced: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for wp in status.waypoints() {
        for policy in &wp.policies {
            enforced
                .entry(policy.clone())
                .or_default()
                .push(format!("{}/{}", wp.namespace, wp.name));
        }
    }
    let mut out = BTreeMap::new();
    for obj in snapshot.objects.values() {
        let targets_waypoint = match obj {
            Object::AuthorizationPolicy(ap) => ap.spec.all_target_refs().next().is_some(),
            Object::PeerAuthentication(_) => false,
            _ => continue,
        };
        let key = obj.key();
        let meta = obj.metadata();
        let facts = PolicyFacts {
            targets_waypoint,
            enforced_by: enforced
                .get(&format!("{}/{}", key.namespace, key.name))
                .cloned()
                .unwrap_or_default(),
            issues: issues.get(&key.to_string()).cloned().unwrap_or_default(),
        };
        out.insert(key, (meta.generation, facts));
    }
    out
}

fn kind_of(key: &ObjectKey) -> WatchedKind {
    if key.kind == kind::PEER_AUTHENTICATION {
        WatchedKind::PeerAuthentication
    } else {
        WatchedKind::AuthorizationPolicy
    }
}

/// The conditions already written, so that transition times survive leader changes.
async fn written_conditions(client: &Client) -> BTreeMap<ObjectKey, Vec<Condition>> {
    let mut out = BTreeMap::new();
    for kind in [
        WatchedKind::AuthorizationPolicy,
        WatchedKind::PeerAuthentication,
    ] {
        let api = Api::<DynamicObject>::all_with(client.clone(), &kind.api_resource());
        match api.list(&ListParams::default()).await {
            Ok(list) => {
                for obj in list.items {
                    let key = ObjectKey::new(
                        kind.kind(),
                        obj.namespace().unwrap_or_default(),
                        obj.name_any(),
                    );
                    out.insert(key, conditions::read(obj.data.get("status")));
                }
            }
            Err(e) => tracing::debug!(resource = %kind.resource_label(), error = %e, "cannot list"),
        }
    }
    out
}

async fn write(
    client: &Client,
    key: &ObjectKey,
    conditions: &[Condition],
    generation: Option<i64>,
) -> Result<(), kube::Error> {
    let ar = kind_of(key).api_resource();
    let mut status = json!({ "conditions": conditions });
    if let Some(g) = generation {
        status["observedGeneration"] = Value::from(g);
    }
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
pub(crate) async fn projected(status: &ControlPlaneStatus, generation: u64) {
    let deadline = tokio::time::Instant::now() + PROJECTION_WAIT;
    while status.projected().generation < generation && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writes statuses after every projection until the task is aborted or the source stops.
pub async fn run(
    client: Client,
    mut snapshot: watch::Receiver<Arc<Snapshot>>,
    status: Arc<ControlPlaneStatus>,
) {
    let mut written = written_conditions(&client).await;
    loop {
        let snap = snapshot.borrow_and_update().clone();
        projected(&status, snap.generation).await;
        let now = Timestamp::now();
        let all = facts(&snap, &status);
        written.retain(|k, _| all.contains_key(k));
        for (key, (generation, facts)) in &all {
            let previous = written.get(key).cloned().unwrap_or_default();
            let next = status_of(facts, *generation, &previous, now);
            if next == previous {
                continue;
            }
            match write(&client, key, &next, *generation).await {
                Ok(()) => {
                    tracing::debug!(object = %key, condition = ?next.first().map(|c| (&c.type_, &c.status)), "status written");
                    written.insert(key.clone(), next);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        Timestamp::from_second(1_700_000_000).expect("valid")
    }

    #[test]
    fn ztunnel_policies_report_what_is_not_enforced() {
        let ok = PolicyFacts::default();
        let c = &status_of(&ok, Some(4), &[], now())[0];
        assert_eq!(
            (c.type_.as_str(), c.status.as_str(), c.reason.as_str()),
            ("ZtunnelAccepted", "True", "Accepted")
        );
        assert_eq!(c.observed_generation, Some(4));

        let l7 = PolicyFacts {
            issues: vec![
                "rule 1 uses L7 attributes (to.operation.methods): ztunnel cannot enforce it"
                    .into(),
                "selector is ignored".into(),
            ],
            ..Default::default()
        };
        let c = &status_of(&l7, Some(5), &[], now())[0];
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "UnsupportedValue")
        );
        assert_eq!(
            c.message,
            "rule 1 uses L7 attributes (to.operation.methods): ztunnel cannot enforce it; \
             selector is ignored"
        );
    }

    #[test]
    fn waypoint_policies_name_their_waypoints_or_report_none() {
        let bound = PolicyFacts {
            targets_waypoint: true,
            enforced_by: vec!["demo/waypoint".into()],
            issues: vec![],
        };
        let w = wanted(&bound);
        assert_eq!(
            (w.type_.as_str(), w.ok, w.message.as_str()),
            ("WaypointAccepted", true, "bound to waypoint demo/waypoint")
        );
        let dangling = PolicyFacts {
            targets_waypoint: true,
            ..Default::default()
        };
        let w = wanted(&dangling);
        assert_eq!((w.ok, w.reason.as_str()), (false, "TargetNotFound"));
    }

    #[test]
    fn facts_gather_the_model_issues_of_each_policy() {
        let snap = Snapshot::from_yaml(
            "p.yaml",
            r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: l7, namespace: demo, generation: 2}
spec:
  rules: [{to: [{operation: {methods: [GET]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: wp, namespace: demo}
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: demo}
spec: {mtls: {mode: STRICT}}
"#,
        );
        let status = ControlPlaneStatus::default();
        let model = crate::model::Model::build(&snap, &crate::model::ModelConfig::default());
        let issues: Vec<crate::status::IssueView> = model
            .issues
            .iter()
            .map(crate::status::IssueView::from)
            .collect();
        status.record(Default::default(), issues, model.waypoint_status.clone());
        let all = facts(&snap, &status);
        assert_eq!(all.len(), 3);
        let (generation, l7) = &all[&ObjectKey::new(kind::AUTHORIZATION_POLICY, "demo", "l7")];
        assert_eq!(*generation, Some(2));
        assert!(!l7.targets_waypoint);
        assert_eq!(l7.issues.len(), 1, "{:?}", l7.issues);
        assert!(l7.issues[0].contains("L7"), "{:?}", l7.issues);
        let (_, wp) = &all[&ObjectKey::new(kind::AUTHORIZATION_POLICY, "demo", "wp")];
        assert!(wp.targets_waypoint);
        let (_, pa) = &all[&ObjectKey::new(kind::PEER_AUTHENTICATION, "demo", "default")];
        assert!(pa.issues.is_empty());
        assert!(wanted(pa).ok);
    }
}
