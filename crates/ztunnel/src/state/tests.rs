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
