//! An in-process mesh on loopback: a CA, backend pods (an HTTP server behind a stand-in for
//! their node's ztunnel, which accepts HBONE from the waypoint only and connects to the pod),
//! the waypoint itself, and a source client speaking HTTP over HBONE to it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use identity::{CertificateAuthority, CertificateManager, Identity, LocalCa, PeerPolicy};
use mesh_proto::hbone::{self, Drain, DrainTrigger, InboundRequest, Responder};
use mesh_proto::proto::waypoint as pb;
use parking_lot::{Mutex, RwLock};
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, TcpStream};
use waypoint::config_model::WaypointConfig;
use waypoint::proxy::{ProxyInputs, ProxySettings, inbound};
use waypoint::telemetry::{Metrics, Tracer};
use ztunnel::state::{ProxyState, Service, SharedState, Tunnel, Workload};

pub const TD: &str = "cluster.local";
pub const NS: &str = "demo";
pub const PORT: u16 = 80;
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A fresh loopback address per pod, unique within the test process.
fn next_ip() -> Ipv4Addr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    Ipv4Addr::new(127, 10, (n / 250) as u8, (n % 250) as u8 + 1)
}

/// How a backend answers.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// 200, body = the pod name.
    Echo,
    /// Every other request (the first included) fails with 503.
    FailEveryOther,
    /// Always this status.
    Status(u16),
    /// Echo after a delay.
    Slow(Duration),
    /// A gRPC service: `/demo.Echo/Say` answers the request message back with status 0,
    /// other methods status 12 (unimplemented).
    Grpc,
    /// Not HTTP: echoes raw bytes.
    TcpEcho,
}

/// What a backend saw of one request.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub version: http::Version,
}

pub struct Pod {
    pub name: String,
    pub uid: String,
    pub ip: Ipv4Addr,
    pub target_port: u16,
    pub identity: Identity,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub hits: Arc<AtomicU64>,
    /// Identities that opened tunnels to this pod's ztunnel.
    pub tunnel_peers: Arc<Mutex<Vec<Identity>>>,
    _ztunnel: DrainTrigger,
}

impl Pod {
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn last_seen(&self) -> Seen {
        self.seen
            .lock()
            .last()
            .cloned()
            .expect("the backend saw a request")
    }
}

pub struct Env {
    pub ca: Arc<CertificateAuthority>,
    pub state: SharedState,
    pub waypoint_cfg: Arc<ArcSwapOption<WaypointConfig>>,
    pub registry: Arc<Registry>,
    pub waypoint_id: Identity,
    pub client_id: Identity,
    pub waypoint_addr: SocketAddr,
    pub inputs: Arc<ProxyInputs>,
    hbone_port: u16,
    reserved: Mutex<Option<(Ipv4Addr, TcpListener)>>,
    _drain: DrainTrigger,
}

pub struct EnvBuilder {
    tracer: Tracer,
}

impl Env {
    pub async fn new() -> Env {
        Self::builder().start().await
    }

    pub fn builder() -> EnvBuilder {
        EnvBuilder {
            tracer: Tracer::disabled(),
        }
    }
}

impl EnvBuilder {
    pub fn tracer(mut self, t: Tracer) -> Self {
        self.tracer = t;
        self
    }

    pub async fn start(self) -> Env {
        identity::install_crypto_provider();
        let ca = Arc::new(CertificateAuthority::generate(TD).expect("CA"));
        let waypoint_id = Identity::new(TD, NS, "waypoint");
        let client_id = Identity::new(TD, "clients", "sleep");
        // Every pod's ztunnel listens on the same port at its own address, as on 15008.
        let first_ip = next_ip();
        let reserved = TcpListener::bind((first_ip, 0))
            .await
            .expect("bind ztunnel");
        let hbone_port = reserved.local_addr().expect("addr").port();

        let state: SharedState = Arc::new(RwLock::new(ProxyState::default()));
        // The source client connects from 127.0.0.1.
        state.write().upsert_workload(workload(
            "client-uid",
            "sleep",
            "clients",
            IpAddr::from([127, 0, 0, 1]),
            client_id.clone(),
            HashMap::new(),
        ));
        let waypoint_cfg = Arc::new(ArcSwapOption::empty());
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let certs = CertificateManager::new(
            Arc::new(LocalCa::new(ca.clone(), Duration::from_secs(3600))),
            vec![ca.root_pem()],
        );
        let mut settings = ProxySettings::new(waypoint_id.clone());
        settings.hbone_port = hbone_port;
        let inputs = ProxyInputs::new(
            settings,
            state.clone(),
            waypoint_cfg.clone(),
            certs,
            metrics,
            self.tracer,
        );
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind waypoint");
        let waypoint_addr = listener.local_addr().expect("addr");
        let (trigger, drain) = Drain::new();
        tokio::spawn(inbound::serve(listener, inputs.clone(), drain));
        Env {
            ca,
            state,
            waypoint_cfg,
            registry: Arc::new(registry),
            waypoint_id,
            client_id,
            waypoint_addr,
            inputs,
            hbone_port,
            reserved: Mutex::new(Some((first_ip, reserved))),
            _drain: trigger,
        }
    }
}

