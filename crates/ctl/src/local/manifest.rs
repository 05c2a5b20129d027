//! Editing a multi-document manifest file in place: change one object's labels, replace or
//! remove one document, append one, keeping every other document byte for byte.
//!
//! Labels are edited as text (the edited document keeps its comments and layout); the result is
//! parsed again and compared with the intended object. When a document's layout is too unusual
//! for that (flow mappings, `kind: List`), the document is re-emitted from its parsed form, which
//! drops its comments; [`EditReport::reformatted`] says so.

use std::path::{Path, PathBuf};

use mesh_config::ObjectKey;
use mesh_config::parse::DEFAULT_NAMESPACE;
use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path}: line {line}: a document separator followed by content; meshctl edits only \
         files whose `---` lines stand alone. Edit the file by hand"
    )]
    InlineSeparator { path: PathBuf, line: usize },
    #[error("{path}: no document defines {key}")]
    NotFound { path: PathBuf, key: String },
    #[error("cannot encode the edited {key} as YAML: {reason}")]
    Encode { key: String, reason: String },
}

/// One document: the separator line that opens it (none for the first) and its text.
#[derive(Clone, Debug)]
struct Segment {
    separator: Option<String>,
    body: String,
}

/// A manifest file split into documents.
#[derive(Clone, Debug)]
pub struct ManifestFile {
    path: PathBuf,
    segments: Vec<Segment>,
}

/// What an edit did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EditReport {
    pub changed: bool,
    /// The document was re-emitted from its parsed form (its comments are gone).
    pub reformatted: bool,
}

/// Where a document defines an object: at its top level, or as an item of a `kind: List`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Top(usize),
    ListItem(usize, usize),
}

