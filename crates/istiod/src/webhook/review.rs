//! One admission decision: an `admission.k8s.io/v1` AdmissionReview in, its response out.
//!
//! AuthorizationPolicies and PeerAuthentications being created or updated are converted by the
//! same parser as every configuration source; an object that does not convert, or that
//! [`validate`](super::validate) refuses, is denied with the reasons. An accepted object is run
//! through the model together with the current configuration, and whatever the model would
//! not enforce as written comes back as warnings (`kubectl` prints them). Other kinds and
//! deletions are allowed untouched.

use kube::api::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use mesh_config::objects::SECURITY_GROUP;
use mesh_config::{Object, Snapshot};
use serde_json::Value;

use crate::model::{Model, ModelConfig};
use crate::webhook::validate;

#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("not an AdmissionReview: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("the AdmissionReview has no request")]
    NoRequest,
}

/// Decodes an AdmissionReview, decides, and returns the review to send back.
pub fn review(
    body: &[u8],
    model: &ModelConfig,
    current: &Snapshot,
) -> Result<AdmissionReview<DynamicObject>, ReviewError> {
    let review: AdmissionReview<DynamicObject> = serde_json::from_slice(body)?;
    let request: AdmissionRequest<DynamicObject> =
        review.try_into().map_err(|_| ReviewError::NoRequest)?;
    Ok(decide(&request, model, current).into_review())
}

/// The response to one request.
pub fn decide(
    request: &AdmissionRequest<DynamicObject>,
    model: &ModelConfig,
    current: &Snapshot,
) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
    if !matches!(request.operation, Operation::Create | Operation::Update)
        || request.kind.group != SECURITY_GROUP
    {
        return response;
    }
    let Some(object) = &request.object else {
        return response;
    };
    let mut value = match serde_json::to_value(object) {
        Ok(v) => v,
        Err(e) => return deny(response, format!("cannot read the object: {e}")),
    };
    if let Some(map) = value.as_object_mut() {
        map.insert("apiVersion".into(), request.kind.api_version().into());
        map.insert("kind".into(), request.kind.kind.clone().into());
        if let (Some(ns), Some(Value::Object(meta))) = (&request.namespace, map.get_mut("metadata"))
        {
            meta.entry("namespace").or_insert_with(|| ns.clone().into());
        }
    }
    let label = format!(
        "{} {}/{}",
        request.kind.kind,
        request.namespace.as_deref().unwrap_or(""),
        object.metadata.name.as_deref().unwrap_or(&request.name)
    );
    let obj = match mesh_config::parse::parse_object(value) {
        Ok(Some(obj)) => obj,
        Ok(None) => return response,
        Err(reason) => return deny(response, format!("{label} is invalid: {reason}")),
    };
    let errors = match &obj {
        Object::AuthorizationPolicy(ap) => validate::authorization_policy(ap),
        Object::PeerAuthentication(pa) => validate::peer_authentication(pa),
        _ => return response,
    };
    if !errors.is_empty() {
        return deny(
            response,
            format!("{label} is invalid: {}", errors.join("; ")),
        );
    }
    let warnings = model_warnings(obj, model, current);
    let mut response = response;
    if !warnings.is_empty() {
        response.warnings = Some(warnings);
    }
    response
}

/// What the model reports about `obj` once it replaces its current version.
fn model_warnings(obj: Object, model: &ModelConfig, current: &Snapshot) -> Vec<String> {
    let key = obj.key();
    let mut snapshot = Snapshot {
        objects: current.objects.clone(),
        ..Default::default()
    };
    snapshot.objects.insert(key.clone(), obj);
    let label = key.to_string();
    Model::build(&snapshot, model)
        .issues
        .into_iter()
        .filter(|i| i.object == label)
        .map(|i| i.reason)
        .collect()
}

fn deny(response: AdmissionResponse, message: String) -> AdmissionResponse {
    tracing::info!(%message, "admission denied");
    let mut response = response.deny(message);
    response.result.code = 400;
    response.result.reason = "Invalid".to_string();
    response
}

#[cfg(test)]
mod tests;
