//! The echo server: TCP echo listeners and HTTP/1.1 listeners, each connection on its own task.
//!
//! With `fail_every = N` the HTTP server is flaky on purpose: one request in every N (the first,
//! the (N+1)th, ...) is answered 503 instead of the usual description. `GET /_echo/stats` is
//! never counted and never fails: it reports how many requests were served and how many failed
//! that way, so a test can tell what the server itself saw from what its clients saw.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};

use super::EchoError;

/// What the server listens on and how it names itself.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub tcp_ports: Vec<u16>,
    pub http_ports: Vec<u16>,
    /// Reported in every HTTP response (the pod name).
    pub name: String,
    /// Answer one HTTP request in every N with 503 (see the module docs).
    pub fail_every: Option<NonZeroU32>,
}

/// Path of the server's own counters (never counted, never failed).
pub const STATS_PATH: &str = "/_echo/stats";

/// How the HTTP listeners answer, shared by all their connections.
#[derive(Debug)]
pub struct HttpBehaviour {
    name: String,
    fail_every: Option<NonZeroU32>,
    requests: AtomicU64,
    failed: AtomicU64,
}

impl HttpBehaviour {
    pub fn new(name: &str, fail_every: Option<NonZeroU32>) -> Self {
        Self {
            name: name.to_string(),
            fail_every,
            requests: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    /// The answer to one request.
    pub fn answer(
        &self,
        peer: SocketAddr,
        local: Option<SocketAddr>,
        parts: &http::request::Parts,
    ) -> Response<Full<Bytes>> {
        if parts.uri.path() == STATS_PATH {
            return self.stats();
        }
        let n = self.requests.fetch_add(1, Ordering::Relaxed);
        if let Some(every) = self.fail_every
            && n.is_multiple_of(u64::from(every.get()))
        {
            self.failed.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%peer, path = %parts.uri.path(), request = n + 1, "failing this request on purpose (--fail-every)");
            let body = serde_json::json!({
                "pod": self.name,
                "path": parts.uri.path(),
                "status": 503,
                "flaky": true,
                "request": n + 1,
            });
            return json_response(&self.name, StatusCode::SERVICE_UNAVAILABLE, &body);
        }
        describe(&self.name, peer, local, parts)
    }

    fn stats(&self) -> Response<Full<Bytes>> {
        let body = serde_json::json!({
            "pod": self.name,
            "requests": self.requests.load(Ordering::Relaxed),
            "failed": self.failed.load(Ordering::Relaxed),
            "fail_every": self.fail_every.map(NonZeroU32::get),
        });
        json_response(&self.name, StatusCode::OK, &body)
    }
}

/// The server's counters, as `GET /_echo/stats` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub struct EchoStats {
    /// Requests answered (stats requests excluded).
    pub requests: u64,
    /// Of those, answered 503 on purpose.
    pub failed: u64,
}

/// Binds every listener, then serves until SIGTERM or SIGINT (a pod deletion, Ctrl-C), which
/// end the process at once.
pub async fn run(cfg: ServerConfig) -> Result<(), EchoError> {
    // Installed before the listeners bind, so that a stop requested while they start is not lost.
    // As a container's PID 1 the process has no default signal handlers: without these, a pod
    // deletion would wait out the whole grace period.
    let mut term = signal(SignalKind::terminate()).map_err(EchoError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(EchoError::Signal)?;
    let serve = serve(cfg);
    tokio::select! {
        res = serve => res,
        _ = term.recv() => {
            tracing::info!("SIGTERM: stopping");
            Ok(())
        }
        _ = int.recv() => {
            tracing::info!("SIGINT: stopping");
            Ok(())
        }
    }
}

async fn serve(cfg: ServerConfig) -> Result<(), EchoError> {
    if cfg.tcp_ports.is_empty() && cfg.http_ports.is_empty() {
        return Err(EchoError::NoListeners);
    }
    let behaviour = Arc::new(HttpBehaviour::new(&cfg.name, cfg.fail_every));
    let mut tasks = tokio::task::JoinSet::new();
    for port in cfg.tcp_ports {
        let listener = bind(port).await?;
        tracing::info!(port, "tcp echo listening");
        tasks.spawn(tcp_accept_loop(listener));
    }
    for port in cfg.http_ports {
        let listener = bind(port).await?;
        tracing::info!(port, fail_every = ?cfg.fail_every, "http listening");
        tasks.spawn(serve_http(listener, behaviour.clone()));
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

async fn bind(port: u16) -> Result<TcpListener, EchoError> {
    let addr = SocketAddr::from(([0, 0, 0, 0], port));
    TcpListener::bind(addr)
        .await
        .map_err(|source| EchoError::Bind {
            addr: addr.to_string(),
            source,
        })
}

async fn tcp_accept_loop(listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                tokio::spawn(echo_connection(stream, peer));
            }
            Err(e) => tracing::warn!(error = %e, "tcp accept failed"),
        }
    }
}

