use serde_json::json;

use super::*;
use crate::agent::desired;
use crate::agent::state::PodKey;

const NODE: &str = "node-a";

fn pod(namespace: &str, name: &str, labels: serde_json::Value, ip: Option<&str>) -> Pod {
    let status = match ip {
        Some(ip) => json!({"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}),
        None => json!({"phase": "Pending"}),
    };
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{name}"),
                     "labels": labels, "resourceVersion": "1"},
        "spec": {"nodeName": NODE, "serviceAccountName": "sa-1",
                 "containers": [{"name": "app", "image": "app:1"}]},
        "status": status,
    }))
    .expect("pod")
}

fn namespace(name: &str, labels: serde_json::Value) -> Namespace {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}}))
        .expect("namespace")
}

/// The verdict of each pod of the node, as the agent's reconciliation sees it.
fn verdicts(objects: &NodeObjects) -> Vec<(String, bool)> {
    desired::node_pods(&objects.snapshot(), NODE)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.enroll))
        .collect()
}

/// Objects after a complete first list of both kinds.
fn listed(pods: Vec<Pod>, namespaces: Vec<Namespace>) -> NodeObjects {
    let mut objects = NodeObjects::new(NODE);
    objects.apply_pod(Event::Init);
    for p in pods {
        objects.apply_pod(Event::InitApply(p));
    }
    assert!(objects.apply_pod(Event::InitDone), "the first list counts");
    assert!(!objects.synced(), "namespaces not listed yet");
    objects.apply_namespace(Event::Init);
    for n in namespaces {
        objects.apply_namespace(Event::InitApply(n));
    }
    assert!(objects.apply_namespace(Event::InitDone));
    assert!(objects.synced());
    objects
}

#[test]
fn listed_pods_get_the_verdict_of_their_namespace() {
    let objects = listed(
        vec![
            pod("shop", "cart-0", json!({}), Some("10.1.0.5")),
            pod(
                "shop",
                "legacy",
                json!({"istio.io/dataplane-mode": "none"}),
                Some("10.1.0.6"),
            ),
            pod("plain", "web", json!({}), Some("10.1.0.7")),
        ],
        vec![
            namespace("shop", json!({"istio.io/dataplane-mode": "ambient"})),
            namespace("plain", json!({})),
        ],
    );
    assert_eq!(
        verdicts(&objects),
        [
            ("plain/web".to_string(), false),
            ("shop/cart-0".to_string(), true),
            ("shop/legacy".to_string(), false),
        ]
    );
    let snap = objects.snapshot();
    let cart = desired::node_pods(&snap, NODE)
        .remove(&PodKey::new("shop", "cart-0"))
        .expect("cart");
    assert_eq!(cart.workload.uid, "uid-cart-0");
    assert_eq!(cart.workload.service_account, "sa-1");
    assert_eq!(
        cart.ips,
        ["10.1.0.5".parse::<std::net::IpAddr>().expect("ip")]
    );
}

#[test]
fn labelling_a_namespace_flips_its_pods() {
    let mut objects = listed(
        vec![pod("plain", "web", json!({}), Some("10.1.0.7"))],
        vec![namespace("plain", json!({}))],
    );
    assert_eq!(verdicts(&objects), [("plain/web".to_string(), false)]);
    let labelled = namespace("plain", json!({"istio.io/dataplane-mode": "ambient"}));
    assert!(objects.apply_namespace(Event::Apply(labelled.clone())));
    assert_eq!(verdicts(&objects), [("plain/web".to_string(), true)]);
    assert!(
        !objects.apply_namespace(Event::Apply(labelled)),
        "the same namespace again is no change"
    );
    assert!(objects.apply_namespace(Event::Apply(namespace("plain", json!({})))));
    assert_eq!(verdicts(&objects), [("plain/web".to_string(), false)]);
    // A deleted namespace enrols nothing.
    assert!(objects.apply_namespace(Event::Delete(namespace("plain", json!({})))));
    assert_eq!(verdicts(&objects), [("plain/web".to_string(), false)]);
}

