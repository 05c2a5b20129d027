//! Parsing of YAML manifests (multi-document, `kind: List` accepted) into typed objects.
//! Every failure is reported per document with the object it concerns; nothing here panics.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::objects::{GATEWAY_GROUP, Object, ObjectKey, SECURITY_GROUP, kind};

/// Namespace given to namespaced objects whose manifest has none (as `kubectl apply` does).
pub const DEFAULT_NAMESPACE: &str = "default";

/// The outcome of parsing one manifest file.
#[derive(Debug, Default)]
pub struct Parsed {
    pub objects: Vec<Object>,
    pub errors: Vec<DocumentError>,
    /// `apiVersion/kind` of documents of kinds the mesh does not read (skipped, not errors).
    pub ignored: Vec<String>,
}

/// A document (or the whole file) that could not be turned into an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocumentError {
    /// 1-based index among the non-empty documents; `None` when the file as a whole is not YAML.
    pub document: Option<usize>,
    /// The object the document names, when its kind, namespace and name could be read.
    pub key: Option<ObjectKey>,
    pub reason: String,
}

impl DocumentError {
    /// `Kind ns/name` when known, else `document #N`, else `None` (whole file).
    pub fn object_label(&self) -> Option<String> {
        match (&self.key, self.document) {
            (Some(key), _) => Some(key.to_string()),
            (None, Some(n)) => Some(format!("document #{n}")),
            (None, None) => None,
        }
    }
}

/// Parses the text of one manifest file. A YAML syntax error fails the whole file (one error with
/// `document: None`); other errors concern single documents and leave the others parsed.
pub fn parse_manifests(text: &str) -> Parsed {
    let mut out = Parsed::default();
    let options = serde_saphyr::options! { with_snippet: false, strict_booleans: true };
    let docs: Vec<Value> = match serde_saphyr::from_multiple_with_options(text, options) {
        Ok(docs) => docs,
        Err(e) => {
            out.errors.push(DocumentError {
                document: None,
                key: None,
                reason: format!("invalid YAML: {}", one_line(&e.to_string())),
            });
            return out;
        }
    };
    for (i, doc) in docs.into_iter().enumerate() {
        let n = i + 1;
        if doc.is_null() {
            continue;
        }
        parse_document(doc, n, &mut out);
    }
    out
}

fn parse_document(mut doc: Value, n: usize, out: &mut Parsed) {
    strip_nulls(&mut doc);
    let Some(map) = doc.as_object() else {
        out.errors
            .push(doc_error(n, None, "document is not a mapping"));
        return;
    };
    let api_version = map
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let kind = map
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if api_version.is_empty() || kind.is_empty() {
        out.errors
            .push(doc_error(n, None, "missing apiVersion or kind"));
        return;
    }
    if kind == "List" && api_version == "v1" {
        let items = match doc.get_mut("items").map(Value::take) {
            Some(Value::Array(items)) => items,
            None => Vec::new(),
            Some(_) => {
                out.errors
                    .push(doc_error(n, None, "List.items is not a sequence"));
                return;
            }
        };
        for item in items {
            parse_document(item, n, out);
        }
        return;
    }
    let key = provisional_key(&kind, map);
    match to_object(&api_version, &kind, doc) {
        Ok(Some(mut obj)) => match normalize(&mut obj) {
            Ok(()) => out.objects.push(obj),
            Err(reason) => out.errors.push(doc_error(n, None, &reason)),
        },
        Ok(None) => out.ignored.push(format!("{api_version}/{kind}")),
        Err(reason) => out.errors.push(DocumentError {
            document: Some(n),
            key: key.filter(|k| !k.name.is_empty()),
            reason,
        }),
    }
}

