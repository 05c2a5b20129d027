use std::net::SocketAddr;

use mesh_proto::proto::workload as pb;

use super::*;

fn pb_workload(uid: &str, ip: [u8; 4], svc: Option<(&str, u32, u32)>) -> pb::Workload {
    let mut w = pb::Workload {
        uid: uid.into(),
        name: uid.into(),
        namespace: "app".into(),
        addresses: vec![ip.to_vec()],
        tunnel_protocol: pb::TunnelProtocol::Hbone as i32,
        service_account: "server".into(),
        node: "node1".into(),
        ..Default::default()
    };
    if let Some((key, sp, tp)) = svc {
        w.services.insert(
            key.into(),
            pb::PortList {
                ports: vec![pb::Port {
                    service_port: sp,
                    target_port: tp,
                }],
            },
        );
    }
    w
}

fn state_with_service() -> ProxyState {
    let mut st = ProxyState::default();
    st.upsert_service(
        Service::from_proto(pb::Service {
            name: "echo".into(),
            namespace: "app".into(),
            hostname: "echo.app.svc.cluster.local".into(),
            addresses: vec![pb::NetworkAddress {
                network: String::new(),
                address: vec![10, 96, 0, 10],
            }],
            ports: vec![pb::Port {
                service_port: 80,
                target_port: 8080,
            }],
            ..Default::default()
        })
        .unwrap(),
    );
    for (uid, ip) in [("a", [10, 1, 0, 2]), ("b", [10, 2, 0, 2])] {
        let w = pb_workload(uid, ip, Some(("app/echo.app.svc.cluster.local", 80, 9090)));
        st.upsert_workload(Workload::from_proto(w, "cluster.local").unwrap());
    }
    st
}

#[test]
fn vip_resolves_to_an_endpoint_with_the_workload_target_port() {
    let st = state_with_service();
    let vip: SocketAddr = "10.96.0.10:80".parse().unwrap();
    let first = st.resolve(vip, |_| 0).unwrap();
    let second = st.resolve(vip, |_| 1).unwrap();
    let mut picked = [first.target.to_string(), second.target.to_string()];
    picked.sort();
    assert_eq!(picked, ["10.1.0.2:9090", "10.2.0.2:9090"]);
    assert_eq!(
        first.service.unwrap().hostname,
        "echo.app.svc.cluster.local"
    );
    assert_eq!(
        first.workload.identity.to_string(),
        "spiffe://cluster.local/ns/app/sa/server"
    );
    // An unknown service port does not resolve.
    assert!(
        st.resolve("10.96.0.10:81".parse().unwrap(), |_| 0)
            .is_none()
    );
}

#[test]
fn workload_ip_resolves_directly_and_unknown_ip_passes_through() {
    let st = state_with_service();
    let up = st.resolve("10.2.0.2:7000".parse().unwrap(), |_| 0).unwrap();
    assert_eq!(up.workload.uid, "b");
    assert_eq!(up.target.to_string(), "10.2.0.2:7000");
    assert!(st.resolve("192.0.2.1:80".parse().unwrap(), |_| 0).is_none());
}

#[test]
fn removal_updates_every_index() {
    let mut st = state_with_service();
    assert!(st.remove_workload("a"));
    assert!(st.workload_by_ip("10.1.0.2".parse().unwrap()).is_none());
    for i in 0..4 {
        let up = st.resolve("10.96.0.10:80".parse().unwrap(), |_| i).unwrap();
        assert_eq!(up.workload.uid, "b");
    }
    assert!(st.remove_workload("b"));
    assert!(
        st.resolve("10.96.0.10:80".parse().unwrap(), |_| 0)
            .is_none()
    );
    assert!(st.is_service_vip("10.96.0.10".parse().unwrap()));
    assert!(st.remove_service("app/echo.app.svc.cluster.local"));
    assert!(!st.is_service_vip("10.96.0.10".parse().unwrap()));
}

#[test]
fn malformed_resources_are_rejected_with_reason() {
    let mut w = pb_workload("bad", [10, 0, 0, 1], None);
    w.addresses = vec![vec![1, 2, 3]];
    let err = Workload::from_proto(w, "cluster.local").unwrap_err();
    assert!(err.to_string().contains("address of 3 bytes"), "{err}");
    let err = Workload::from_proto(pb::Workload::default(), "cluster.local").unwrap_err();
    assert!(err.to_string().contains("no uid"), "{err}");
}

