//! Waypoints in the ambient model: which Gateways are waypoints, what binds to them, what
//! ztunnel and the waypoint receive, and what is reported.

mod common;

use common::model;
use common::waypoint::{gateway, mesh, namespace, pod, service, waypoint_deployment};
use istiod::model::Model;
use mesh_proto::proto::waypoint::{Operation, PolicyRule, Source, header_match, policy};
use mesh_proto::proto::workload::{
    GatewayAddress, NamespacedHostname, TunnelProtocol, gateway_address,
};

const WAYPOINT_HOST: &str = "waypoint.demo.svc.cluster.local";
const REVIEWS: &str = "demo/reviews.demo.svc.cluster.local";

fn address(ns: &str, host: &str) -> Option<GatewayAddress> {
    Some(GatewayAddress {
        destination: Some(gateway_address::Destination::Hostname(NamespacedHostname {
            namespace: ns.into(),
            hostname: host.into(),
        })),
        hbone_mtls_port: 15008,
    })
}

fn issues_for<'a>(m: &'a Model, object: &str) -> Vec<&'a str> {
    m.issues
        .iter()
        .filter(|i| i.object == object)
        .map(|i| i.reason.as_str())
        .collect()
}

fn service_waypoint(m: &Model, key: &str) -> Option<GatewayAddress> {
    m.service(key)
        .unwrap_or_else(|| panic!("no service {key}"))
        .waypoint
        .clone()
}

fn bound_keys(m: &Model, waypoint: &str) -> Vec<String> {
    m.waypoint(waypoint)
        .unwrap_or_else(|| panic!("no waypoint {waypoint}"))
        .services
        .iter()
        .map(|s| s.key.clone())
        .collect()
}

#[test]
fn gateway_defines_a_waypoint_with_its_service_address() {
    let m = model(&mesh());
    let st = m.waypoint_status("demo/waypoint").expect("status");
    assert_eq!(st.resource.as_deref(), Some("demo/waypoint"));
    assert_eq!(st.waypoint_for, "service");
    assert_eq!(st.address.hostname, WAYPOINT_HOST);
    assert_eq!(st.address.hbone_port, 15008);
    assert!(st.address.service_found);
    assert_eq!(st.address.ready_endpoints, 1);
    let accepted = st.condition("Accepted").expect("Accepted");
    let programmed = st.condition("Programmed").expect("Programmed");
    assert!(accepted.is_true() && programmed.is_true(), "{st:?}");
    assert!(st.issues.is_empty(), "{st:?}");

    let wp = m.waypoint("demo/waypoint").expect("Waypoint resource");
    assert_eq!(
        (wp.namespace.as_str(), wp.name.as_str()),
        ("demo", "waypoint")
    );

    // The waypoint pod is published with HBONE although it is never enrolled itself.
    let pod = m.workload("demo/waypoint-0").expect("waypoint workload");
    assert_eq!(pod.tunnel_protocol, TunnelProtocol::Hbone as i32);
    assert_eq!(pod.waypoint, None);
    assert!(pod.services.contains_key(&format!("demo/{WAYPOINT_HOST}")));
}

#[test]
fn namespace_label_binds_services_and_not_workloads() {
    let m = model(&mesh());
    assert_eq!(
        service_waypoint(&m, REVIEWS),
        address("demo", WAYPOINT_HOST)
    );
    assert_eq!(m.workload("demo/reviews-0").expect("pod").waypoint, None);
    assert_eq!(
        bound_keys(&m, "demo/waypoint"),
        [
            "demo/reviews-v1.demo.svc.cluster.local",
            "demo/reviews-v2.demo.svc.cluster.local",
            REVIEWS,
        ]
    );
    let wp = m.waypoint("demo/waypoint").expect("waypoint");
    let reviews = wp
        .services
        .iter()
        .find(|s| s.key == REVIEWS)
        .expect("reviews");
    assert_eq!(reviews.name, "reviews");
    assert_eq!(reviews.hostname, "reviews.demo.svc.cluster.local");
    assert_eq!(reviews.vips, vec![vec![10, 96, 0, 10]]);
    let ports: Vec<(u32, u32, &str)> = reviews
        .ports
        .iter()
        .map(|p| (p.port, p.target_port, p.protocol.as_str()))
        .collect();
    assert_eq!(ports, [(9080, 8080, "http"), (9090, 9090, "grpc")]);
    assert_eq!(reviews.circuit_breaker, None);
    let st = m.waypoint_status("demo/waypoint").expect("status");
    assert_eq!(st.bound_services.len(), 3);
    assert!(st.bound_workloads.is_empty());
}

