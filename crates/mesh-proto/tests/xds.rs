//! Delta xDS: the real client against the real server over loopback TCP.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mesh_proto::proto::discovery::{Node, Resource};
use mesh_proto::xds::{
    ClientConfig, ClientHandler, Identity, ResourceStore, ServerHooks, Subscription, XdsClient,
    XdsServer,
};
use parking_lot::Mutex;
use prost_types::Any;
use test_support::eventually;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::metadata::MetadataMap;

const T: &str = "type.googleapis.com/test.Thing";
const NODE: &str = "node-1";
const WAIT: Duration = Duration::from_secs(10);

fn any(value: &str) -> Any {
    Any {
        type_url: T.to_owned(),
        value: value.as_bytes().to_vec(),
    }
}

fn put(store: &ResourceStore, items: &[(&str, &str)]) -> u64 {
    let upserts = items.iter().map(|(n, v)| (n.to_string(), any(v))).collect();
    store.apply(T, upserts, vec![])
}

fn map(items: &[(&str, &str)]) -> BTreeMap<String, String> {
    items
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// One `apply` call the client handler accepted.
#[derive(Debug, Clone)]
struct Delivery {
    updated: Vec<String>,
    removed: Vec<String>,
}

#[derive(Debug, Default)]
struct Recorded {
    state: BTreeMap<String, String>,
    deliveries: Vec<Delivery>,
    connected: usize,
}

/// Client handler keeping the resources as name -> value, rejecting values with a prefix.
#[derive(Default)]
struct Recorder {
    reject_prefix: Option<&'static str>,
    rec: Mutex<Recorded>,
}

impl Recorder {
    fn state(&self) -> BTreeMap<String, String> {
        self.rec.lock().state.clone()
    }

    fn connected(&self) -> usize {
        self.rec.lock().connected
    }

    fn deliveries(&self) -> Vec<Delivery> {
        self.rec.lock().deliveries.clone()
    }

    /// Names updated and removed by the deliveries after the first `from`.
    fn since(&self, from: usize) -> (Vec<String>, Vec<String>) {
        let d = self.deliveries();
        let mut updated: Vec<String> = d[from..].iter().flat_map(|d| d.updated.clone()).collect();
        let mut removed: Vec<String> = d[from..].iter().flat_map(|d| d.removed.clone()).collect();
        updated.sort();
        removed.sort();
        (updated, removed)
    }
}

impl ClientHandler for Recorder {
    fn apply(
        &self,
        type_url: &str,
        updated: Vec<Resource>,
        removed: Vec<String>,
    ) -> Result<(), String> {
        if type_url != T {
            return Err(format!("unexpected type {type_url}"));
        }
        let mut values = Vec::new();
        for r in &updated {
            let any = r
                .resource
                .as_ref()
                .ok_or(format!("{} has no body", r.name))?;
            let value = String::from_utf8(any.value.clone()).map_err(|e| e.to_string())?;
            if let Some(p) = self.reject_prefix.filter(|p| value.starts_with(p)) {
                return Err(format!("rejected {}: value starts with {p:?}", r.name));
            }
            values.push((r.name.clone(), value));
        }
        let mut rec = self.rec.lock();
        rec.state.extend(values);
        for n in &removed {
            rec.state.remove(n);
        }
        rec.deliveries.push(Delivery {
            updated: updated.into_iter().map(|r| r.name).collect(),
            removed,
        });
        Ok(())
    }

    fn on_connected(&self) {
        self.rec.lock().connected += 1;
    }
}

#[derive(Debug, Default)]
struct HookLog {
    connects: Vec<String>,
    refused: usize,
    acks: Vec<(String, String, u64)>,
    nacks: Vec<(String, String, String)>,
}

#[derive(Default)]
struct Hooks {
    refuse: bool,
    log: Mutex<HookLog>,
}

impl ServerHooks for Hooks {
    fn on_connect(
        &self,
        node: &Node,
        _metadata: &MetadataMap,
        _peer: Option<&Identity>,
    ) -> Result<(), tonic::Status> {
        let mut log = self.log.lock();
        log.connects.push(node.id.clone());
        if self.refuse {
            log.refused += 1;
            return Err(tonic::Status::permission_denied(format!(
                "node {} may not connect",
                node.id
            )));
        }
        Ok(())
    }

    fn on_ack(&self, node_id: &str, type_url: &str, version: u64) {
        self.log
            .lock()
            .acks
            .push((node_id.to_owned(), type_url.to_owned(), version));
    }

    fn on_nack(&self, node_id: &str, type_url: &str, error: &str) {
        self.log
            .lock()
            .nacks
            .push((node_id.to_owned(), type_url.to_owned(), error.to_owned()));
    }
}

impl Hooks {
    fn acked(&self, version: u64) -> bool {
        self.log
            .lock()
            .acks
            .iter()
            .any(|(n, t, v)| n == NODE && t == T && *v == version)
    }
}

struct TestServer {
    addr: SocketAddr,
    xds: XdsServer,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

async fn start_server(store: ResourceStore, hooks: Arc<Hooks>, addr: SocketAddr) -> TestServer {
    let listener = TcpListener::bind(addr).await.expect("bind xDS listener");
    let addr = listener.local_addr().expect("local address");
    let xds = XdsServer::new(store, hooks);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(xds.clone().into_service())
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            }),
    );
    TestServer {
        addr,
        xds,
        stop,
        task,
    }
}