fn workload(
    uid: &str,
    name: &str,
    ns: &str,
    ip: IpAddr,
    id: Identity,
    services: HashMap<String, Vec<(u16, u16)>>,
) -> Workload {
    Workload {
        uid: uid.into(),
        name: name.into(),
        namespace: ns.into(),
        ips: vec![ip],
        node: "node-a".into(),
        identity: id,
        tunnel: Tunnel::Hbone,
        canonical_name: name.split('-').next().unwrap_or(name).into(),
        canonical_revision: "v1".into(),
        workload_name: name.into(),
        cluster_id: "Kubernetes".into(),
        healthy: true,
        services,
        authorization_policies: Vec::new(),
        waypoint: None,
    }
}

pub fn key(host: &str) -> String {
    format!("{NS}/{host}.{NS}.svc.cluster.local")
}

pub fn hostname(host: &str) -> String {
    format!("{host}.{NS}.svc.cluster.local")
}

impl Env {
    /// Starts a backend pod: its HTTP server and its node's ztunnel.
    pub async fn pod(&self, name: &str, behaviour: Behaviour) -> Pod {
        let reserved = self.reserved.lock().take();
        let (ip, zlistener) = match reserved {
            Some(r) => r,
            None => {
                let ip = next_ip();
                let l = TcpListener::bind((ip, self.hbone_port))
                    .await
                    .expect("bind ztunnel");
                (ip, l)
            }
        };
        let app = TcpListener::bind((ip, 0)).await.expect("bind app");
        let target_port = app.local_addr().expect("addr").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let hits = Arc::new(AtomicU64::new(0));
        tokio::spawn(serve_app(
            app,
            name.to_string(),
            behaviour,
            seen.clone(),
            hits.clone(),
        ));

        let identity = Identity::new(TD, NS, name);
        let cert = self
            .ca
            .issue(&identity, Duration::from_secs(3600))
            .expect("cert");
        // The destination ztunnel accepts tunnels from the waypoint only.
        let tls = identity::server_config(&cert, PeerPolicy::only(self.waypoint_id.clone()))
            .expect("server tls");
        let tunnel_peers = Arc::new(Mutex::new(Vec::new()));
        let peers = tunnel_peers.clone();
        let handler = move |req: InboundRequest, resp: Responder| {
            let peers = peers.clone();
            async move {
                peers.lock().push(req.peer_identity.clone());
                if req.target.ip() != IpAddr::V4(ip) {
                    resp.reject(StatusCode::BAD_REQUEST);
                    return;
                }
                let Ok(mut app) = TcpStream::connect(req.target).await else {
                    resp.reject(StatusCode::SERVICE_UNAVAILABLE);
                    return;
                };
                let Ok(mut tunnel) = resp.accept() else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tunnel, &mut app).await;
            }
        };
        let (trigger, drain) = Drain::new();
        tokio::spawn(hbone::serve(zlistener, move || tls.clone(), handler, drain));
        Pod {
            name: name.into(),
            uid: format!("{name}-uid"),
            ip,
            target_port,
            identity,
            seen,
            hits,
            tunnel_peers,
            _ztunnel: trigger,
        }
    }

    /// Registers service `host` (VIP `vip`, port 80) with `pods` as its endpoints.
    pub fn service(&self, host: &str, vip: Ipv4Addr, pods: &[&Pod]) {
        let mut st = self.state.write();
        st.upsert_service(Service {
            name: host.into(),
            namespace: NS.into(),
            hostname: hostname(host),
            vips: vec![IpAddr::V4(vip)],
            ports: vec![(PORT, 0)],
            waypoint: None,
        });
        for p in pods {
            let mut services = st
                .workload(&p.uid)
                .map(|w| w.services.clone())
                .unwrap_or_default();
            services.insert(key(host), vec![(PORT, p.target_port)]);
            st.upsert_workload(workload(
                &p.uid,
                &p.name,
                NS,
                IpAddr::V4(p.ip),
                p.identity.clone(),
                services,
            ));
        }
    }

    pub fn configure(&self, w: pb::Waypoint) {
        let cfg = WaypointConfig::from_proto(w).expect("valid waypoint configuration");
        self.waypoint_cfg.store(Some(Arc::new(cfg)));
    }

    /// An HTTP/1.1 client tunnelled to `vip:80` through the waypoint.
    pub async fn client(&self, vip: Ipv4Addr) -> Client {
        let stream = self.tunnel(vip).await.expect("tunnel to the waypoint");
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP/1.1 handshake");
        tokio::spawn(conn);
        Client::H1(send)
    }

    /// An HTTP/2 (prior knowledge) client tunnelled to `vip:80` through the waypoint.
    pub async fn client_h2(&self, vip: Ipv4Addr) -> Client {
        let stream = self.tunnel(vip).await.expect("tunnel to the waypoint");
        let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(stream))
            .await
            .expect("HTTP/2 handshake");
        tokio::spawn(conn);
        Client::H2(send)
    }

    /// Opens an HBONE tunnel to the waypoint with the client's certificate.
    pub async fn tunnel(&self, vip: Ipv4Addr) -> Result<hbone::H2Stream, hbone::HboneError> {
        let cert = self
            .ca
            .issue(&self.client_id, Duration::from_secs(3600))
            .expect("cert");
        let tls = identity::client_config(&cert, PeerPolicy::only(self.waypoint_id.clone()))
            .expect("client tls");
        let tcp = TcpStream::connect(self.waypoint_addr)
            .await
            .expect("connect");
        let (stream, _task) =
            hbone::connect_once(tcp, tls, SocketAddr::from((vip, PORT)), HeaderMap::new()).await?;
        Ok(stream)
    }

    /// The metrics page.
    pub fn metrics_text(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("encode");
        out
    }

    /// The value of the first series of `name` whose labels include every `labels` pair.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let text = self.metrics_text();
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .find(|l| {
                labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }
}

