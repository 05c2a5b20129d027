//! Hot paths of the L4 data plane: authorization over many policies and destination resolution.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use identity::Identity;
use mesh_proto::proto::security as pb;
use mesh_proto::proto::workload as wpb;
use ztunnel::state::{Connection, Policy, ProxyState, Workload};

fn exact(s: String) -> pb::StringMatch {
    pb::StringMatch {
        match_type: Some(pb::string_match::MatchType::Exact(s)),
    }
}

/// 10,000 namespace-scoped policies spread over 1,000 namespaces; the destination's namespace
/// has ten of them, none matching the caller, plus one that does.
fn state_with_policies() -> (ProxyState, Workload) {
    let mut st = ProxyState::default();
    for i in 0..10_000u32 {
        let ns = format!("ns{}", i % 1000);
        st.upsert_policy(
            Policy::from_proto(pb::Authorization {
                name: format!("p{i}"),
                namespace: ns.clone(),
                scope: pb::Scope::Namespace as i32,
                action: pb::Action::Allow as i32,
                groups: vec![pb::Group {
                    rules: vec![pb::Rules {
                        matches: vec![pb::Match {
                            principals: vec![exact(format!("cluster.local/ns/{ns}/sa/client{i}"))],
                            destination_ports: vec![8080],
                            ..Default::default()
                        }],
                    }],
                }],
                dry_run: false,
            })
            .expect("valid policy"),
        );
    }
    let w = wpb::Workload {
        uid: "ns7/server".into(),
        name: "server".into(),
        namespace: "ns7".into(),
        addresses: vec![vec![10, 0, 0, 2]],
        tunnel_protocol: wpb::TunnelProtocol::Hbone as i32,
        ..Default::default()
    };
    let w = Workload::from_proto(w, "cluster.local").expect("valid workload");
    st.upsert_workload(w.clone());
    (st, w)
}

fn bench(c: &mut Criterion) {
    let (st, w) = state_with_policies();
    let allowed = Identity::new("cluster.local", "ns7", "client9007");
    let denied = Identity::new("cluster.local", "ns7", "intruder");
    let conn = |id| Connection {
        src_ip: "10.0.1.5".parse().expect("ip"),
        src_identity: Some(id),
        dst_ip: "10.0.0.2".parse().expect("ip"),
        dst_port: 8080,
    };
    c.bench_function("authorize/10k_policies/allowed", |b| {
        b.iter(|| black_box(st.authorize(&w, &conn(&allowed))))
    });
    c.bench_function("authorize/10k_policies/denied", |b| {
        b.iter(|| black_box(st.authorize(&w, &conn(&denied))))
    });
    let dst = "10.0.0.2:8080".parse().expect("addr");
    c.bench_function("resolve/workload_ip", |b| {
        b.iter(|| black_box(st.resolve(dst, |_| 0)))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