impl TestServer {
    async fn stop(self) {
        self.xds.shutdown();
        let _ = self.stop.send(());
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("server stops within the deadline")
            .expect("server task")
            .expect("server ran without error");
    }
}

struct TestClient {
    client: XdsClient,
    handler: Arc<Recorder>,
    _stop: oneshot::Sender<()>,
}

fn start_client(addr: SocketAddr, subscription: Subscription, handler: Recorder) -> TestClient {
    let mut cfg = ClientConfig::new(
        format!("http://{addr}"),
        Node {
            id: NODE.to_owned(),
            ..Node::default()
        },
    );
    cfg.subscriptions = vec![subscription];
    cfg.backoff_initial = Duration::from_millis(10);
    cfg.backoff_max = Duration::from_millis(200);
    let handler = Arc::new(handler);
    let client = XdsClient::new(cfg, handler.clone());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(client.clone().run(async {
        let _ = stopped.await;
    }));
    TestClient {
        client,
        handler,
        _stop: stop,
    }
}

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

#[tokio::test]
async fn wildcard_receives_initial_set_then_only_changes() {
    let store = ResourceStore::new();
    put(&store, &[("a", "1"), ("b", "1"), ("c", "1")]);
    let hooks = Arc::new(Hooks::default());
    let server = start_server(store.clone(), hooks.clone(), any_port()).await;
    let c = start_client(server.addr, Subscription::wildcard(T), Recorder::default());
    let h = c.handler.clone();

    eventually("initial state and on_connected", WAIT, || {
        h.connected() == 1 && h.state() == map(&[("a", "1"), ("b", "1"), ("c", "1")])
    })
    .await;
    assert_eq!(h.since(0).0, vec!["a", "b", "c"], "each resource sent once");

    // Rewriting a with identical bytes and changing b delivers b alone.
    let mark = h.deliveries().len();
    put(&store, &[("a", "1"), ("b", "2")]);
    eventually("b updated", WAIT, || h.state()["b"] == "2").await;
    assert_eq!(h.since(mark), (vec!["b".to_owned()], vec![]));

    let mark = h.deliveries().len();
    let version = store.apply(T, vec![], vec!["c".to_owned()]);
    eventually("c removed", WAIT, || !h.state().contains_key("c")).await;
    assert_eq!(h.since(mark), (vec![], vec!["c".to_owned()]));
    assert_eq!(h.state(), map(&[("a", "1"), ("b", "2")]));
    eventually("removal acknowledged", WAIT, || hooks.acked(version)).await;

    let clients = server.xds.clients();
    assert_eq!(clients.len(), 1);
    assert_eq!(clients[0].node_id, NODE);
    assert!(clients[0].types[0].wildcard);
    assert_eq!(clients[0].types[0].last_acked_version, Some(version));
    server.stop().await;
}

