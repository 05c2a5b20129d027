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
//! Written by [`crate::kube::status_writer`] after each projection.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use mesh_config::{Object, ObjectKey, Snapshot, WatchedKind};
use serde_json::{Value, json};

use crate::kube::conditions::{self, Wanted};
use crate::kube::status_writer::{self, StatusSource};
use crate::status::ControlPlaneStatus;

/// Condition type on objects ztunnel enforces.
pub const ZTUNNEL_ACCEPTED: &str = "ZtunnelAccepted";
/// Condition type on policies attached to waypoints.
pub const WAYPOINT_ACCEPTED: &str = "WaypointAccepted";

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
    let issues = status_writer::issues_by_object(status);
    let enforced = status_writer::waypoints_listing(status, |wp| &wp.policies);
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

/// Policies and PeerAuthentications, for the status writer.
pub struct PolicyStatuses;

impl StatusSource for PolicyStatuses {
    fn kinds(&self) -> &'static [WatchedKind] {
        &[
            WatchedKind::AuthorizationPolicy,
            WatchedKind::PeerAuthentication,
        ]
    }

    fn statuses(
        &self,
        snapshot: &Snapshot,
        status: &ControlPlaneStatus,
        written: &BTreeMap<ObjectKey, Value>,
        now: Timestamp,
    ) -> BTreeMap<ObjectKey, Value> {
        facts(snapshot, status)
            .into_iter()
            .map(|(key, (generation, facts))| {
                let previous = conditions::read(written.get(&key));
                let mut value = json!({
                    "conditions": status_of(&facts, generation, &previous, now),
                });
                if let Some(g) = generation {
                    value["observedGeneration"] = Value::from(g);
                }
                (key, value)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_config::objects::kind;

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
