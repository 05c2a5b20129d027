//! `meshctl waypoint ...` in local mode, against a temporary configuration directory and a fake
//! istiod monitoring port.

mod common;

use common::{ConfigDir, FakeServer, NAMESPACES, WORKLOADS, assert_snapshot, meshctl};
use mesh_config::objects::Object;
use mesh_config::{ObjectKey, Snapshot};

fn fixture() -> ConfigDir {
    ConfigDir::new(&[
        ("namespaces.yaml", NAMESPACES),
        ("workloads.yaml", WORKLOADS),
    ])
}

#[test]
fn generate_prints_a_waypoint_gateway_that_round_trips() {
    let run = meshctl(["waypoint", "generate", "-n", "shop", "--for", "all"]).ok();
    assert_snapshot("waypoint_generate.yaml", &run.stdout);
    let snap = Snapshot::from_yaml("generated.yaml", &run.stdout);
    assert!(snap.issues.is_empty(), "{:?}", snap.issues);
    let Some(Object::Gateway(gw)) = snap.get(&ObjectKey::new("Gateway", "shop", "waypoint")) else {
        panic!("no Gateway shop/waypoint in:\n{}", run.stdout);
    };
    assert_eq!(gw.spec.gateway_class_name, "istio-waypoint");
    assert_eq!(gw.spec.listeners.len(), 1);
    let l = &gw.spec.listeners[0];
    assert_eq!(
        (l.name.as_str(), l.port, l.protocol.as_str()),
        ("mesh", 15008, "HBONE")
    );
    let labels = gw.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("istio.io/waypoint-for").map(String::as_str),
        Some("all")
    );

    let json = meshctl([
        "waypoint", "generate", "-n", "a", "--name", "wp", "-o", "json",
    ])
    .ok()
    .json();
    assert_eq!(json["metadata"]["name"], "wp");
    assert_eq!(
        json["metadata"]["labels"]["istio.io/waypoint-for"],
        "service"
    );
}

#[test]
fn apply_writes_the_gateway_and_enrolls_the_namespace_in_its_manifest() {
    let dir = fixture();
    let run = meshctl([
        "--config-dir",
        &dir.arg(),
        "waypoint",
        "apply",
        "-n",
        "shop",
        "--enroll-namespace",
    ])
    .ok();
    assert_snapshot("waypoint_apply.txt", &dir.normalize(&run.stdout));
    // The Gateway file holds what `generate` prints.
    let generated = meshctl(["waypoint", "generate", "-n", "shop"]).ok().stdout;
    assert_eq!(dir.read("meshctl-waypoint-shop-waypoint.yaml"), generated);
    // The Namespace was edited where it lives; its comments and the other document stay.
    assert_snapshot(
        "waypoint_apply_namespaces.yaml",
        &dir.read("namespaces.yaml"),
    );
    assert_eq!(dir.read("workloads.yaml"), WORKLOADS);
    let snap = dir.snapshot();
    assert!(snap.issues.is_empty(), "{:?}", snap.issues);
    let shop = snap
        .namespace("shop")
        .expect("shop")
        .metadata
        .labels
        .clone();
    let shop = shop.unwrap_or_default();
    assert_eq!(
        shop.get("istio.io/use-waypoint").map(String::as_str),
        Some("waypoint")
    );
    assert_eq!(
        shop.get("istio.io/dataplane-mode").map(String::as_str),
        Some("ambient")
    );
    assert_eq!(
        snap.namespace("legacy")
            .and_then(|n| n.metadata.labels.clone()),
        None
    );

    // Applying again changes nothing.
    let again = meshctl([
        "--config-dir",
        &dir.arg(),
        "waypoint",
        "apply",
        "-n",
        "shop",
        "--enroll-namespace",
        "-o",
        "json",
    ])
    .ok()
    .json();
    assert_eq!(again["waypoint"]["result"], "unchanged");
    assert_eq!(again["namespaceLabel"]["result"], "unchanged");
}

