//! The validating webhook over HTTPS, as the API server calls it: TLS verified against the mesh
//! root for the Service name, an AdmissionReview posted, the decision read back.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use istiod::webhook::WebhookSettings;
use istiod::{Config, Istiod};
use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const HOST: &str = "istiod.istio-system.svc";

async fn start() -> (Istiod, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config_dir = dir.path().join("config");
    std::fs::create_dir_all(&config_dir).expect("config dir");
    let mut config = Config::local(config_dir, dir.path().join("ca"));
    config.webhook = Some(WebhookSettings {
        addr: "127.0.0.1:0".parse().expect("addr"),
        host: HOST.into(),
    });
    let istiod = Istiod::start(config).await.expect("istiod starts");
    (istiod, dir)
}

/// Posts `body` to `path` over TLS, trusting only the mesh root, for `server_name`.
async fn post(
    istiod: &Istiod,
    server_name: &str,
    path: &str,
    body: Value,
) -> Result<(u16, Value), String> {
    let mut roots = rustls::RootCertStore::empty();
    let root = identity::cert::parse_certs(&[istiod.root_cert_pem()]).expect("root");
    roots.add(root[0].clone()).expect("root added");
    let tls = rustls::ClientConfig::builder_with_provider(identity::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let addr = istiod.webhook_addr().expect("webhook served");
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from(server_name.to_string()).expect("name");
    let stream = TlsConnector::from(Arc::new(tls))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/1.1");
    tokio::spawn(conn);
    let req = hyper::Request::post(path)
        .header("host", HOST)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let value =
        serde_json::from_slice(&bytes).unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes)));
    Ok((status, value))
}

fn review(spec: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "3f0c-1",
            "kind": {"group": "security.istio.io", "version": "v1", "kind": "AuthorizationPolicy"},
            "resource": {"group": "security.istio.io", "version": "v1", "resource": "authorizationpolicies"},
            "name": "p",
            "namespace": "demo",
            "operation": "CREATE",
            "userInfo": {"username": "admin"},
            "object": {
                "apiVersion": "security.istio.io/v1",
                "kind": "AuthorizationPolicy",
                "metadata": {"name": "p", "namespace": "demo"},
                "spec": spec,
            },
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_gets_a_decision_over_verified_tls() {
    let (istiod, _dir) = start().await;
    let (status, out) = post(
        &istiod,
        HOST,
        "/validate",
        review(json!({"action": "DENY", "rules": [{}]})),
    )
    .await
    .expect("TLS verifies for the service name");
    assert_eq!(status, 200);
    assert_eq!(out["response"]["uid"], "3f0c-1");
    assert_eq!(out["response"]["allowed"], true);

    let (status, out) = post(
        &istiod,
        &format!("{HOST}.cluster.local"),
        "/validate",
        review(json!({"rules": [{"from": [{"source": {"ipBlocks": ["10.0.0.0/33"]}}]}]})),
    )
    .await
    .expect("the fully qualified name is in the certificate too");
    assert_eq!(status, 200);
    assert_eq!(out["response"]["allowed"], false);
    assert_eq!(
        out["response"]["status"]["message"],
        "AuthorizationPolicy demo/p is invalid: rules[0].from[0].source.ipBlocks: \
         \"10.0.0.0/33\" is not an IP address or CIDR"
    );

    let (status, out) = post(&istiod, HOST, "/validate", json!({"hello": "world"}))
        .await
        .expect("TLS");
    assert_eq!(status, 400, "{out}");
    istiod.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certificate_names_only_the_service() {
    let (istiod, _dir) = start().await;
    let err = post(&istiod, "istiod.other.svc", "/validate", json!({}))
        .await
        .expect_err("another name is refused by the client");
    assert!(err.contains("certificate"), "{err}");
    istiod.shutdown().await;
}
