//! Label selectors as the mesh APIs use them: every listed label must be present and equal.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Whether `labels` carry every `selector` entry. An empty selector matches everything.
pub(crate) fn matches(
    selector: &BTreeMap<String, String>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// The object's labels, if any.
pub(crate) fn labels(meta: &ObjectMeta) -> Option<&BTreeMap<String, String>> {
    meta.labels.as_ref()
}

/// The object's namespace (`""` when unset; sources fill it in).
pub(crate) fn namespace(meta: &ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or("")
}

/// The object's name.
pub(crate) fn name(meta: &ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or("")
}
