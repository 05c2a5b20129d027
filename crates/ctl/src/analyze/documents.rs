//! Reading manifests for analysis: files, directories and standard input, document by
//! document with line numbers; malformed documents (MESH0001) and fields the typed objects do
//! not know (MESH0002).

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use mesh_config::objects::{
    AuthorizationPolicy, GATEWAY_GROUP, Gateway, GrpcRoute, HttpRoute, PeerAuthentication,
    SECURITY_GROUP, kind,
};
use mesh_config::{ObjectKey, parse_manifests};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{Finding, Input, RawDocument, Severity};

pub const INVALID_MANIFEST: &str = "MESH0001";
pub const UNKNOWN_FIELD: &str = "MESH0002";

#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Loads files and directories (recursively, `*.yaml|*.yml`, hidden entries skipped); `-`
/// reads standard input.
pub fn load_paths(paths: &[PathBuf]) -> Result<Input, AnalyzeError> {
    let mut input = Input::default();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|source| AnalyzeError::Read {
                    path: path.clone(),
                    source,
                })?;
            add_text(&mut input, Path::new("<stdin>"), &text);
            continue;
        }
        let meta = std::fs::metadata(path).map_err(|source| AnalyzeError::Read {
            path: path.clone(),
            source,
        })?;
        let mut files = Vec::new();
        if meta.is_dir() {
            list_manifests(path, &mut files).map_err(|source| AnalyzeError::Read {
                path: path.clone(),
                source,
            })?;
        } else {
            files.push(path.clone());
        }
        for file in files {
            match std::fs::read(&file) {
                Ok(bytes) => match String::from_utf8(bytes) {
                    Ok(text) => add_text(&mut input, &file, &text),
                    Err(e) => input.load_findings.push(invalid(
                        &file,
                        None,
                        file.display().to_string(),
                        format!("not UTF-8 text: {e}"),
                    )),
                },
                Err(source) => return Err(AnalyzeError::Read { path: file, source }),
            }
        }
    }
    Ok(input)
}

fn list_manifests(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            list_manifests(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

fn invalid(file: &Path, line: Option<usize>, object: String, message: String) -> Finding {
    Finding {
        code: INVALID_MANIFEST,
        severity: Severity::Error,
        object,
        file: Some(file.to_path_buf()),
        line,
        message,
        fix: "correct the document; istiod skips it (and keeps the last good version of its \
              object while it runs)"
            .into(),
        namespace: None,
    }
}

/// A document's text, the 1-based line its text starts at, and the line of its first content.
#[derive(Debug)]
struct Segment {
    line: usize,
    start: usize,
    text: String,
}

impl Segment {
    /// Parses the document alone; error positions are those of the whole file.
    fn parse(&self) -> Result<Value, String> {
        let padded = format!("{}{}", "\n".repeat(self.start.saturating_sub(1)), self.text);
        let options = serde_saphyr::options! { with_snippet: false, strict_booleans: true };
        serde_saphyr::from_str_with_options::<Value>(&padded, options)
            .map_err(|e| one_line(&e.to_string()))
    }
}

/// Splits a YAML stream at its `---` lines; a leading segment of only comments is not a
/// document.
fn segments(text: &str) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::new();
    let mut current = Segment {
        line: 1,
        start: 1,
        text: String::new(),
    };
    let mut first_content: Option<usize> = None;
    let flush = |seg: &mut Segment, first: &mut Option<usize>, out: &mut Vec<Segment>| {
        let start = first.take().unwrap_or(seg.line);
        out.push(Segment {
            line: start,
            start: seg.start,
            text: std::mem::take(&mut seg.text),
        });
    };
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let n = i + 1;
        if line.starts_with("---")
            && line[3..]
                .chars()
                .next()
                .is_none_or(|c| c.is_ascii_whitespace())
        {
            flush(&mut current, &mut first_content, &mut out);
            current.line = n + 1;
            current.start = n + 1;
            // Content after the marker on the same line belongs to the document.
            let rest = &line[3..];
            if !rest.trim().is_empty() && !rest.trim_start().starts_with('#') {
                current.text.push_str(rest);
                current.start = n;
                first_content = Some(n);
            }
            continue;
        }
        if first_content.is_none() && !line.trim().is_empty() && !line.trim_start().starts_with('#')
        {
            first_content = Some(n);
        }
        current.text.push_str(line);
    }
    flush(&mut current, &mut first_content, &mut out);
    if out.len() > 1 && is_blank(&out[0].text) {
        out.remove(0);
    }
    out
}

