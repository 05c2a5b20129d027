//! `status.parents` on HTTPRoutes and GRPCRoutes, as Gateway API controllers write it: one
//! entry per `parentRef` with `controllerName: istio.io/mesh-controller` and two conditions,
//! from what the model reported about the route:
//!
//! - `Accepted`: `True` when the route is programmed into a waypoint and nothing was reported
//!   about this parent; `False`/`NoMatchingParent` with the model's reason when the parent
//!   cannot be honoured (no such Service, another namespace, a Service without a waypoint, ...);
//! - `ResolvedRefs`: `False`/`BackendNotFound` when a `backendRef` names nothing usable,
//!   `True` otherwise.
//!
//! Written by [`crate::kube::status_writer`] after each projection.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use mesh_config::objects::{MESH_CONTROLLER_NAME, ParentReference, kind};
use mesh_config::{Object, ObjectKey, Snapshot, WatchedKind};
use serde_json::{Value, json};

use crate::kube::conditions::{self, Wanted};
use crate::kube::status_writer::{self, StatusSource};
use crate::status::ControlPlaneStatus;

/// What decides a route's status.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RouteFacts {
    pub parents: Vec<ParentReference>,
    /// Waypoints (`namespace/name`) the route is programmed into.
    pub programmed_in: Vec<String>,
    /// What the model reported about the route.
    pub issues: Vec<String>,
}

/// How a parent reference reads in the model's reports (`parentRef Service ns/name`).
fn parent_label(route_namespace: &str, p: &ParentReference) -> String {
    let kind_ = p.kind.as_deref().unwrap_or(kind::GATEWAY);
    let ns = p.namespace.as_deref().unwrap_or(route_namespace);
    format!("parentRef {kind_} {ns}/{}", p.name)
}

/// The conditions of one parent entry.
pub fn wanted(route_namespace: &str, facts: &RouteFacts, parent: &ParentReference) -> Vec<Wanted> {
    let label = parent_label(route_namespace, parent);
    let about_parent: Vec<&str> = facts
        .issues
        .iter()
        .filter(|i| i.contains(&label))
        .map(String::as_str)
        .collect();
    let accepted = if !about_parent.is_empty() {
        Wanted::new(
            "Accepted",
            false,
            "NoMatchingParent",
            about_parent.join("; "),
        )
    } else if facts.programmed_in.is_empty() {
        Wanted::new(
            "Accepted",
            false,
            "NoMatchingParent",
            "no waypoint serves this parent: the Service has no waypoint (istio.io/use-waypoint)",
        )
    } else {
        Wanted::new(
            "Accepted",
            true,
            "Accepted",
            format!(
                "programmed into waypoint {}",
                facts.programmed_in.join(", ")
            ),
        )
    };
    let backends: Vec<&str> = facts
        .issues
        .iter()
        .filter(|i| i.contains("backendRef"))
        .map(String::as_str)
        .collect();
    let resolved = if backends.is_empty() {
        Wanted::new(
            "ResolvedRefs",
            true,
            "ResolvedRefs",
            "every backendRef resolved",
        )
    } else {
        Wanted::new(
            "ResolvedRefs",
            false,
            "BackendNotFound",
            backends.join("; "),
        )
    };
    vec![accepted, resolved]
}

/// The `status` written on a route.
pub fn status_of(
    route_namespace: &str,
    facts: &RouteFacts,
    generation: Option<i64>,
    previous: &Value,
    now: Timestamp,
) -> Value {
    let parents: Vec<Value> = facts
        .parents
        .iter()
        .map(|p| {
            let before = previous_conditions(previous, p);
            let conds =
                conditions::merge(wanted(route_namespace, facts, p), &before, generation, now);
            json!({
                "parentRef": p,
                "controllerName": MESH_CONTROLLER_NAME,
                "conditions": conds,
            })
        })
        .collect();
    json!({ "parents": parents })
}

/// The conditions written before for `parent`, so that transition times are kept.
fn previous_conditions(previous: &Value, parent: &ParentReference) -> Vec<Condition> {
    previous
        .get("parents")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|e| {
            e.get("parentRef")
                .and_then(|r| serde_json::from_value::<ParentReference>(r.clone()).ok())
                .as_ref()
                == Some(parent)
        })
        .map(|e| conditions::read(Some(e)))
        .unwrap_or_default()
}

