//! `meshctl` against a real istiod (in-process, local mode, loopback): waypoint apply/wait and
//! status read istiod's own `/debug/waypoints`; version reads its readiness.

mod common;

use std::net::SocketAddr;

use common::{ConfigDir, NAMESPACES, WORKLOADS, meshctl};

/// An istiod serving `dir` on loopback ports, on its own runtime thread.
struct LiveIstiod {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LiveIstiod {
    fn start(dir: &ConfigDir) -> Self {
        let config = istiod::cli::Config::local(dir.path(), dir.tmp.path().join("ca"));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel::<Result<SocketAddr, String>>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                match istiod::app::Istiod::start(config).await {
                    Ok(istiod) => {
                        let _ = addr_tx.send(Ok(istiod.monitoring_addr()));
                        let _ = stop_rx.await;
                        istiod.shutdown().await;
                    }
                    Err(e) => {
                        let _ = addr_tx.send(Err(e.to_string()));
                    }
                }
            });
        });
        let addr = addr_rx
            .recv()
            .expect("istiod thread answers")
            .unwrap_or_else(|e| panic!("istiod did not start: {e}"));
        LiveIstiod {
            url: format!("http://{addr}"),
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }
}

impl Drop for LiveIstiod {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The waypoint's Service and a ready pod behind it.
const WAYPOINT_BACKEND: &str = "\
apiVersion: v1
kind: Service
metadata:
  name: waypoint
  namespace: shop
spec:
  clusterIP: 10.96.0.20
  selector: {gateway.networking.k8s.io/gateway-name: waypoint}
  ports: [{name: mesh, port: 15008}]
---
apiVersion: v1
kind: Pod
metadata:
  name: waypoint-0
  namespace: shop
  labels: {gateway.networking.k8s.io/gateway-name: waypoint}
spec:
  nodeName: node1
  containers: [{name: waypoint, image: waypoint:1}]
status:
  phase: Running
  podIP: 10.1.0.20
  conditions: [{type: Ready, status: \"True\"}]
";

#[test]
fn waypoint_lifecycle_against_istiod() {
    let dir = ConfigDir::new(&[
        ("namespaces.yaml", NAMESPACES),
        ("workloads.yaml", WORKLOADS),
    ]);
    let istiod = LiveIstiod::start(&dir);
    let base = [
        "--config-dir".to_string(),
        dir.arg(),
        "--istiod-url".to_string(),
        istiod.url.clone(),
    ];
    let run = |args: &[&str]| {
        let mut v = base.to_vec();
        v.extend(args.iter().map(|s| s.to_string()));
        meshctl(v)
    };

    // No Service for the waypoint yet: istiod says why it is not programmed.
    let early = run(&[
        "waypoint",
        "apply",
        "-n",
        "shop",
        "--wait",
        "--timeout",
        "3s",
    ])
    .expect_code(1);
    assert!(
        early.stderr.contains("timed out after 3s") && early.stderr.contains("AddressNotAssigned"),
        "{}",
        early.stderr
    );

    dir.write("waypoint-backend.yaml", WAYPOINT_BACKEND);
    let done = run(&[
        "waypoint",
        "apply",
        "-n",
        "shop",
        "--wait",
        "--timeout",
        "30s",
    ])
    .ok();
    assert!(
        done.stdout.contains("waypoint shop/waypoint is programmed"),
        "{}",
        done.stdout
    );

    let status = run(&["waypoint", "status", "-n", "shop", "-o", "json"])
        .ok()
        .json();
    assert_eq!(status[0]["name"], "waypoint");
    assert_eq!(status[0]["programmed"], true);
    assert_eq!(status[0]["reason"], "Programmed");

    let version = run(&["version", "-o", "json"]).ok().json();
    assert_eq!(version["controlPlane"][0]["component"], "istiod");
    assert_eq!(version["controlPlane"][0]["status"], "ready");

    // After the waypoint is deleted istiod no longer programs it.
    run(&["waypoint", "delete", "-n", "shop"]).ok();
    let list = run(&["waypoint", "list", "-n", "shop"]).ok();
    assert_eq!(list.stdout, "No waypoints found in namespace shop.\n");
}