#[test]
fn service_waypoint_routes_and_guards_its_endpoints() {
    let mut st = state_with_service();
    // The waypoint: a service with one endpoint pod.
    st.upsert_service(
        Service::from_proto(pb::Service {
            name: "waypoint".into(),
            namespace: "app".into(),
            hostname: "waypoint.app.svc.cluster.local".into(),
            addresses: vec![pb::NetworkAddress {
                network: String::new(),
                address: vec![10, 96, 0, 99],
            }],
            ports: vec![pb::Port {
                service_port: 15008,
                target_port: 15008,
            }],
            ..Default::default()
        })
        .unwrap(),
    );
    let mut wp = pb_workload(
        "wp",
        [10, 3, 0, 9],
        Some(("app/waypoint.app.svc.cluster.local", 15008, 15008)),
    );
    wp.service_account = "waypoint".into();
    st.upsert_workload(Workload::from_proto(wp, "cluster.local").unwrap());
    let vip: SocketAddr = "10.96.0.10:80".parse().unwrap();
    let up = st.resolve(vip, |_| 0).unwrap();
    assert!(
        st.waypoint_for(&up, |_| 0).is_none(),
        "no waypoint bound yet"
    );
    assert!(st.waypoint_identities(&up.workload).is_empty());

    // Bind the echo service to the waypoint.
    let mut echo = (*st.service_by_vip("10.96.0.10".parse().unwrap()).unwrap()).clone();
    echo.waypoint = Some(crate::state::Waypoint::Service {
        namespace: "app".into(),
        hostname: "waypoint.app.svc.cluster.local".into(),
        port: 15008,
    });
    st.upsert_service(echo);
    let up = st.resolve(vip, |_| 0).unwrap();
    let target = st.waypoint_for(&up, |_| 0).unwrap().unwrap();
    assert_eq!(target.addr.to_string(), "10.3.0.9:15008");
    assert_eq!(
        target.workload.identity.to_string(),
        "spiffe://cluster.local/ns/app/sa/waypoint"
    );
    let ids: Vec<String> = st
        .waypoint_identities(&up.workload)
        .iter()
        .map(|i| i.to_string())
        .collect();
    assert_eq!(
        ids,
        vec!["spiffe://cluster.local/ns/app/sa/waypoint".to_string()]
    );

    // A waypoint with no endpoint fails closed.
    st.remove_workload("wp");
    let err = st.waypoint_for(&up, |_| 0).unwrap().unwrap_err();
    assert!(err.contains("no ready endpoint"), "{err}");
}

#[test]
fn authorize_uses_only_policies_that_apply_and_forgets_removed_ones() {
    use mesh_proto::proto::security as sec;
    let deny_all = |name: &str, ns: &str, scope: sec::Scope| {
        Policy::from_proto(sec::Authorization {
            name: name.into(),
            namespace: ns.into(),
            scope: scope as i32,
            action: sec::Action::Deny as i32,
            groups: vec![sec::Group { rules: vec![] }],
            dry_run: false,
        })
        .unwrap()
    };
    let mut st = state_with_service();
    let dst = st.workload("a").unwrap();
    let conn = Connection {
        src_ip: "10.9.0.1".parse().unwrap(),
        src_identity: None,
        dst_ip: dst.ips[0],
        dst_port: 9090,
    };
    st.upsert_policy(deny_all("elsewhere", "other", sec::Scope::Namespace));
    st.upsert_policy(deny_all("picky", "app", sec::Scope::WorkloadSelector));
    assert_eq!(st.authorize(&dst, &conn), Decision::Allow);
    st.upsert_policy(deny_all("here", "app", sec::Scope::Namespace));
    assert!(matches!(st.authorize(&dst, &conn), Decision::Deny(r) if r.contains("app/here")));
    assert!(st.remove_policy("app/here"));
    assert_eq!(st.authorize(&dst, &conn), Decision::Allow);
    st.upsert_policy(deny_all("mesh-wide", "istio-system", sec::Scope::Global));
    assert!(
        matches!(st.authorize(&dst, &conn), Decision::Deny(r) if r.contains("istio-system/mesh-wide"))
    );
}