#[test]
fn waypoint_for_workload_binds_workloads_only() {
    let yaml = mesh().replace(
        "name: waypoint, namespace: demo, labels: {}}",
        "name: waypoint, namespace: demo, labels: {istio.io/waypoint-for: workload}}",
    );
    let m = model(&yaml);
    assert_eq!(
        m.workload("demo/reviews-0").expect("pod").waypoint,
        address("demo", WAYPOINT_HOST)
    );
    assert_eq!(service_waypoint(&m, REVIEWS), None);
    assert!(bound_keys(&m, "demo/waypoint").is_empty());
    let st = m.waypoint_status("demo/waypoint").expect("status");
    assert_eq!(st.waypoint_for, "workload");
    assert_eq!(
        st.bound_workloads,
        ["demo/reviews-0", "demo/reviews-v1-0", "demo/reviews-v2-0"]
    );

    // `all` binds both.
    let m = model(&yaml.replace("waypoint-for: workload", "waypoint-for: all"));
    assert!(
        m.workload("demo/reviews-0")
            .expect("pod")
            .waypoint
            .is_some()
    );
    assert!(service_waypoint(&m, REVIEWS).is_some());
}

#[test]
fn none_opts_a_service_out_and_object_labels_override_the_namespace() {
    let yaml = [
        mesh(),
        gateway("other", ""),
        waypoint_deployment("other", "10.96.0.101", "10.0.0.101"),
        service(
            "ratings",
            "ratings",
            "10.96.0.20",
            "istio.io/use-waypoint: none",
            "",
        ),
        service(
            "details",
            "details",
            "10.96.0.21",
            "istio.io/use-waypoint: other",
            "",
        ),
    ]
    .concat();
    let m = model(&yaml);
    assert_eq!(
        service_waypoint(&m, "demo/ratings.demo.svc.cluster.local"),
        None
    );
    assert_eq!(
        service_waypoint(&m, "demo/details.demo.svc.cluster.local"),
        address("demo", "other.demo.svc.cluster.local")
    );
    assert_eq!(
        bound_keys(&m, "demo/other"),
        ["demo/details.demo.svc.cluster.local"]
    );
    assert!(
        !bound_keys(&m, "demo/waypoint")
            .iter()
            .any(|k| k.contains("ratings"))
    );
}

#[test]
fn the_waypoints_own_service_and_pods_are_never_bound() {
    let yaml = mesh().replace(
        "name: waypoint-0, namespace: demo, labels: {",
        "name: waypoint-0, namespace: demo, labels: {istio.io/use-waypoint: waypoint, ",
    );
    let m = model(&yaml);
    assert_eq!(service_waypoint(&m, &format!("demo/{WAYPOINT_HOST}")), None);
    assert!(!bound_keys(&m, "demo/waypoint").contains(&format!("demo/{WAYPOINT_HOST}")));
    assert_eq!(m.workload("demo/waypoint-0").expect("pod").waypoint, None);
    assert!(issues_for(&m, "Pod demo/waypoint-0")[0].contains("never bound"));
    // Even with workload binding for the rest of the namespace.
    let m = model(&mesh().replace("labels: {}}", "labels: {istio.io/waypoint-for: all}}"));
    assert_eq!(m.workload("demo/waypoint-0").expect("pod").waypoint, None);
    assert!(
        m.workload("demo/reviews-0")
            .expect("pod")
            .waypoint
            .is_some()
    );
}