/// The facts of every route of `snapshot`.
pub fn facts(
    snapshot: &Snapshot,
    status: &ControlPlaneStatus,
) -> BTreeMap<ObjectKey, (Option<i64>, RouteFacts)> {
    let issues = status_writer::issues_by_object(status);
    let programmed = status_writer::waypoints_listing(status, |wp| &wp.routes);
    let mut out = BTreeMap::new();
    for obj in snapshot.objects.values() {
        let parents = match obj {
            Object::HttpRoute(r) => r.spec.parent_refs.clone(),
            Object::GrpcRoute(r) => r.spec.parent_refs.clone(),
            _ => continue,
        };
        let key = obj.key();
        let facts = RouteFacts {
            parents,
            programmed_in: programmed
                .get(&key.to_string())
                .cloned()
                .unwrap_or_default(),
            issues: issues.get(&key.to_string()).cloned().unwrap_or_default(),
        };
        out.insert(key, (obj.metadata().generation, facts));
    }
    out
}

/// HTTPRoutes and GRPCRoutes, for the status writer.
pub struct RouteStatuses;

impl StatusSource for RouteStatuses {
    fn kinds(&self) -> &'static [WatchedKind] {
        &[WatchedKind::HttpRoute, WatchedKind::GrpcRoute]
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
                let previous = written.get(&key).cloned().unwrap_or(Value::Null);
                let value = status_of(&key.namespace, &facts, generation, &previous, now);
                (key, value)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        Timestamp::from_second(1_700_000_000).expect("valid")
    }

    fn service(name: &str) -> ParentReference {
        ParentReference {
            group: Some(String::new()),
            kind: Some("Service".into()),
            name: name.into(),
            port: Some(80),
            ..Default::default()
        }
    }

    fn conds(status: &Value, parent: usize) -> Vec<(String, String, String)> {
        status["parents"][parent]["conditions"]
            .as_array()
            .expect("conditions")
            .iter()
            .map(|c| {
                (
                    c["type"].as_str().unwrap_or_default().to_string(),
                    c["status"].as_str().unwrap_or_default().to_string(),
                    c["reason"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn a_programmed_route_is_accepted_per_parent_and_a_bad_parent_is_named() {
        let facts = RouteFacts {
            parents: vec![service("echo"), service("ghost")],
            programmed_in: vec!["demo/waypoint".into()],
            issues: vec!["parentRef Service demo/ghost: the Service does not exist".into()],
        };
        let status = status_of("demo", &facts, Some(3), &Value::Null, now());
        assert_eq!(
            status["parents"][0]["controllerName"],
            "istio.io/mesh-controller"
        );
        assert_eq!(status["parents"][0]["parentRef"]["name"], "echo");
        assert_eq!(
            conds(&status, 0),
            [
                ("Accepted".into(), "True".into(), "Accepted".into()),
                ("ResolvedRefs".into(), "True".into(), "ResolvedRefs".into())
            ]
        );
        assert_eq!(
            conds(&status, 1)[0],
            ("Accepted".into(), "False".into(), "NoMatchingParent".into())
        );
        assert!(
            status["parents"][1]["conditions"][0]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("does not exist")
        );
        assert_eq!(
            status["parents"][0]["conditions"][0]["observedGeneration"],
            3
        );
    }

    #[test]
    fn a_route_no_waypoint_serves_and_a_missing_backend_are_reported() {
        let facts = RouteFacts {
            parents: vec![service("echo")],
            programmed_in: vec![],
            issues: vec![
                "waypoint demo/waypoint: rule 0: backendRef Service nope: Service demo/nope does \
                 not exist; requests sent to it fail"
                    .into(),
            ],
        };
        let status = status_of("demo", &facts, Some(1), &Value::Null, now());
        assert_eq!(
            conds(&status, 0),
            [
                ("Accepted".into(), "False".into(), "NoMatchingParent".into()),
                (
                    "ResolvedRefs".into(),
                    "False".into(),
                    "BackendNotFound".into()
                )
            ]
        );
    }

    #[test]
    fn writing_the_same_facts_again_changes_nothing() {
        let facts = RouteFacts {
            parents: vec![service("echo")],
            programmed_in: vec!["demo/waypoint".into()],
            issues: vec![],
        };
        let first = status_of("demo", &facts, Some(1), &Value::Null, now());
        let later = Timestamp::from_second(1_700_000_600).expect("valid");
        let again = status_of("demo", &facts, Some(1), &first, later);
        assert_eq!(first, again, "transition times are kept");
    }
}
