//! Unit tests of the stream state machine.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;

use prost_types::Any;

use super::*;
use crate::proto::discovery::Status as RpcStatus;

const T: &str = "type.googleapis.com/test.Thing";

fn any(v: &str) -> Any {
    Any {
        type_url: T.to_owned(),
        value: v.as_bytes().to_vec(),
    }
}

fn put(store: &ResourceStore, name: &str, v: &str) {
    store.apply(T, vec![(name.to_owned(), any(v))], vec![]);
}

fn subscribe(names: &[&str]) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: T.to_owned(),
        resource_names_subscribe: names.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn ack(nonce: &str) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: T.to_owned(),
        response_nonce: nonce.to_owned(),
        ..Default::default()
    }
}

fn names(resp: &DeltaDiscoveryResponse) -> Vec<(String, String)> {
    let mut v: Vec<_> = resp
        .resources
        .iter()
        .map(|r| {
            let value = r
                .resource
                .as_ref()
                .map(|a| a.value.clone())
                .unwrap_or_default();
            (r.name.clone(), String::from_utf8(value).unwrap_or_default())
        })
        .collect();
    v.sort();
    v
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

struct Fixture {
    store: ResourceStore,
    watch: Watch,
    state: StreamState,
    nonces: AtomicU64,
}

impl Fixture {
    fn new(store: ResourceStore) -> Self {
        let watch = store.watch();
        Self {
            store,
            watch,
            state: StreamState::default(),
            nonces: AtomicU64::new(1),
        }
    }

    fn request(&mut self, req: DeltaDiscoveryRequest) -> Option<Feedback> {
        self.state
            .handle_request(req, &self.watch)
            .expect("valid request")
    }

    fn next(&mut self) -> Option<DeltaDiscoveryResponse> {
        self.state.mark_changed(self.watch.take());
        self.state.next_response(&self.store, &self.nonces)
    }
}

#[test]
fn wildcard_gets_everything_then_only_changes() {
    let store = ResourceStore::new();
    put(&store, "a", "1");
    put(&store, "b", "1");
    let mut f = Fixture::new(store.clone());
    assert_eq!(f.request(subscribe(&[])), None);
    let first = f.next().expect("initial response");
    assert_eq!(names(&first), pairs(&[("a", "1"), ("b", "1")]));
    assert_eq!(first.system_version_info, "2");

    put(&store, "a", "2");
    assert!(f.next().is_none(), "nothing is pushed before the ACK");
    assert_eq!(
        f.request(ack(&first.nonce)),
        Some(Feedback::Ack {
            type_url: T.to_owned(),
            version: 2
        })
    );
    let second = f.next().expect("change pushed after ACK");
    assert_ne!(second.nonce, first.nonce);
    assert_eq!(names(&second), pairs(&[("a", "2")]));
    assert!(second.removed_resources.is_empty());

    f.request(ack(&second.nonce));
    store.apply(T, vec![], vec!["b".to_owned()]);
    let third = f.next().expect("removal pushed");
    assert!(third.resources.is_empty());
    assert_eq!(third.removed_resources, vec!["b".to_owned()]);
}

#[test]
fn changes_while_unacked_are_merged() {
    let store = ResourceStore::new();
    let mut f = Fixture::new(store.clone());
    f.request(subscribe(&["*"]));
    let first = f.next().expect("initial response, even when empty");
    assert!(first.resources.is_empty() && first.removed_resources.is_empty());
    for v in ["1", "2", "3"] {
        put(&store, "a", v);
    }
    put(&store, "b", "1");
    put(&store, "c", "1");
    store.apply(T, vec![], vec!["c".to_owned()]);
    f.request(ack(&first.nonce));
    let merged = f.next().expect("merged push");
    assert_eq!(names(&merged), pairs(&[("a", "3"), ("b", "1")]));
    assert!(
        merged.removed_resources.is_empty(),
        "c never reached the client"
    );
}

#[test]
fn initial_versions_skip_current_and_remove_missing() {
    let store = ResourceStore::new();
    put(&store, "a", "1");
    put(&store, "b", "1");
    let a_version = store.get(T, "a").expect("a").0;
    let mut f = Fixture::new(store.clone());
    let mut req = subscribe(&[]);
    req.initial_resource_versions = HashMap::from([
        ("a".to_owned(), a_version),
        ("b".to_owned(), "stale".to_owned()),
        ("gone".to_owned(), "x".to_owned()),
    ]);
    f.request(req);
    let resp = f.next().expect("initial response");
    assert_eq!(names(&resp), pairs(&[("b", "1")]));
    assert_eq!(resp.removed_resources, vec!["gone".to_owned()]);
}

#[test]
fn named_subscription_waits_for_the_resource() {
    let store = ResourceStore::new();
    put(&store, "other", "1");
    let mut f = Fixture::new(store.clone());
    f.request(subscribe(&["a"]));
    let first = f.next().expect("initial response");
    assert!(first.resources.is_empty() && first.removed_resources.is_empty());
    f.request(ack(&first.nonce));
    put(&store, "other", "2");
    assert!(f.next().is_none(), "unsubscribed names are not pushed");
    put(&store, "a", "1");
    let created = f.next().expect("created resource pushed");
    assert_eq!(names(&created), pairs(&[("a", "1")]));
    f.request(ack(&created.nonce));

    // Subscribing to another existing name sends it; unsubscribing stops updates.
    let mut more = subscribe(&["other"]);
    more.response_nonce = String::new();
    f.request(more);
    let other = f.next().expect("newly subscribed name sent");
    assert_eq!(names(&other), pairs(&[("other", "2")]));
    f.request(ack(&other.nonce));
    f.request(DeltaDiscoveryRequest {
        type_url: T.to_owned(),
        resource_names_unsubscribe: vec!["a".to_owned()],
        ..Default::default()
    });
    put(&store, "a", "2");
    assert!(f.next().is_none());
}

#[test]
fn nack_is_reported_and_not_resent_until_changed() {
    let store = ResourceStore::new();
    put(&store, "a", "bad");
    let mut f = Fixture::new(store.clone());
    f.request(subscribe(&[]));
    let first = f.next().expect("initial response");
    let mut nack = ack(&first.nonce);
    nack.error_detail = Some(RpcStatus {
        code: 3,
        message: "a is bad".to_owned(),
        details: vec![],
    });
    assert_eq!(
        f.request(nack),
        Some(Feedback::Nack {
            type_url: T.to_owned(),
            error: "a is bad".to_owned()
        })
    );
    assert!(f.next().is_none(), "the rejected version is not resent");
    let status = f.state.status();
    assert_eq!(status[0].last_nack.as_deref(), Some("a is bad"));
    put(&store, "a", "good");
    let fixed = f.next().expect("changed resource sent");
    assert_eq!(names(&fixed), pairs(&[("a", "good")]));
}

#[test]
fn stale_nonce_is_neither_ack_nor_nack() {
    let store = ResourceStore::new();
    let mut f = Fixture::new(store.clone());
    f.request(subscribe(&[]));
    let first = f.next().expect("initial response");
    assert_eq!(f.request(ack("not-a-nonce")), None);
    put(&store, "a", "1");
    assert!(f.next().is_none(), "still waiting for the real ACK");
    assert!(f.request(ack(&first.nonce)).is_some());
    assert!(f.next().is_some());
}

#[test]
fn request_without_type_url_is_rejected() {
    let store = ResourceStore::new();
    let watch = store.watch();
    let mut state = StreamState::default();
    let err = state
        .handle_request(DeltaDiscoveryRequest::default(), &watch)
        .expect_err("must be rejected");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("type_url"), "{}", err.message());
}
