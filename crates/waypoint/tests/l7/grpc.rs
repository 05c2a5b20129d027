use std::net::Ipv4Addr;

use http::Request;
use http_body_util::Full;
use mesh_proto::proto::waypoint as pb;

use crate::harness::{Behaviour, Env, Got, cfg, grpc_frame, hostname};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 3, 10);
const VIP_GRPC: Ipv4Addr = Ipv4Addr::new(10, 96, 3, 11);

async fn call(c: &mut crate::harness::Client, method: &str, msg: &[u8]) -> Got {
    let req = Request::post(format!("/demo.Echo/{method}"))
        .header("host", hostname("echo"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(grpc_frame(msg)))
        .expect("req");
    c.send(req).await
}

fn grpc_status(got: &Got) -> Option<&str> {
    got.trailers
        .as_ref()
        .and_then(|t| t.get("grpc-status"))
        .or_else(|| got.headers.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn grpc_routes_by_service_and_method_over_http2() {
    let env = Env::new().await;
    let plain = env.pod("echo-v1", Behaviour::Echo).await;
    let grpc = env.pod("echo-grpc", Behaviour::Grpc).await;
    env.service("echo", VIP, &[&plain]);
    env.service("echo-grpc", VIP_GRPC, &[&grpc]);
    let mut route = cfg::route(
        "demo/grpc.0",
        vec![pb::RouteMatch {
            grpc_service: "demo.Echo".into(),
            ..Default::default()
        }],
        vec![cfg::backend("echo-grpc", 1)],
    );
    route.kind = pb::Kind::Grpc as i32;
    env.configure(cfg::waypoint(
        vec![cfg::bound("echo", VIP, vec![route])],
        vec![],
    ));

    let mut c = env.client_h2(VIP).await;
    let got = call(&mut c, "Say", b"hello").await;
    assert_eq!(got.status, 200);
    assert_eq!(grpc_status(&got), Some("0"), "{got:?}");
    assert_eq!(got.body, grpc_frame(b"hello"));
    assert_eq!(got.header("x-backend"), Some("echo-grpc"));
    assert_eq!(
        grpc.last_seen().version,
        http::Version::HTTP_2,
        "HTTP/2 upstream"
    );
    assert_eq!(grpc.last_seen().headers["te"], "trailers");

    let missing = call(&mut c, "Missing", b"").await;
    assert_eq!(grpc_status(&missing), Some("12"));

    // Non-gRPC requests on the same service go to the service itself.
    let got = c.get("/").await;
    assert_eq!(got.text(), "echo-v1");

    assert_eq!(
        env.metric(
            "istio_requests_total",
            &[
                ("request_protocol", "grpc"),
                ("grpc_response_status", "0"),
                ("destination_service", &hostname("echo-grpc")),
            ],
        ),
        Some(1.0),
        "{}",
        env.metrics_text()
    );
}

#[tokio::test]
async fn grpc_denials_are_grpc_errors() {
    let env = Env::new().await;
    let grpc = env.pod("echo-grpc", Behaviour::Grpc).await;
    env.service("echo", VIP, &[&grpc]);
    let deny = pb::Policy {
        name: "demo/deny-say".into(),
        action: pb::policy::Action::Deny as i32,
        targets: vec![],
        rules: vec![pb::PolicyRule {
            from: vec![],
            to: vec![pb::Operation {
                paths: vec!["/demo.Echo/*".into()],
                ..Default::default()
            }],
        }],
    };
    env.configure(cfg::waypoint(
        vec![cfg::bound("echo", VIP, vec![])],
        vec![deny],
    ));
    let mut c = env.client_h2(VIP).await;
    let got = call(&mut c, "Say", b"x").await;
    assert_eq!(got.status, 200);
    assert_eq!(grpc_status(&got), Some("7"), "PERMISSION_DENIED: {got:?}");
    assert_eq!(grpc.hits(), 0);
}