#[test]
fn switching_the_namespace_to_another_waypoint_needs_overwrite() {
    let dir = fixture();
    let base = ["--config-dir".to_string(), dir.arg()];
    let apply = |extra: &[&str]| {
        let mut args: Vec<String> = base.to_vec();
        args.extend(["waypoint", "apply", "-n", "shop", "--enroll-namespace"].map(String::from));
        args.extend(extra.iter().map(|s| s.to_string()));
        meshctl(args)
    };
    apply(&[]).ok();
    let refused = apply(&["--name", "other"]).expect_code(1);
    assert!(
        refused
            .stderr
            .contains("already uses waypoint \"waypoint\"")
            && refused.stderr.contains("--overwrite"),
        "{}",
        refused.stderr
    );
    assert!(
        !dir.exists("meshctl-waypoint-shop-other.yaml"),
        "nothing written when refused"
    );
    apply(&["--name", "other", "--overwrite"]).ok();
    let labels = dir
        .snapshot()
        .namespace("shop")
        .and_then(|n| n.metadata.labels.clone());
    assert_eq!(
        labels
            .unwrap_or_default()
            .get("istio.io/use-waypoint")
            .map(String::as_str),
        Some("other")
    );
}

#[test]
fn apply_does_not_replace_a_gateway_that_is_not_a_waypoint() {
    let dir = fixture();
    let ingress = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: \
                   waypoint\n  namespace: shop\nspec:\n  gatewayClassName: istio\n  listeners:\n  \
                   - {name: http, port: 80, protocol: HTTP}\n";
    dir.write("ingress.yaml", ingress);
    let run = meshctl([
        "--config-dir",
        &dir.arg(),
        "waypoint",
        "apply",
        "-n",
        "shop",
    ])
    .expect_code(1);
    assert!(run.stderr.contains("is not a waypoint"), "{}", run.stderr);
    assert!(run.stderr.contains("--overwrite"), "{}", run.stderr);
    assert_eq!(dir.read("ingress.yaml"), ingress);
    // With --overwrite the document is replaced where it lives.
    let run = meshctl([
        "--config-dir",
        &dir.arg(),
        "waypoint",
        "apply",
        "-n",
        "shop",
        "--overwrite",
    ])
    .ok();
    assert!(run.stdout.contains("updated"), "{}", run.stdout);
    let snap = dir.snapshot();
    let Some(Object::Gateway(gw)) = snap.get(&ObjectKey::new("Gateway", "shop", "waypoint")) else {
        panic!("gateway gone");
    };
    assert_eq!(gw.spec.gateway_class_name, "istio-waypoint");
    assert_eq!(
        snap.sources[&ObjectKey::new("Gateway", "shop", "waypoint")],
        dir.path().join("ingress.yaml")
    );
}

#[test]
fn enrolling_a_namespace_without_manifest_writes_one() {
    let dir = fixture();
    meshctl([
        "--config-dir",
        &dir.arg(),
        "waypoint",
        "apply",
        "-n",
        "fresh",
        "--enroll-namespace",
    ])
    .ok();
    assert_snapshot(
        "waypoint_namespace_created.yaml",
        &dir.read("meshctl-namespace-fresh.yaml"),
    );
    let snap = dir.snapshot();
    assert!(snap.issues.is_empty(), "{:?}", snap.issues);
    assert!(snap.namespace("fresh").is_some());
}

/// `/debug/waypoints` as istiod serves it (a list of waypoint statuses).
const WAYPOINTS_JSON: &str = r#"[
  {"namespace": "legacy", "name": "wp", "resource": null, "waypoint_for": "all",
   "address": {"hostname": "wp.legacy.svc.cluster.local", "hbone_port": 15008,
               "service_found": false, "ready_endpoints": 0},
   "addresses": [],
   "conditions": [
     {"type": "Accepted", "status": "True", "reason": "Accepted", "message": ""},
     {"type": "Programmed", "status": "False", "reason": "NoService",
      "message": "no Service legacy/wp with a cluster IP"}],
   "bound_services": [], "bound_workloads": [], "refused": [], "routes": [], "policies": [],
   "issues": []},
  {"namespace": "shop", "name": "waypoint", "resource": "shop/waypoint", "waypoint_for": "service",
   "address": {"hostname": "waypoint.shop.svc.cluster.local", "hbone_port": 15008,
               "service_found": true, "ready_endpoints": 1},
   "addresses": [{"type": "Hostname", "value": "waypoint.shop.svc.cluster.local"}],
   "conditions": [
     {"type": "Accepted", "status": "True", "reason": "Accepted", "message": ""},
     {"type": "Programmed", "status": "True", "reason": "Programmed", "message": ""}],
   "bound_services": ["shop/cart.shop.svc.cluster.local"], "bound_workloads": [],
   "refused": [], "routes": [], "policies": [], "issues": []}
]"#;

