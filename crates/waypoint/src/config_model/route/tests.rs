use super::*;

fn prefix(p: &str) -> PathMatch {
    PathMatch::Prefix(p.trim_end_matches('/').to_string())
}

fn view<'a>(
    method: &'a Method,
    path: &'a str,
    query: Option<&'a str>,
    headers: &'a HeaderMap,
) -> RequestView<'a> {
    RequestView {
        method,
        path,
        query,
        headers,
    }
}

#[test]
fn path_prefixes_match_whole_segments() {
    let p = prefix("/foo/");
    assert!(p.matches("/foo"));
    assert!(p.matches("/foo/"));
    assert!(p.matches("/foo/bar"));
    assert!(!p.matches("/foobar"));
    assert!(prefix("/").matches("/anything"));
    assert!(PathMatch::Exact("/a".into()).matches("/a"));
    assert!(!PathMatch::Exact("/a".into()).matches("/a/"));
}

#[test]
fn regexes_must_match_the_whole_value() {
    let r = PathMatch::Regex(Pattern::new("/items/[0-9]+", "t").expect("regex"));
    assert!(r.matches("/items/12"));
    assert!(!r.matches("/items/12/x"));
    assert!(!r.matches("/v1/items/12"));
    let err = Pattern::new("(", "route demo/r.0").expect_err("invalid");
    assert!(
        err.to_string()
            .starts_with("route demo/r.0: invalid regular expression"),
        "{err}"
    );
}

#[test]
fn headers_and_query_parameters() {
    let mut h = HeaderMap::new();
    h.append("x-v", HeaderValue::from_static("a"));
    h.append("x-v", HeaderValue::from_static("b"));
    let m = HeaderMatch::from_proto(
        pb::HeaderMatch {
            name: "X-V".into(),
            kind: Some(pb::header_match::Kind::Exact("a,b".into())),
        },
        "t",
    )
    .expect("match");
    assert!(
        m.matches(&h),
        "values joined with a comma, name case-insensitive"
    );
    assert_eq!(
        query_param(Some("a=1&name=J%C3%B6rg+X&name=2"), "name").as_deref(),
        Some("Jörg X")
    );
    assert_eq!(query_param(Some("flag&b=2"), "flag").as_deref(), Some(""));
    assert_eq!(query_param(Some("a=%zz"), "a").as_deref(), Some("%zz"));
    assert_eq!(query_param(None, "a"), None);
}

#[test]
fn a_match_needs_every_condition() {
    let m = RouteMatch::from_proto(
        pb::RouteMatch {
            path: Some(pb::PathMatch {
                kind: Some(pb::path_match::Kind::Prefix("/api".into())),
            }),
            method: "POST".into(),
            headers: vec![pb::HeaderMatch {
                name: "x-env".into(),
                kind: Some(pb::header_match::Kind::Regex("prod|stage".into())),
            }],
            ..Default::default()
        },
        "t",
    )
    .expect("match");
    let mut h = HeaderMap::new();
    h.insert("x-env", HeaderValue::from_static("stage"));
    assert!(m.matches(&view(&Method::POST, "/api/x", None, &h)));
    assert!(!m.matches(&view(&Method::GET, "/api/x", None, &h)));
    assert!(!m.matches(&view(&Method::POST, "/other", None, &h)));
    assert!(!m.matches(&view(&Method::POST, "/api/x", None, &HeaderMap::new())));
}

#[test]
fn grpc_service_and_method() {
    let m = RouteMatch {
        grpc_service: Some("pkg.Svc".into()),
        grpc_method: Some("Get".into()),
        ..Default::default()
    };
    let h = HeaderMap::new();
    assert!(m.matches(&view(&Method::POST, "/pkg.Svc/Get", None, &h)));
    assert!(!m.matches(&view(&Method::POST, "/pkg.Svc/Put", None, &h)));
    assert!(!m.matches(&view(&Method::POST, "/other.Svc/Get", None, &h)));
    assert!(!m.matches(&view(&Method::POST, "/", None, &h)));
}

#[test]
fn prefix_rewrites_replace_the_matched_prefix() {
    let rw = PathRewrite::Prefix("/v1".into());
    assert_eq!(rw.apply("/api/users", Some("/api")), "/v1/users");
    assert_eq!(rw.apply("/api", Some("/api")), "/v1");
    let root = PathRewrite::Prefix("/".into());
    assert_eq!(root.apply("/api/users", Some("/api")), "/users");
    assert_eq!(root.apply("/api", Some("/api")), "/");
    assert_eq!(
        PathRewrite::Full("/x".into()).apply("/api/users", Some("/api")),
        "/x"
    );
}

#[test]
fn invalid_routes_are_refused_with_a_reason() {
    let base = || pb::Route {
        name: "demo/r.0".into(),
        ..Default::default()
    };
    let mut bad_backend = base();
    bad_backend.backends.push(pb::WeightedBackend {
        service: "no-namespace".into(),
        port: 80,
        weight: 1,
        ..Default::default()
    });
    let mut bad_redirect = base();
    bad_redirect.redirect = Some(pb::Redirect {
        status_code: 200,
        ..Default::default()
    });
    let mut bad_header = base();
    bad_header.request_headers.push(pb::HeaderModifier {
        op: 0,
        name: "bad header".into(),
        value: "v".into(),
    });
    let mut prefix_rewrite_on_exact = base();
    prefix_rewrite_on_exact.matches.push(pb::RouteMatch {
        path: Some(pb::PathMatch {
            kind: Some(pb::path_match::Kind::Exact("/a".into())),
        }),
        ..Default::default()
    });
    prefix_rewrite_on_exact.rewrite = Some(pb::UrlRewrite {
        hostname: String::new(),
        path: Some(pb::PathRewrite {
            kind: Some(pb::path_rewrite::Kind::Prefix("/b".into())),
        }),
    });
    for (route, expected) in [
        (bad_backend, "is not namespace/hostname"),
        (bad_redirect, "redirect status 200"),
        (bad_header, "invalid header name"),
        (prefix_rewrite_on_exact, "needs path prefix matches"),
    ] {
        let err = Route::from_proto(route).expect_err(expected).to_string();
        assert!(
            err.contains(expected) && err.starts_with("route demo/r.0"),
            "{err}"
        );
    }
}

#[test]
fn modifiers_set_add_remove() {
    let mods = HeaderModifier::list(
        vec![
            pb::HeaderModifier {
                op: pb::header_modifier::Op::Set as i32,
                name: "a".into(),
                value: "1".into(),
            },
            pb::HeaderModifier {
                op: pb::header_modifier::Op::Add as i32,
                name: "b".into(),
                value: "2".into(),
            },
            pb::HeaderModifier {
                op: pb::header_modifier::Op::Remove as i32,
                name: "c".into(),
                value: String::new(),
            },
        ],
        "t",
    )
    .expect("mods");
    let mut h = HeaderMap::new();
    h.append("a", HeaderValue::from_static("0"));
    h.append("a", HeaderValue::from_static("00"));
    h.insert("b", HeaderValue::from_static("1"));
    h.insert("c", HeaderValue::from_static("x"));
    apply_modifiers(&mods, &mut h);
    assert_eq!(h.get_all("a").iter().collect::<Vec<_>>(), ["1"]);
    assert_eq!(h.get_all("b").iter().collect::<Vec<_>>(), ["1", "2"]);
    assert!(!h.contains_key("c"));
}
