//! One watch per kind: kube's watcher events converted into the mesh's objects and handed to
//! the store; failures classified, logged once per distinct cause, and retried with backoff.

use std::fmt::Debug;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DynamicObject};
use kube::runtime::watcher;
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::kube::kinds::WatchedKind;
use crate::kube::store::{Invalid, Update};
use crate::objects::{Object, ObjectKey, kind};
use crate::parse::parse_object;

/// Where and how one kind is watched.
#[derive(Clone, Debug)]
pub(crate) struct WatchSpec {
    pub kind: WatchedKind,
    pub config: watcher::Config,
    /// First delay before retrying a failed watch; doubled up to `retry_max`.
    pub retry_min: Duration,
    pub retry_max: Duration,
}

/// Watches `spec.kind` until the receiver of `tx` goes away.
pub(crate) async fn watch_kind(client: Client, spec: WatchSpec, tx: mpsc::Sender<Update>) {
    let kind = spec.kind;
    match kind {
        WatchedKind::Namespace => {
            run(Api::<Namespace>::all(client), spec, tx, |o| {
                Ok(Object::Namespace(o.into()))
            })
            .await
        }
        WatchedKind::Pod => {
            run(Api::<Pod>::all(client), spec, tx, |o| {
                Ok(Object::Pod(o.into()))
            })
            .await
        }
        WatchedKind::Service => {
            run(Api::<Service>::all(client), spec, tx, |o| {
                Ok(Object::Service(o.into()))
            })
            .await
        }
        WatchedKind::Node => {
            run(Api::<Node>::all(client), spec, tx, |o| {
                Ok(Object::Node(o.into()))
            })
            .await
        }
        _ => {
            let api = Api::<DynamicObject>::all_with(client, &kind.api_resource());
            run(api, spec, tx, move |o| convert_dynamic(kind, o)).await
        }
    }
}

/// The key of an object of `kind` (cluster-scoped kinds have no namespace).
fn key_of(kind: WatchedKind, meta: &ObjectMeta) -> ObjectKey {
    let namespace = if kind::is_cluster_scoped(kind.kind()) {
        String::new()
    } else {
        meta.namespace.clone().unwrap_or_default()
    };
    ObjectKey::new(
        kind.kind(),
        namespace,
        meta.name.clone().unwrap_or_default(),
    )
}

/// Converts a custom object exactly as a manifest document is converted.
pub(crate) fn convert_dynamic(kind: WatchedKind, obj: DynamicObject) -> Result<Object, Invalid> {
    let key = key_of(kind, &obj.metadata);
    let invalid = |reason: String| Invalid {
        key: key.clone(),
        reason,
    };
    let mut value = serde_json::to_value(&obj).map_err(|e| invalid(e.to_string()))?;
    if let Some(map) = value.as_object_mut() {
        // List responses may leave out the type fields of their items.
        let ar = kind.api_resource();
        map.entry("apiVersion")
            .or_insert_with(|| ar.api_version.into());
        map.entry("kind").or_insert_with(|| ar.kind.into());
    }
    match parse_object(value) {
        Ok(Some(obj)) => Ok(obj),
        Ok(None) => Err(invalid(format!(
            "unexpected kind for {}",
            kind.resource_label()
        ))),
        Err(reason) => Err(invalid(reason)),
    }
}

