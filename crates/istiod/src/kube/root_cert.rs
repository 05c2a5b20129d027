//! Publishes the mesh root certificate as the ConfigMap `istio-ca-root-cert` (key
//! `root-cert.pem`) in every namespace, as Istio does: ztunnels and waypoints mount it to
//! verify istiod and their peers. A controller over Namespaces that also watches those
//! ConfigMaps, so a deleted or edited copy is restored. Runs on the leader.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::kube::FIELD_MANAGER;
use crate::kube::owner::set_owner;
use crate::kube::waypoint::desired::{ROOT_CERT_CONFIGMAP, ROOT_CERT_KEY};

/// Namespaces that get no copy.
const SKIPPED: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];
/// Periodic re-check of each namespace.
const RESYNC: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
#[error("cannot publish the root certificate in namespace {namespace}: {source}")]
pub struct PublishError {
    namespace: String,
    source: kube::Error,
}

struct Context {
    client: Client,
    root_pem: String,
    owner: Option<OwnerReference>,
}

/// The ConfigMap published in `namespace`.
pub fn root_cert_configmap(namespace: &str, root_pem: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(ROOT_CERT_CONFIGMAP.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([(
                "istio.io/config".to_string(),
                "true".to_string(),
            )])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            ROOT_CERT_KEY.to_string(),
            root_pem.to_string(),
        )])),
        ..Default::default()
    }
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action, PublishError> {
    let name = ns.name_any();
    let terminating = ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating")
        || ns.metadata.deletion_timestamp.is_some();
    if SKIPPED.contains(&name.as_str()) || terminating {
        return Ok(Action::await_change());
    }
    let mut cm = root_cert_configmap(&name, &ctx.root_pem);
    set_owner(&mut cm.metadata, ctx.owner.as_ref());
    Api::<ConfigMap>::namespaced(ctx.client.clone(), &name)
        .patch(
            ROOT_CERT_CONFIGMAP,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&cm),
        )
        .await
        .map_err(|source| PublishError {
            namespace: name,
            source,
        })?;
    Ok(Action::requeue(RESYNC))
}

fn error_policy(_ns: Arc<Namespace>, error: &PublishError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(%error, "retrying");
    Action::requeue(Duration::from_secs(15))
}

/// Publishes `root_pem`, each copy owned by `owner`, until the task is aborted.
pub async fn run(client: Client, root_pem: String, owner: Option<OwnerReference>) {
    let ctx = Arc::new(Context {
        client: client.clone(),
        root_pem,
        owner,
    });
    let copies = watcher::Config::default().fields(&format!("metadata.name={ROOT_CERT_CONFIGMAP}"));
    tracing::info!("root certificate publisher started");
    Controller::new(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches(Api::<ConfigMap>::all(client), copies, |cm| {
        cm.namespace().map(|ns| ObjectRef::new(&ns))
    })
    .run(reconcile, error_policy, ctx)
    .for_each(|_| async {})
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configmap_carries_the_root_under_its_istio_name() {
        let cm = root_cert_configmap("demo", "-----BEGIN CERTIFICATE-----\n");
        let json = serde_json::to_value(&cm).expect("serializable");
        assert_eq!(json["apiVersion"], "v1");
        assert_eq!(json["kind"], "ConfigMap");
        assert_eq!(json["metadata"]["name"], "istio-ca-root-cert");
        assert_eq!(json["metadata"]["namespace"], "demo");
        assert_eq!(
            json["data"]["root-cert.pem"],
            "-----BEGIN CERTIFICATE-----\n"
        );
    }
}
