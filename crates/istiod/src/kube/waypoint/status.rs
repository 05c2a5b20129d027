//! The status the controller writes on a waypoint Gateway: `Accepted`, `Programmed` (true once
//! its Deployment has an available replica and its Service an address) and `addresses` (the
//! Service's cluster IP).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use crate::kube::conditions::{self, Wanted};
use crate::model::WaypointStatus;

/// What the controller observed of the objects it applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// `status.availableReplicas` of the Deployment.
    pub available_replicas: i32,
    /// The Service's cluster IP, once assigned.
    pub cluster_ip: Option<String>,
}

/// The `status` of the Gateway. `model` is the model's view of the waypoint, when it has one:
/// a Gateway the model refuses is not accepted.
pub fn gateway_status(
    generation: Option<i64>,
    model: Option<&WaypointStatus>,
    observed: &Observed,
    previous: &[Condition],
    now: Timestamp,
) -> Value {
    let refused = model
        .and_then(|m| m.condition("Accepted"))
        .filter(|c| !c.is_true());
    let accepted = match refused {
        Some(c) => Wanted::new("Accepted", false, &c.reason, c.message.clone()),
        None => Wanted::new(
            "Accepted",
            true,
            "Accepted",
            "the mesh controller deploys this waypoint",
        ),
    };
    let ip = observed
        .cluster_ip
        .as_deref()
        .filter(|ip| !ip.is_empty() && *ip != "None");
    let programmed = if !accepted.ok {
        Wanted::new(
            "Programmed",
            false,
            "Invalid",
            "the Gateway is not accepted",
        )
    } else if ip.is_none() {
        Wanted::new(
            "Programmed",
            false,
            "AddressNotAssigned",
            "the waypoint Service has no cluster IP yet",
        )
    } else if observed.available_replicas < 1 {
        Wanted::new(
            "Programmed",
            false,
            "Pending",
            "waiting for the waypoint Deployment to have an available replica",
        )
    } else {
        Wanted::new(
            "Programmed",
            true,
            "Programmed",
            format!(
                "{} waypoint replica(s) available",
                observed.available_replicas
            ),
        )
    };
    let conditions = conditions::merge(vec![accepted, programmed], previous, generation, now);
    let addresses: Vec<Value> = ip
        .map(|ip| json!({"type": "IPAddress", "value": ip}))
        .into_iter()
        .collect();
    json!({ "conditions": conditions, "addresses": addresses })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        Timestamp::from_second(1_700_000_000).expect("valid")
    }

    fn cond<'a>(status: &'a Value, type_: &str) -> &'a Value {
        status["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == type_))
            .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
    }

    #[test]
    fn programmed_once_a_replica_is_available() {
        let pending = Observed {
            available_replicas: 0,
            cluster_ip: Some("10.96.0.20".into()),
        };
        let status = gateway_status(Some(3), None, &pending, &[], now());
        assert_eq!(cond(&status, "Accepted")["status"], "True");
        assert_eq!(cond(&status, "Programmed")["status"], "False");
        assert_eq!(cond(&status, "Programmed")["reason"], "Pending");
        assert_eq!(cond(&status, "Programmed")["observedGeneration"], 3);
        assert_eq!(
            status["addresses"],
            json!([{"type": "IPAddress", "value": "10.96.0.20"}])
        );

        let ready = Observed {
            available_replicas: 2,
            ..pending
        };
        let status = gateway_status(Some(3), None, &ready, &[], now());
        assert_eq!(cond(&status, "Programmed")["status"], "True");
        assert_eq!(
            cond(&status, "Programmed")["message"],
            "2 waypoint replica(s) available"
        );
    }

    #[test]
    fn no_address_no_programming() {
        let status = gateway_status(
            None,
            None,
            &Observed {
                available_replicas: 1,
                cluster_ip: None,
            },
            &[],
            now(),
        );
        assert_eq!(cond(&status, "Programmed")["reason"], "AddressNotAssigned");
        assert_eq!(status["addresses"], json!([]));
    }
}
