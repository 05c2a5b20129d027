use std::net::Ipv4Addr;
use std::time::Duration;

use http::Request;
use http_body_util::Full;
use waypoint::telemetry::trace::parse_traceparent;

use crate::harness::{Behaviour, Env, cfg, hostname};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 4, 10);

#[tokio::test]
async fn request_metrics_carry_istio_labels() {
    let env = Env::new().await;
    let v1 = env.pod("reviews-v1", Behaviour::Echo).await;
    env.service("reviews", VIP, &[&v1]);
    env.configure(cfg::waypoint(
        vec![cfg::bound("reviews", VIP, vec![])],
        vec![],
    ));
    let mut c = env.client(VIP).await;
    for _ in 0..3 {
        assert_eq!(c.get("/").await.status, 200);
    }
    let host = hostname("reviews");
    let labels = [
        ("reporter", "waypoint"),
        ("response_code", "200"),
        ("request_protocol", "http"),
        ("source_workload", "sleep"),
        ("source_workload_namespace", "clients"),
        (
            "source_principal",
            "spiffe://cluster.local/ns/clients/sa/sleep",
        ),
        ("destination_service", host.as_str()),
        ("destination_service_name", "reviews"),
        ("destination_workload", "reviews-v1"),
        ("destination_workload_namespace", "demo"),
        (
            "destination_principal",
            "spiffe://cluster.local/ns/demo/sa/reviews-v1",
        ),
        ("destination_canonical_service", "reviews"),
        ("connection_security_policy", "mutual_tls"),
        ("response_flags", "-"),
    ];
    assert_eq!(
        env.metric("istio_requests_total", &labels),
        Some(3.0),
        "{}",
        env.metrics_text()
    );
    assert_eq!(
        env.metric("istio_request_duration_milliseconds_count", &labels),
        Some(3.0)
    );
    assert_eq!(
        env.metric("istio_response_bytes_sum", &labels),
        Some(30.0),
        "3 x \"reviews-v1\""
    );
    assert_eq!(env.metric("istio_request_bytes_count", &labels), Some(3.0));
}

#[tokio::test]
async fn traceparent_is_propagated_with_a_new_span() {
    let env = Env::new().await;
    let v1 = env.pod("reviews-v1", Behaviour::Echo).await;
    env.service("reviews", VIP, &[&v1]);
    env.configure(cfg::waypoint(
        vec![cfg::bound("reviews", VIP, vec![])],
        vec![],
    ));
    let mut c = env.client(VIP).await;
    let incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let req = Request::get("/")
        .header("traceparent", incoming)
        .header("tracestate", "vendor=abc")
        .body(Full::default())
        .expect("req");
    assert_eq!(c.send(req).await.status, 200);
    let seen = v1.last_seen();
    let tp = seen.headers["traceparent"].to_str().expect("ascii");
    let (trace, span, flags) = parse_traceparent(tp).expect("valid traceparent");
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    assert_eq!(
        hex(&trace),
        "0af7651916cd43dd8448eb211c80319c",
        "trace id kept"
    );
    assert_ne!(hex(&span), "b7ad6b7169203331", "the waypoint's own span");
    assert_eq!(flags, 1);
    assert_eq!(seen.headers["tracestate"], "vendor=abc");
    assert!(seen.headers.contains_key("x-request-id"));

    // Without one, the waypoint starts a trace.
    assert_eq!(c.get("/").await.status, 200);
    let tp = v1.last_seen().headers["traceparent"]
        .to_str()
        .expect("ascii")
        .to_string();
    let (trace, _, _) = parse_traceparent(&tp).expect("generated traceparent");
    assert_ne!(hex(&trace), "0af7651916cd43dd8448eb211c80319c");
}

/// An OTLP collector on loopback that records the spans it receives.
mod collector {
    use std::sync::Arc;

    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
        TraceService, TraceServiceServer,
    };
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    };
    use opentelemetry_proto::tonic::trace::v1::Span;
    use parking_lot::Mutex;

    #[derive(Clone, Default)]
    pub struct Collector {
        pub spans: Arc<Mutex<Vec<Span>>>,
    }

    #[tonic::async_trait]
    impl TraceService for Collector {
        async fn export(
            &self,
            req: tonic::Request<ExportTraceServiceRequest>,
        ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
            let mut spans = self.spans.lock();
            for rs in req.into_inner().resource_spans {
                for ss in rs.scope_spans {
                    spans.extend(ss.spans);
                }
            }
            Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
        }
    }

    pub async fn start() -> (Collector, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let c = Collector::default();
        let svc = TraceServiceServer::new(c.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tokio_stream_incoming(listener)),
        );
        (c, format!("http://{addr}"))
    }

    fn tokio_stream_incoming(
        l: tokio::net::TcpListener,
    ) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
        futures::stream::unfold(l, |l| async move {
            let r = l.accept().await.map(|(s, _)| s);
            Some((r, l))
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_otlp() {
    let (collector, endpoint) = collector::start().await;
    let tracer =
        waypoint::telemetry::Tracer::otlp(&endpoint, "waypoint.demo".into()).expect("exporter");
    let env = Env::builder().tracer(tracer.clone()).start().await;
    let v1 = env.pod("reviews-v1", Behaviour::Echo).await;
    env.service("reviews", VIP, &[&v1]);
    env.configure(cfg::waypoint(
        vec![cfg::bound("reviews", VIP, vec![])],
        vec![],
    ));
    let req = Request::get("/traced")
        .header(
            "traceparent",
            "00-11111111111111111111111111111111-2222222222222222-01",
        )
        .body(Full::default())
        .expect("req");
    assert_eq!(env.client(VIP).await.send(req).await.status, 200);
    let sent = v1.last_seen().headers["traceparent"]
        .to_str()
        .expect("ascii")
        .to_string();
    let (_, span_id, _) = parse_traceparent(&sent).expect("traceparent");
    let t = tracer.clone();
    tokio::task::spawn_blocking(move || t.flush())
        .await
        .expect("flush");
    test_support::eventually(
        "the span reaches the collector",
        Duration::from_secs(10),
        || {
            collector.spans.lock().iter().any(|s| {
                s.trace_id == [0x11; 16] && s.parent_span_id == [0x22; 8] && s.span_id == span_id
            })
        },
    )
    .await;
    tracer.shutdown();
}