impl ManifestFile {
    pub fn read(path: &Path) -> Result<Self, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// A file that does not exist yet.
    pub fn empty(path: &Path) -> Self {
        ManifestFile {
            path: path.to_path_buf(),
            segments: vec![Segment {
                separator: None,
                body: String::new(),
            }],
        }
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, ManifestError> {
        let mut segments = vec![Segment {
            separator: None,
            body: String::new(),
        }];
        for (i, line) in text.split_inclusive('\n').enumerate() {
            if is_separator(line) {
                let rest = line[3..].trim();
                if !rest.is_empty() && !rest.starts_with('#') {
                    return Err(ManifestError::InlineSeparator {
                        path: path.to_path_buf(),
                        line: i + 1,
                    });
                }
                segments.push(Segment {
                    separator: Some(line.to_string()),
                    body: String::new(),
                });
            } else if let Some(last) = segments.last_mut() {
                last.body.push_str(line);
            }
        }
        Ok(ManifestFile {
            path: path.to_path_buf(),
            segments,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for seg in &self.segments {
            if let Some(sep) = &seg.separator {
                if !out.is_empty() && !out.ends_with('\n') {
                    out.push('\n');
                }
                out.push_str(sep);
            }
            out.push_str(&seg.body);
        }
        out
    }

    /// Whether no document holds anything but comments and blank lines.
    pub fn is_blank(&self) -> bool {
        self.segments.iter().all(|s| {
            s.body
                .lines()
                .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        })
    }

    pub fn defines(&self, key: &ObjectKey) -> bool {
        self.find(key).is_some()
    }

    fn find(&self, key: &ObjectKey) -> Option<Place> {
        for (i, seg) in self.segments.iter().enumerate() {
            let Some(doc) = parse_doc(&seg.body) else {
                continue;
            };
            if is_list(&doc) {
                let items = doc.get("items").and_then(Value::as_array);
                if let Some(j) = items.and_then(|items| items.iter().position(|it| names(it, key)))
                {
                    return Some(Place::ListItem(i, j));
                }
            } else if names(&doc, key) {
                return Some(Place::Top(i));
            }
        }
        None
    }

    /// Sets (`Some`) or removes (`None`) one label of the object `key`.
    pub fn set_label(
        &mut self,
        key: &ObjectKey,
        label: &str,
        value: Option<&str>,
    ) -> Result<EditReport, ManifestError> {
        let place = self.find(key).ok_or_else(|| ManifestError::NotFound {
            path: self.path.clone(),
            key: key.to_string(),
        })?;
        let i = match place {
            Place::Top(i) | Place::ListItem(i, _) => i,
        };
        let body = &self.segments[i].body;
        let Some(original) = parse_doc(body) else {
            return Err(ManifestError::NotFound {
                path: self.path.clone(),
                key: key.to_string(),
            });
        };
        let mut expected = original.clone();
        let target = match place {
            Place::Top(_) => Some(&mut expected),
            Place::ListItem(_, j) => expected
                .get_mut("items")
                .and_then(Value::as_array_mut)
                .and_then(|items| items.get_mut(j)),
        };
        if let Some(obj) = target {
            apply_label(obj, label, value);
        }
        if normalized(&expected) == normalized(&original) {
            return Ok(EditReport::default());
        }
        if let Place::Top(_) = place
            && let Some(text) = edit_labels_text(body, label, value)
            && parse_doc(&text).map(|v| normalized(&v)) == Some(normalized(&expected))
        {
            self.segments[i].body = text;
            return Ok(EditReport {
                changed: true,
                reformatted: false,
            });
        }
        let text = to_yaml(&expected, key)?;
        self.segments[i].body = text;
        Ok(EditReport {
            changed: true,
            reformatted: true,
        })
    }

    /// Replaces the document defining `key` with `yaml` (one document).
    pub fn replace(&mut self, key: &ObjectKey, yaml: &str) -> Result<(), ManifestError> {
        match self.find(key) {
            Some(Place::Top(i)) => {
                self.segments[i].body = with_newline(yaml);
                Ok(())
            }
            Some(Place::ListItem(i, j)) => {
                let mut doc = parse_doc(&self.segments[i].body).unwrap_or(Value::Null);
                let new: Value =
                    serde_saphyr::from_str(yaml).map_err(|e| ManifestError::Encode {
                        key: key.to_string(),
                        reason: e.to_string(),
                    })?;
                if let Some(slot) = doc
                    .get_mut("items")
                    .and_then(Value::as_array_mut)
                    .and_then(|items| items.get_mut(j))
                {
                    *slot = new;
                }
                self.segments[i].body = to_yaml(&doc, key)?;
                Ok(())
            }
            None => Err(ManifestError::NotFound {
                path: self.path.clone(),
                key: key.to_string(),
            }),
        }
    }

    /// Removes the document (or `List` item) defining `key`.
    pub fn remove(&mut self, key: &ObjectKey) -> Result<(), ManifestError> {
        match self.find(key) {
            Some(Place::Top(i)) => {
                if i == 0 && self.segments.len() == 1 {
                    self.segments[0].body.clear();
                } else {
                    self.segments.remove(i);
                    // The new first document needs no separator.
                    if i == 0 {
                        self.segments[0].separator = None;
                    }
                }
                Ok(())
            }
            Some(Place::ListItem(i, j)) => {
                let mut doc = parse_doc(&self.segments[i].body).unwrap_or(Value::Null);
                if let Some(items) = doc.get_mut("items").and_then(Value::as_array_mut) {
                    items.remove(j);
                }
                self.segments[i].body = to_yaml(&doc, key)?;
                Ok(())
            }
            None => Err(ManifestError::NotFound {
                path: self.path.clone(),
                key: key.to_string(),
            }),
        }
    }

    /// Adds `yaml` (one document) at the end of the file.
    pub fn append(&mut self, yaml: &str) {
        if self.is_blank() && self.segments.len() == 1 {
            self.segments[0].body = with_newline(yaml);
            return;
        }
        self.segments.push(Segment {
            separator: Some("---\n".into()),
            body: with_newline(yaml),
        });
    }

    /// Writes the file atomically (a hidden temporary file beside it, then a rename), keeping
    /// the permissions of the file it replaces.
    pub fn write(&self) -> Result<(), ManifestError> {
        write_atomic(&self.path, self.render().as_bytes())
    }
}

/// Writes `bytes` to `path` through a hidden temporary file in the same directory (which the
/// configuration watchers skip), so that readers never see a half-written manifest.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ManifestError> {
    let err = |source| ManifestError::Write {
        path: path.to_path_buf(),
        source,
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.meshctl-tmp"));
    std::fs::write(&tmp, bytes).map_err(err)?;
    if let Ok(meta) = std::fs::metadata(path) {
        std::fs::set_permissions(&tmp, meta.permissions()).map_err(err)?;
    }
    std::fs::rename(&tmp, path).map_err(err)
}

fn is_separator(line: &str) -> bool {
    line.starts_with("---")
        && line[3..]
            .chars()
            .next()
            .is_none_or(|c| c.is_ascii_whitespace())
}

fn with_newline(s: &str) -> String {
    let mut s = s.to_string();
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

fn parse_doc(body: &str) -> Option<Value> {
    let v: Value = serde_saphyr::from_str(body).ok()?;
    (!v.is_null()).then_some(v)
}

fn is_list(doc: &Value) -> bool {
    doc.get("kind").and_then(Value::as_str) == Some("List")
        && doc.get("apiVersion").and_then(Value::as_str) == Some("v1")
}

/// Whether `doc` is the object `key` (namespace defaulted as the parser does).
fn names(doc: &Value, key: &ObjectKey) -> bool {
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("");
    let meta = doc.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let ns = if key.namespace.is_empty() {
        ""
    } else {
        meta.and_then(|m| m.get("namespace"))
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .unwrap_or(DEFAULT_NAMESPACE)
    };
    kind == key.kind && name == key.name && ns == key.namespace
}

fn apply_label(obj: &mut Value, label: &str, value: Option<&str>) {
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    let meta = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    let Some(meta) = meta.as_object_mut() else {
        return;
    };
    match value {
        Some(v) => {
            let labels = meta
                .entry("labels")
                .or_insert_with(|| Value::Object(Map::new()));
            if !labels.is_object() {
                *labels = Value::Object(Map::new());
            }
            if let Some(labels) = labels.as_object_mut() {
                labels.insert(label.to_string(), Value::String(v.to_string()));
            }
        }
        None => {
            if let Some(labels) = meta.get_mut("labels").and_then(Value::as_object_mut) {
                labels.remove(label);
            }
        }
    }
}

/// The document as the parser sees it: nulls removed, and an empty `labels` map removed.
fn normalized(v: &Value) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(map) => {
                map.retain(|_, v| !v.is_null());
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    fn drop_empty_labels(v: &mut Value) {
        if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut)
            && meta
                .get("labels")
                .and_then(Value::as_object)
                .is_some_and(Map::is_empty)
        {
            meta.remove("labels");
        }
        if let Some(items) = v.get_mut("items").and_then(Value::as_array_mut) {
            items.iter_mut().for_each(drop_empty_labels);
        }
    }
    let mut v = v.clone();
    strip(&mut v);
    drop_empty_labels(&mut v);
    v
}

fn to_yaml(doc: &Value, key: &ObjectKey) -> Result<String, ManifestError> {
    serde_saphyr::to_string(doc)
        .map(|s| with_newline(&s))
        .map_err(|e| ManifestError::Encode {
            key: key.to_string(),
            reason: e.to_string(),
        })
}

/// A label value as a YAML scalar that reads back as the same string.
pub fn yaml_string(v: &str) -> String {
    let plain = !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        && v.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && !matches!(
            v.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "null" | "y" | "n"
        );
    if plain {
        v.to_string()
    } else {
        serde_json::to_string(v).unwrap_or_else(|_| format!("\"{v}\""))
    }
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn is_content(line: &str) -> bool {
    let t = line.trim();
    !t.is_empty() && !t.starts_with('#')
}

/// The text after `key:` on a line (comment removed), if the line is that key.
fn key_rest<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let t = line.trim_start();
    let rest = t
        .strip_prefix(key)
        .or_else(|| t.strip_prefix(&format!("\"{key}\"")))
        .or_else(|| t.strip_prefix(&format!("'{key}'")))?;
    let rest = rest.strip_prefix(':')?;
    if !(rest.is_empty() || rest.starts_with(|c: char| c.is_ascii_whitespace())) {
        return None;
    }
    let rest = rest.trim();
    Some(match rest.find(" #") {
        Some(i) => rest[..i].trim(),
        None if rest.starts_with('#') => "",
        None => rest,
    })
}

/// Textual label edit of a top-level mapping document; `None` when the layout is not the usual
/// block style (tabs, flow mappings, no `metadata:` line).
fn edit_labels_text(body: &str, label: &str, value: Option<&str>) -> Option<String> {
    let mut lines: Vec<String> = body.split_inclusive('\n').map(str::to_string).collect();
    if lines.iter().any(|l| l.starts_with('\t')) {
        return None;
    }
    let meta = lines
        .iter()
        .position(|l| indent_of(l) == 0 && key_rest(l, "metadata") == Some(""))?;
    // The metadata block: every following line that is indented, blank or a comment.
    let mut end = meta + 1;
    while end < lines.len() && (!is_content(&lines[end]) || indent_of(&lines[end]) > 0) {
        end += 1;
    }
    let child = lines[meta + 1..end]
        .iter()
        .find(|l| is_content(l))
        .map(|l| indent_of(l))?;
    let last_content = (meta + 1..end).rev().find(|&i| is_content(&lines[i]))?;
    let labels_at = (meta + 1..end)
        .find(|&i| indent_of(&lines[i]) == child && key_rest(&lines[i], "labels").is_some());
    let pad = |n: usize| " ".repeat(n);
    let new_line =
        |indent: usize, v: &str| format!("{}{}: {}\n", pad(indent), label, yaml_string(v));
    let Some(labels_at) = labels_at else {
        let v = value?;
        ensure_newline(&mut lines[last_content]);
        lines.insert(last_content + 1, new_line(child + 2, v));
        lines.insert(last_content + 1, format!("{}labels:\n", pad(child)));
        return Some(lines.concat());
    };
    match key_rest(&lines[labels_at], "labels")? {
        "" => {}
        "{}" => lines[labels_at] = format!("{}labels:\n", pad(child)),
        _ => return None,
    }
    let mut lend = labels_at + 1;
    while lend < lines.len() && (!is_content(&lines[lend]) || indent_of(&lines[lend]) > child) {
        lend += 1;
    }
    let entries: Vec<usize> = (labels_at + 1..lend)
        .filter(|&i| is_content(&lines[i]))
        .collect();
    let label_indent = entries
        .first()
        .map(|&i| indent_of(&lines[i]))
        .unwrap_or(child + 2);
    let found = entries
        .iter()
        .copied()
        .find(|&i| indent_of(&lines[i]) == label_indent && key_rest(&lines[i], label).is_some());
    // An entry's own lines: its line and the more indented lines of a multi-line value.
    let entry_end = |lines: &[String], i: usize| {
        let mut k = i + 1;
        while k < lend && is_content(&lines[k]) && indent_of(&lines[k]) > label_indent {
            k += 1;
        }
        k
    };
    match (found, value) {
        (Some(i), Some(v)) => {
            let k = entry_end(&lines, i);
            lines.drain(i + 1..k);
            lines[i] = new_line(label_indent, v);
        }
        (Some(i), None) => {
            let k = entry_end(&lines, i);
            lines.drain(i..k);
            let others = entries.iter().filter(|&&e| e < i || e >= k).count();
            if others == 0 {
                lines.remove(labels_at);
            }
        }
        (None, Some(v)) => {
            let after = entries.last().copied().unwrap_or(labels_at);
            let mut at = after + 1;
            while at < lend && is_content(&lines[at]) {
                at += 1;
            }
            ensure_newline(&mut lines[at - 1]);
            lines.insert(at, new_line(label_indent, v));
        }
        (None, None) => return None,
    }
    Some(lines.concat())
}

fn ensure_newline(line: &mut String) {
    if !line.ends_with('\n') {
        line.push('\n');
    }
}

#[cfg(test)]
mod tests;
