use std::net::Ipv4Addr;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use mesh_proto::proto::waypoint as pb;

use crate::harness::{Behaviour, Env, cfg, hostname};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const VIP_V2: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 11);
const VIP_V3: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 12);

/// `reviews` (bound, endpoint v1) with `reviews-v2` and `reviews-v3` as route backends.
async fn three_versions(env: &Env) -> [crate::harness::Pod; 3] {
    let v1 = env.pod("reviews-v1", Behaviour::Echo).await;
    let v2 = env.pod("reviews-v2", Behaviour::Echo).await;
    let v3 = env.pod("reviews-v3", Behaviour::Echo).await;
    env.service("reviews", VIP, &[&v1]);
    env.service("reviews-v2", VIP_V2, &[&v2]);
    env.service("reviews-v3", VIP_V3, &[&v3]);
    [v1, v2, v3]
}

#[tokio::test]
async fn routes_by_path_header_and_method_else_to_the_service_itself() {
    let env = Env::new().await;
    let [v1, v2, v3] = three_versions(&env).await;
    let post_submit = pb::RouteMatch {
        method: "POST".into(),
        path: Some(pb::PathMatch {
            kind: Some(pb::path_match::Kind::Exact("/submit".into())),
        }),
        ..Default::default()
    };
    let canary = pb::RouteMatch {
        headers: vec![cfg::header("x-canary", "yes")],
        ..Default::default()
    };
    let regex_and_query = pb::RouteMatch {
        path: Some(pb::PathMatch {
            kind: Some(pb::path_match::Kind::Regex("/items/[0-9]+".into())),
        }),
        query_params: vec![pb::HeaderMatch {
            name: "view".into(),
            kind: Some(pb::header_match::Kind::Exact("full".into())),
        }],
        ..Default::default()
    };
    env.configure(cfg::waypoint(
        vec![cfg::bound(
            "reviews",
            VIP,
            vec![
                cfg::route(
                    "demo/r.0",
                    vec![cfg::prefix("/v2")],
                    vec![cfg::backend("reviews-v2", 1)],
                ),
                cfg::route(
                    "demo/r.1",
                    vec![canary, regex_and_query],
                    vec![cfg::backend("reviews-v2", 1)],
                ),
                cfg::route(
                    "demo/r.2",
                    vec![post_submit],
                    vec![cfg::backend("reviews-v3", 1)],
                ),
            ],
        )],
        vec![],
    ));
    let mut c = env.client(VIP).await;
    for (path, expected) in [
        ("/v2", "reviews-v2"),
        ("/v2/ratings", "reviews-v2"),
        ("/v2x", "reviews-v1"),
        ("/", "reviews-v1"),
        ("/items/42?view=full", "reviews-v2"),
        ("/items/42?view=short", "reviews-v1"),
        ("/items/abc?view=full", "reviews-v1"),
        ("/submit", "reviews-v1"),
    ] {
        let got = c.get(path).await;
        assert_eq!(got.status, 200, "{path}");
        assert_eq!(got.text(), expected, "GET {path}");
    }
    let canary = Request::get("/anything")
        .header("x-canary", "yes")
        .body(Full::default())
        .expect("req");
    assert_eq!(c.send(canary).await.text(), "reviews-v2");
    let post = Request::post("/submit")
        .body(Full::new(Bytes::from_static(b"form")))
        .expect("req");
    assert_eq!(c.send(post).await.text(), "reviews-v3");
    assert_eq!(v3.last_seen().method, "POST");
    // Every tunnel to a backend was opened with the waypoint's identity.
    for pod in [&v1, &v2, &v3] {
        let peers = pod.tunnel_peers.lock().clone();
        assert!(!peers.is_empty(), "{} was reached", pod.name);
        assert!(peers.iter().all(|p| *p == env.waypoint_id), "{peers:?}");
    }
    // The backend sees the original host.
    assert_eq!(
        v1.last_seen().headers["host"].to_str().expect("host"),
        hostname("reviews")
    );
}

#[tokio::test]
async fn weighted_split_90_10_over_1000_requests() {
    let env = Env::new().await;
    let [v1, v2, _v3] = three_versions(&env).await;
    env.configure(cfg::waypoint(
        vec![cfg::bound(
            "reviews",
            VIP,
            vec![cfg::route(
                "demo/split.0",
                vec![],
                vec![cfg::backend("reviews", 90), cfg::backend("reviews-v2", 10)],
            )],
        )],
        vec![],
    ));
    let mut c = env.client(VIP).await;
    let mut to_v1 = 0;
    for _ in 0..1000 {
        let got = c.get("/").await;
        assert_eq!(got.status, 200);
        if got.text() == "reviews-v1" {
            to_v1 += 1;
        }
    }
    assert!((850..=950).contains(&to_v1), "{to_v1} of 1000 went to v1");
    assert_eq!(v1.hits() + v2.hits(), 1000);
}