async fn run<K, F>(api: Api<K>, spec: WatchSpec, tx: mpsc::Sender<Update>, convert: F)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    F: Fn(K) -> Result<Object, Invalid>,
{
    let kind = spec.kind;
    let stream = watcher(api, spec.config.clone());
    let mut stream = std::pin::pin!(stream);
    let mut delay = spec.retry_min;
    let mut failing: Option<String> = None;
    while let Some(item) = stream.next().await {
        let update = match item {
            Ok(event) => {
                // A restart announces itself before its listing, which may still fail: only
                // data (or a complete listing) shows that the watch works again.
                if !matches!(event, watcher::Event::Init) {
                    delay = spec.retry_min;
                    if let Some(cause) = failing.take() {
                        tracing::info!(resource = %kind.resource_label(), %cause, "watch recovered");
                    }
                }
                match event {
                    watcher::Event::Init => Update::Relist(kind),
                    watcher::Event::InitDone => Update::Listed(kind),
                    watcher::Event::InitApply(obj) | watcher::Event::Apply(obj) => {
                        Update::Applied(kind, convert(strip(obj)))
                    }
                    watcher::Event::Delete(obj) => Update::Deleted(kind, key_of(kind, obj.meta())),
                }
            }
            Err(err) => {
                let failure = classify(&err);
                let cause = failure.cause(kind);
                if failing.as_deref() != Some(cause.as_str()) {
                    tracing::warn!(
                        resource = %kind.resource_label(),
                        %cause,
                        retry_in = ?delay,
                        "cannot watch; retrying"
                    );
                } else {
                    tracing::debug!(resource = %kind.resource_label(), %cause, "watch still failing");
                }
                failing = Some(cause.clone());
                if !matches!(failure, Failure::Transient(_))
                    && tx.send(Update::Unavailable(kind, cause)).await.is_err()
                {
                    return;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(spec.retry_max);
                continue;
            }
        };
        if tx.send(update).await.is_err() {
            return;
        }
    }
}

/// Drops the managed-fields bookkeeping, the bulk of most objects, which the mesh never reads.
fn strip<K: Resource>(mut obj: K) -> K {
    obj.meta_mut().managed_fields = None;
    obj
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Failure {
    /// The API server does not serve the resource (CRD not installed).
    NotServed,
    /// RBAC forbids watching it.
    Forbidden(String),
    /// Anything else: the connection, a timeout, an expired resource version.
    Transient(String),
}

impl Failure {
    fn cause(&self, kind: WatchedKind) -> String {
        match self {
            Failure::NotServed if kind.is_custom() => {
                "the API server does not serve it (is its CRD installed?)".to_string()
            }
            Failure::NotServed => "the API server does not serve it".to_string(),
            Failure::Forbidden(msg) => format!("forbidden by RBAC: {msg}"),
            Failure::Transient(msg) => msg.clone(),
        }
    }
}

fn classify(err: &watcher::Error) -> Failure {
    let api = match err {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => Some(status.as_ref()),
        watcher::Error::WatchError(status) => Some(status.as_ref()),
        _ => None,
    };
    match api {
        Some(s) if s.code == 404 => Failure::NotServed,
        Some(s) if s.code == 403 => Failure::Forbidden(s.message.clone()),
        _ => Failure::Transient(err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn api_error(code: u16, message: &str) -> watcher::Error {
        let status = Status::failure(message, "Reason").with_code(code);
        watcher::Error::InitialListFailed(kube::Error::Api(Box::new(status)))
    }

    #[test]
    fn missing_crds_and_rbac_are_not_transient() {
        assert_eq!(classify(&api_error(404, "not found")), Failure::NotServed);
        assert_eq!(
            classify(&api_error(403, "gateways is forbidden")),
            Failure::Forbidden("gateways is forbidden".into())
        );
        assert!(matches!(
            classify(&api_error(500, "etcd down")),
            Failure::Transient(_)
        ));
        assert_eq!(
            Failure::NotServed.cause(WatchedKind::Gateway),
            "the API server does not serve it (is its CRD installed?)"
        );
    }

    #[test]
    fn custom_objects_convert_like_manifests() {
        let obj: DynamicObject = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "deny-all", "namespace": "demo", "managedFields": [{}]},
            "spec": {"action": "DENY", "rules": [{}]},
            "status": {"conditions": []},
        }))
        .expect("object");
        let obj = convert_dynamic(WatchedKind::AuthorizationPolicy, obj).expect("valid");
        let Object::AuthorizationPolicy(ap) = &obj else {
            panic!("not a policy: {obj:?}");
        };
        assert_eq!(ap.spec.rules.len(), 1);
        assert_eq!(obj.key().to_string(), "AuthorizationPolicy demo/deny-all");

        let bad: DynamicObject = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "bad", "namespace": "demo"},
            "spec": {"action": "SOMETIMES"},
        }))
        .expect("object");
        let err = convert_dynamic(WatchedKind::AuthorizationPolicy, bad).expect_err("invalid");
        assert_eq!(err.key.to_string(), "AuthorizationPolicy demo/bad");
        assert!(err.reason.contains("SOMETIMES"), "{}", err.reason);
    }

    #[test]
    fn cluster_scoped_keys_have_no_namespace() {
        let meta = ObjectMeta {
            name: Some("istio-waypoint".into()),
            namespace: Some("ignored".into()),
            ..Default::default()
        };
        assert_eq!(
            key_of(WatchedKind::GatewayClass, &meta),
            ObjectKey::new("GatewayClass", "", "istio-waypoint")
        );
    }
}
