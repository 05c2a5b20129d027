//! Shared harness of the `meshctl` integration tests: run the binary, serve fake istiod and
//! ztunnel admin endpoints on loopback, compare outputs with stored snapshots, write fixtures.

#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;

/// What one run of `meshctl` left: exit code and both streams.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Fails with both streams shown unless the exit code is `code`.
    pub fn expect_code(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }

    pub fn ok(self) -> Self {
        self.expect_code(0)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

/// Runs the `meshctl` binary with `args`, with no `MESHCTL_*` or cluster settings inherited.
pub fn meshctl<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    meshctl_with_stdin(args, None)
}

pub fn meshctl_with_stdin<I, S>(args: I, stdin: Option<&str>) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshctl"));
    cmd.args(args);
    for (key, _) in std::env::vars() {
        if key.starts_with("MESHCTL_") || key.starts_with("KUBERNETES_") || key == "KUBECONFIG" {
            cmd.env_remove(key);
        }
    }
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("meshctl runs");
    if let Some(text) = stdin {
        use std::io::Write;
        let mut pipe = child.stdin.take().expect("stdin piped");
        pipe.write_all(text.as_bytes()).expect("stdin written");
    }
    let out = child.wait_with_output().expect("meshctl finishes");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

type Handler = Arc<dyn Fn(usize) -> (u16, String) + Send + Sync>;

/// An HTTP server on 127.0.0.1 answering fixed or computed bodies per path, counting requests.
pub struct FakeServer {
    pub url: String,
    routes: Arc<Mutex<HashMap<String, Handler>>>,
    hits: Arc<Mutex<HashMap<String, Arc<AtomicUsize>>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeServer {
    pub fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let routes: Arc<Mutex<HashMap<String, Handler>>> = Arc::default();
        let hits: Arc<Mutex<HashMap<String, Arc<AtomicUsize>>>> = Arc::default();
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (r, h) = (routes.clone(), hits.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                loop {
                    let stream = tokio::select! {
                        _ = &mut stop_rx => return,
                        accepted = listener.accept() => match accepted {
                            Ok((s, _)) => s,
                            Err(_) => continue,
                        },
                    };
                    let (r, h) = (r.clone(), h.clone());
                    tokio::spawn(async move {
                        let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                            let path = req.uri().path().to_string();
                            let counter = h.lock().entry(path.clone()).or_default().clone();
                            let n = counter.fetch_add(1, Ordering::SeqCst);
                            let handler = r.lock().get(&path).cloned();
                            let (status, body) = match handler {
                                Some(f) => f(n),
                                None => (404, format!("no route {path}\n")),
                            };
                            let mut resp = hyper::Response::new(Full::new(Bytes::from(body)));
                            *resp.status_mut() =
                                hyper::StatusCode::from_u16(status).expect("status");
                            async move { Ok::<_, Infallible>(resp) }
                        });
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            });
        });
        FakeServer {
            url,
            routes,
            hits,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Answers `path` with `status` and `body` every time.
    pub fn route(&self, path: &str, status: u16, body: impl Into<String>) -> &Self {
        let body = body.into();
        self.route_fn(path, move |_| (status, body.clone()))
    }

    /// Answers `path` with `f(n)`, `n` counting the earlier requests to it.
    pub fn route_fn(
        &self,
        path: &str,
        f: impl Fn(usize) -> (u16, String) + Send + Sync + 'static,
    ) -> &Self {
        self.routes.lock().insert(path.to_string(), Arc::new(f));
        self
    }

    pub fn hits(&self, path: &str) -> usize {
        self.hits
            .lock()
            .get(path)
            .map_or(0, |c| c.load(Ordering::SeqCst))
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Compares `actual` with `tests/snapshots/<name>`; `UPDATE_SNAPSHOTS=1` rewrites the file.
pub fn assert_snapshot(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("snapshot dir");
        std::fs::write(&path, actual).expect("snapshot written");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "snapshot {} is missing; run the tests with UPDATE_SNAPSHOTS=1 to create it. \
             Output was:\n{actual}",
            path.display()
        )
    });
    assert!(
        expected == actual,
        "output differs from snapshot {} (UPDATE_SNAPSHOTS=1 rewrites it)\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}

/// Replaces each `(text, placeholder)` in `s`.
pub fn normalize(s: &str, replacements: &[(&str, &str)]) -> String {
    let mut out = s.to_string();
    for (from, to) in replacements {
        if !from.is_empty() {
            out = out.replace(from, to);
        }
    }
    out
}

/// Collapses runs of spaces: for tables whose column widths depend on replaced values (URLs
/// with ephemeral ports).
pub fn collapse_spaces(s: &str) -> String {
    s.lines()
        .map(|l| {
            l.split(' ')
                .filter(|w| !w.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// A configuration directory in a temporary directory.
pub struct ConfigDir {
    pub tmp: tempfile::TempDir,
}

impl ConfigDir {
    pub fn new(files: &[(&str, &str)]) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(tmp.path().join("config")).expect("config dir");
        let dir = ConfigDir { tmp };
        for (name, text) in files {
            dir.write(name, text);
        }
        dir
    }

    pub fn path(&self) -> PathBuf {
        self.tmp.path().join("config")
    }

    pub fn arg(&self) -> String {
        self.path().display().to_string()
    }

    pub fn write(&self, name: &str, text: &str) {
        let p = self.path().join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("parent");
        }
        std::fs::write(p, text).expect("fixture written");
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    pub fn exists(&self, name: &str) -> bool {
        self.path().join(name).exists()
    }

    /// The directory as istiod would read it.
    pub fn snapshot(&self) -> mesh_config::Snapshot {
        mesh_config::DirSource::load_once(&self.path())
    }

    /// Placeholder for the temporary path in outputs.
    pub fn normalize(&self, s: &str) -> String {
        normalize(s, &[(&self.arg(), "$DIR")])
    }
}

/// Namespaces of the fixtures: `shop` enrolled, `legacy` not; comments kept on purpose.
pub const NAMESPACES: &str = "\
# Namespaces of the demo
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels:
    istio.io/dataplane-mode: ambient   # enrolled by hand
---
apiVersion: v1
kind: Namespace
metadata:
  name: legacy
";

/// Pods and a Service of the fixtures.
pub const WORKLOADS: &str = "\
apiVersion: v1
kind: Pod
metadata:
  name: cart-0
  namespace: shop
  labels: {app: cart}
spec:
  nodeName: node1
  serviceAccountName: cart
  containers: [{name: app, image: cart:1}]
---
apiVersion: v1
kind: Pod
metadata:
  name: web-0
  namespace: shop
  labels: {app: web}
spec:
  nodeName: node2
  containers: [{name: app, image: web:1}]
---
apiVersion: v1
kind: Pod
metadata:
  name: old-0
  namespace: legacy
spec:
  nodeName: node1
  containers: [{name: app, image: old:1}]
---
apiVersion: v1
kind: Service
metadata:
  name: cart
  namespace: shop
spec:
  selector: {app: cart}
  ports: [{port: 80, targetPort: 8080}]
";
