use std::sync::Arc;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use mesh_proto::proto::workload as pb;
use parking_lot::RwLock;

use super::*;
use crate::state::{ProxyState, Service};

fn server() -> Server {
    let mut st = ProxyState::default();
    st.upsert_service(
        Service::from_proto(pb::Service {
            name: "echo".into(),
            namespace: "demo".into(),
            hostname: "echo.demo.svc.cluster.local".into(),
            addresses: vec![pb::NetworkAddress {
                network: String::new(),
                address: vec![10, 96, 0, 7],
            }],
            ports: vec![pb::Port {
                service_port: 80,
                target_port: 8080,
            }],
            ..Default::default()
        })
        .unwrap(),
    );
    Server {
        state: Arc::new(RwLock::new(st)),
        namespace: "demo".into(),
        upstream: None,
    }
}

async fn ask(srv: &Server, name: &str, t: RecordType) -> Message {
    let mut q = Message::query();
    q.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    let resp = srv.answer(&q.to_vec().unwrap()).await.expect("an answer");
    let resp = Message::from_vec(&resp).unwrap();
    assert_eq!(resp.metadata.id, q.metadata.id);
    resp
}

fn a_records(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn service_fqdn_and_short_forms_resolve_to_the_vip() {
    let srv = server();
    for name in [
        "echo.demo.svc.cluster.local.",
        "echo.demo.svc.",
        "echo.demo.",
        "echo.",
    ] {
        let resp = ask(&srv, name, RecordType::A).await;
        assert_eq!(resp.metadata.response_code, ResponseCode::NoError, "{name}");
        assert_eq!(a_records(&resp), vec!["10.96.0.7".to_string()], "{name}");
    }
}

#[tokio::test]
async fn aaaa_for_a_v4_only_service_is_empty_not_an_error() {
    let resp = ask(&server(), "echo.demo.svc.cluster.local.", RecordType::AAAA).await;
    assert_eq!(resp.metadata.response_code, ResponseCode::NoError);
    assert!(resp.answers.is_empty());
}

#[tokio::test]
async fn unknown_names_are_forwarded_and_fail_without_upstream() {
    let resp = ask(&server(), "example.org.", RecordType::A).await;
    assert_eq!(resp.metadata.response_code, ResponseCode::ServFail);
}

#[tokio::test]
async fn garbage_gets_no_answer() {
    assert!(server().answer(&[1, 2, 3]).await.is_none());
}
