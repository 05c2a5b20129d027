//! Manifests as a user writes them (multi-document YAML), applied with server-side apply, as
//! `kubectl apply --server-side` does; any kind the API server serves (CRDs included), found by
//! discovery.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{Scope, pinned_kind};

use super::K8sError;

/// Field manager of the suite's server-side applies.
pub const FIELD_MANAGER: &str = "mesh-e2e";

/// The objects of a YAML stream (empty documents skipped).
pub fn parse(yaml: &str) -> Result<Vec<DynamicObject>, K8sError> {
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(yaml).map_err(|e| K8sError::Manifest {
            what: "YAML".into(),
            reason: e.to_string(),
        })?;
    docs.into_iter()
        .filter(|d| !d.is_null())
        .map(|d| {
            let what = describe_value(&d);
            serde_json::from_value::<DynamicObject>(d).map_err(|e| K8sError::Manifest {
                what,
                reason: e.to_string(),
            })
        })
        .collect()
}

fn describe_value(v: &serde_json::Value) -> String {
    let s = |p: &str| {
        v.pointer(p)
            .and_then(|x| x.as_str())
            .unwrap_or("?")
            .to_string()
    };
    format!("{} {}", s("/kind"), s("/metadata/name"))
}

/// `Kind namespace/name` of an object, for messages.
pub fn describe(obj: &DynamicObject) -> String {
    let kind = obj.types.as_ref().map(|t| t.kind.as_str()).unwrap_or("?");
    match &obj.metadata.namespace {
        Some(ns) => format!("{kind} {ns}/{}", name(&obj.metadata)),
        None => format!("{kind} {}", name(&obj.metadata)),
    }
}

fn name(meta: &ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or("?")
}

/// The API of `obj`'s kind, in its namespace when namespaced.
pub async fn api_for(client: &Client, obj: &DynamicObject) -> Result<Api<DynamicObject>, K8sError> {
    let what = describe(obj);
    let types = obj.types.as_ref().ok_or_else(|| K8sError::Manifest {
        what: what.clone(),
        reason: "no apiVersion/kind".into(),
    })?;
    let gvk = GroupVersionKind::try_from(types).map_err(|e| K8sError::Manifest {
        what: what.clone(),
        reason: e.to_string(),
    })?;
    let (ar, caps) = pinned_kind(client, &gvk).await.map_err(|e| {
        K8sError::api(
            format!("discovering {}/{} {}", gvk.group, gvk.version, gvk.kind),
            e,
        )
    })?;
    Ok(match caps.scope {
        Scope::Cluster => Api::all_with(client.clone(), &ar),
        Scope::Namespaced => match &obj.metadata.namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
            None => Api::default_namespaced_with(client.clone(), &ar),
        },
    })
}

/// Server-side applies one object (forcing conflicts: the suite owns what it writes).
pub async fn apply_object(client: &Client, obj: &DynamicObject) -> Result<DynamicObject, K8sError> {
    let api = api_for(client, obj).await?;
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(name(&obj.metadata), &pp, &Patch::Apply(obj))
        .await
        .map_err(|e| K8sError::api(format!("apply {}", describe(obj)), e))
}

/// Applies every object of `yaml`, in order; returns their descriptions.
pub async fn apply_yaml(client: &Client, yaml: &str) -> Result<Vec<String>, K8sError> {
    let mut done = Vec::new();
    for obj in parse(yaml)? {
        apply_object(client, &obj).await?;
        done.push(describe(&obj));
    }
    Ok(done)
}

/// Deletes every object of `yaml` (already gone is fine).
pub async fn delete_yaml(client: &Client, yaml: &str) -> Result<(), K8sError> {
    for obj in parse(yaml)? {
        let api = api_for(client, &obj).await?;
        match api
            .delete(name(&obj.metadata), &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_not_found() => {}
            Err(e) => return Err(K8sError::api(format!("delete {}", describe(&obj)), e)),
        }
    }
    Ok(())
}

/// The live object `obj` names, if it exists.
pub async fn get_live(
    client: &Client,
    obj: &DynamicObject,
) -> Result<Option<DynamicObject>, K8sError> {
    let api = api_for(client, obj).await?;
    api.get_opt(name(&obj.metadata))
        .await
        .map_err(|e| K8sError::api(format!("get {}", describe(obj)), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_stream_skipping_empty_documents() {
        let yaml = "# leading comment\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: r\n  namespace: a\nspec:\n  rules: []\n";
        let objs = parse(yaml).unwrap();
        let names: Vec<String> = objs.iter().map(describe).collect();
        assert_eq!(names, ["Namespace a", "HTTPRoute a/r"]);
        assert_eq!(objs[1].data["spec"]["rules"], serde_json::json!([]));
    }

    #[test]
    fn refuses_a_document_that_is_not_an_object() {
        let err = parse("apiVersion: v1\nkind: Pod\nmetadata: 3\n").unwrap_err();
        assert!(err.to_string().contains("Pod"), "{err}");
    }
}
