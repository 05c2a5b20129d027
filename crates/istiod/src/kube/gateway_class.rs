//! Installs the `istio-waypoint` GatewayClass (controller `istio.io/mesh-controller`) when it
//! is absent (unless the installation creates it itself: `--create-gateway-class=false`), and
//! keeps its `Accepted` condition written. Runs on the leader, once the Gateway API is served; a
//! class that already exists is never modified, only its status. A class istiod creates is
//! owned by the installation's owner ([`crate::kube::owner`]).

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use mesh_config::WatchedKind;
use mesh_config::objects::{MESH_CONTROLLER_NAME, WAYPOINT_GATEWAY_CLASS};
use serde_json::{Value, json};

use crate::kube::FIELD_MANAGER;
use crate::kube::conditions::{self, Wanted};

/// How often the class is checked again (someone may delete it).
const RECHECK: Duration = Duration::from_secs(60);

/// The class as this controller creates it.
pub fn desired_class() -> Value {
    let ar = WatchedKind::GatewayClass.api_resource();
    json!({
        "apiVersion": ar.api_version,
        "kind": ar.kind,
        "metadata": {"name": WAYPOINT_GATEWAY_CLASS},
        "spec": {
            "controllerName": MESH_CONTROLLER_NAME,
            "description": "Waypoint proxies of the ambient mesh, deployed by istiod",
        },
    })
}

/// The status of a class: accepted when it names this controller.
pub fn class_status(class: &DynamicObject, now: Timestamp) -> Option<Value> {
    let controller = class
        .data
        .pointer("/spec/controllerName")
        .and_then(Value::as_str)?;
    if controller != MESH_CONTROLLER_NAME {
        return None;
    }
    let previous = conditions::read(class.data.get("status"));
    let wanted = vec![Wanted::new(
        "Accepted",
        true,
        "Accepted",
        "handled by the ambient mesh control plane",
    )];
    let conditions = conditions::merge(wanted, &previous, class.metadata.generation, now);
    Some(json!({ "conditions": conditions }))
}

/// What the controller does with the class.
#[derive(Clone, Debug)]
pub struct ClassSettings {
    /// Create the class when it is absent (else only its status is written).
    pub create: bool,
    /// Owner of a class created here.
    pub owner: Option<OwnerReference>,
}

async fn ensure(api: &Api<DynamicObject>, settings: &ClassSettings) -> Result<(), kube::Error> {
    let class = match api.get_opt(WAYPOINT_GATEWAY_CLASS).await? {
        Some(c) => c,
        None if !settings.create => {
            tracing::debug!(
                class = WAYPOINT_GATEWAY_CLASS,
                "GatewayClass absent; the installation creates it"
            );
            return Ok(());
        }
        None => {
            let mut obj: DynamicObject =
                serde_json::from_value(desired_class()).map_err(kube::Error::SerdeError)?;
            crate::kube::owner::set_owner(&mut obj.metadata, settings.owner.as_ref());
            match api.create(&PostParams::default(), &obj).await {
                Ok(created) => {
                    tracing::info!(class = WAYPOINT_GATEWAY_CLASS, "GatewayClass installed");
                    created
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    api.get(WAYPOINT_GATEWAY_CLASS).await?
                }
                Err(e) => return Err(e),
            }
        }
    };
    let Some(status) = class_status(&class, Timestamp::now()) else {
        tracing::warn!(
            class = WAYPOINT_GATEWAY_CLASS,
            "the GatewayClass names another controller; leaving it alone"
        );
        return Ok(());
    };
    if conditions::read(class.data.get("status")) == conditions::read(Some(&status)) {
        return Ok(());
    }
    let ar = WatchedKind::GatewayClass.api_resource();
    let body = json!({
        "apiVersion": ar.api_version,
        "kind": ar.kind,
        "metadata": {"name": WAYPOINT_GATEWAY_CLASS},
        "status": status,
    });
    api.patch_status(
        WAYPOINT_GATEWAY_CLASS,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}

/// Keeps the class installed and accepted until the task is aborted.
pub async fn run(client: Client, settings: ClassSettings) {
    let api = Api::<DynamicObject>::all_with(client, &WatchedKind::GatewayClass.api_resource());
    crate::kube::wait_until_served(
        &api,
        "Gateway API (gatewayclasses.gateway.networking.k8s.io/v1)",
    )
    .await;
    loop {
        if let Err(e) = ensure(&api, &settings).await {
            tracing::warn!(class = WAYPOINT_GATEWAY_CLASS, error = %e, "cannot install the GatewayClass");
        }
        tokio::time::sleep(RECHECK).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_class_is_accepted() {
        let now = Timestamp::from_second(1_700_000_000).expect("valid");
        let mut class: DynamicObject = serde_json::from_value(desired_class()).expect("object");
        class.metadata.generation = Some(1);
        let status = class_status(&class, now).expect("ours");
        assert_eq!(status["conditions"][0]["type"], "Accepted");
        assert_eq!(status["conditions"][0]["status"], "True");
        assert_eq!(status["conditions"][0]["observedGeneration"], 1);
        assert_eq!(
            class.data["spec"]["controllerName"],
            "istio.io/mesh-controller"
        );

        class.data["spec"]["controllerName"] = "example.com/other".into();
        assert_eq!(class_status(&class, now), None);
    }
}
