//! istiod in-process serving a waypoint: a real delta-xDS client subscribed to its named
//! Waypoint resource (and to addresses and authorizations, as ztunnel is) receives the bound
//! services, routes and policies, only the Waypoint when a route changes, and a removal when
//! the Gateway goes away; `/debug/waypoints` shows the status.

mod common;

use std::sync::Arc;

use common::harness::{Harness, Recorder, eventually};
use common::waypoint::{SPLIT_ROUTE, gateway, mesh_without_gateway};
use mesh_proto::proto::discovery::Node;
use mesh_proto::proto::type_url::{ADDRESS, AUTHORIZATION, WAYPOINT};
use mesh_proto::proto::waypoint::Waypoint;
use mesh_proto::proto::workload::{Address, Service, address};
use mesh_proto::xds::{ClientConfig, Subscription, XdsClient};
use prost::Message;

const WAYPOINT_NAME: &str = "demo/waypoint";
const REVIEWS: &str = "demo/reviews.demo.svc.cluster.local";

const STRICT: &str = "istio-system/istio_converted_static_strict";

/// An L7 policy for the waypoint, and an L4 one (mTLS STRICT) for ztunnel.
const POLICIES: &str = "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: demo}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: demo}
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]
  action: DENY
  rules: [{to: [{operation: {methods: [GET], paths: [/admin]}}]}]
";

/// Runs a client subscribed like a waypoint (its named Waypoint, every address) plus every
/// authorization; stops when the returned sender is dropped.
fn run_client(endpoint: String) -> (Arc<Recorder>, tokio::sync::oneshot::Sender<()>) {
    let recorder = Arc::new(Recorder::default());
    let mut cfg = ClientConfig::new(
        endpoint,
        Node {
            id: "waypoint~10.0.0.100~waypoint-0.demo~demo.svc.cluster.local".into(),
            cluster: "Kubernetes".into(),
            ..Default::default()
        },
    );
    cfg.subscriptions = vec![
        Subscription::wildcard(ADDRESS),
        Subscription::wildcard(AUTHORIZATION),
        Subscription::named(WAYPOINT, vec![WAYPOINT_NAME.to_string()]),
    ];
    let client = XdsClient::new(cfg, recorder.clone());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(client.run(async move {
        let _ = stop_rx.await;
    }));
    (recorder, stop_tx)
}

fn waypoint(rec: &Recorder) -> Result<Waypoint, String> {
    let any = rec
        .get(WAYPOINT, WAYPOINT_NAME)
        .ok_or_else(|| format!("no {WAYPOINT_NAME}; held {:?}", rec.names(WAYPOINT)))?;
    Waypoint::decode(any.value.as_slice()).map_err(|e| e.to_string())
}

fn service(rec: &Recorder, name: &str) -> Service {
    let any = rec.get(ADDRESS, name).expect("service held");
    match Address::decode(any.value.as_slice())
        .expect("Address")
        .r#type
    {
        Some(address::Type::Service(s)) => s,
        other => panic!("not a service: {other:?}"),
    }
}

/// The weights of the route that splits `/` for reviews.
fn split_weights(w: &Waypoint) -> Vec<u32> {
    w.services
        .iter()
        .find(|s| s.key == REVIEWS)
        .and_then(|s| s.routes.iter().find(|r| r.name == "demo/reviews.0"))
        .map(|r| r.backends.iter().map(|b| b.weight).collect())
        .unwrap_or_default()
}

