//! HTTPRoutes and GRPCRoutes compiled into the waypoint's routes.

mod common;

use common::model;
use common::waypoint::{SPLIT_ROUTE, mesh};
use istiod::model::Model;
use mesh_proto::proto::waypoint::{
    BoundService, HeaderMatch, HeaderModifier, Kind, PathMatch, PathRewrite, Redirect, Retry,
    Route, RouteMatch, UrlRewrite, WeightedBackend, header_match, header_modifier, path_match,
    path_rewrite,
};

const REVIEWS: &str = "demo/reviews.demo.svc.cluster.local";
const V1: &str = "demo/reviews-v1.demo.svc.cluster.local";
const V2: &str = "demo/reviews-v2.demo.svc.cluster.local";

fn bound<'a>(m: &'a Model, key: &str) -> &'a BoundService {
    m.waypoint("demo/waypoint")
        .expect("waypoint")
        .services
        .iter()
        .find(|s| s.key == key)
        .unwrap_or_else(|| panic!("{key} not bound"))
}

fn issues_for<'a>(m: &'a Model, object: &str) -> Vec<&'a str> {
    m.issues
        .iter()
        .filter(|i| i.object == object)
        .map(|i| i.reason.as_str())
        .collect()
}

fn backend(service: &str, weight: u32) -> WeightedBackend {
    WeightedBackend {
        service: service.into(),
        port: 9080,
        weight,
        ..Default::default()
    }
}

fn path(kind: path_match::Kind) -> Option<PathMatch> {
    Some(PathMatch { kind: Some(kind) })
}

fn route(yaml: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: extra, namespace: demo}}\n\
         spec:\n  parentRefs: [{{group: \"\", kind: Service, name: reviews}}]\n  rules:\n{yaml}---\n"
    )
}

#[test]
fn split_route_compiles_in_precedence_order() {
    // A second route: its /api prefix has no header match, so it ranks after the split
    // route's /api rule, but before the catch-all /.
    let extra = route(
        "  - matches: [{path: {type: PathPrefix, value: /api}}]\n    backendRefs: [{name: reviews-v1, port: 9080}]\n",
    );
    let m = model(&(mesh() + SPLIT_ROUTE + &extra));
    assert!(m.issues.is_empty(), "{:?}", m.issues);
    let routes = &bound(&m, REVIEWS).routes;
    let names: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "demo/reviews.2",
            "demo/reviews.1",
            "demo/extra.0",
            "demo/reviews.0"
        ]
    );
    assert_eq!(
        routes[0],
        Route {
            name: "demo/reviews.2".into(),
            kind: Kind::Http as i32,
            matches: vec![RouteMatch {
                path: path(path_match::Kind::Exact("/health".into())),
                ..Default::default()
            }],
            backends: vec![backend(V1, 1)],
            ports: vec![9080],
            ..Default::default()
        }
    );
    assert_eq!(
        routes[1].matches,
        [RouteMatch {
            path: path(path_match::Kind::Prefix("/api".into())),
            headers: vec![HeaderMatch {
                name: "x-user".into(),
                kind: Some(header_match::Kind::Exact("jason".into())),
            }],
            ..Default::default()
        }]
    );
    assert_eq!(routes[1].backends, [backend(V2, 1)]);
    assert_eq!(
        routes[2].ports,
        Vec::<u32>::new(),
        "no port in its parentRef"
    );
    assert_eq!(routes[3].backends, [backend(V1, 90), backend(V2, 10)]);
    // Routes attach to their parent only.
    assert!(bound(&m, V1).routes.is_empty());
    let st = m.waypoint_status("demo/waypoint").expect("status");
    assert_eq!(
        st.routes,
        ["HTTPRoute demo/extra", "HTTPRoute demo/reviews"]
    );
}