fn with_two_waypoints() -> ConfigDir {
    let dir = fixture();
    for (ns, name, traffic) in [("shop", "waypoint", "service"), ("legacy", "wp", "all")] {
        meshctl([
            "--config-dir",
            &dir.arg(),
            "waypoint",
            "apply",
            "-n",
            ns,
            "--name",
            name,
            "--for",
            traffic,
        ])
        .ok();
    }
    dir
}

#[test]
fn list_and_status_read_istiod() {
    let dir = with_two_waypoints();
    let istiod = FakeServer::start();
    istiod.route("/debug/waypoints", 200, WAYPOINTS_JSON);
    let run = |args: &[&str]| {
        let mut v = vec![
            "--config-dir".to_string(),
            dir.arg(),
            "--istiod-url".to_string(),
            istiod.url.clone(),
        ];
        v.extend(args.iter().map(|s| s.to_string()));
        meshctl(v).ok().stdout
    };
    assert_snapshot(
        "waypoint_list.txt",
        &run(&["waypoint", "list", "-n", "shop"]),
    );
    assert_snapshot("waypoint_list_all.txt", &run(&["waypoint", "list", "-A"]));
    assert_snapshot(
        "waypoint_status_all.txt",
        &run(&["waypoint", "status", "-A"]),
    );
    let json: serde_json::Value =
        serde_json::from_str(&run(&["waypoint", "list", "-A", "-o", "json"])).expect("json");
    assert_eq!(json.as_array().map(Vec::len), Some(2));
    assert_eq!(json[0]["namespace"], "legacy");
    assert_eq!(json[0]["programmed"], false);
    assert_eq!(json[1]["programmed"], true);
    assert_eq!(
        run(&["waypoint", "list", "-n", "empty"]),
        "No waypoints found in namespace empty.\n"
    );
    assert!(istiod.hits("/debug/waypoints") >= 4);
}

#[test]
fn status_without_istiod_says_why_it_is_unknown() {
    let dir = with_two_waypoints();
    let run = meshctl([
        "--config-dir",
        &dir.arg(),
        "waypoint",
        "status",
        "-n",
        "shop",
    ])
    .ok();
    assert_snapshot("waypoint_status_unknown.txt", &dir.normalize(&run.stdout));
}

#[test]
fn wait_polls_istiod_until_programmed() {
    let dir = fixture();
    let istiod = FakeServer::start();
    istiod.route_fn("/debug/waypoints", |n| {
        let (status, reason) = if n >= 2 {
            ("True", "Programmed")
        } else {
            ("False", "Deploying")
        };
        (
            200,
            format!(
                r#"[{{"namespace":"shop","name":"waypoint","conditions":[
                    {{"type":"Accepted","status":"True","reason":"Accepted","message":""}},
                    {{"type":"Programmed","status":"{status}","reason":"{reason}","message":""}}]}}]"#
            ),
        )
    });
    let run = meshctl([
        "--config-dir",
        &dir.arg(),
        "--istiod-url",
        &istiod.url,
        "waypoint",
        "apply",
        "-n",
        "shop",
        "--wait",
        "--timeout",
        "20s",
    ])
    .ok();
    assert!(
        run.stdout
            .ends_with("waypoint shop/waypoint is programmed\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("not programmed: Deploying"),
        "{}",
        run.stderr
    );
    assert!(istiod.hits("/debug/waypoints") >= 3);
}

#[test]
fn wait_times_out_with_the_last_status() {
    let dir = fixture();
    let istiod = FakeServer::start();
    istiod.route(
        "/debug/waypoints",
        200,
        r#"[{"namespace":"shop","name":"waypoint","conditions":[{"type":"Programmed",
            "status":"False","reason":"NoReadyEndpoints","message":"no node can run it"}]}]"#,
    );
    let run = meshctl([
        "--config-dir",
        &dir.arg(),
        "--istiod-url",
        &istiod.url,
        "waypoint",
        "apply",
        "-n",
        "shop",
        "--wait",
        "--timeout",
        "1s",
    ])
    .expect_code(1);
    assert!(
        run.stderr
            .contains("timed out after 1s waiting for waypoint shop/waypoint")
            && run.stderr.contains("no node can run it")
            && run.stderr.contains("--timeout"),
        "{}",
        run.stderr
    );
    // The Gateway was written all the same.
    assert!(dir.exists("meshctl-waypoint-shop-waypoint.yaml"));
}