#[tokio::test]
async fn header_modifiers_rewrites_and_redirects() {
    use pb::header_modifier::Op;
    let env = Env::new().await;
    let [v1, v2, _v3] = three_versions(&env).await;
    let mut modify = cfg::route("demo/mod.0", vec![cfg::prefix("/mod")], vec![]);
    modify.request_headers = vec![
        cfg::modifier(Op::Set, "x-set", "one"),
        cfg::modifier(Op::Add, "x-add", "two"),
        cfg::modifier(Op::Remove, "x-remove", ""),
    ];
    modify.response_headers = vec![cfg::modifier(Op::Set, "x-resp", "added")];
    let mut rewrite = cfg::route(
        "demo/rw.0",
        vec![cfg::prefix("/api")],
        vec![cfg::backend("reviews-v2", 1)],
    );
    rewrite.rewrite = Some(pb::UrlRewrite {
        hostname: "internal.example".into(),
        path: Some(pb::PathRewrite {
            kind: Some(pb::path_rewrite::Kind::Prefix("/v1".into())),
        }),
    });
    let mut redirect = cfg::route("demo/rd.0", vec![cfg::prefix("/old")], vec![]);
    redirect.redirect = Some(pb::Redirect {
        scheme: "https".into(),
        hostname: "new.example".into(),
        port: 0,
        path: Some(pb::PathRewrite {
            kind: Some(pb::path_rewrite::Kind::Prefix("/new".into())),
        }),
        status_code: 301,
    });
    env.configure(cfg::waypoint(
        vec![cfg::bound("reviews", VIP, vec![modify, rewrite, redirect])],
        vec![],
    ));
    let mut c = env.client(VIP).await;

    let req = Request::get("/mod")
        .header("x-set", "original")
        .header("x-add", "first")
        .header("x-remove", "gone")
        .body(Full::default())
        .expect("req");
    let got = c.send(req).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("x-resp"), Some("added"));
    let seen = v1.last_seen();
    assert_eq!(seen.headers["x-set"], "one");
    let added: Vec<_> = seen.headers.get_all("x-add").iter().collect();
    assert_eq!(added, ["first", "two"]);
    assert!(!seen.headers.contains_key("x-remove"));

    let got = c.get("/api/users?id=7").await;
    assert_eq!(got.text(), "reviews-v2");
    let seen = v2.last_seen();
    assert_eq!(seen.path, "/v1/users?id=7");
    assert_eq!(seen.headers["host"], "internal.example");

    let hits_before = v1.hits() + v2.hits();
    let got = c.get("/old/page?x=1").await;
    assert_eq!(got.status, 301);
    assert_eq!(
        got.header("location"),
        Some("https://new.example/new/page?x=1")
    );
    assert_eq!(
        v1.hits() + v2.hits(),
        hits_before,
        "a redirect reaches no backend"
    );
}

#[tokio::test]
async fn a_service_not_bound_to_the_waypoint_is_refused() {
    let env = Env::new().await;
    let [_v1, _v2, _v3] = three_versions(&env).await;
    env.configure(cfg::waypoint(
        vec![cfg::bound("reviews", VIP, vec![])],
        vec![],
    ));
    let err = env
        .tunnel(VIP_V2)
        .await
        .expect_err("reviews-v2 is not bound to this waypoint");
    assert_eq!(err.status(), Some(http::StatusCode::NOT_FOUND), "{err}");
    // The bound one works.
    assert_eq!(env.client(VIP).await.get("/").await.text(), "reviews-v1");
}

#[tokio::test]
async fn plain_tcp_passes_through_with_l4_policy() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = Env::new().await;
    let db = env.pod("db-v1", Behaviour::TcpEcho).await;
    env.service("db", VIP, &[&db]);
    env.configure(cfg::waypoint(vec![cfg::bound("db", VIP, vec![])], vec![]));
    let mut t = env.tunnel(VIP).await.expect("tunnel");
    t.write_all(b"\x00\x01not http").await.expect("write");
    let mut buf = [0u8; 10];
    t.read_exact(&mut buf).await.expect("echo");
    assert_eq!(&buf, b"\x00\x01not http");
    t.shutdown().await.expect("shutdown");
    let mut rest = Vec::new();
    t.read_to_end(&mut rest).await.expect("eof");
    assert!(rest.is_empty());
    test_support::eventually(
        "the connection is counted",
        std::time::Duration::from_secs(10),
        || {
            env.metric(
                "istio_tcp_connections_closed_total",
                &[("reporter", "waypoint"), ("destination_workload", "db-v1")],
            ) == Some(1.0)
        },
    )
    .await;

    // An ALLOW policy that only names HTTP attributes admits no TCP stream.
    let allow_get = pb::Policy {
        name: "demo/allow-get".into(),
        action: pb::policy::Action::Allow as i32,
        targets: vec![],
        rules: vec![pb::PolicyRule {
            from: vec![],
            to: vec![pb::Operation {
                methods: vec!["GET".into()],
                ..Default::default()
            }],
        }],
    };
    env.configure(cfg::waypoint(
        vec![cfg::bound("db", VIP, vec![])],
        vec![allow_get],
    ));
    let mut t = env.tunnel(VIP).await.expect("tunnel");
    t.write_all(b"\x00\x01not http").await.expect("write");
    let mut out = Vec::new();
    let read = t.read_to_end(&mut out).await;
    assert!(out.is_empty(), "denied stream got {out:?} ({read:?})");
    assert_eq!(db.hits(), 1, "the denied stream never reached the backend");
}