pub enum Client {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

/// A response as the client saw it.
#[derive(Debug)]
pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

impl Got {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Client {
    pub async fn get(&mut self, path: &str) -> Got {
        self.send(Request::get(path).body(Full::default()).expect("request"))
            .await
    }

    pub async fn send(&mut self, mut req: Request<Full<Bytes>>) -> Got {
        if !req.headers().contains_key(http::header::HOST) {
            req.headers_mut().insert(
                http::header::HOST,
                http::HeaderValue::from_static("reviews.demo.svc.cluster.local"),
            );
        }
        let resp = match self {
            Client::H1(s) => {
                s.ready().await.expect("connection ready");
                s.send_request(req).await
            }
            Client::H2(s) => {
                let uri = format!(
                    "http://{}{}",
                    req.headers()[http::header::HOST].to_str().expect("host"),
                    req.uri()
                );
                *req.uri_mut() = uri.parse().expect("uri");
                req.headers_mut().remove(http::header::HOST);
                s.ready().await.expect("connection ready");
                s.send_request(req).await
            }
        }
        .expect("response");
        let (parts, body) = resp.into_parts();
        let collected = tokio::time::timeout(DEADLINE, body.collect())
            .await
            .expect("body in time")
            .expect("body");
        let trailers = collected.trailers().cloned();
        Got {
            status: parts.status,
            headers: parts.headers,
            body: collected.to_bytes(),
            trailers,
        }
    }
}

type AppBody = BoxBody<Bytes, Infallible>;

async fn serve_app(
    listener: TcpListener,
    name: String,
    behaviour: Behaviour,
    seen: Arc<Mutex<Vec<Seen>>>,
    hits: Arc<AtomicU64>,
) {
    loop {
        let Ok((mut tcp, _)) = listener.accept().await else {
            return;
        };
        if matches!(behaviour, Behaviour::TcpEcho) {
            hits.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let (mut r, mut w) = tcp.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
            continue;
        }
        let name = name.clone();
        let behaviour = behaviour.clone();
        let seen = seen.clone();
        let hits = hits.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let name = name.clone();
                let behaviour = behaviour.clone();
                let seen = seen.clone();
                let n = hits.fetch_add(1, Ordering::SeqCst);
                seen.lock().push(Seen {
                    method: req.method().to_string(),
                    path: req
                        .uri()
                        .path_and_query()
                        .map(|p| p.to_string())
                        .unwrap_or_default(),
                    headers: req.headers().clone(),
                    version: req.version(),
                });
                async move { Ok::<_, Infallible>(answer(&name, &behaviour, n, req).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

fn full(b: impl Into<Bytes>) -> AppBody {
    Full::new(b.into()).boxed()
}

async fn answer(
    name: &str,
    behaviour: &Behaviour,
    n: u64,
    req: Request<Incoming>,
) -> Response<AppBody> {
    let echo = |status: u16| {
        Response::builder()
            .status(status)
            .header("x-backend", name)
            .body(full(name.to_string()))
            .expect("response")
    };
    match behaviour {
        Behaviour::Echo => echo(200),
        Behaviour::FailEveryOther => echo(if n.is_multiple_of(2) { 503 } else { 200 }),
        Behaviour::Status(s) => echo(*s),
        Behaviour::Slow(d) => {
            tokio::time::sleep(*d).await;
            echo(200)
        }
        Behaviour::TcpEcho => echo(500),
        Behaviour::Grpc => {
            let path = req.uri().path().to_string();
            let msg = req
                .into_body()
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let (status, body) = if path == "/demo.Echo/Say" {
                ("0", msg)
            } else {
                ("12", Bytes::new())
            };
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", status.parse().expect("status"));
            let frames = futures::stream::iter(vec![
                Ok::<_, Infallible>(http_body::Frame::data(body)),
                Ok(http_body::Frame::trailers(trailers)),
            ]);
            Response::builder()
                .status(200)
                .header("content-type", "application/grpc")
                .header("x-backend", name)
                .body(http_body_util::StreamBody::new(frames).boxed())
                .expect("response")
        }
    }
}

/// A gRPC message frame: uncompressed, length-prefixed.
pub fn grpc_frame(msg: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(5 + msg.len());
    out.push(0);
    out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    out.extend_from_slice(msg);
    Bytes::from(out)
}

/// Builders for the waypoint resource.
pub mod cfg {
    use super::*;

    pub fn waypoint(services: Vec<pb::BoundService>, policies: Vec<pb::Policy>) -> pb::Waypoint {
        pb::Waypoint {
            name: "waypoint".into(),
            namespace: NS.into(),
            services,
            policies,
        }
    }

    pub fn bound(host: &str, vip: Ipv4Addr, routes: Vec<pb::Route>) -> pb::BoundService {
        pb::BoundService {
            key: key(host),
            name: host.into(),
            namespace: NS.into(),
            hostname: hostname(host),
            vips: vec![vip.octets().to_vec()],
            ports: vec![pb::ServicePort {
                port: PORT.into(),
                target_port: 0,
                protocol: String::new(),
            }],
            routes,
            circuit_breaker: None,
        }
    }

    pub fn backend(host: &str, weight: u32) -> pb::WeightedBackend {
        pb::WeightedBackend {
            service: key(host),
            port: PORT.into(),
            weight,
            ..Default::default()
        }
    }

    pub fn route(
        name: &str,
        matches: Vec<pb::RouteMatch>,
        backends: Vec<pb::WeightedBackend>,
    ) -> pb::Route {
        pb::Route {
            name: name.into(),
            matches,
            backends,
            ..Default::default()
        }
    }

    pub fn prefix(p: &str) -> pb::RouteMatch {
        pb::RouteMatch {
            path: Some(pb::PathMatch {
                kind: Some(pb::path_match::Kind::Prefix(p.into())),
            }),
            ..Default::default()
        }
    }

    pub fn header(name: &str, value: &str) -> pb::HeaderMatch {
        pb::HeaderMatch {
            name: name.into(),
            kind: Some(pb::header_match::Kind::Exact(value.into())),
        }
    }

    pub fn modifier(op: pb::header_modifier::Op, name: &str, value: &str) -> pb::HeaderModifier {
        pb::HeaderModifier {
            op: op as i32,
            name: name.into(),
            value: value.into(),
        }
    }
}
