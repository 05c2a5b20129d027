use super::*;

fn svc(key: &str, vip: [u8; 4], ports: Vec<pb::ServicePort>) -> pb::BoundService {
    let (ns, host) = key.split_once('/').expect("key");
    pb::BoundService {
        key: key.into(),
        name: host.split('.').next().unwrap_or(host).into(),
        namespace: ns.into(),
        hostname: host.into(),
        vips: vec![vip.to_vec()],
        ports,
        ..Default::default()
    }
}

fn port(port: u32, protocol: &str) -> pb::ServicePort {
    pb::ServicePort {
        port,
        target_port: 0,
        protocol: protocol.into(),
    }
}

#[test]
fn services_are_found_by_vip_and_port() {
    let cfg = WaypointConfig::from_proto(pb::Waypoint {
        name: "wp".into(),
        namespace: "ns".into(),
        services: vec![
            svc(
                "ns/a.ns.svc.cluster.local",
                [10, 0, 0, 1],
                vec![port(80, "http"), port(9000, "tcp")],
            ),
            svc("ns/b.ns.svc.cluster.local", [10, 0, 0, 2], vec![]),
        ],
        policies: vec![],
    })
    .expect("valid");
    let (a, p) = cfg
        .service_for("10.0.0.1:80".parse().expect("addr"))
        .expect("a:80");
    assert_eq!((a.name.as_str(), p.protocol), ("a", Protocol::Http));
    assert_eq!(
        cfg.service_for("10.0.0.1:9000".parse().expect("addr"))
            .map(|(_, p)| p.protocol),
        Some(Protocol::Tcp)
    );
    assert!(
        cfg.service_for("10.0.0.1:81".parse().expect("addr"))
            .is_none(),
        "unlisted port"
    );
    assert_eq!(
        cfg.service_for("10.0.0.2:1234".parse().expect("addr"))
            .map(|(_, p)| p.protocol),
        Some(Protocol::Detect),
        "a service without ports takes any port"
    );
    assert!(
        cfg.service_for("10.0.0.3:80".parse().expect("addr"))
            .is_none()
    );
    assert!(cfg.service("ns/b.ns.svc.cluster.local").is_some());
}

#[test]
fn conflicts_and_bad_values_are_refused() {
    let dup_vip = pb::Waypoint {
        services: vec![
            svc("ns/a.ns.svc.cluster.local", [10, 0, 0, 1], vec![]),
            svc("ns/b.ns.svc.cluster.local", [10, 0, 0, 1], vec![]),
        ],
        ..Default::default()
    };
    let err = WaypointConfig::from_proto(dup_vip)
        .expect_err("dup vip")
        .to_string();
    assert!(
        err.contains("VIP 10.0.0.1 is also used by ns/a.ns.svc.cluster.local"),
        "{err}"
    );
    let bad_proto = pb::Waypoint {
        services: vec![svc(
            "ns/a.ns.svc.cluster.local",
            [10, 0, 0, 1],
            vec![port(80, "mongo")],
        )],
        ..Default::default()
    };
    let err = WaypointConfig::from_proto(bad_proto)
        .expect_err("protocol")
        .to_string();
    assert!(err.contains("unknown protocol \"mongo\""), "{err}");
    let bad_vip = pb::Waypoint {
        services: vec![pb::BoundService {
            vips: vec![vec![1, 2, 3]],
            ..svc("ns/a.ns.svc.cluster.local", [10, 0, 0, 1], vec![])
        }],
        ..Default::default()
    };
    assert!(WaypointConfig::from_proto(bad_vip).is_err());
}

#[test]
fn circuit_breaker_zero_means_unlimited() {
    let c = CircuitBreakerSpec::from_proto(pb::CircuitBreaker {
        max_connections: 0,
        max_pending_requests: 5,
        max_requests: 0,
        consecutive_5xx: 3,
        ejection_ms: 0,
    });
    assert_eq!(c.max_connections, None);
    assert_eq!(c.max_pending_requests, Some(5));
    assert_eq!(c.ejection, DEFAULT_EJECTION);
}