#[tokio::test]
async fn named_subscription_receives_only_named_resources() {
    let store = ResourceStore::new();
    put(&store, &[("a", "1"), ("b", "1")]);
    let server = start_server(store.clone(), Arc::new(Hooks::default()), any_port()).await;
    let c = start_client(
        server.addr,
        Subscription::named(T, vec!["a".to_owned(), "later".to_owned()]),
        Recorder::default(),
    );
    let h = c.handler.clone();

    eventually("initial named state", WAIT, || {
        h.connected() == 1 && h.state() == map(&[("a", "1")])
    })
    .await;

    put(&store, &[("later", "1")]);
    eventually("later created", WAIT, || h.state().contains_key("later")).await;

    // b changes before a does: once a's change arrived, any b push would have too.
    put(&store, &[("b", "2")]);
    put(&store, &[("a", "2")]);
    eventually("a updated", WAIT, || h.state()["a"] == "2").await;
    assert_eq!(h.state(), map(&[("a", "2"), ("later", "1")]));
    assert!(
        h.deliveries()
            .iter()
            .all(|d| !d.updated.contains(&"b".to_owned())),
        "b was never subscribed: {:?}",
        h.deliveries()
    );

    // Subscriptions change at run time.
    c.client.subscribe(T, vec!["b".to_owned()]);
    eventually("b after subscribing", WAIT, || {
        h.state().get("b").map(String::as_str) == Some("2")
    })
    .await;
    c.client.unsubscribe(T, vec!["a".to_owned()]);
    eventually("a dropped after unsubscribing", WAIT, || {
        !h.state().contains_key("a")
    })
    .await;
    put(&store, &[("a", "3")]);
    put(&store, &[("b", "3")]);
    eventually("b updated", WAIT, || h.state()["b"] == "3").await;
    assert_eq!(h.state(), map(&[("b", "3"), ("later", "1")]));
    assert_eq!(server.xds.clients()[0].types[0].names, vec!["b", "later"]);
    server.stop().await;
}

#[tokio::test]
async fn nack_keeps_previous_state_and_later_update_is_acked() {
    let store = ResourceStore::new();
    let v1 = put(&store, &[("a", "1")]);
    let (good_version, _) = store.get(T, "a").expect("a stored");
    let hooks = Arc::new(Hooks::default());
    let server = start_server(store.clone(), hooks.clone(), any_port()).await;
    let c = start_client(
        server.addr,
        Subscription::wildcard(T),
        Recorder {
            reject_prefix: Some("bad"),
            ..Recorder::default()
        },
    );
    let h = c.handler.clone();
    eventually("initial state acknowledged", WAIT, || hooks.acked(v1)).await;
    assert_eq!(h.state(), map(&[("a", "1")]));

    put(&store, &[("a", "bad value")]);
    let expected = "rejected a: value starts with \"bad\"";
    eventually("NACK seen by the server", WAIT, || {
        hooks
            .log
            .lock()
            .nacks
            .iter()
            .any(|(n, t, e)| n == NODE && t == T && e == expected)
    })
    .await;
    assert_eq!(
        h.state(),
        map(&[("a", "1")]),
        "client keeps its previous state"
    );
    assert_eq!(c.client.held_versions(T)["a"], good_version);
    assert_eq!(
        server.xds.clients()[0].types[0].last_nack.as_deref(),
        Some(expected)
    );

    let v3 = put(&store, &[("a", "2")]);
    eventually("valid update acknowledged", WAIT, || hooks.acked(v3)).await;
    assert_eq!(h.state(), map(&[("a", "2")]));
    assert_eq!(
        c.client.held_versions(T)["a"],
        store.get(T, "a").expect("a stored").0
    );
    server.stop().await;
}

