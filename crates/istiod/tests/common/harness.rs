//! An istiod running in-process on 127.0.0.1 ephemeral ports, over a temporary configuration
//! directory, plus a recording xDS client and a tiny HTTP client for the debug endpoints.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use istiod::{Config, Istiod};
use mesh_proto::proto::discovery::{Node, Resource};
use mesh_proto::proto::type_url;
use mesh_proto::xds::{ClientConfig, ClientHandler, Subscription, XdsClient};
use parking_lot::Mutex;
use prost_types::Any;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const TOKENS: &str = "# local node tokens\ntoken-a node-a\ntoken-b node-b\n";

pub struct Harness {
    pub config_dir: TempDir,
    pub ca_dir: TempDir,
    pub istiod: Istiod,
}

/// Writes a file atomically (a hidden temporary file, then a rename), so the watcher never
/// sees it half written.
pub fn write_atomic(dir: &Path, name: &str, content: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, content).expect("write temporary file");
    std::fs::rename(&tmp, dir.join(name)).expect("rename into place");
}

impl Harness {
    /// Starts istiod over `files` (name, YAML) with node tokens for node-a and node-b.
    pub async fn start(files: &[(&str, &str)]) -> Harness {
        let config_dir = tempfile::tempdir().expect("config dir");
        let ca_dir = tempfile::tempdir().expect("ca dir");
        for (name, content) in files {
            write_atomic(config_dir.path(), name, content);
        }
        let tokens = ca_dir.path().join("node-tokens");
        std::fs::write(&tokens, TOKENS).expect("tokens file");
        let mut config = Config::local(config_dir.path().to_path_buf(), ca_dir.path().join("ca"));
        config.node_tokens = Some(tokens);
        config.config_poll_interval = Duration::from_millis(20);
        config.debounce_after = Duration::from_millis(30);
        let istiod = Istiod::start(config).await.expect("istiod starts");
        Harness {
            config_dir,
            ca_dir,
            istiod,
        }
    }

    pub fn write(&self, name: &str, content: &str) {
        write_atomic(self.config_dir.path(), name, content);
    }

    /// `GET path` on the monitoring port: status code and body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let mut conn = tokio::net::TcpStream::connect(self.istiod.monitoring_addr())
            .await
            .expect("connect to monitoring port");
        let req = format!("GET {path} HTTP/1.1\r\nHost: istiod\r\nConnection: close\r\n\r\n");
        conn.write_all(req.as_bytes()).await.expect("send request");
        let mut raw = Vec::new();
        conn.read_to_end(&mut raw).await.expect("read response");
        let raw = String::from_utf8(raw).expect("UTF-8 response");
        let (head, body) = raw.split_once("\r\n\r\n").expect("HTTP response");
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("status code");
        (code, body.to_string())
    }
}

/// One response as the client applied it.
#[derive(Clone, Debug)]
pub struct Applied {
    pub type_url: String,
    pub updated: Vec<String>,
    pub removed: Vec<String>,
}

/// Records what an xDS client holds and every response it applied.
#[derive(Default)]
pub struct Recorder {
    pub held: Mutex<BTreeMap<String, BTreeMap<String, Any>>>,
    pub log: Mutex<Vec<Applied>>,
}

impl Recorder {
    pub fn names(&self, type_url: &str) -> Vec<String> {
        self.held
            .lock()
            .get(type_url)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub fn get(&self, type_url: &str, name: &str) -> Option<Any> {
        self.held.lock().get(type_url)?.get(name).cloned()
    }
}

impl ClientHandler for Recorder {
    fn apply(
        &self,
        type_url: &str,
        updated: Vec<Resource>,
        removed: Vec<String>,
    ) -> Result<(), String> {
        let mut held = self.held.lock();
        let map = held.entry(type_url.to_string()).or_default();
        let mut names = Vec::new();
        for r in updated {
            let any = r
                .resource
                .ok_or_else(|| format!("resource {} has no body", r.name))?;
            names.push(r.name.clone());
            map.insert(r.name, any);
        }
        for name in &removed {
            map.remove(name);
        }
        self.log.lock().push(Applied {
            type_url: type_url.to_string(),
            updated: names,
            removed,
        });
        Ok(())
    }
}

/// Runs an xDS client subscribed (wildcard) to addresses and authorizations; stops when the
/// returned sender is dropped.
pub fn run_client(
    endpoint: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    node: &str,
) -> (Arc<Recorder>, tokio::sync::oneshot::Sender<()>) {
    let recorder = Arc::new(Recorder::default());
    let mut cfg = ClientConfig::new(
        endpoint,
        Node {
            id: format!("ztunnel~{node}"),
            cluster: "Kubernetes".into(),
            ..Default::default()
        },
    );
    cfg.tls = tls;
    cfg.subscriptions = vec![
        Subscription::wildcard(type_url::ADDRESS),
        Subscription::wildcard(type_url::AUTHORIZATION),
    ];
    let client = XdsClient::new(cfg, recorder.clone());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(client.run(async move {
        let _ = stop_rx.await;
    }));
    (recorder, stop_tx)
}

/// Polls `check` until it returns `Some`, failing after 15 s with `what` and the last state.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) => {
                if tokio::time::Instant::now() > deadline {
                    panic!("timed out waiting for {what}; last state: {last}");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
