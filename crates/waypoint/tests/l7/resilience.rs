use std::net::Ipv4Addr;
use std::time::Duration;

use mesh_proto::proto::waypoint as pb;

use crate::harness::{Behaviour, Env, cfg};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 2, 10);

fn with_retry(attempts: u32) -> pb::Route {
    let mut r = cfg::route("demo/retry.0", vec![], vec![]);
    r.retry = Some(pb::Retry {
        attempts,
        codes: vec![503],
        backoff_ms: 1,
        ..Default::default()
    });
    r
}

#[tokio::test]
async fn retries_hide_a_flaky_backend() {
    let env = Env::new().await;
    let flaky = env.pod("reviews-v1", Behaviour::FailEveryOther).await;
    env.service("reviews", VIP, &[&flaky]);
    env.configure(cfg::waypoint(
        vec![cfg::bound("reviews", VIP, vec![with_retry(2)])],
        vec![],
    ));
    let mut c = env.client(VIP).await;
    for i in 0..20 {
        let got = c.get("/").await;
        assert_eq!(got.status, 200, "request {i}");
    }
    assert_eq!(
        flaky.hits(),
        40,
        "each request failed once and was retried once"
    );
    // A POST with a small body is retried with the same body.
    let req = http::Request::post("/form")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(b"a=1")))
        .expect("req");
    assert_eq!(c.send(req).await.status, 200);
}

#[tokio::test]
async fn a_request_failing_every_attempt_returns_503() {
    let env = Env::new().await;
    let broken = env.pod("reviews-v1", Behaviour::Status(503)).await;
    env.service("reviews", VIP, &[&broken]);
    env.configure(cfg::waypoint(
        vec![cfg::bound("reviews", VIP, vec![with_retry(2)])],
        vec![],
    ));
    let got = env.client(VIP).await.get("/").await;
    assert_eq!(got.status, 503);
    assert_eq!(broken.hits(), 3, "first attempt and two retries");
    let flags = env.metric(
        "istio_requests_total",
        &[("response_code", "503"), ("response_flags", "URX")],
    );
    assert_eq!(flags, Some(1.0), "{}", env.metrics_text());
}

#[tokio::test]
async fn timeouts_answer_504() {
    let env = Env::new().await;
    let slow = env
        .pod("reviews-v1", Behaviour::Slow(Duration::from_secs(5)))
        .await;
    env.service("reviews", VIP, &[&slow]);
    let mut route = cfg::route("demo/slow.0", vec![], vec![]);
    route.timeout_ms = 100;
    env.configure(cfg::waypoint(
        vec![cfg::bound("reviews", VIP, vec![route])],
        vec![],
    ));
    let got = env.client(VIP).await.get("/").await;
    assert_eq!(got.status, 504);
    assert_eq!(got.text(), "upstream request timeout");
    assert_eq!(
        env.metric(
            "istio_requests_total",
            &[("response_code", "504"), ("response_flags", "UT")]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn circuit_breaker_limits_pending_requests() {
    let env = Env::new().await;
    let slow = env
        .pod("reviews-v1", Behaviour::Slow(Duration::from_millis(500)))
        .await;
    env.service("reviews", VIP, &[&slow]);
    let mut bound = cfg::bound("reviews", VIP, vec![]);
    bound.circuit_breaker = Some(pb::CircuitBreaker {
        max_requests: 1,
        max_pending_requests: 1,
        ..Default::default()
    });
    env.configure(cfg::waypoint(vec![bound], vec![]));
    // One request in flight, one pending: the third overflows.
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(env.client(VIP).await);
    }
    let mut c3 = clients.pop().expect("client");
    let mut tasks = Vec::new();
    for mut c in clients {
        tasks.push(tokio::spawn(
            async move { c.get("/").await.status.as_u16() },
        ));
    }
    test_support::eventually(
        "one request in flight and one pending",
        Duration::from_secs(10),
        || {
            env.inputs
                .circuits
                .dump()
                .iter()
                .any(|c| c.active_requests == 1 && c.pending_requests == 1)
        },
    )
    .await;
    let got = c3.get("/").await;
    assert_eq!(got.status, 503);
    for t in tasks {
        assert_eq!(t.await.expect("join"), 200, "admitted requests complete");
    }
    assert_eq!(
        env.metric(
            "istio_requests_total",
            &[("response_code", "503"), ("response_flags", "UO")]
        ),
        Some(1.0)
    );
    assert_eq!(slow.hits(), 2);
}

#[tokio::test]
async fn consecutive_5xx_eject_an_endpoint_until_the_ejection_ends() {
    let env = Env::new().await;
    let broken = env.pod("reviews-v1", Behaviour::Status(500)).await;
    env.service("reviews", VIP, &[&broken]);
    let mut bound = cfg::bound("reviews", VIP, vec![]);
    bound.circuit_breaker = Some(pb::CircuitBreaker {
        consecutive_5xx: 2,
        ejection_ms: 300,
        ..Default::default()
    });
    env.configure(cfg::waypoint(vec![bound], vec![]));
    let mut c = env.client(VIP).await;
    assert_eq!(c.get("/").await.status, 500);
    assert_eq!(c.get("/").await.status, 500);
    let ejected = c.get("/").await;
    assert_eq!(
        (ejected.status.as_u16(), ejected.text().as_str()),
        (503, "no healthy upstream")
    );
    assert_eq!(broken.hits(), 2, "the ejected endpoint got no request");
    assert_eq!(
        env.metric(
            "istio_requests_total",
            &[("response_code", "503"), ("response_flags", "UH")]
        ),
        Some(1.0)
    );
    // After the ejection the endpoint is tried again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if c.get("/").await.status == 500 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "endpoint never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(broken.hits(), 3);
}
