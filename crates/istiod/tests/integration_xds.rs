//! istiod in-process: a real delta-xDS client receives the model, follows edits, and keeps the
//! last good state when a manifest breaks.

mod common;

use common::harness::{Harness, eventually, run_client};
use common::mesh;
use identity::{CertificateAuthority, Identity, PeerPolicy};
use mesh_proto::proto::security::Authorization;
use mesh_proto::proto::type_url::{ADDRESS, AUTHORIZATION};
use mesh_proto::proto::workload::{Address, TunnelProtocol, Workload, address};
use prost::Message;

const WEB0: &str = "demo/web-0";
const WEB1: &str = "demo/web-1";
const SVC: &str = "demo/web.demo.svc.cluster.local";
const STRICT: &str = "istio-system/istio_converted_static_strict";

fn workload(any: &prost_types::Any) -> Workload {
    match Address::decode(any.value.as_slice())
        .expect("Address")
        .r#type
    {
        Some(address::Type::Workload(w)) => w,
        other => panic!("not a workload: {other:?}"),
    }
}

async fn start() -> Harness {
    let files = mesh::files();
    let files: Vec<(&str, &str)> = files.iter().map(|(n, c)| (*n, c.as_str())).collect();
    Harness::start(&files).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_receives_model_and_only_changed_workloads() {
    let h = start().await;
    let (rec, _stop) = run_client(format!("http://{}", h.istiod.grpc_addr()), None, "node-a");

    eventually("initial resources", || async {
        let addrs = rec.names(ADDRESS);
        let auths = rec.names(AUTHORIZATION);
        if addrs == [WEB0, WEB1, SVC] && auths == ["demo/allow-demo", STRICT] {
            Ok(())
        } else {
            Err(format!("addresses {addrs:?}, authorizations {auths:?}"))
        }
    })
    .await;

    let w = workload(&rec.get(ADDRESS, WEB0).expect("web-0"));
    assert_eq!(w.addresses, vec![vec![10, 0, 1, 5]]);
    assert_eq!(w.tunnel_protocol, TunnelProtocol::Hbone as i32);
    assert_eq!(w.node, "node-a");
    assert_eq!(w.service_account, "web");
    assert_eq!(w.canonical_revision, "v1");
    assert_eq!(w.services[SVC].ports[0].target_port, 8080);
    assert_eq!(w.authorization_policies, ["demo/allow-demo", STRICT]);
    let any = rec.get(AUTHORIZATION, "demo/allow-demo").expect("policy");
    let auth = Authorization::decode(any.value.as_slice()).expect("Authorization");
    assert_eq!(auth.groups[0].rules[0].matches[0].namespaces.len(), 1);

    // Edit one pod's labels: exactly that workload is pushed again.
    let before = rec.log.lock().len();
    h.write(
        "web-0.yaml",
        &mesh::pod("web-0", "web", "node-a", "10.0.1.5", "v2"),
    );
    eventually("web-0 update", || async {
        let w = workload(&rec.get(ADDRESS, WEB0).expect("web-0"));
        if w.canonical_revision == "v2" {
            Ok(())
        } else {
            Err(format!("revision {}", w.canonical_revision))
        }
    })
    .await;
    let pushed: Vec<_> = rec.log.lock()[before..].to_vec();
    assert!(!pushed.is_empty());
    for applied in &pushed {
        assert_eq!(
            applied.updated,
            [WEB0],
            "only the edited workload is sent: {pushed:?}"
        );
        assert!(applied.removed.is_empty(), "{pushed:?}");
    }

    let (code, body) = h.get("/debug/xds").await;
    assert_eq!(code, 200);
    let xds: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let clients = xds["clients"].as_array().expect("clients");
    assert_eq!(clients.len(), 1, "{body}");
    assert_eq!(clients[0]["node_id"], "ztunnel~node-a");
    let types = clients[0]["types"].as_array().expect("types");
    assert!(types.iter().all(|t| t["last_nack"].is_null()), "{body}");
    h.istiod.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_manifest_keeps_last_good_state_and_is_reported() {
    let h = start().await;
    let (rec, _stop) = run_client(format!("http://{}", h.istiod.grpc_addr()), None, "node-b");
    eventually("initial resources", || async {
        let addrs = rec.names(ADDRESS);
        if addrs.len() == 3 {
            Ok(())
        } else {
            Err(format!("{addrs:?}"))
        }
    })
    .await;
    let (code, _) = h.get("/ready").await;
    assert_eq!(code, 200);

    h.write(
        "web-1.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web-1, namespace: demo\n  labels: [broken\n",
    );
    let file = h.config_dir.path().join("web-1.yaml").display().to_string();
    let issues = eventually("issue reported", || async {
        let (code, body) = h.get("/debug/config_issues").await;
        let list: Vec<serde_json::Value> =
            serde_json::from_str(&body).map_err(|e| e.to_string())?;
        if code == 200 && list.iter().any(|i| i["file"] == file.as_str()) {
            Ok(list)
        } else {
            Err(body)
        }
    })
    .await;
    let issue = issues
        .iter()
        .find(|i| i["file"] == file.as_str())
        .expect("issue");
    let reason = issue["reason"].as_str().expect("reason");
    assert!(reason.contains("invalid YAML"), "{issue}");
    assert!(reason.contains("keeping the last good version"), "{issue}");

    // Still served, in the store and at the client.
    assert!(h.istiod.xds().store().get(ADDRESS, WEB1).is_some());
    assert_eq!(rec.names(ADDRESS), [WEB0, WEB1, SVC]);
    assert!(rec.log.lock().iter().all(|a| a.removed.is_empty()));

    // A later valid edit of another file is still served.
    h.write(
        "web-0.yaml",
        &mesh::pod("web-0", "web", "node-a", "10.0.1.6", "v1"),
    );
    eventually("web-0 new IP", || async {
        let w = workload(&rec.get(ADDRESS, WEB0).expect("web-0"));
        if w.addresses == vec![vec![10, 0, 1, 6]] {
            Ok(())
        } else {
            Err(format!("{:?}", w.addresses))
        }
    })
    .await;
    assert_eq!(rec.names(ADDRESS), [WEB0, WEB1, SVC]);

    let (_, metrics) = h.get("/metrics").await;
    assert!(
        metrics.contains("pilot_xds_pushes_total{type=\"Address\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("pilot_xds 1"), "{metrics}");
    assert!(metrics.contains("pilot_config_issues 1"), "{metrics}");
    h.istiod.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_port_serves_xds_to_mesh_clients() {
    let h = start().await;
    // A ztunnel certificate from the same CA (istiod created it in its CA directory).
    let ca = CertificateAuthority::load_or_create(&h.ca_dir.path().join("ca"), "cluster.local")
        .expect("CA");
    let ztunnel = Identity::new("cluster.local", "istio-system", "ztunnel");
    let cert = ca
        .issue(&ztunnel, std::time::Duration::from_secs(3600))
        .expect("cert");
    let tls = identity::client_config(
        &cert,
        PeerPolicy::Only(vec![h.istiod.serving_identity().clone()]),
    )
    .expect("client TLS config");
    assert_eq!(
        h.istiod.serving_identity().uri(),
        "spiffe://cluster.local/ns/istio-system/sa/istiod"
    );

    let (rec, _stop) = run_client(
        format!("https://{}", h.istiod.secure_grpc_addr()),
        Some(tls),
        "node-a",
    );
    eventually("resources over TLS", || async {
        let addrs = rec.names(ADDRESS);
        if addrs.len() == 3 {
            Ok(())
        } else {
            Err(format!("{addrs:?}"))
        }
    })
    .await;
    let (_, body) = h.get("/debug/xds").await;
    let xds: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        xds["clients"][0]["peer"], "spiffe://cluster.local/ns/istio-system/sa/ztunnel",
        "the client certificate's identity is seen: {body}"
    );
    assert!(
        xds["clients"][0]["remote_addr"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{body}"
    );
    h.istiod.shutdown().await;
}