#[tokio::test]
async fn reconnects_after_server_restart_and_receives_only_the_difference() {
    let before = [("a", "1"), ("b", "1"), ("c", "1"), ("d", "1")];
    let store = ResourceStore::new();
    let v1 = put(&store, &before);
    let hooks = Arc::new(Hooks::default());
    let server = start_server(store, hooks.clone(), any_port()).await;
    let addr = server.addr;
    let c = start_client(addr, Subscription::wildcard(T), Recorder::default());
    let h = c.handler.clone();
    eventually("initial state acknowledged", WAIT, || {
        hooks.acked(v1) && h.connected() == 1
    })
    .await;
    assert_eq!(h.state(), map(&before));

    server.stop().await;
    let mark = h.deliveries().len();

    // While the client is disconnected: same content, b changed and c removed.
    let store = ResourceStore::new();
    put(&store, &[("a", "1"), ("b", "2"), ("d", "1")]);
    let hooks = Arc::new(Hooks::default());
    let server = start_server(store, hooks.clone(), addr).await;

    eventually("reconnected with the current state", WAIT, || {
        h.connected() == 2 && h.state() == map(&[("a", "1"), ("b", "2"), ("d", "1")])
    })
    .await;
    assert_eq!(
        h.since(mark),
        (vec!["b".to_owned()], vec!["c".to_owned()]),
        "only the changed resource and the removal are delivered after reconnecting"
    );
    assert_eq!(hooks.log.lock().connects, vec![NODE.to_owned()]);
    assert!(c.client.last_error().is_none());
    server.stop().await;
}

#[tokio::test]
async fn refused_stream_delivers_nothing_and_is_retried() {
    let store = ResourceStore::new();
    put(&store, &[("a", "1")]);
    let hooks = Arc::new(Hooks {
        refuse: true,
        ..Hooks::default()
    });
    let server = start_server(store, hooks.clone(), any_port()).await;
    let c = start_client(server.addr, Subscription::wildcard(T), Recorder::default());

    eventually("client retried after refusals", WAIT, || {
        hooks.log.lock().refused >= 3
    })
    .await;
    let error = c
        .client
        .last_error()
        .expect("the client recorded the refusal");
    assert!(
        error.contains("node node-1 may not connect") && error.contains("permission"),
        "{error}"
    );
    assert!(c.handler.deliveries().is_empty());
    assert_eq!(c.handler.connected(), 0);
    assert!(server.xds.clients().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn stalled_client_does_not_hold_up_the_writer_or_other_clients() {
    use mesh_proto::proto::discovery::DeltaDiscoveryRequest;
    use mesh_proto::proto::discovery::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;

    let store = ResourceStore::new();
    let server = start_server(store.clone(), Arc::new(Hooks::default()), any_port()).await;

    // A client that subscribes, then never reads nor acknowledges anything.
    let mut raw = AggregatedDiscoveryServiceClient::connect(format!("http://{}", server.addr))
        .await
        .expect("connect");
    let (requests, rx) = tokio::sync::mpsc::unbounded_channel();
    requests
        .send(DeltaDiscoveryRequest {
            type_url: T.to_owned(),
            ..DeltaDiscoveryRequest::default()
        })
        .expect("queue subscription");
    let _stalled = raw
        .delta_aggregated_resources(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
        .await
        .expect("stream accepted");

    // Many large writes: far more than any transport buffer could take for that client.
    let big = "x".repeat(256 * 1024);
    let writer = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || {
            let mut version = 0;
            for i in 0..400 {
                let value = format!("{i}{big}");
                version = put(&store, &[(["a", "b", "c", "d"][i % 4], value.as_str())]);
            }
            version
        })
    };
    let last = tokio::time::timeout(WAIT, writer)
        .await
        .expect("writer finished despite the stalled client")
        .expect("writer task");
    assert_eq!(last, 400);

    let c = start_client(server.addr, Subscription::wildcard(T), Recorder::default());
    let h = c.handler.clone();
    eventually("second client has the final state", WAIT, || {
        h.state().get("d").is_some_and(|v| v.starts_with("399"))
    })
    .await;
    assert_eq!(server.xds.clients().len(), 2);
    server.stop().await;
}
