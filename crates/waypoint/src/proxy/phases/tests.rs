use super::*;
use crate::config_model::route::PathRewrite;

#[test]
fn dot_segments_are_removed() {
    for (input, expected) in [
        ("/a/b", "/a/b"),
        ("/a/../admin", "/admin"),
        ("/a/./b", "/a/b"),
        ("/../../etc", "/etc"),
        ("/a/b/..", "/a/"),
        ("/a/.", "/a/"),
        ("", "/"),
        ("/a//b", "/a//b"),
    ] {
        assert_eq!(normalize_path(input), expected, "{input}");
    }
}

#[test]
fn hop_by_hop_headers_are_dropped_but_te_trailers_kept() {
    let mut h = HeaderMap::new();
    h.insert(
        header::CONNECTION,
        HeaderValue::from_static("keep-alive, x-private"),
    );
    h.insert("x-private", HeaderValue::from_static("1"));
    h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
    h.insert(
        header::TRANSFER_ENCODING,
        HeaderValue::from_static("chunked"),
    );
    h.insert(header::TE, HeaderValue::from_static("trailers, deflate"));
    h.insert("x-kept", HeaderValue::from_static("1"));
    strip_hop_by_hop(&mut h);
    let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(h[header::TE], "trailers");
    assert!(h.contains_key("x-kept"));
}

#[test]
fn redirect_locations() {
    let r = |scheme: Option<&str>,
             host: Option<&str>,
             port: Option<u16>,
             path: Option<PathRewrite>| Redirect {
        scheme: scheme.map(str::to_string),
        hostname: host.map(str::to_string),
        port,
        path,
        status: StatusCode::FOUND,
    };
    assert_eq!(
        redirect_location(
            &r(None, None, None, None),
            "svc:8080",
            "/a",
            Some("q=1"),
            None
        ),
        "http://svc:8080/a?q=1"
    );
    assert_eq!(
        redirect_location(
            &r(Some("https"), None, None, None),
            "svc:8080",
            "/a",
            None,
            None
        ),
        "https://svc/a",
        "a scheme change drops the request's port"
    );
    assert_eq!(
        redirect_location(
            &r(
                None,
                Some("x.example"),
                Some(80),
                Some(PathRewrite::Full("/b".into()))
            ),
            "svc",
            "/a",
            None,
            None
        ),
        "http://x.example/b"
    );
    assert_eq!(
        redirect_location(
            &r(
                None,
                None,
                Some(9090),
                Some(PathRewrite::Prefix("/new".into()))
            ),
            "[fd00::1]:80",
            "/old/x",
            None,
            Some("/old")
        ),
        "http://[fd00::1]:9090/new/x"
    );
}

#[test]
fn local_errors_map_to_grpc_codes() {
    assert_eq!(grpc_status_for(StatusCode::FORBIDDEN), 7);
    assert_eq!(grpc_status_for(StatusCode::NOT_FOUND), 12);
    assert_eq!(grpc_status_for(StatusCode::SERVICE_UNAVAILABLE), 14);
    assert_eq!(grpc_status_for(StatusCode::GATEWAY_TIMEOUT), 14);
    assert_eq!(grpc_status_for(StatusCode::INTERNAL_SERVER_ERROR), 2);
}

#[test]
fn request_ids_are_uuid_v4() {
    let id = uuid_v4();
    assert_eq!(id.len(), 36);
    assert_eq!(&id[14..15], "4");
    assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
}
