//! The CA in Kubernetes mode, against an in-process stand-in for the API server's TokenReview
//! endpoint: node proxies get the identities of the pods on the node their token is bound to,
//! other workloads only their own, and every refusal says why.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use identity::{CertificateAuthority, Identity, WorkloadCertificate, generate_csr};
use istiod::ca_service::CaService;
use istiod::kube::token_review::{ReviewPolicy, TokenReviewer};
use istiod::metrics::Metrics;
use mesh_config::{ConfigSource, Snapshot, StaticSource};
use mesh_proto::proto::ca::IstioCertificateRequest;
use mesh_proto::proto::ca::istio_certificate_service_server::IstioCertificateService;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tonic::Code;

/// What the stand-in API server answers for each token.
fn review_status(token: &str, audiences: &Value) -> Value {
    if audiences != &json!(["istio-ca"]) {
        return json!({"authenticated": false, "error": "token audiences do not match"});
    }
    let user = |name: &str, extra: Value| {
        json!({"authenticated": true, "audiences": ["istio-ca"],
               "user": {"username": name, "uid": "u", "extra": extra}})
    };
    match token {
        "ztunnel-node-a" => user(
            "system:serviceaccount:istio-system:ztunnel",
            json!({
                "authentication.kubernetes.io/node-name": ["node-a"],
                "authentication.kubernetes.io/pod-name": ["ztunnel-x1"],
            }),
        ),
        "ztunnel-legacy" => user("system:serviceaccount:istio-system:ztunnel", json!({})),
        "waypoint" => user(
            "system:serviceaccount:demo:waypoint",
            json!({"authentication.kubernetes.io/node-name": ["node-a"]}),
        ),
        _ => json!({"authenticated": false, "error": "token has expired"}),
    }
}

/// Serves `POST /apis/authentication.k8s.io/v1/tokenreviews`; records the reviewed tokens.
async fn fake_api_server(seen: Arc<Mutex<Vec<String>>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let path = req.uri().path().to_string();
                        let body = req.into_body().collect().await.map(|b| b.to_bytes());
                        let review: Value = body
                            .ok()
                            .and_then(|b| serde_json::from_slice(&b).ok())
                            .unwrap_or_default();
                        let (status, out) = if path == "/apis/authentication.k8s.io/v1/tokenreviews"
                        {
                            let token = review["spec"]["token"].as_str().unwrap_or("").to_string();
                            seen.lock().push(token.clone());
                            let mut out = review.clone();
                            out["status"] = review_status(&token, &review["spec"]["audiences"]);
                            (201, out)
                        } else {
                            (
                                404,
                                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "reason": "NotFound", "message": "not found"}),
                            )
                        };
                        let resp = hyper::Response::builder()
                            .status(status)
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(out.to_string())))
                            .expect("response");
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn snapshot() -> Snapshot {
    Snapshot::from_yaml(
        "pods.yaml",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: web-0, namespace: demo, uid: w0}
spec: {nodeName: node-a, serviceAccountName: web}
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: demo, uid: d0}
spec: {nodeName: node-b, serviceAccountName: db}
---
apiVersion: v1
kind: Pod
metadata: {name: ztunnel-x1, namespace: istio-system, uid: z1}
spec: {nodeName: node-a, serviceAccountName: ztunnel}
"#,
    )
}

struct Setup {
    ca: Arc<CertificateAuthority>,
    service: CaService,
    seen: Arc<Mutex<Vec<String>>>,
    _source: StaticSource,
}

async fn setup_with(api: SocketAddr, seen: Arc<Mutex<Vec<String>>>) -> Setup {
    identity::install_crypto_provider();
    let ca = Arc::new(CertificateAuthority::generate("cluster.local").expect("CA"));
    let config = kube::Config::new(format!("http://{api}").parse().expect("uri"));
    let client = kube::Client::try_from(config).expect("client");
    let policy = ReviewPolicy {
        audience: "istio-ca".into(),
        node_proxies: vec!["istio-system/ztunnel".parse().expect("valid")],
    };
    let source = StaticSource::new(snapshot());
    let service = CaService::new(
        ca.clone(),
        TokenReviewer::new(client, policy),
        source.subscribe(),
        Duration::from_secs(3600),
        Arc::new(Metrics::new()),
    );
    Setup {
        ca,
        service,
        seen,
        _source: source,
    }
}

async fn setup() -> Setup {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let api = fake_api_server(seen.clone()).await;
    setup_with(api, seen).await
}

impl Setup {
    async fn request(&self, token: &str, sa: &str) -> Result<WorkloadCertificate, tonic::Status> {
        let id = Identity::new("cluster.local", "demo", sa);
        let bundle = generate_csr(&id).expect("CSR");
        let mut req = tonic::Request::new(IstioCertificateRequest {
            csr: bundle.csr_pem.clone(),
            validity_duration: 600,
            metadata: None,
        });
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii"),
        );
        let resp = self.service.create_certificate(req).await?.into_inner();
        let cert =
            WorkloadCertificate::from_pem(&resp.cert_chain, &bundle.key_pem, &[self.ca.root_pem()])
                .expect("chain verifies against the root");
        assert_eq!(cert.identity(), &id);
        Ok(cert)
    }
}

#[tokio::test]
async fn node_proxy_gets_the_identities_of_its_node_only() {
    let s = setup().await;
    s.request("ztunnel-node-a", "web")
        .await
        .expect("web-0 runs on node-a");
    let err = s
        .request("ztunnel-node-a", "db")
        .await
        .expect_err("db-0 runs on node-b");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message()
            .starts_with("node node-a may not request spiffe://cluster.local/ns/demo/sa/db"),
        "{}",
        err.message()
    );
    // One review for both requests: the second reuses it, and is still decided on its own.
    assert_eq!(s.seen.lock().as_slice(), ["ztunnel-node-a"]);
}

#[tokio::test]
async fn node_proxy_token_without_pod_binding_is_refused() {
    let s = setup().await;
    let err = s
        .request("ztunnel-legacy", "web")
        .await
        .expect_err("no node");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("is not bound to a pod"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn other_workloads_get_only_their_own_identity() {
    let s = setup().await;
    s.request("waypoint", "waypoint")
        .await
        .expect("its own identity");
    let err = s
        .request("waypoint", "web")
        .await
        .expect_err("another identity");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(
        err.message(),
        "workload demo/waypoint may obtain only its own identity \
         spiffe://cluster.local/ns/demo/sa/waypoint, not spiffe://cluster.local/ns/demo/sa/web"
    );
}

#[tokio::test]
async fn tokens_the_api_server_rejects_are_unauthenticated() {
    let s = setup().await;
    let err = s
        .request("stolen", "web")
        .await
        .expect_err("rejected token");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(
        err.message(),
        "token not authenticated: token has expired (a ServiceAccount token for audience \
         istio-ca is expected)"
    );
}

#[tokio::test]
async fn an_unreachable_api_server_makes_the_ca_unavailable() {
    // A port nothing listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let s = setup_with(closed, Arc::new(Mutex::new(Vec::new()))).await;
    let err = s
        .request("waypoint", "waypoint")
        .await
        .expect_err("no API server");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(
        err.message()
            .starts_with("cannot review the token with the Kubernetes API server"),
        "{}",
        err.message()
    );
}