#[test]
fn status_churn_does_not_wake_the_agent_but_addresses_and_our_annotation_do() {
    let web = pod("shop", "web", json!({}), None);
    let mut objects = listed(
        vec![web.clone()],
        vec![namespace(
            "shop",
            json!({"istio.io/dataplane-mode": "ambient"}),
        )],
    );
    let mut churn = web.clone();
    churn.metadata.resource_version = Some("2".into());
    churn.metadata.annotations = Some([("other/annotation".to_string(), "x".to_string())].into());
    let status = churn.status.get_or_insert_default();
    status.conditions = Some(vec![
        serde_json::from_value(json!({"type": "Ready", "status": "False"})).expect("condition"),
    ]);
    assert!(!objects.apply_pod(Event::Apply(churn)));

    let started = pod("shop", "web", json!({}), Some("10.1.0.9"));
    assert!(objects.apply_pod(Event::Apply(started.clone())));
    let view = &desired::node_pods(&objects.snapshot(), NODE)[&PodKey::new("shop", "web")];
    assert_eq!(
        view.ips,
        ["10.1.0.9".parse::<std::net::IpAddr>().expect("ip")]
    );

    let mut annotated = started;
    annotated.metadata.annotations =
        Some([(REDIRECTION_ANNOTATION.to_string(), "enabled".to_string())].into());
    assert!(objects.apply_pod(Event::Apply(annotated)));
}

#[test]
fn terminated_and_deleted_pods_are_gone_from_the_desired_state() {
    let mut objects = listed(
        vec![
            pod("shop", "job-1", json!({}), Some("10.1.0.10")),
            pod("shop", "cart-0", json!({}), Some("10.1.0.5")),
        ],
        vec![namespace(
            "shop",
            json!({"istio.io/dataplane-mode": "ambient"}),
        )],
    );
    let mut done = pod("shop", "job-1", json!({}), Some("10.1.0.10"));
    done.status.get_or_insert_default().phase = Some("Succeeded".into());
    assert!(objects.apply_pod(Event::Apply(done.clone())));
    assert!(!objects.apply_pod(Event::Apply(done)), "still absent");
    assert_eq!(verdicts(&objects), [("shop/cart-0".to_string(), true)]);

    let mut elsewhere = pod("shop", "other", json!({}), Some("10.2.0.5"));
    elsewhere.spec.get_or_insert_default().node_name = Some("node-b".into());
    assert!(!objects.apply_pod(Event::Apply(elsewhere)));

    assert!(objects.apply_pod(Event::Delete(pod(
        "shop",
        "cart-0",
        json!({}),
        Some("10.1.0.5")
    ))));
    assert!(verdicts(&objects).is_empty());
}

#[test]
fn a_relist_replaces_the_pods_only_when_complete() {
    let mut objects = listed(
        vec![
            pod("shop", "a", json!({}), Some("10.1.0.1")),
            pod("shop", "b", json!({}), Some("10.1.0.2")),
        ],
        vec![namespace(
            "shop",
            json!({"istio.io/dataplane-mode": "ambient"}),
        )],
    );
    assert!(!objects.apply_pod(Event::Init));
    assert!(!objects.apply_pod(Event::InitApply(pod(
        "shop",
        "a",
        json!({}),
        Some("10.1.0.1")
    ))));
    assert_eq!(verdicts(&objects).len(), 2, "nothing dropped mid-list");
    assert!(
        objects.apply_pod(Event::InitDone),
        "b was deleted meanwhile"
    );
    assert_eq!(verdicts(&objects), [("shop/a".to_string(), true)]);

    objects.apply_pod(Event::Init);
    objects.apply_pod(Event::InitApply(pod(
        "shop",
        "a",
        json!({}),
        Some("10.1.0.1"),
    )));
    assert!(
        !objects.apply_pod(Event::InitDone),
        "an identical list is no change"
    );
}

#[test]
fn trimming_keeps_what_the_decision_reads() {
    let mut p = pod(
        "shop",
        "gw",
        json!({"gateway.networking.k8s.io/gateway-name": "wp"}),
        Some("10.1.0.3"),
    );
    p.spec.get_or_insert_default().host_network = Some(false);
    let t = trim_pod(p.clone());
    assert_eq!(t.metadata.labels, p.metadata.labels);
    assert_eq!(t.metadata.uid.as_deref(), Some("uid-gw"));
    assert_eq!(t.metadata.resource_version, None);
    let spec = t.spec.expect("spec");
    assert_eq!(spec.node_name.as_deref(), Some(NODE));
    assert_eq!(spec.service_account_name.as_deref(), Some("sa-1"));
    assert!(spec.containers.is_empty());
    assert_eq!(
        t.status.expect("status").pod_ip.as_deref(),
        Some("10.1.0.3")
    );
}