#[test]
fn wait_falls_back_to_the_waypoint_pod_without_the_istiod_endpoint() {
    let dir = fixture();
    dir.write(
        "waypoint-pod.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: waypoint-0\n  namespace: shop\n  labels:\n    \
         gateway.networking.k8s.io/gateway-name: waypoint\nspec:\n  nodeName: node1\n  containers: \
         [{name: waypoint, image: waypoint:1}]\nstatus:\n  conditions:\n  - {type: Ready, status: \
         \"True\"}\n",
    );
    let istiod = FakeServer::start(); // no /debug/waypoints: 404
    let run = meshctl([
        "--config-dir",
        &dir.arg(),
        "--istiod-url",
        &istiod.url,
        "waypoint",
        "apply",
        "-n",
        "shop",
        "--wait",
        "--timeout",
        "10s",
        "-o",
        "json",
    ])
    .ok();
    assert_eq!(run.json()["programmed"], true);
    assert_eq!(istiod.hits("/debug/waypoints"), 1);
}

#[test]
fn delete_removes_generated_files_and_warns_about_users() {
    let dir = fixture();
    meshctl([
        "--config-dir",
        &dir.arg(),
        "waypoint",
        "apply",
        "-n",
        "shop",
        "--enroll-namespace",
    ])
    .ok();
    let run = meshctl([
        "--config-dir",
        &dir.arg(),
        "waypoint",
        "delete",
        "-n",
        "shop",
    ])
    .ok();
    assert_snapshot("waypoint_delete.txt", &dir.normalize(&run.stdout));
    assert!(
        run.stderr
            .contains("Namespace shop still use waypoint shop/waypoint"),
        "{}",
        run.stderr
    );
    assert!(!dir.exists("meshctl-waypoint-shop-waypoint.yaml"));
    let missing = meshctl([
        "--config-dir",
        &dir.arg(),
        "waypoint",
        "delete",
        "-n",
        "shop",
    ])
    .expect_code(1);
    assert!(
        missing.stderr.contains("waypoint shop/waypoint not found"),
        "{}",
        missing.stderr
    );
}

#[test]
fn delete_all_removes_documents_from_user_files_and_keeps_the_rest() {
    let dir = fixture();
    let user = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: a, \
                namespace: shop}\nspec:\n  gatewayClassName: istio-waypoint\n  listeners: [{name: \
                mesh, port: 15008, protocol: HBONE}]\n---\napiVersion: v1\nkind: Service\n\
                metadata: {name: keep, namespace: shop}\n---\napiVersion: \
                gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: b, namespace: \
                shop}\nspec:\n  gatewayClassName: istio-waypoint\n  listeners: [{name: mesh, \
                port: 15008, protocol: HBONE}]\n";
    dir.write("gateways.yaml", user);
    let run = meshctl([
        "--config-dir",
        &dir.arg(),
        "waypoint",
        "delete",
        "-n",
        "shop",
        "--all",
        "-o",
        "json",
    ])
    .ok();
    let names: Vec<String> = run
        .json()
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["name"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(
        dir.read("gateways.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: keep, namespace: shop}\n"
    );
    let snap = dir.snapshot();
    assert_eq!(snap.gateways().count(), 0);
    assert!(
        snap.get(&ObjectKey::new("Service", "shop", "keep"))
            .is_some()
    );
}

#[test]
fn help_has_examples() {
    for sub in ["apply", "generate", "list", "delete", "status"] {
        let run = meshctl(["waypoint", sub, "--help"]).ok();
        assert!(run.stdout.contains("Examples:"), "{sub}: {}", run.stdout);
        assert!(
            run.stdout.contains(&format!("meshctl waypoint {sub}")),
            "{sub}"
        );
    }
}

#[test]
fn a_missing_config_dir_is_a_clear_error() {
    let tmp = tempfile::tempdir().expect("tmp");
    let missing = tmp.path().join("nope");
    let run = meshctl([
        "--config-dir",
        missing.to_str().expect("utf8"),
        "waypoint",
        "list",
    ])
    .expect_code(1);
    assert!(
        run.stderr.contains("does not exist or is not a directory"),
        "{}",
        run.stderr
    );
}