#[test]
fn a_missing_waypoint_fails_closed_and_is_reported() {
    let yaml = [
        namespace(Some("missing")),
        service("reviews", "reviews", "10.96.0.10", "", ""),
        pod(
            "reviews-0",
            "reviews",
            "10.0.0.10",
            ", istio.io/use-waypoint: gone",
        ),
    ]
    .concat();
    let m = model(&yaml);
    assert_eq!(
        service_waypoint(&m, REVIEWS),
        address("demo", "missing.demo.svc.cluster.local")
    );
    // A pod label binds the workload, so its traffic is refused too.
    assert_eq!(
        m.workload("demo/reviews-0").expect("pod").waypoint,
        address("demo", "gone.demo.svc.cluster.local")
    );
    assert!(m.waypoints.is_empty());
    let issues = issues_for(&m, "Namespace demo");
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert!(
        issues[0].contains("demo/missing, which does not exist"),
        "{issues:?}"
    );
    let st = m
        .waypoint_status("demo/missing")
        .expect("status of a missing waypoint");
    let accepted = st.condition("Accepted").expect("Accepted");
    assert_eq!(
        (accepted.status.as_str(), accepted.reason.as_str()),
        ("False", "GatewayNotFound")
    );
    assert_eq!(st.resource, None);
    assert!(st.refused[0].starts_with("Service demo/reviews"), "{st:?}");
}

#[test]
fn wrong_listener_is_reported_and_other_gateway_classes_are_ignored() {
    let yaml = mesh().replace(
        "listeners: [{name: mesh, port: 15008, protocol: HBONE}]",
        "listeners: [{name: mesh, port: 80, protocol: HTTP}]",
    ) + "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
         metadata: {name: ingress, namespace: demo}\n\
         spec: {gatewayClassName: istio, listeners: [{name: http, port: 80, protocol: HTTP}]}\n";
    let m = model(&yaml);
    assert!(m.waypoints.is_empty());
    let issues = issues_for(&m, "Gateway demo/waypoint");
    assert!(
        issues[0].contains("port 80 and protocol \"HTTP\""),
        "{issues:?}"
    );
    // Still bound: the traffic is refused rather than let through without L7 policy.
    assert_eq!(
        service_waypoint(&m, REVIEWS),
        address("demo", WAYPOINT_HOST)
    );
    let st = m.waypoint_status("demo/waypoint").expect("status");
    assert_eq!(
        st.condition("Accepted").expect("Accepted").reason,
        "ListenersNotValid"
    );
    assert!(!st.refused.is_empty());
    assert!(issues_for(&m, "Gateway demo/ingress").is_empty());
    assert!(m.waypoint_status("demo/ingress").is_none());
}

#[test]
fn circuit_breaking_comes_from_service_annotations() {
    let yaml = mesh().replace(
        "name: reviews-v1, namespace: demo, labels: {}, annotations: {}",
        "name: reviews-v1, namespace: demo, labels: {}, annotations: {mesh.io/max-connections: \"10\", \
         mesh.io/max-pending-requests: \"5\", mesh.io/consecutive-5xx: \"3\", mesh.io/ejection-ms: \"30000\", \
         mesh.io/max-requests: lots}",
    );
    let m = model(&yaml);
    let wp = m.waypoint("demo/waypoint").expect("waypoint");
    let v1 = wp
        .services
        .iter()
        .find(|s| s.name == "reviews-v1")
        .expect("v1");
    let cb = v1.circuit_breaker.as_ref().expect("circuit breaker");
    assert_eq!(
        (cb.max_connections, cb.max_pending_requests, cb.max_requests),
        (10, 5, 0)
    );
    assert_eq!((cb.consecutive_5xx, cb.ejection_ms), (3, 30_000));
    let issues = issues_for(&m, "Service demo/reviews-v1");
    assert!(
        issues[0].contains("mesh.io/max-requests=\"lots\""),
        "{issues:?}"
    );
}

