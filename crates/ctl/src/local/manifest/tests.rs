use std::path::Path;

use mesh_config::{ObjectKey, Snapshot};

use super::*;

fn ns_key(name: &str) -> ObjectKey {
    ObjectKey::new("Namespace", "", name)
}

fn edit(text: &str, label: &str, value: Option<&str>) -> (String, EditReport) {
    let mut f = ManifestFile::parse(Path::new("m.yaml"), text).expect("splits");
    let report = f.set_label(&ns_key("shop"), label, value).expect("edits");
    (f.render(), report)
}

const FILE: &str = "\
# team namespaces
apiVersion: v1
kind: Namespace
metadata:
  name: other
---
apiVersion: v1
kind: Namespace
metadata:
  name: shop   # the shop
  labels:
    team: a    # owner
spec: {}
---
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
";

#[test]
fn adds_a_label_in_place_and_keeps_the_rest() {
    let (out, report) = edit(FILE, "istio.io/use-waypoint", Some("waypoint"));
    assert_eq!(
        report,
        EditReport {
            changed: true,
            reformatted: false
        }
    );
    let expected = FILE.replace(
        "    team: a    # owner\n",
        "    team: a    # owner\n    istio.io/use-waypoint: waypoint\n",
    );
    assert_eq!(out, expected);
}

#[test]
fn replaces_and_removes_a_label() {
    let (out, _) = edit(FILE, "team", Some("b"));
    assert!(out.contains("    team: b\n"), "{out}");
    let (out, report) = edit(FILE, "team", None);
    assert!(report.changed);
    // The only label gone: the labels key goes too; the other documents are untouched.
    assert!(!out.contains("labels:"), "{out}");
    assert!(out.starts_with(
        "# team namespaces\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: other\n---\n"
    ));
    assert!(out.ends_with(
        "---\napiVersion: v1\nkind: Service\nmetadata: {name: cart, namespace: shop}\n"
    ));
    let snap = Snapshot::from_yaml("m.yaml", &out);
    assert!(snap.issues.is_empty(), "{:?}", snap.issues);
    assert_eq!(snap.objects.len(), 3);
}

#[test]
fn no_change_is_reported_as_such() {
    let (out, report) = edit(FILE, "team", Some("a"));
    assert_eq!(out, FILE);
    assert!(!report.changed);
    let (_, report) = edit(FILE, "absent", None);
    assert!(!report.changed);
}

#[test]
fn creates_the_labels_block_when_missing() {
    let text = "apiVersion: v1\nkind: Namespace\nmetadata:\n    name: shop\nspec: {}";
    let (out, report) = edit(text, "istio.io/dataplane-mode", Some("ambient"));
    assert!(!report.reformatted);
    assert_eq!(
        out,
        "apiVersion: v1\nkind: Namespace\nmetadata:\n    name: shop\n    labels:\n      \
         istio.io/dataplane-mode: ambient\nspec: {}"
    );
}

#[test]
fn flow_style_documents_are_re_emitted() {
    let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {a: b}}\n";
    let (out, report) = edit(text, "istio.io/dataplane-mode", Some("ambient"));
    assert!(report.reformatted);
    let snap = Snapshot::from_yaml("m.yaml", &out);
    let ns = snap.namespace("shop").expect("still a namespace");
    let labels = ns.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("a").map(String::as_str), Some("b"));
    assert_eq!(
        labels.get("istio.io/dataplane-mode").map(String::as_str),
        Some("ambient")
    );
}

#[test]
fn list_items_are_edited() {
    let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  \
                metadata:\n    name: shop\n";
    let (out, report) = edit(text, "x", Some("y"));
    assert!(report.reformatted);
    let snap = Snapshot::from_yaml("m.yaml", &out);
    let labels = snap
        .namespace("shop")
        .and_then(|n| n.metadata.labels.clone());
    assert_eq!(
        labels.unwrap_or_default().get("x").map(String::as_str),
        Some("y")
    );
}

#[test]
fn values_that_would_change_type_are_quoted() {
    assert_eq!(yaml_string("ambient"), "ambient");
    assert_eq!(yaml_string("true"), "\"true\"");
    assert_eq!(yaml_string("123"), "\"123\"");
    assert_eq!(yaml_string(""), "\"\"");
}

#[test]
fn remove_and_append_documents() {
    let mut f = ManifestFile::parse(Path::new("m.yaml"), FILE).expect("splits");
    f.remove(&ns_key("shop")).expect("removes");
    f.append("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: new\n");
    let snap = Snapshot::from_yaml("m.yaml", &f.render());
    let names: Vec<String> = snap.objects.keys().map(|k| k.to_string()).collect();
    assert_eq!(
        names,
        ["Namespace new", "Namespace other", "Service shop/cart"]
    );
    let err = f.remove(&ns_key("shop")).expect_err("gone");
    assert!(
        err.to_string()
            .contains("no document defines Namespace shop"),
        "{err}"
    );
}

#[test]
fn inline_separator_content_is_refused() {
    let err = ManifestFile::parse(Path::new("m.yaml"), "--- {a: 1}\n").expect_err("refused");
    assert!(err.to_string().contains("line 1"), "{err}");
    assert!(ManifestFile::parse(Path::new("m.yaml"), "--- # comment\na: 1\n").is_ok());
}
