//! Configuration analysis: the mistakes users make with ambient-mesh resources, found in
//! manifest files, a configuration directory or objects read from a cluster.
//!
//! Codes (stable; CI jobs may match on them):
//!
//! | code     | severity | finding |
//! |----------|----------|---------|
//! | MESH0001 | error    | invalid manifest: malformed YAML, an object that does not parse, a duplicate |
//! | MESH0002 | warning  | a field the mesh does not know (ignored) |
//! | MESH0003 | error    | AuthorizationPolicy with HTTP attributes where no waypoint enforces it |
//! | MESH0004 | error    | `istio.io/use-waypoint` naming a waypoint that does not exist |
//! | MESH0005 | warning  | HTTPRoute/GRPCRoute attached to a Service without a waypoint |
//! | MESH0006 | warning  | PeerAuthentication STRICT while some namespaces are outside the mesh |
//! | MESH0007 | warning  | `istio.io/use-waypoint` naming a waypoint that does not serve that traffic |
//! | MESH0008 | error    | `istio-waypoint` Gateway without the HBONE listener on 15008 |

pub mod documents;
pub mod rules;

use std::collections::BTreeMap;
use std::path::PathBuf;

use mesh_config::{ObjectKey, Snapshot};
use serde::Serialize;
use serde_json::Value;

pub use documents::{AnalyzeError, load_paths};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

impl Severity {
    pub fn title(self) -> &'static str {
        match self {
            Severity::Error => "Error",
            Severity::Warning => "Warning",
        }
    }
}

/// One problem found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub code: &'static str,
    pub severity: Severity,
    /// `Kind ns/name`, `document #N` or the file, as far as known.
    pub object: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// 1-based line of the document in `file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    pub message: String,
    pub fix: String,
    /// The namespace the finding concerns (for `-n` filtering).
    #[serde(skip)]
    pub namespace: Option<String>,
}

/// One document of the input as parsed YAML (or an object read from the cluster).
#[derive(Clone, Debug)]
pub struct RawDocument {
    pub file: Option<PathBuf>,
    pub line: Option<usize>,
    pub value: Value,
}

/// What is analyzed.
#[derive(Clone, Debug, Default)]
pub struct Input {
    pub snapshot: Snapshot,
    /// Documents of objects that parsed (for field checks).
    pub documents: Vec<RawDocument>,
    /// Where each object is defined.
    pub locations: BTreeMap<ObjectKey, (Option<PathBuf>, Option<usize>)>,
    /// Problems found while reading (MESH0001).
    pub load_findings: Vec<Finding>,
}

/// Analysis settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// Namespace whose policies without selector apply to the whole mesh.
    pub root_namespace: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            root_namespace: "istio-system".into(),
        }
    }
}

/// Every finding, errors first, then by file, line and code.
pub fn analyze(input: &Input, opts: &Options) -> Vec<Finding> {
    let mut out = input.load_findings.clone();
    out.extend(documents::unknown_fields(&input.documents));
    let mut semantic = rules::run(&input.snapshot, opts);
    for f in &mut semantic {
        if f.file.is_none()
            && let Some(key) = parse_key(&f.object)
            && let Some((file, line)) = input.locations.get(&key)
        {
            f.file = file.clone();
            f.line = *line;
        }
    }
    out.extend(semantic);
    out.sort_by(|a, b| {
        (a.severity, &a.file, a.line, a.code, &a.object)
            .cmp(&(b.severity, &b.file, b.line, b.code, &b.object))
    });
    out.dedup();
    out
}

/// Reads back `Kind ns/name` or `Kind name`.
fn parse_key(label: &str) -> Option<ObjectKey> {
    let (kind, rest) = label.split_once(' ')?;
    Some(match rest.split_once('/') {
        Some((ns, name)) => ObjectKey::new(kind, ns, name),
        None => ObjectKey::new(kind, "", rest),
    })
}

/// How many errors and warnings.
pub fn counts(findings: &[Finding]) -> (usize, usize) {
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    (errors, findings.len() - errors)
}

#[cfg(test)]
mod tests;
