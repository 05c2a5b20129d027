//! Status conditions (`metav1.Condition`) as the controllers write them: the transition time
//! only moves when a condition's status changes, so writing the same conditions again is a
//! no-op for the API server and for watchers.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

/// A condition as a controller decides it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    pub type_: String,
    pub ok: bool,
    pub reason: String,
    pub message: String,
}

impl Wanted {
    pub fn new(type_: &str, ok: bool, reason: &str, message: impl Into<String>) -> Self {
        Wanted {
            type_: type_.to_string(),
            ok,
            reason: reason.to_string(),
            message: message.into(),
        }
    }
}

/// The conditions to write: `wanted`, each keeping the transition time of the `previous`
/// condition of its type when the status did not change.
pub fn merge(
    wanted: Vec<Wanted>,
    previous: &[Condition],
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    wanted
        .into_iter()
        .map(|w| {
            let status = if w.ok { "True" } else { "False" }.to_string();
            let since = previous
                .iter()
                .find(|p| p.type_ == w.type_ && p.status == status)
                .map_or(Time(now), |p| p.last_transition_time.clone());
            Condition {
                type_: w.type_,
                status,
                reason: w.reason,
                message: w.message,
                last_transition_time: since,
                observed_generation: generation,
            }
        })
        .collect()
}

/// The conditions in `status.conditions` of an object read as JSON (unreadable ones skipped).
pub fn read(object_status: Option<&Value>) -> Vec<Condition> {
    object_status
        .and_then(|s| s.get("conditions"))
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|c| serde_json::from_value(c.clone()).ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).expect("valid")
    }

    #[test]
    fn transition_time_moves_only_with_the_status() {
        let first = merge(
            vec![Wanted::new("Programmed", false, "Pending", "waiting")],
            &[],
            Some(1),
            at(0),
        );
        assert_eq!(first[0].last_transition_time, Time(at(0)));
        let same = merge(
            vec![Wanted::new("Programmed", false, "Pending", "still waiting")],
            &first,
            Some(1),
            at(10),
        );
        assert_eq!(same[0].last_transition_time, Time(at(0)));
        assert_eq!(same[0].message, "still waiting");
        let flipped = merge(
            vec![Wanted::new("Programmed", true, "Programmed", "ready")],
            &same,
            Some(2),
            at(20),
        );
        assert_eq!(flipped[0].last_transition_time, Time(at(20)));
        assert_eq!(flipped[0].status, "True");
        assert_eq!(flipped[0].observed_generation, Some(2));
    }

    #[test]
    fn conditions_are_read_back_from_json() {
        let written = merge(
            vec![Wanted::new("Accepted", true, "Accepted", "ok")],
            &[],
            None,
            at(0),
        );
        let status = serde_json::json!({"conditions": written, "other": 1});
        assert_eq!(read(Some(&status)), written);
        assert!(read(None).is_empty());
        assert!(read(Some(&serde_json::json!({"conditions": [{"bogus": true}]}))).is_empty());
    }
}
