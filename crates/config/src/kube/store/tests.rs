use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;
use crate::objects::{AuthorizationPolicy, kind};

fn pod(name: &str, ip: &str) -> Object {
    Object::from(Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("demo".into()),
            ..Default::default()
        },
        status: Some(k8s_openapi::api::core::v1::PodStatus {
            pod_ip: Some(ip.into()),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn policy(name: &str) -> Object {
    Object::from(AuthorizationPolicy {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("demo".into()),
            ..Default::default()
        },
        ..Default::default()
    })
}

fn pod_key(name: &str) -> ObjectKey {
    ObjectKey::new(kind::POD, "demo", name)
}

fn names(snap: &Snapshot) -> Vec<String> {
    snap.objects.keys().map(|k| k.to_string()).collect()
}

fn pod_ip(snap: &Snapshot, name: &str) -> Option<String> {
    snap.pod("demo", name)?.status.as_ref()?.pod_ip.clone()
}

const PODS: WatchedKind = WatchedKind::Pod;
const POLICIES: WatchedKind = WatchedKind::AuthorizationPolicy;

#[test]
fn settles_once_every_kind_is_listed_or_unavailable() {
    let mut store = Store::new(&[PODS, POLICIES]);
    assert!(!store.settled());
    store.apply(Update::Relist(PODS));
    store.apply(Update::Applied(PODS, Ok(pod("a", "10.0.0.1"))));
    assert!(!store.settled(), "a listing in progress is not settled");
    assert!(store.apply(Update::Listed(PODS)));
    assert_eq!(store.pending(), vec![POLICIES]);
    assert!(store.apply(Update::Unavailable(
        POLICIES,
        "the API server does not serve it".into()
    )));
    assert!(store.settled());

    let snap = store.snapshot(1);
    assert_eq!(names(&snap), ["Pod demo/a"]);
    assert_eq!(snap.issues.len(), 1);
    assert_eq!(
        snap.issues[0].to_string(),
        "kubernetes-api: authorizationpolicies.security.istio.io/v1 (AuthorizationPolicy \
         objects) cannot be watched, so none are served: the API server does not serve it"
    );
}

#[test]
fn a_relist_replaces_the_kind_atomically() {
    let mut store = Store::new(&[PODS]);
    store.apply(Update::Relist(PODS));
    store.apply(Update::Applied(PODS, Ok(pod("a", "10.0.0.1"))));
    store.apply(Update::Applied(PODS, Ok(pod("b", "10.0.0.2"))));
    store.apply(Update::Listed(PODS));

    // The watch restarts: until the new listing completes, the old objects stay.
    assert!(!store.apply(Update::Relist(PODS)));
    assert!(!store.apply(Update::Applied(PODS, Ok(pod("b", "10.0.0.9")))));
    assert_eq!(names(&store.snapshot(2)), ["Pod demo/a", "Pod demo/b"]);
    assert_eq!(pod_ip(&store.snapshot(2), "b").as_deref(), Some("10.0.0.2"));
    assert!(store.apply(Update::Listed(PODS)));
    let snap = store.snapshot(3);
    assert_eq!(
        names(&snap),
        ["Pod demo/b"],
        "a vanished during the restart"
    );
    assert_eq!(pod_ip(&snap, "b").as_deref(), Some("10.0.0.9"));

    // The same listing again changes nothing.
    store.apply(Update::Relist(PODS));
    store.apply(Update::Applied(PODS, Ok(pod("b", "10.0.0.9"))));
    assert!(!store.apply(Update::Listed(PODS)));
}

#[test]
fn changes_and_deletions_after_the_listing() {
    let mut store = Store::new(&[PODS]);
    store.apply(Update::Relist(PODS));
    store.apply(Update::Listed(PODS));
    assert!(store.apply(Update::Applied(PODS, Ok(pod("a", "10.0.0.1")))));
    assert!(
        !store.apply(Update::Applied(PODS, Ok(pod("a", "10.0.0.1")))),
        "an identical object is no change"
    );
    assert!(store.apply(Update::Applied(PODS, Ok(pod("a", "10.0.0.5")))));
    assert_eq!(pod_ip(&store.snapshot(1), "a").as_deref(), Some("10.0.0.5"));
    assert!(store.apply(Update::Deleted(PODS, pod_key("a"))));
    assert!(!store.apply(Update::Deleted(PODS, pod_key("a"))));
    assert!(store.snapshot(2).objects.is_empty());
}

#[test]
fn an_invalid_object_keeps_its_last_good_version() {
    let mut store = Store::new(&[POLICIES]);
    store.apply(Update::Relist(POLICIES));
    store.apply(Update::Applied(POLICIES, Ok(policy("p"))));
    store.apply(Update::Listed(POLICIES));
    let key = ObjectKey::new(kind::AUTHORIZATION_POLICY, "demo", "p");
    let bad = Invalid {
        key: key.clone(),
        reason: "invalid object: unknown variant `SOMETIMES`".into(),
    };
    assert!(store.apply(Update::Applied(POLICIES, Err(bad.clone()))));
    let snap = store.snapshot(2);
    assert!(snap.get(&key).is_some(), "last good version kept");
    assert_eq!(
        snap.issues[0].to_string(),
        "kubernetes-api: AuthorizationPolicy demo/p: invalid object: unknown variant \
         `SOMETIMES` (keeping the last good version)"
    );

    // A relist still sees it invalid: the last good version survives the relist too.
    store.apply(Update::Relist(POLICIES));
    store.apply(Update::Applied(POLICIES, Err(bad.clone())));
    store.apply(Update::Listed(POLICIES));
    assert!(store.snapshot(3).get(&key).is_some());

    // Fixed: the issue goes away. A new invalid object has nothing to keep.
    assert!(store.apply(Update::Applied(POLICIES, Ok(policy("p")))));
    assert!(store.snapshot(4).issues.is_empty());
    let other = Invalid {
        key: ObjectKey::new(kind::AUTHORIZATION_POLICY, "demo", "q"),
        reason: "broken".into(),
    };
    store.apply(Update::Applied(POLICIES, Err(other)));
    let snap = store.snapshot(5);
    assert_eq!(names(&snap), ["AuthorizationPolicy demo/p"]);
    assert_eq!(
        snap.issues[0].to_string(),
        "kubernetes-api: AuthorizationPolicy demo/q: broken"
    );
}

#[test]
fn a_kind_becoming_unavailable_drops_its_objects_until_listed_again() {
    let mut store = Store::new(&[POLICIES]);
    store.apply(Update::Relist(POLICIES));
    store.apply(Update::Applied(POLICIES, Ok(policy("p"))));
    store.apply(Update::Listed(POLICIES));
    assert!(store.apply(Update::Unavailable(POLICIES, "gone".into())));
    assert!(!store.apply(Update::Unavailable(POLICIES, "gone".into())));
    assert!(store.snapshot(2).objects.is_empty());
    store.apply(Update::Relist(POLICIES));
    store.apply(Update::Applied(POLICIES, Ok(policy("p"))));
    assert!(store.apply(Update::Listed(POLICIES)));
    let snap = store.snapshot(3);
    assert_eq!(names(&snap), ["AuthorizationPolicy demo/p"]);
    assert!(snap.issues.is_empty());
}
