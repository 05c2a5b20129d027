//! The CA service: a node may get certificates only for the pods scheduled on it.

mod common;

use std::time::{Duration, SystemTime};

use common::harness::Harness;
use common::mesh;
use identity::{Identity, WorkloadCertificate, generate_csr};
use mesh_proto::proto::ca::IstioCertificateRequest;
use mesh_proto::proto::ca::istio_certificate_service_client::IstioCertificateServiceClient;
use tonic::Code;
use tonic::transport::Channel;

async fn start() -> (Harness, IstioCertificateServiceClient<Channel>) {
    let files = mesh::files();
    let files: Vec<(&str, &str)> = files.iter().map(|(n, c)| (*n, c.as_str())).collect();
    let h = Harness::start(&files).await;
    let client = IstioCertificateServiceClient::connect(format!("http://{}", h.istiod.grpc_addr()))
        .await
        .expect("connect to the CA");
    (h, client)
}

fn request(
    csr: &str,
    token: Option<&str>,
    impersonate: Option<&str>,
    validity: i64,
) -> tonic::Request<IstioCertificateRequest> {
    let metadata = impersonate.map(|id| prost_types::Struct {
        fields: [(
            "ImpersonatedIdentity".to_string(),
            prost_types::Value {
                kind: Some(prost_types::value::Kind::StringValue(id.to_string())),
            },
        )]
        .into_iter()
        .collect(),
    });
    let mut req = tonic::Request::new(IstioCertificateRequest {
        csr: csr.to_string(),
        validity_duration: validity,
        metadata,
    });
    if let Some(t) = token {
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {t}").parse().expect("ascii"),
        );
    }
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_gets_certificates_for_its_pods_only() {
    let (h, mut ca) = start().await;
    // web-0 runs on node-a with service account `web`.
    let web = Identity::new("cluster.local", "demo", "web");
    let bundle = generate_csr(&web).expect("CSR");
    let resp = ca
        .create_certificate(request(
            &bundle.csr_pem,
            Some("token-a"),
            Some(&web.uri()),
            10 * 86_400,
        ))
        .await
        .expect("node-a may get web's certificate")
        .into_inner();
    let cert = WorkloadCertificate::from_pem(
        &resp.cert_chain,
        &bundle.key_pem,
        &[h.istiod.root_cert_pem()],
    )
    .expect("chain verifies against istiod's root");
    assert_eq!(cert.identity(), &web);
    let cap = SystemTime::now() + Duration::from_secs(24 * 3600 + 60);
    assert!(cert.not_after() <= cap, "validity capped at 24h");

    // web-1 (service account web-b) runs on node-b: node-a may not have it.
    let other = Identity::new("cluster.local", "demo", "web-b");
    let csr = generate_csr(&other).expect("CSR").csr_pem;
    let err = ca
        .create_certificate(request(&csr, Some("token-a"), None, 0))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(
        err.message(),
        "node node-a may not request spiffe://cluster.local/ns/demo/sa/web-b: no pod with \
         service account web-b in namespace demo is scheduled on node node-a"
    );
    // ... and node-b may.
    ca.create_certificate(request(&csr, Some("token-b"), None, 0))
        .await
        .expect("node-b may get web-b's certificate");

    let (_, metrics) = h.get("/metrics").await;
    assert!(
        metrics.contains("citadel_server_csr_count_total 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("citadel_server_success_cert_issuance_count_total 2"),
        "{metrics}"
    );
    h.istiod.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_and_mismatched_requests_are_refused_with_reasons() {
    let (h, mut ca) = start().await;
    let web = Identity::new("cluster.local", "demo", "web");
    let csr = generate_csr(&web).expect("CSR").csr_pem;

    let err = ca
        .create_certificate(request(&csr, None, None, 0))
        .await
        .expect_err("no token");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(
        err.message().contains("no bearer token"),
        "{}",
        err.message()
    );

    let err = ca
        .create_certificate(request(&csr, Some("token-x"), None, 0))
        .await
        .expect_err("unknown token");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(err.message(), "unknown bearer token");

    let err = ca
        .create_certificate(request(
            &csr,
            Some("token-a"),
            Some("spiffe://cluster.local/ns/demo/sa/web-b"),
            0,
        ))
        .await
        .expect_err("impersonation mismatch");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(
        err.message(),
        "ImpersonatedIdentity spiffe://cluster.local/ns/demo/sa/web-b does not match the CSR \
         identity spiffe://cluster.local/ns/demo/sa/web"
    );

    let err = ca
        .create_certificate(request("not a csr", Some("token-a"), None, 0))
        .await
        .expect_err("garbage");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with("invalid CSR"),
        "{}",
        err.message()
    );

    let foreign = generate_csr(&Identity::new("other.domain", "demo", "web"))
        .expect("CSR")
        .csr_pem;
    let err = ca
        .create_certificate(request(&foreign, Some("token-a"), None, 0))
        .await
        .expect_err("foreign trust domain");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message()
            .contains("outside the trust domain cluster.local"),
        "{}",
        err.message()
    );
    h.istiod.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_over_tls_needs_no_client_certificate() {
    let (h, _) = start().await;
    // Verify istiod by its SPIFFE identity; present no client certificate.
    let ca = identity::CertificateAuthority::load_or_create(
        &h.ca_dir.path().join("ca"),
        "cluster.local",
    )
    .expect("CA");
    let provider = identity::tls::provider();
    let verifier = identity::tls::SpiffeVerifier::new(
        &[ca.root_der()],
        identity::PeerPolicy::Only(vec![h.istiod.serving_identity().clone()]),
        &provider,
    )
    .expect("verifier");
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(verifier))
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", h.istiod.secure_grpc_addr()))
            .expect("endpoint")
            .connect_with_connector(mesh_proto::xds::TlsChannelConnector::new(
                std::sync::Arc::new(tls),
            ))
            .await
            .expect("TLS connection to istiod");
    let mut client = IstioCertificateServiceClient::new(channel);

    let web = Identity::new("cluster.local", "demo", "web");
    let bundle = generate_csr(&web).expect("CSR");
    let resp = client
        .create_certificate(request(&bundle.csr_pem, Some("token-a"), None, 3600))
        .await
        .expect("signed over TLS")
        .into_inner();
    let cert = WorkloadCertificate::from_pem(
        &resp.cert_chain,
        &bundle.key_pem,
        &[h.istiod.root_cert_pem()],
    )
    .expect("valid chain");
    assert_eq!(cert.identity(), &web);
    let err = client
        .create_certificate(request(&bundle.csr_pem, Some("token-b"), None, 3600))
        .await
        .expect_err("web does not run on node-b");
    assert_eq!(err.code(), Code::PermissionDenied);
    h.istiod.shutdown().await;
}