#[test]
fn ties_go_to_the_older_route_then_the_name() {
    let older = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
        metadata: {name: zz-old, namespace: demo, creationTimestamp: \"2024-01-01T00:00:00Z\"}\n\
        spec:\n  parentRefs: [{group: \"\", kind: Service, name: reviews}]\n  rules: [{backendRefs: [{name: reviews-v2, port: 9080}]}]\n---\n";
    let newer = older
        .replace("zz-old", "aa-new")
        .replace("2024-01-01", "2025-01-01");
    let m = model(&(mesh() + older + &newer));
    let names: Vec<&str> = bound(&m, REVIEWS)
        .routes
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(names, ["demo/zz-old.0", "demo/aa-new.0"]);
}

#[test]
fn filters_timeouts_and_retries_compile() {
    let rules = "  - matches:\n    - path: {type: PathPrefix, value: /v1}\n      method: POST\n      queryParams: [{name: debug, type: RegularExpression, value: \"on|yes\"}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: X-Env, value: prod}], add: [{name: x-trace, value: \"1\"}], remove: [x-internal]}
    - type: ResponseHeaderModifier
      responseHeaderModifier: {remove: [server]}
    - type: URLRewrite
      urlRewrite: {hostname: reviews.internal, path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}
    backendRefs: [{name: reviews-v2, port: 9080}]
    timeouts: {request: 10s, backendRequest: 500ms}
    retry: {attempts: 3, codes: [502, 503], backoff: 100ms}
  - matches: [{path: {type: RegularExpression, value: \"/old/.*\"}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https, hostname: new.example, port: 8443, statusCode: 301, path: {type: ReplaceFullPath, replaceFullPath: /new}}
";
    let m = model(&(mesh() + &route(rules)));
    assert!(m.issues.is_empty(), "{:?}", m.issues);
    let routes = &bound(&m, REVIEWS).routes;
    // The prefix match (with a method) ranks before the regular expression.
    let (rewrite, redirect) = (&routes[0], &routes[1]);
    assert_eq!(rewrite.matches[0].method, "POST");
    assert_eq!(
        rewrite.matches[0].query_params,
        [HeaderMatch {
            name: "debug".into(),
            kind: Some(header_match::Kind::Regex("on|yes".into())),
        }]
    );
    let op = |op: header_modifier::Op, name: &str, value: &str| HeaderModifier {
        op: op as i32,
        name: name.into(),
        value: value.into(),
    };
    assert_eq!(
        rewrite.request_headers,
        [
            op(header_modifier::Op::Set, "x-env", "prod"),
            op(header_modifier::Op::Add, "x-trace", "1"),
            op(header_modifier::Op::Remove, "x-internal", ""),
        ]
    );
    assert_eq!(
        rewrite.response_headers,
        [op(header_modifier::Op::Remove, "server", "")]
    );
    assert_eq!(
        rewrite.rewrite,
        Some(UrlRewrite {
            hostname: "reviews.internal".into(),
            path: Some(PathRewrite {
                kind: Some(path_rewrite::Kind::Prefix("/v2".into()))
            }),
        })
    );
    assert_eq!(
        (rewrite.timeout_ms, rewrite.backend_timeout_ms),
        (10_000, 500)
    );
    assert_eq!(
        rewrite.retry,
        Some(Retry {
            attempts: 3,
            codes: vec![502, 503],
            backoff_ms: 100,
            ..Default::default()
        })
    );
    assert_eq!(
        redirect.redirect,
        Some(Redirect {
            scheme: "https".into(),
            hostname: "new.example".into(),
            port: 8443,
            path: Some(PathRewrite {
                kind: Some(path_rewrite::Kind::Full("/new".into()))
            }),
            status_code: 301,
        })
    );
    assert!(redirect.backends.is_empty());
}

#[test]
fn grpc_route_matches_services_and_methods() {
    let grpc = "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {name: api, namespace: demo}
spec:
  parentRefs: [{group: \"\", kind: Service, name: reviews, sectionName: grpc-api}]
  rules:
  - matches: [{method: {service: reviews.Reviews}}]
    backendRefs: [{name: reviews-v1, port: 9090}]
  - matches: [{method: {service: reviews.Reviews, method: Get}, headers: [{name: x-canary, value: \"true\"}]}]
    backendRefs: [{name: reviews-v2, port: 9090}]
---
";
    let m = model(&(mesh() + grpc));
    assert!(m.issues.is_empty(), "{:?}", m.issues);
    let routes = &bound(&m, REVIEWS).routes;
    assert_eq!(routes.len(), 2);
    assert_eq!(routes[0].name, "demo/api.1");
    assert_eq!(routes[0].kind, Kind::Grpc as i32);
    assert_eq!(routes[0].ports, [9090]);
    assert_eq!(
        (
            routes[0].matches[0].grpc_service.as_str(),
            routes[0].matches[0].grpc_method.as_str()
        ),
        ("reviews.Reviews", "Get")
    );
    assert_eq!(routes[0].matches[0].headers.len(), 1);
    assert_eq!(routes[1].matches[0].grpc_method, "");
    assert_eq!(routes[1].backends[0].service, V1);
}

#[test]
fn gateway_parent_applies_to_every_bound_service_matching_the_hostnames() {
    let rule = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: all, namespace: demo}
spec:
  parentRefs: [{name: waypoint}]
  hostnames: [reviews-v1, \"*.demo.svc.cluster.local\"]
  rules: [{filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {add: [{name: x-mesh, value: yes}]}}]}]
---
";
    let m = model(&(mesh() + rule));
    assert!(m.issues.is_empty(), "{:?}", m.issues);
    for key in [REVIEWS, V1, V2] {
        assert_eq!(bound(&m, key).routes.len(), 1, "{key}");
    }
    let only_v1 = rule.replace(", \"*.demo.svc.cluster.local\"", "");
    let m = model(&(mesh() + &only_v1));
    assert_eq!(bound(&m, V1).routes.len(), 1);
    assert!(bound(&m, V2).routes.is_empty());
}

#[test]
fn unsupported_route_fields_are_reported_never_silently_ignored() {
    let rules = "  - matches: [{path: {type: PathPrefix, value: /mirror}}]
    filters: [{type: RequestMirror, requestMirror: {backendRef: {name: reviews-v2, port: 9080}}}]
    backendRefs: [{name: reviews-v1, port: 9080}, {group: example.com, kind: Bucket, name: b}]
  - matches: [{path: {type: PathPrefix, value: /ext}}]
    filters: [{type: ExtensionRef, extensionRef: {group: example.com, kind: Auth, name: a}}]
  - matches: [{path: {type: RegularExpression, value: \"/broken(\"}}]
  - matches: [{path: {type: PathPrefix, value: /elsewhere}}]
    backendRefs: [{name: reviews-v1, namespace: other, port: 9080}, {name: nothere, port: 9080}]
";
    let consumer = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: consumer, namespace: demo}
spec:
  parentRefs: [{group: \"\", kind: Service, name: web, namespace: other}, {group: \"\", kind: Service, name: unbound}]
  rules: [{}]
---
apiVersion: v1\nkind: Service\nmetadata: {name: unbound, namespace: demo, labels: {istio.io/use-waypoint: none}}
spec: {clusterIP: 10.96.0.30, ports: [{port: 80}]}
---
";
    let m = model(&(mesh() + &route(rules) + consumer));
    let routes = &bound(&m, REVIEWS).routes;
    let names: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["demo/extra.3", "demo/extra.0"],
        "rules 1 and 2 are not programmed"
    );
    assert_eq!(routes[1].backends, [backend(V1, 1)]);
    assert_eq!(
        routes[0].backends,
        [backend("demo/nothere.demo.svc.cluster.local", 1)],
        "a missing Service stays a backend, so its requests fail"
    );
    let issues = issues_for(&m, "HTTPRoute demo/extra");
    let expect = [
        "rule 0: filter RequestMirror is not supported",
        "rule 0: backendRef Bucket b: only Service backends are supported; dropped",
        "rule 1 is not programmed: filter ExtensionRef is not supported",
        "rule 2 is not programmed: invalid regular expression \"/broken(\"",
        "rule 3: backendRef Service reviews-v1: a backend in another namespace (other) needs a ReferenceGrant",
        "rule 3: backendRef Service nothere: Service demo/nothere does not exist",
    ];
    for e in expect {
        assert!(
            issues.iter().any(|i| i.starts_with(e)),
            "no issue {e:?} in {issues:?}"
        );
    }
    let consumer = issues_for(&m, "HTTPRoute demo/consumer");
    assert!(
        consumer[0].contains("(a consumer route) is not supported"),
        "{consumer:?}"
    );
    assert!(
        consumer[1].contains("not bound to a waypoint"),
        "{consumer:?}"
    );
    let st = m.waypoint_status("demo/waypoint").expect("status");
    assert!(
        st.issues.iter().any(|i| i.contains("ExtensionRef")),
        "{st:?}"
    );
}
