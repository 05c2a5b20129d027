//! Simulated ztunnels: delta xDS clients (the mesh's own `XdsClient`) subscribed like a ztunnel
//! (wildcard addresses and authorizations), with a handler that notes when each one receives the
//! workload being waited for. The client ACKs as soon as the handler returns.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use mesh_proto::proto::discovery::{Node, Resource};
use mesh_proto::proto::type_url;
use mesh_proto::proto::workload::{Address, address};
use mesh_proto::xds::{ClientConfig, ClientHandler, Subscription, XdsClient};
use parking_lot::Mutex;
use prost::Message;
use tokio::sync::watch;

/// The workload whose arrival is awaited: this uid with this canonical revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Awaited {
    pub uid: String,
    pub revision: String,
}

/// State shared by every subscriber's handler.
#[derive(Debug, Default)]
pub struct Shared {
    awaited: Mutex<Option<Awaited>>,
    /// Per subscriber: when it received the awaited workload.
    arrivals: Mutex<Vec<Option<Instant>>>,
    /// Per subscriber: address resources held.
    held: Mutex<Vec<usize>>,
}

impl Shared {
    pub fn new(subscribers: usize) -> Arc<Self> {
        Arc::new(Self {
            awaited: Mutex::new(None),
            arrivals: Mutex::new(vec![None; subscribers]),
            held: Mutex::new(vec![0; subscribers]),
        })
    }

    /// Starts waiting for `a`: arrivals are cleared.
    pub fn expect(&self, a: Awaited) {
        let mut arrivals = self.arrivals.lock();
        arrivals.iter_mut().for_each(|x| *x = None);
        *self.awaited.lock() = Some(a);
    }

    /// The last arrival once every subscriber has received the awaited workload.
    pub fn all_arrived(&self) -> Option<Instant> {
        let arrivals = self.arrivals.lock();
        arrivals
            .iter()
            .copied()
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .max()
    }

    pub fn arrived_count(&self) -> usize {
        self.arrivals.lock().iter().filter(|a| a.is_some()).count()
    }

    /// The fewest address resources any subscriber holds.
    pub fn min_held(&self) -> usize {
        self.held.lock().iter().copied().min().unwrap_or(0)
    }
}

struct Handler {
    index: usize,
    shared: Arc<Shared>,
    names: Mutex<HashSet<String>>,
}

impl ClientHandler for Handler {
    fn apply(
        &self,
        type_url: &str,
        updated: Vec<Resource>,
        removed: Vec<String>,
    ) -> Result<(), String> {
        if type_url != type_url::ADDRESS {
            return Ok(());
        }
        let now = Instant::now();
        let awaited = self.shared.awaited.lock().clone();
        if let Some(a) = awaited {
            let hit = updated.iter().any(|r| {
                let Some(any) = &r.resource else { return false };
                match Address::decode(any.value.as_slice()) {
                    Ok(Address {
                        r#type: Some(address::Type::Workload(w)),
                    }) => w.uid == a.uid && w.canonical_revision == a.revision,
                    _ => false,
                }
            });
            if hit {
                let mut arrivals = self.shared.arrivals.lock();
                if let Some(slot) = arrivals.get_mut(self.index) {
                    slot.get_or_insert(now);
                }
            }
        }
        let mut names = self.names.lock();
        for r in updated {
            names.insert(r.name);
        }
        for r in removed {
            names.remove(&r);
        }
        if let Some(h) = self.shared.held.lock().get_mut(self.index) {
            *h = names.len();
        }
        Ok(())
    }
}

fn node(name: &str) -> Node {
    let mut meta = prost_types::Struct::default();
    meta.fields.insert(
        "NODE_NAME".into(),
        prost_types::Value {
            kind: Some(prost_types::value::Kind::StringValue(name.into())),
        },
    );
    Node {
        id: format!("ztunnel~{name}"),
        cluster: "Kubernetes".into(),
        metadata: Some(meta),
        user_agent_name: "mesh-bench".into(),
    }
}

/// Running subscribers; dropping this stops them.
#[derive(Debug)]
pub struct Subscribers {
    pub shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Subscribers {
    /// Starts `n` subscribers against `endpoint` (`http://host:port`), as nodes `node1..n`.
    pub fn start(endpoint: &str, n: usize) -> Self {
        let shared = Shared::new(n);
        let (stop, rx) = watch::channel(false);
        let mut tasks = Vec::new();
        for i in 0..n {
            let mut cfg = ClientConfig::new(endpoint, node(&format!("node{}", i + 1)));
            cfg.subscriptions = vec![
                Subscription::wildcard(type_url::ADDRESS),
                Subscription::wildcard(type_url::AUTHORIZATION),
            ];
            let handler = Arc::new(Handler {
                index: i,
                shared: shared.clone(),
                names: Mutex::new(HashSet::new()),
            });
            let client = XdsClient::new(cfg, handler);
            let mut rx = rx.clone();
            tasks.push(tokio::spawn(async move {
                client
                    .run(async move {
                        let _ = rx.wait_for(|stop| *stop).await;
                    })
                    .await;
            }));
        }
        Self {
            shared,
            stop,
            tasks,
        }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
