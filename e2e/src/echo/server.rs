//! The echo server: TCP echo listeners and HTTP/1.1 listeners, each connection on its own task.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

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
    let name: Arc<str> = Arc::from(cfg.name.as_str());
    let mut tasks = tokio::task::JoinSet::new();
    for port in cfg.tcp_ports {
        let listener = bind(port).await?;
        tracing::info!(port, "tcp echo listening");
        tasks.spawn(tcp_accept_loop(listener));
    }
    for port in cfg.http_ports {
        let listener = bind(port).await?;
        tracing::info!(port, "http listening");
        tasks.spawn(http_accept_loop(listener, name.clone()));
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

async fn http_accept_loop(listener: TcpListener, name: Arc<str>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "http accept failed");
                continue;
            }
        };
        let name = name.clone();
        let local = stream.local_addr().ok();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let name = name.clone();
                async move { Ok::<_, Infallible>(respond(&name, peer, local, req)) }
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
    let mut text = serde_json::to_string_pretty(&body).unwrap_or_default();
    text.push('\n');
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = http::HeaderValue::from_str(name) {
        resp.headers_mut().insert("x-echo-pod", v);
    }
    resp
}

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
}