/// Converts one object as the API server (a watch, an admission request) sends it, exactly as a
/// manifest document is converted: `Ok(None)` for kinds the mesh does not read, `Err` with the
/// reason when the object is not valid.
pub fn parse_object(mut doc: Value) -> Result<Option<Object>, String> {
    strip_nulls(&mut doc);
    let field = |name: &str| {
        doc.get(name)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    if api_version.is_empty() || kind.is_empty() {
        return Err("missing apiVersion or kind".into());
    }
    let Some(mut obj) = to_object(&api_version, &kind, doc)? else {
        return Ok(None);
    };
    normalize(&mut obj)?;
    Ok(Some(obj))
}

/// Checks the name and fills in what a manifest may leave out: the namespace of namespaced
/// objects (`default`) and the uid of pods.
fn normalize(obj: &mut Object) -> Result<(), String> {
    let kind = obj.kind();
    let cluster_scoped = obj.is_cluster_scoped();
    let meta = obj.metadata_mut();
    if meta.name.as_deref().unwrap_or("").is_empty() {
        return Err(format!("{kind} has no metadata.name"));
    }
    if !cluster_scoped && meta.namespace.as_deref().unwrap_or("").is_empty() {
        meta.namespace = Some(DEFAULT_NAMESPACE.to_string());
    }
    if let Object::Pod(pod) = obj
        && pod.metadata.uid.as_deref().unwrap_or("").is_empty()
    {
        let uid = crate::enrol::pod_uid(pod);
        std::sync::Arc::make_mut(pod).metadata.uid = Some(uid);
    }
    Ok(())
}

/// Converts one document of a known kind; `Ok(None)` for kinds the mesh does not read.
fn to_object(api_version: &str, kind: &str, doc: Value) -> Result<Option<Object>, String> {
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    let obj = match (group, kind) {
        ("", kind::NAMESPACE) => typed(doc, Object::Namespace, version, &["v1"])?,
        ("", kind::POD) => typed(doc, Object::Pod, version, &["v1"])?,
        ("", kind::SERVICE) => typed(doc, Object::Service, version, &["v1"])?,
        ("", kind::NODE) => typed(doc, Object::Node, version, &["v1"])?,
        (SECURITY_GROUP, kind::AUTHORIZATION_POLICY) => typed(
            doc,
            Object::AuthorizationPolicy,
            version,
            &["v1", "v1beta1"],
        )?,
        (SECURITY_GROUP, kind::PEER_AUTHENTICATION) => {
            typed(doc, Object::PeerAuthentication, version, &["v1", "v1beta1"])?
        }
        (GATEWAY_GROUP, kind::GATEWAY) => typed(doc, Object::Gateway, version, &["v1", "v1beta1"])?,
        (GATEWAY_GROUP, kind::GATEWAY_CLASS) => {
            typed(doc, Object::GatewayClass, version, &["v1", "v1beta1"])?
        }
        (GATEWAY_GROUP, kind::HTTP_ROUTE) => {
            typed(doc, Object::HttpRoute, version, &["v1", "v1beta1"])?
        }
        (GATEWAY_GROUP, kind::GRPC_ROUTE) => {
            typed(doc, Object::GrpcRoute, version, &["v1", "v1alpha2"])?
        }
        _ => return Ok(None),
    };
    Ok(Some(obj))
}

fn typed<T: DeserializeOwned>(
    doc: Value,
    wrap: fn(std::sync::Arc<T>) -> Object,
    version: &str,
    supported: &[&str],
) -> Result<Object, String> {
    if !supported.contains(&version) {
        return Err(format!(
            "unsupported version {version:?} (supported: {})",
            supported.join(", ")
        ));
    }
    serde_json::from_value::<T>(doc)
        .map(|o| wrap(std::sync::Arc::new(o)))
        .map_err(|e| format!("invalid object: {e}"))
}

/// The key a document claims, read leniently so that errors can name the object.
fn provisional_key(kind: &str, map: &serde_json::Map<String, Value>) -> Option<ObjectKey> {
    let meta = map.get("metadata")?.as_object()?;
    let name = meta.get("name")?.as_str()?.to_string();
    let namespace = if kind::is_cluster_scoped(kind) {
        String::new()
    } else {
        meta.get("namespace")
            .and_then(Value::as_str)
            .filter(|ns| !ns.is_empty())
            .unwrap_or(DEFAULT_NAMESPACE)
            .to_string()
    };
    Some(ObjectKey::new(kind, namespace, name))
}

/// Removes fields whose value is null: Kubernetes treats `field: null` as an absent field.
fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

fn doc_error(n: usize, key: Option<ObjectKey>, reason: &str) -> DocumentError {
    DocumentError {
        document: Some(n),
        key,
        reason: reason.to_string(),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests;