async fn echo_connection(mut stream: TcpStream, peer: SocketAddr) {
    let local = stream.local_addr().ok();
    let (mut rd, mut wr) = stream.split();
    match tokio::io::copy(&mut rd, &mut wr).await {
        Ok(n) => {
            let _ = wr.shutdown().await;
            tracing::info!(%peer, ?local, bytes = n, "tcp echo connection done");
        }
        Err(e) => tracing::info!(%peer, ?local, error = %e, "tcp echo connection failed"),
    }
}

/// HTTP listener of a server named `name`, never failing on purpose.
#[cfg(test)]
async fn http_accept_loop(listener: TcpListener, name: Arc<str>) {
    serve_http(listener, Arc::new(HttpBehaviour::new(&name, None))).await
}

async fn serve_http(listener: TcpListener, behaviour: Arc<HttpBehaviour>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "http accept failed");
                continue;
            }
        };
        let behaviour = behaviour.clone();
        let local = stream.local_addr().ok();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let (parts, _body) = req.into_parts();
                let resp = behaviour.answer(peer, local, &parts);
                async move { Ok::<_, Infallible>(resp) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::info!(%peer, error = %e, "http connection ended with an error");
            }
        });
    }
}

/// Builds the answer to one request: `/status/<code>` sets the status, the body describes the
/// request.
pub fn respond(
    name: &str,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let (parts, _body) = req.into_parts();
    describe(name, peer, local, &parts)
}

/// The response for request head `parts` (separate from the body type so tests can call it).
pub fn describe(
    name: &str,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    parts: &http::request::Parts,
) -> Response<Full<Bytes>> {
    let path = parts.uri.path().to_string();
    let status = path
        .strip_prefix("/status/")
        .and_then(|c| c.parse::<u16>().ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::OK);
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                serde_json::Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
            )
        })
        .collect();
    let body = serde_json::json!({
        "pod": name,
        "method": parts.method.as_str(),
        "path": path,
        "query": parts.uri.query(),
        "headers": headers,
        "remote_addr": peer.to_string(),
        "local_addr": local.map(|a| a.to_string()),
        "status": status.as_u16(),
    });
    tracing::info!(%peer, method = %parts.method, %path, status = status.as_u16(), "http request");
    json_response(name, status, &body)
}

/// A pretty JSON body with `content-type` and the `x-echo-pod` header naming the pod.
fn json_response(
    name: &str,
    status: StatusCode,
    body: &serde_json::Value,
) -> Response<Full<Bytes>> {
    let mut text = serde_json::to_string_pretty(body).unwrap_or_default();
    text.push('\n');
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = http::HeaderValue::from_str(name) {
        resp.headers_mut().insert(POD_HEADER, v);
    }
    resp
}