fn is_blank(text: &str) -> bool {
    text.lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Adds one file's documents to the input.
pub fn add_text(input: &mut Input, file: &Path, text: &str) {
    let parsed = parse_manifests(text);
    let segs = segments(text);
    let line_of = |n: usize| segs.get(n.wrapping_sub(1)).map(|s| s.line);
    for err in &parsed.errors {
        match err.document {
            None => {
                // The stream as a whole is not YAML: find the first document that is not.
                let located = segs
                    .iter()
                    .enumerate()
                    .find_map(|(i, s)| s.parse().err().map(|e| (i + 1, s.line, e)));
                let (object, line, message) = match located {
                    Some((n, line, e)) => (
                        format!("document #{n}"),
                        Some(line),
                        format!("malformed YAML in document #{n}: {e}"),
                    ),
                    None => (
                        file.display().to_string(),
                        None,
                        format!("malformed YAML: {}", err.reason),
                    ),
                };
                input
                    .load_findings
                    .push(invalid(file, line, object, message));
            }
            Some(n) => {
                let object = err
                    .object_label()
                    .unwrap_or_else(|| format!("document #{n}"));
                let mut f = invalid(file, line_of(n), object, err.reason.clone());
                f.namespace = err
                    .key
                    .as_ref()
                    .map(|k| k.namespace.clone())
                    .filter(|n| !n.is_empty());
                input.load_findings.push(f);
            }
        }
    }
    let mut keys_here: Vec<ObjectKey> = Vec::new();
    for obj in parsed.objects {
        let key = obj.key();
        if let Some((first, _)) = input.locations.get(&key) {
            let where_ = first
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            let mut f = invalid(
                file,
                None,
                key.to_string(),
                format!("defined again; the definition in {where_} is used and this one ignored"),
            );
            f.namespace = Some(key.namespace.clone()).filter(|n| !n.is_empty());
            input.load_findings.push(f);
            continue;
        }
        keys_here.push(key.clone());
        input
            .snapshot
            .sources
            .insert(key.clone(), file.to_path_buf());
        input
            .locations
            .insert(key.clone(), (Some(file.to_path_buf()), None));
        input.snapshot.objects.insert(key, obj);
    }
    // Line numbers and raw documents of the objects that parsed.
    for seg in &segs {
        let Ok(doc) = seg.parse() else {
            continue;
        };
        let items = match (doc.get("kind").and_then(Value::as_str), doc.get("items")) {
            (Some("List"), Some(Value::Array(items))) => items.clone(),
            _ => vec![doc],
        };
        for item in items {
            let Some(key) = doc_key(&item) else { continue };
            if !keys_here.contains(&key) {
                continue;
            }
            if let Some(loc) = input.locations.get_mut(&key)
                && loc.1.is_none()
            {
                loc.1 = Some(seg.line);
            }
            input.documents.push(RawDocument {
                file: Some(file.to_path_buf()),
                line: Some(seg.line),
                value: item,
            });
        }
    }
}

/// The key a document names (namespace defaulted as the parser does).
pub fn doc_key(doc: &Value) -> Option<ObjectKey> {
    let kind = doc.get("kind")?.as_str()?;
    let meta = doc.get("metadata")?;
    let name = meta.get("name")?.as_str()?;
    let ns = if kind == kind::NAMESPACE {
        ""
    } else {
        meta.get("namespace")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .unwrap_or(mesh_config::parse::DEFAULT_NAMESPACE)
    };
    Some(ObjectKey::new(kind, ns, name))
}

/// MESH0002 for every document.
pub fn unknown_fields(docs: &[RawDocument]) -> Vec<Finding> {
    let mut out = Vec::new();
    for doc in docs {
        let Some(key) = doc_key(&doc.value) else {
            continue;
        };
        for path in ignored_paths(&doc.value) {
            let hint = suggestion(&path)
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            out.push(Finding {
                code: UNKNOWN_FIELD,
                severity: Severity::Warning,
                object: key.to_string(),
                file: doc.file.clone(),
                line: doc.line,
                message: format!(
                    "unknown field `{path}`{hint}: the mesh does not read it, so it has no effect"
                ),
                fix: "remove it or correct its name (field names are case-sensitive camelCase)"
                    .into(),
                namespace: Some(key.namespace.clone()).filter(|n| !n.is_empty()),
            });
        }
    }
    out
}

/// Paths (`spec.rules[0].to[0].operation.method`) of the fields a document's typed object
/// ignores; empty for kinds the mesh does not read and for documents that do not parse.
pub fn ignored_paths(doc: &Value) -> Vec<String> {
    let api_version = doc.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let group = api_version.split_once('/').map(|(g, _)| g).unwrap_or("");
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("");
    let mut doc = doc.clone();
    strip_nulls(&mut doc);
    let paths = match (group, kind) {
        ("", kind::NAMESPACE) => ignored::<Namespace>(doc),
        ("", kind::POD) => ignored::<Pod>(doc),
        ("", kind::SERVICE) => ignored::<Service>(doc),
        (SECURITY_GROUP, kind::AUTHORIZATION_POLICY) => ignored::<AuthorizationPolicy>(doc),
        (SECURITY_GROUP, kind::PEER_AUTHENTICATION) => ignored::<PeerAuthentication>(doc),
        (GATEWAY_GROUP, kind::GATEWAY) => ignored::<Gateway>(doc),
        (GATEWAY_GROUP, kind::HTTP_ROUTE) => ignored::<HttpRoute>(doc),
        (GATEWAY_GROUP, kind::GRPC_ROUTE) => ignored::<GrpcRoute>(doc),
        _ => Vec::new(),
    };
    // Status is written by controllers, not read by the mesh.
    paths
        .into_iter()
        .filter(|p| p != "status" && !p.starts_with("status.") && !p.starts_with("status["))
        .collect()
}

fn ignored<T: DeserializeOwned>(doc: Value) -> Vec<String> {
    let mut paths = Vec::new();
    let parsed: Result<T, _> =
        serde_ignored::deserialize(doc, |path| paths.push(format_path(&path)));
    if parsed.is_err() {
        return Vec::new();
    }
    paths
}

fn format_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", format_path(parent)),
        Path::Map { parent, key } => {
            let p = format_path(parent);
            if p.is_empty() {
                key.clone()
            } else {
                format!("{p}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => format_path(parent),
    }
}

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

/// Field names of the mesh's policy and route objects that users misspell most.
const KNOWN_FIELDS: &[&str] = &[
    "selector",
    "matchLabels",
    "targetRef",
    "targetRefs",
    "rules",
    "action",
    "provider",
    "from",
    "to",
    "when",
    "source",
    "operation",
    "principals",
    "notPrincipals",
    "requestPrincipals",
    "notRequestPrincipals",
    "namespaces",
    "notNamespaces",
    "serviceAccounts",
    "notServiceAccounts",
    "ipBlocks",
    "notIpBlocks",
    "remoteIpBlocks",
    "notRemoteIpBlocks",
    "hosts",
    "notHosts",
    "ports",
    "notPorts",
    "methods",
    "notMethods",
    "paths",
    "notPaths",
    "key",
    "values",
    "notValues",
    "mtls",
    "mode",
    "portLevelMtls",
    "gatewayClassName",
    "listeners",
    "addresses",
    "parentRefs",
    "hostnames",
    "matches",
    "filters",
    "backendRefs",
    "timeouts",
    "retry",
    "sectionName",
    "headers",
    "queryParams",
    "method",
    "path",
    "weight",
    "requestHeaderModifier",
    "responseHeaderModifier",
    "requestRedirect",
    "urlRewrite",
    "requestMirror",
    "backendRequest",
    "request",
    "attempts",
    "backoff",
    "codes",
    "labels",
    "annotations",
    "namespace",
    "name",
];

/// A known field name close to the last segment of `path` (edit distance 1 or 2, or a case
/// difference).
fn suggestion(path: &str) -> Option<&'static str> {
    let last = path.rsplit('.').next()?;
    let last = last.split('[').next()?;
    KNOWN_FIELDS
        .iter()
        .copied()
        .filter(|k| *k != last)
        .map(|k| {
            let d = if k.eq_ignore_ascii_case(last) {
                0
            } else {
                edit_distance(k, last)
            };
            (d, k)
        })
        .filter(|(d, k)| *d <= if k.len() > 4 { 2 } else { 1 })
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Raw documents for objects read from a cluster, for the field checks: the CRD-backed kinds
/// (the API server already rejects unknown fields of core objects).
pub fn cluster_documents(objects: &BTreeMap<ObjectKey, Value>) -> Vec<RawDocument> {
    objects
        .values()
        .map(|v| RawDocument {
            file: None,
            line: None,
            value: v.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_carry_their_first_content_line() {
        let segs = segments("# header\n---\napiVersion: v1\n---\n\n# c\nkind: X\n");
        assert_eq!(segs.len(), 2);
        assert_eq!(segs[0].line, 3);
        assert_eq!(segs[1].line, 7);
    }

    #[test]
    fn ignored_fields_have_readable_paths() {
        let doc: Value = serde_json::json!({
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": "p", "namespace": "a", "labelz": {}},
            "spec": {"rules": [{"to": [{"operation": {"method": ["GET"]}}]}]},
            "status": {"x": 1}
        });
        let paths = ignored_paths(&doc);
        assert_eq!(
            paths,
            vec![
                "metadata.labelz".to_string(),
                "spec.rules[0].to[0].operation.method".to_string()
            ]
        );
        assert_eq!(suggestion(&paths[1]), Some("methods"));
        assert_eq!(suggestion(&paths[0]), Some("labels"));
        assert_eq!(suggestion("spec.zzzzzzzz"), None);
    }
}