async fn waypoints_status(h: &Harness) -> Vec<serde_json::Value> {
    let (code, body) = h.get("/debug/waypoints").await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("JSON list")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waypoint_client_receives_its_configuration_and_only_what_changes() {
    let h = Harness::start(&[
        ("mesh.yaml", &mesh_without_gateway()),
        ("gateway.yaml", &gateway("waypoint", "")),
        ("route.yaml", SPLIT_ROUTE),
        ("policy.yaml", POLICIES),
    ])
    .await;
    let (rec, _stop) = run_client(format!("http://{}", h.istiod.grpc_addr()));

    let w = eventually("the Waypoint resource", || async {
        let w = waypoint(&rec)?;
        if rec.names(AUTHORIZATION) == [STRICT] && rec.names(ADDRESS).len() == 8 {
            Ok(w)
        } else {
            Err(format!(
                "addresses {:?}, authorizations {:?}",
                rec.names(ADDRESS),
                rec.names(AUTHORIZATION)
            ))
        }
    })
    .await;
    let keys: Vec<&str> = w.services.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(keys.len(), 3, "{keys:?}");
    assert!(keys.contains(&REVIEWS), "{keys:?}");
    assert_eq!(split_weights(&w), [90, 10]);
    assert_eq!(w.policies.len(), 1);
    assert_eq!(w.policies[0].name, "demo/no-admin");
    // The L7 policy is the waypoint's alone: ztunnel gets no Authorization for it.
    assert_eq!(rec.names(AUTHORIZATION), [STRICT]);
    let reviews = service(&rec, REVIEWS);
    assert!(reviews.waypoint.is_some(), "reviews is bound: {reviews:?}");

    let status = waypoints_status(&h).await;
    assert_eq!(status.len(), 1, "{status:?}");
    let st = &status[0];
    assert_eq!(st["resource"], WAYPOINT_NAME);
    assert_eq!(st["conditions"][0]["type"], "Accepted");
    assert_eq!(st["conditions"][0]["status"], "True");
    assert_eq!(st["conditions"][1]["status"], "True", "{st}");
    assert_eq!(st["address"]["hostname"], "waypoint.demo.svc.cluster.local");
    assert_eq!(
        st["addresses"],
        serde_json::json!([{"type": "Hostname", "value": "waypoint.demo.svc.cluster.local"}])
    );
    assert_eq!(st["routes"][0], "HTTPRoute demo/reviews");
    assert_eq!(st["policies"][0], "demo/no-admin");

    // Edit the route: only the Waypoint resource is pushed, to this one client.
    let before = rec.log.lock().len();
    h.write(
        "route.yaml",
        &SPLIT_ROUTE
            .replace("weight: 90", "weight: 50")
            .replace("weight: 10", "weight: 50"),
    );
    eventually("the new split", || async {
        let w = waypoint(&rec)?;
        if split_weights(&w) == [50, 50] {
            Ok(())
        } else {
            Err(format!("weights {:?}", split_weights(&w)))
        }
    })
    .await;
    let pushed: Vec<_> = rec.log.lock()[before..].to_vec();
    assert!(!pushed.is_empty());
    for applied in &pushed {
        assert_eq!(
            applied.type_url, WAYPOINT,
            "only the Waypoint is sent: {pushed:?}"
        );
        assert_eq!(applied.updated, [WAYPOINT_NAME], "{pushed:?}");
        assert!(applied.removed.is_empty(), "{pushed:?}");
    }

    // Remove the Gateway: the waypoint loses its configuration, and the service stays bound
    // to the waypoint's address so ztunnel refuses its traffic instead of bypassing L7 policy.
    std::fs::remove_file(h.config_dir.path().join("gateway.yaml")).expect("remove gateway");
    eventually("the Waypoint removal", || async {
        if rec.names(WAYPOINT).is_empty() {
            Ok(())
        } else {
            Err(format!("{:?}", rec.names(WAYPOINT)))
        }
    })
    .await;
    assert!(rec.log.lock().iter().any(|a| a.removed == [WAYPOINT_NAME]));
    assert!(service(&rec, REVIEWS).waypoint.is_some());
    let status = waypoints_status(&h).await;
    assert_eq!(
        status[0]["conditions"][0]["reason"], "GatewayNotFound",
        "{status:?}"
    );
    assert!(status[0]["resource"].is_null());
    let (_, issues) = h.get("/debug/config_issues").await;
    assert!(
        issues.contains("demo/waypoint, which does not exist"),
        "{issues}"
    );

    // And back.
    h.write("gateway.yaml", &gateway("waypoint", ""));
    eventually("the Waypoint again", || async {
        waypoint(&rec).map(|_| ())
    })
    .await;
    let (_, xds) = h.get("/debug/xds").await;
    let xds: serde_json::Value = serde_json::from_str(&xds).expect("JSON");
    assert_eq!(xds["resources"][WAYPOINT], 1, "{xds}");
    let (_, metrics) = h.get("/metrics").await;
    assert!(
        metrics.contains("pilot_xds_pushes_total{type=\"Waypoint\"}"),
        "{metrics}"
    );
    h.istiod.shutdown().await;
}