/// Response header naming the pod that answered.
pub const POD_HEADER: &str = "x-echo-pod";

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn parts(uri: &str) -> http::request::Parts {
        let (p, ()) = Request::builder()
            .method("POST")
            .uri(uri)
            .header("x-test", "yes")
            .body(())
            .unwrap()
            .into_parts();
        p
    }

    async fn body_json(resp: Response<Full<Bytes>>) -> serde_json::Value {
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn describes_the_request() {
        let peer: SocketAddr = "10.1.1.2:5555".parse().unwrap();
        let resp = describe("pod-a", peer, None, &parts("/hello?x=1"));
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-echo-pod"], "pod-a");
        let v = body_json(resp).await;
        assert_eq!(v["pod"], "pod-a");
        assert_eq!(v["method"], "POST");
        assert_eq!(v["path"], "/hello");
        assert_eq!(v["query"], "x=1");
        assert_eq!(v["headers"]["x-test"], "yes");
        assert_eq!(v["remote_addr"], "10.1.1.2:5555");
    }

    #[tokio::test]
    async fn status_path_sets_the_code() {
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(
            describe("p", peer, None, &parts("/status/503")).status(),
            503
        );
        assert_eq!(
            describe("p", peer, None, &parts("/status/418")).status(),
            418
        );
        // Not a code: plain 200.
        assert_eq!(
            describe("p", peer, None, &parts("/status/abc")).status(),
            200
        );
    }

    #[tokio::test]
    async fn fail_every_fails_one_request_in_n_and_counts_it() {
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b = HttpBehaviour::new("flaky", NonZeroU32::new(2));
        let codes: Vec<u16> = (0..6)
            .map(|_| b.answer(peer, None, &parts("/x")).status().as_u16())
            .collect();
        assert_eq!(codes, vec![503, 200, 503, 200, 503, 200]);
        let stats = b.answer(peer, None, &parts(STATS_PATH));
        assert_eq!(stats.status(), 200);
        let v = body_json(stats).await;
        let got: EchoStats = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(
            got,
            EchoStats {
                requests: 6,
                failed: 3
            },
            "{v}"
        );
        // Stats requests are not counted: the 7th request fails again.
        assert_eq!(b.answer(peer, None, &parts("/x")).status(), 503);
        let steady = HttpBehaviour::new("steady", None);
        assert!((0..4).all(|_| steady.answer(peer, None, &parts("/")).status() == 200));
    }

    #[tokio::test]
    async fn serves_tcp_echo_and_http_on_loopback() {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (tcp_addr, http_addr) = (tcp.local_addr().unwrap(), http.local_addr().unwrap());
        tokio::spawn(tcp_accept_loop(tcp));
        tokio::spawn(http_accept_loop(http, Arc::from("loop-pod")));
        let reply = tokio::task::spawn_blocking(move || {
            crate::echo::client::tcp(
                &tcp_addr.to_string(),
                "ping-123",
                std::time::Duration::from_secs(5),
            )
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(reply, "ping-123");
        let url = format!("http://{http_addr}/status/404");
        let resp = tokio::task::spawn_blocking(move || {
            crate::echo::client::http(&url, std::time::Duration::from_secs(5))
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(resp.status, 404);
        assert!(
            resp.text().contains("\"pod\": \"loop-pod\""),
            "{}",
            resp.text()
        );
    }

    #[tokio::test]
    async fn repeated_gets_count_statuses_pods_and_failures() {
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_addr = http.local_addr().unwrap();
        tokio::spawn(http_accept_loop(http, Arc::from("pod-r")));
        let refused = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let (ok, teapot, failed) = tokio::task::spawn_blocking(move || {
            let t = std::time::Duration::from_secs(5);
            let repeat = |url: String| crate::echo::client::http_repeat(&url, &[], 4, t);
            (
                repeat(format!("http://{http_addr}/")),
                repeat(format!("http://{http_addr}/status/418")),
                repeat(format!("http://{refused}/")),
            )
        })
        .await
        .unwrap();
        assert_eq!(ok.requests, 4);
        assert_eq!(ok.statuses.get(&200), Some(&4), "{ok:?}");
        assert_eq!(ok.pods.get("pod-r"), Some(&4), "{ok:?}");
        assert!(ok.errors.is_empty(), "{ok:?}");
        assert_eq!(teapot.statuses.get(&418), Some(&4), "{teapot:?}");
        assert!(
            failed.statuses.is_empty() && failed.pods.is_empty(),
            "{failed:?}"
        );
        assert_eq!(failed.errors.values().sum::<u32>(), 4, "{failed:?}");
        assert!(
            failed.errors.keys().all(|e| e.contains("refused")),
            "{failed:?}"
        );
    }
}