const POLICY: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: demo}
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]
  action: DENY
  rules:
  - from: [{source: {principals: [\"cluster.local/ns/demo/sa/web\"], serviceAccounts: [robot]}}]
    to: [{operation: {methods: [GET, POST], paths: [\"/admin*\"], hosts: [reviews], ports: [\"9080\"]}}]
    when:
    - {key: \"request.headers[X-Token]\", values: [\"secret-*\"]}
    - {key: source.namespace, values: [demo]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-readers, namespace: demo}
spec:
  targetRefs: [{kind: Service, group: \"\", name: reviews}]
  rules: [{to: [{operation: {methods: [GET]}}]}]
---
";

#[test]
fn authorization_policy_with_target_refs_becomes_a_waypoint_policy() {
    let m = model(&(mesh() + POLICY));
    // Not an L4 policy: ztunnel gets nothing of it.
    assert!(m.authorizations.is_empty(), "{:?}", m.authorizations);
    assert!(
        m.workloads
            .iter()
            .all(|w| w.authorization_policies.is_empty())
    );

    let wp = m.waypoint("demo/waypoint").expect("waypoint");
    let names: Vec<&str> = wp.policies.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["demo/no-admin", "demo/reviews-readers"]);
    let deny = &wp.policies[0];
    assert_eq!(deny.action, policy::Action::Deny as i32);
    assert!(
        deny.targets.is_empty(),
        "a Gateway target covers every service"
    );
    assert_eq!(
        deny.rules,
        [PolicyRule {
            from: vec![Source {
                principals: vec![
                    "cluster.local/ns/demo/sa/web".into(),
                    "*/ns/demo/sa/robot".into()
                ],
                namespaces: vec!["demo".into()],
                ..Default::default()
            }],
            to: vec![Operation {
                methods: vec!["GET".into(), "POST".into()],
                paths: vec!["/admin*".into()],
                hosts: vec!["reviews".into()],
                ports: vec![9080],
                headers: vec![mesh_proto::proto::waypoint::HeaderMatch {
                    name: "x-token".into(),
                    kind: Some(header_match::Kind::Regex("secret\\-.*".into())),
                }],
                ..Default::default()
            }],
        }]
    );
    let allow = &wp.policies[1];
    assert_eq!(allow.action, policy::Action::Allow as i32);
    assert_eq!(allow.targets, [REVIEWS]);
    assert!(m.issues.is_empty(), "{:?}", m.issues);
    let st = m.waypoint_status("demo/waypoint").expect("status");
    assert_eq!(st.policies, ["demo/no-admin", "demo/reviews-readers"]);
}

#[test]
fn unsupported_policy_fields_and_actions_are_reported() {
    let policies = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: jwt, namespace: demo}
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]
  rules:
  - from: [{source: {requestPrincipals: [\"*\"]}}]
  - to: [{operation: {methods: [GET]}}]
    when: [{key: source.ip, values: [10.0.0.0/8]}]
  - to: [{operation: {paths: [/public]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext, namespace: demo}
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]
  action: CUSTOM
  provider: {name: opa}
  rules: [{to: [{operation: {paths: [/secure]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit, namespace: demo}
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]
  action: AUDIT
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: unbound, namespace: demo}
spec:
  targetRefs: [{kind: Service, group: \"\", name: waypoint}]
  rules: [{}]
---
";
    let m = model(&(mesh() + policies));
    let wp = m.waypoint("demo/waypoint").expect("waypoint");
    let names: Vec<&str> = wp.policies.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["demo/ext", "demo/jwt"], "AUDIT is not sent");

    // ALLOW: the rules the waypoint cannot check match nothing; the others stay.
    let jwt = &wp.policies[1];
    assert_eq!(jwt.rules.len(), 1);
    assert_eq!(jwt.rules[0].to[0].paths, ["/public"]);
    let issues = issues_for(&m, "AuthorizationPolicy demo/jwt");
    assert!(
        issues[0].contains("rule 1 uses from.source.requestPrincipals"),
        "{issues:?}"
    );
    assert!(
        issues[1].contains("rule 2 uses the when key source.ip"),
        "{issues:?}"
    );
    assert!(
        issues.iter().all(|i| i.contains("matches nothing")),
        "{issues:?}"
    );

    // CUSTOM fails closed: what it would ask an external authorizer about is denied.
    let ext = &wp.policies[0];
    assert_eq!(ext.action, policy::Action::Deny as i32);
    assert_eq!(ext.rules[0].to[0].paths, ["/secure"]);
    assert!(issues_for(&m, "AuthorizationPolicy demo/ext")[0].contains("CUSTOM"));
    assert!(issues_for(&m, "AuthorizationPolicy demo/audit")[0].contains("AUDIT"));
    assert!(
        issues_for(&m, "AuthorizationPolicy demo/unbound")[0].contains("not bound to a waypoint"),
        "{:?}",
        m.issues
    );
    // The waypoint's status lists what concerns it.
    let st = m.waypoint_status("demo/waypoint").expect("status");
    assert!(
        st.issues
            .iter()
            .any(|i| i.starts_with("AuthorizationPolicy demo/jwt: "))
    );
}

#[test]
fn a_waypoint_of_another_namespace_must_allow_it() {
    let shared = |allowed: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: shared, namespace: infra}}\n\
             spec:\n  gatewayClassName: istio-waypoint\n  listeners: [{{name: mesh, port: 15008, protocol: HBONE{allowed}}}]\n---\n"
        )
    };
    let rest = [
        namespace(None).replace(
            "ambient}",
            "ambient, istio.io/use-waypoint: shared, istio.io/use-waypoint-namespace: infra}",
        ),
        service("reviews", "reviews", "10.96.0.10", "", ""),
    ]
    .concat();
    let shared_host = "shared.infra.svc.cluster.local";

    // The listener allows only its own namespace (the default): refused, yet still bound.
    let m = model(&(shared("") + &rest));
    assert_eq!(service_waypoint(&m, REVIEWS), address("infra", shared_host));
    assert!(bound_keys(&m, "infra/shared").is_empty());
    let st = m.waypoint_status("infra/shared").expect("status");
    assert!(
        st.refused[0].contains("does not allow namespace demo"),
        "{st:?}"
    );
    assert!(issues_for(&m, "Namespace demo")[0].contains("its traffic is refused"));

    let m = model(&(shared(", allowedRoutes: {namespaces: {from: All}}") + &rest));
    assert_eq!(service_waypoint(&m, REVIEWS), address("infra", shared_host));
    assert_eq!(bound_keys(&m, "infra/shared"), [REVIEWS]);
    assert!(m.issues.is_empty(), "{:?}", m.issues);
}

#[test]
fn a_root_namespace_policy_on_the_gateway_class_applies_to_every_waypoint() {
    let policy = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
        metadata: {name: mesh-wide, namespace: istio-system}\n\
        spec:\n  targetRefs: [{kind: GatewayClass, group: gateway.networking.k8s.io, name: istio-waypoint}]\n  \
        action: DENY\n  rules: [{to: [{operation: {paths: [/debug*]}}]}]\n---\n";
    let m = model(&(mesh() + policy));
    let wp = m.waypoint("demo/waypoint").expect("waypoint");
    assert_eq!(wp.policies.len(), 1);
    assert_eq!(wp.policies[0].name, "istio-system/mesh-wide");
    assert!(wp.policies[0].targets.is_empty());
    // Elsewhere than the root namespace it is refused.
    let m = model(&(mesh() + &policy.replace("namespace: istio-system", "namespace: demo")));
    assert!(
        m.waypoint("demo/waypoint")
            .expect("waypoint")
            .policies
            .is_empty()
    );
    assert!(issues_for(&m, "AuthorizationPolicy demo/mesh-wide")[0].contains("root namespace"));
}
