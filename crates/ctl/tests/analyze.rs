//! `meshctl analyze`: each mistake found (and a correct configuration left alone), file and
//! line reporting, exit codes.

mod common;

use common::{ConfigDir, NAMESPACES, WORKLOADS, assert_snapshot, meshctl, meshctl_with_stdin};
use serde_json::Value;

/// A correct ambient setup: enrolled namespace, waypoint, Service bound to it, L7 policy and
/// route on the waypoint, STRICT mTLS with every namespace enrolled.
const GOOD: &str = "\
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels:
    istio.io/dataplane-mode: ambient
    istio.io/use-waypoint: waypoint
---
apiVersion: v1
kind: Pod
metadata: {name: cart-0, namespace: shop, labels: {app: cart}}
spec:
  nodeName: node1
  containers: [{name: app, image: cart:1}]
---
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
spec:
  selector: {app: cart}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: waypoint
  namespace: shop
  labels: {istio.io/waypoint-for: service}
spec:
  gatewayClassName: istio-waypoint
  listeners:
  - {name: mesh, port: 15008, protocol: HBONE}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: get-only, namespace: shop}
spec:
  targetRefs:
  - {kind: Service, group: \"\", name: cart}
  action: ALLOW
  rules:
  - to:
    - operation:
        methods: [GET]
        paths: [/api/*]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: l4, namespace: shop}
spec:
  selector:
    matchLabels: {app: cart}
  rules:
  - from:
    - source:
        principals: [cluster.local/ns/shop/sa/web]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: cart-split, namespace: shop}
spec:
  parentRefs:
  - {group: \"\", kind: Service, name: cart, port: 80}
  rules:
  - backendRefs:
    - {name: cart, port: 80}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: shop}
spec:
  mtls: {mode: STRICT}
";

fn analyze_text(text: &str, extra: &[&str]) -> common::Run {
    let mut args = vec!["analyze", "-"];
    args.extend_from_slice(extra);
    meshctl_with_stdin(args, Some(text))
}

fn codes(run: &common::Run) -> Vec<String> {
    run.json()["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| f["code"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn a_correct_configuration_has_no_findings() {
    let run = analyze_text(GOOD, &[]).ok();
    assert_eq!(run.stdout, "No validation issues found in -.\n");
    let run = analyze_text(GOOD, &["--fail-on-warning", "-o", "json"]).ok();
    assert_eq!(codes(&run), Vec::<String>::new());
}

fn with(replacements: &[(&str, &str)], extra: &str) -> String {
    let mut text = GOOD.to_string();
    for (from, to) in replacements {
        assert!(text.contains(from), "fixture lacks {from:?}");
        text = text.replacen(from, to, 1);
    }
    text.push_str(extra);
    text
}

#[test]
fn l7_policy_enforced_by_ztunnel_is_an_error() {
    // Selector policy with HTTP fields: ztunnel enforces it.
    let text = with(
        &[],
        "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: \
         admin, namespace: shop}\nspec:\n  selector: {matchLabels: {app: cart}}\n  action: DENY\n  \
         rules:\n  - to: [{operation: {paths: [/admin]}}]\n",
    );
    let run = analyze_text(&text, &["-o", "json"]).expect_code(2);
    assert_eq!(codes(&run), ["MESH0003"]);
    let f = &run.json()["findings"][0];
    assert_eq!(f["object"], "AuthorizationPolicy shop/admin");
    assert_eq!(f["severity"], "error");
    assert!(f["message"].as_str().unwrap_or("").contains("paths"), "{f}");
    assert!(
        f["fix"].as_str().unwrap_or("").contains("name: waypoint"),
        "{f}"
    );
    // targetRefs to a Service without a waypoint: no waypoint serves it either.
    let text = with(&[("    istio.io/use-waypoint: waypoint\n", "")], "");
    let run = analyze_text(&text, &["-o", "json"]).expect_code(2);
    let found = codes(&run);
    assert!(found.contains(&"MESH0003".to_string()), "{found:?}");
    let msg = run.json()["findings"]
        .as_array()
        .expect("array")
        .iter()
        .find(|f| f["code"] == "MESH0003")
        .map(|f| f["message"].as_str().unwrap_or("").to_string())
        .unwrap_or_default();
    assert!(msg.contains("Service shop/cart has no waypoint"), "{msg}");
}

#[test]
fn use_waypoint_naming_a_missing_gateway_is_an_error() {
    let text = with(
        &[(
            "    istio.io/use-waypoint: waypoint\n",
            "    istio.io/use-waypoint: wp2\n",
        )],
        "",
    );
    let run = analyze_text(&text, &["-o", "json"]).expect_code(2);
    let json = run.json();
    let f = json["findings"]
        .as_array()
        .expect("array")
        .iter()
        .find(|f| f["code"] == "MESH0004")
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(f["object"], "Namespace shop");
    assert!(
        f["message"]
            .as_str()
            .unwrap_or("")
            .contains("Gateway shop/wp2 does not exist"),
        "{f}"
    );
    assert!(
        f["fix"]
            .as_str()
            .unwrap_or("")
            .contains("meshctl waypoint apply -n shop --name wp2")
    );
    assert_eq!(f["line"], 1);
}

#[test]
fn a_route_on_a_service_without_waypoint_is_a_warning() {
    let text = with(
        &[],
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, \
         namespace: other}\nspec:\n  parentRefs: [{group: \"\", kind: Service, name: api}]\n---\n\
         apiVersion: v1\nkind: Namespace\nmetadata:\n  name: other\n  labels: \
         {istio.io/dataplane-mode: ambient}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: \
         api, namespace: other}\n",
    );
    let run = analyze_text(&text, &["-o", "json"]).ok();
    assert_eq!(codes(&run), ["MESH0005"]);
    let run = analyze_text(&text, &["--fail-on-warning"]).expect_code(1);
    assert!(
        run.stdout
            .contains("Warning [MESH0005] HTTPRoute other/r (<stdin>:"),
        "{}",
        run.stdout
    );
}

#[test]
fn strict_mtls_with_namespaces_outside_the_mesh_is_a_warning() {
    let text = with(
        &[],
        "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: legacy}\n---\napiVersion: v1\nkind: \
         Pod\nmetadata: {name: old-0, namespace: legacy}\nspec: {nodeName: node1, containers: \
         [{name: a, image: a}]}\n",
    );
    let run = analyze_text(&text, &["-o", "json"]).ok();
    assert_eq!(codes(&run), ["MESH0006"]);
    let msg = run.json()["findings"][0]["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        msg.contains("namespace shop") && msg.contains("(legacy)"),
        "{msg}"
    );
}

#[test]
fn unknown_fields_are_reported_with_their_path() {
    let text = with(
        &[("        methods: [GET]\n", "        method: [GET]\n")],
        "",
    );
    let run = analyze_text(&text, &["-o", "json"]).ok();
    assert_eq!(codes(&run), ["MESH0002"]);
    let msg = run.json()["findings"][0]["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        msg.contains("`spec.rules[0].to[0].operation.method` (did you mean `methods`?)"),
        "{msg}"
    );
}

#[test]
fn waypoint_for_mismatch_and_missing_listener() {
    let text = with(
        &[
            (
                "labels: {istio.io/waypoint-for: service}",
                "labels: {istio.io/waypoint-for: workload}",
            ),
            (
                "  - {name: mesh, port: 15008, protocol: HBONE}\n",
                "  - {name: http, port: 80, protocol: HTTP}\n",
            ),
        ],
        "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: direct\n  namespace: shop\n  \
         labels: {istio.io/use-waypoint: waypoint}\n",
    );
    let run = analyze_text(&text, &["-o", "json"]).expect_code(2);
    let mut found = codes(&run);
    found.sort();
    found.dedup();
    assert_eq!(found, ["MESH0003", "MESH0005", "MESH0007", "MESH0008"]);
}

#[test]
fn malformed_yaml_names_the_file_document_and_line() {
    let dir = ConfigDir::new(&[
        ("namespaces.yaml", NAMESPACES),
        (
            "broken.yaml",
            "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: shop}\n---\napiVersion: \
             v1\nkind: Service\nmetadata:\n  name: b\n namespace: shop\n",
        ),
        (
            "typed.yaml",
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: p, \
             namespace: shop}\nspec: {mtls: {mode: SOMETIMES}}\n",
        ),
    ]);
    let run = meshctl(["--config-dir", &dir.arg(), "analyze"]).expect_code(2);
    assert_snapshot("analyze_malformed.txt", &dir.normalize(&run.stdout));
}

#[test]
fn a_config_dir_with_several_mistakes() {
    let dir = ConfigDir::new(&[
        ("namespaces.yaml", NAMESPACES),
        ("workloads.yaml", WORKLOADS),
        (
            "mesh.yaml",
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: strict, \
             namespace: shop}\nspec:\n  mtls: {mode: STRICT}\n---\napiVersion: \
             security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: no-admin, \
             namespace: shop}\nspec:\n  action: DENY\n  rules:\n  - to:\n    - operation: {paths: \
             [/admin], methods: [POST]}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: \
             web\n  namespace: shop\n  labels: {istio.io/use-waypoint: web-wp}\nspec:\n  ports: \
             [{port: 80}]\n  selectr: {app: web}\n",
        ),
    ]);
    let run = meshctl(["--config-dir", &dir.arg(), "analyze"]).expect_code(2);
    assert_snapshot("analyze_config_dir.txt", &dir.normalize(&run.stdout));
    let json = meshctl(["--config-dir", &dir.arg(), "analyze", "-o", "yaml"]).expect_code(2);
    let back: Value = serde_saphyr::from_str(&json.stdout).expect("yaml parses");
    assert_eq!(back["errors"], 2);
    assert_eq!(back["warnings"], 2);
}

#[test]
fn files_and_directories_as_arguments() {
    let dir = ConfigDir::new(&[("a/good.yaml", GOOD), (".hidden/bad.yaml", "{{{")]);
    let run = meshctl(["analyze", &dir.arg()]).ok();
    assert!(
        run.stdout.starts_with("No validation issues found"),
        "{}",
        run.stdout
    );
    let file = dir.path().join("a/good.yaml");
    meshctl(["analyze", file.to_str().expect("utf8")]).ok();
}

#[test]
fn unreadable_input_exits_3() {
    let run = meshctl(["analyze", "/nonexistent/meshctl/manifests.yaml"]).expect_code(3);
    assert!(
        run.stderr
            .contains("cannot read /nonexistent/meshctl/manifests.yaml"),
        "{}",
        run.stderr
    );
}

#[test]
fn help_documents_codes_and_exit_codes() {
    let run = meshctl(["analyze", "--help"]).ok();
    for text in [
        "MESH0003",
        "MESH0006",
        "Exit codes:",
        "2  errors found",
        "Examples:",
    ] {
        assert!(run.stdout.contains(text), "{text}: {}", run.stdout);
    }
}
