//! The waypoint deployment controller: for each Gateway of class `istio-waypoint` it
//! server-side-applies a ServiceAccount, a Deployment of the waypoint proxy and a Service
//! ([`desired`]), all owned by the Gateway, and writes the Gateway's status ([`status`]).
//!
//! kube-rs controller shape: the Gateways are watched, and so are the Deployments and Services
//! carrying the gateway-name label (a change of an owned object, such as a replica becoming
//! available, reconciles its Gateway again). Gateways of other classes are left alone. The
//! controller starts once the Gateway API is served and runs on the leader only.

pub mod desired;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use mesh_config::objects::{Gateway, WAYPOINT_GATEWAY_CLASS};
use mesh_config::{GATEWAY_NAME_LABEL, WatchedKind};
use serde_json::json;

use crate::kube::FIELD_MANAGER;
use crate::kube::conditions;
use crate::status::ControlPlaneStatus;
use desired::{DesiredError, WaypointSettings, waypoint_objects};
use status::{Observed, gateway_status};

/// Re-check of a programmed waypoint (owned objects trigger reconciles as they change).
const RESYNC: Duration = Duration::from_secs(600);
/// Re-check of a waypoint still coming up.
const PENDING_RECHECK: Duration = Duration::from_secs(30);
/// Retry after a failed reconcile.
const RETRY: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("Gateway {0} is not readable: {1}")]
    Decode(String, serde_json::Error),
    #[error("Gateway {0}: {1}")]
    Incomplete(String, DesiredError),
    #[error("cannot apply {what}: {source}")]
    Apply { what: String, source: kube::Error },
    #[error("cannot write the status of Gateway {gateway}: {source}")]
    Status {
        gateway: String,
        source: kube::Error,
    },
}

/// What every reconcile reads.
pub struct Context {
    pub client: Client,
    pub settings: WaypointSettings,
    /// The model's view of each waypoint (whether it accepts the Gateway).
    pub status: Arc<ControlPlaneStatus>,
}

/// Runs the controller until the task is aborted.
pub async fn run(ctx: Arc<Context>) {
    let ar = WatchedKind::Gateway.api_resource();
    let gateways = Api::<DynamicObject>::all_with(ctx.client.clone(), &ar);
    crate::kube::wait_until_served(
        &gateways,
        "Gateway API (gateways.gateway.networking.k8s.io/v1)",
    )
    .await;
    let owned = watcher::Config::default().labels(GATEWAY_NAME_LABEL);
    tracing::info!("waypoint controller started");
    Controller::new_with(gateways, watcher::Config::default(), ar)
        .owns(Api::<Deployment>::all(ctx.client.clone()), owned.clone())
        .owns(Api::<Service>::all(ctx.client.clone()), owned)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((gw, _)) => tracing::debug!(gateway = %gw, "waypoint reconciled"),
                Err(e) => tracing::debug!(error = %e, "waypoint controller event"),
            }
        })
        .await;
}

fn error_policy(gw: Arc<DynamicObject>, error: &ReconcileError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(gateway = %label(&gw), %error, "waypoint reconcile failed; retrying");
    Action::requeue(RETRY)
}

fn label(gw: &DynamicObject) -> String {
    format!("{}/{}", gw.namespace().unwrap_or_default(), gw.name_any())
}

async fn apply<K>(api: Api<K>, obj: &K, what: &str) -> Result<K, ReconcileError>
where
    K: Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .map_err(|source| ReconcileError::Apply {
        what: what.to_string(),
        source,
    })
}

async fn reconcile(obj: Arc<DynamicObject>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let gw_label = label(&obj);
    let gw: Gateway = serde_json::to_value(&*obj)
        .and_then(serde_json::from_value)
        .map_err(|e| ReconcileError::Decode(gw_label.clone(), e))?;
    if gw.spec.gateway_class_name != WAYPOINT_GATEWAY_CLASS
        || obj.metadata.deletion_timestamp.is_some()
    {
        return Ok(Action::await_change());
    }
    let namespace = obj.namespace().unwrap_or_default();
    let objects = waypoint_objects(&gw, &ctx.settings)
        .map_err(|e| ReconcileError::Incomplete(gw_label.clone(), e))?;
    let client = &ctx.client;
    apply(
        Api::<ServiceAccount>::namespaced(client.clone(), &namespace),
        &objects.service_account,
        &format!("ServiceAccount {gw_label}"),
    )
    .await?;
    let service = apply(
        Api::<Service>::namespaced(client.clone(), &namespace),
        &objects.service,
        &format!("Service {gw_label}"),
    )
    .await?;
    let deployment = apply(
        Api::<Deployment>::namespaced(client.clone(), &namespace),
        &objects.deployment,
        &format!("Deployment {gw_label}"),
    )
    .await?;

    let observed = Observed {
        available_replicas: deployment
            .status
            .as_ref()
            .and_then(|s| s.available_replicas)
            .unwrap_or(0),
        cluster_ip: service.spec.as_ref().and_then(|s| s.cluster_ip.clone()),
    };
    let model = ctx
        .status
        .waypoints()
        .into_iter()
        .find(|w| w.namespace == namespace && w.name == obj.name_any());
    let previous = conditions::read(obj.data.get("status"));
    let status = gateway_status(
        obj.metadata.generation,
        model.as_ref(),
        &observed,
        &previous,
        Timestamp::now(),
    );
    let programmed = status["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Programmed" && c["status"] == "True")
    });
    let ar = WatchedKind::Gateway.api_resource();
    let body = json!({
        "apiVersion": ar.api_version,
        "kind": ar.kind,
        "metadata": {"name": obj.name_any(), "namespace": namespace},
        "status": status,
    });
    Api::<DynamicObject>::namespaced_with(client.clone(), &namespace, &ar)
        .patch_status(
            &obj.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(|source| ReconcileError::Status {
            gateway: gw_label.clone(),
            source,
        })?;
    tracing::debug!(gateway = %gw_label, programmed, "waypoint applied");
    Ok(Action::requeue(if programmed {
        RESYNC
    } else {
        PENDING_RECHECK
    }))
}
