//! The delta ADS client: subscribes, applies responses through a handler, ACKs or NACKs, and
//! reconnects with backoff while keeping its last good state.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use http::uri::Scheme;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::Request;
use tonic::metadata::{MetadataKey, MetadataValue};
use tonic::transport::{Channel, Endpoint};

use super::connector::TlsChannelConnector;
use super::error::XdsError;
use super::stream::WILDCARD;
use crate::proto::discovery::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use crate::proto::discovery::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Node, Resource, Status as RpcStatus,
};

/// Largest response accepted (initial wildcard responses of big meshes are large).
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// `google.rpc.Code.INVALID_ARGUMENT`, sent in NACKs.
const CODE_INVALID_ARGUMENT: i32 = 3;

/// Client-side handler.
pub trait ClientHandler: Send + Sync + 'static {
    /// Applies one response: resources added or changed, and names removed. `Err(text)` makes
    /// the client NACK with that text and keep its previous state (the handler must not have
    /// applied any part of the response). Called from the client task; must not call
    /// [`XdsClient::subscribe`] or [`XdsClient::unsubscribe`].
    fn apply(
        &self,
        type_url: &str,
        updated: Vec<Resource>,
        removed: Vec<String>,
    ) -> Result<(), String>;

    /// Called after a (re)connection completed its initial exchange for every subscribed type.
    fn on_connected(&self) {}
}

/// One type URL to subscribe to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub type_url: String,
    /// Names to subscribe to; empty means every resource of the type (wildcard).
    pub names: Vec<String>,
}

impl Subscription {
    pub fn wildcard(type_url: impl Into<String>) -> Self {
        Self {
            type_url: type_url.into(),
            names: Vec::new(),
        }
    }

    pub fn named(type_url: impl Into<String>, names: Vec<String>) -> Self {
        Self {
            type_url: type_url.into(),
            names,
        }
    }
}

/// Where and how the client connects, and what it subscribes to initially.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `http://host:port` (plaintext) or `https://host:port` (needs `tls`).
    pub endpoint: String,
    /// TLS for the connection; when set, used whatever the endpoint's scheme.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub node: Node,
    pub subscriptions: Vec<Subscription>,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Extra gRPC metadata sent on each stream, e.g. `("authorization", "Bearer ...")`.
    pub metadata: Vec<(String, String)>,
}

impl ClientConfig {
    /// A plaintext configuration with no subscriptions and a 100ms..15s backoff.
    pub fn new(endpoint: impl Into<String>, node: Node) -> Self {
        Self {
            endpoint: endpoint.into(),
            tls: None,
            node,
            subscriptions: Vec::new(),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(15),
            metadata: Vec::new(),
        }
    }
}

/// Delta ADS client. Clones share one state: keep a clone to change subscriptions while
/// another runs [`XdsClient::run`].
#[derive(Clone)]
pub struct XdsClient {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    cfg: ClientConfig,
    handler: Arc<dyn ClientHandler>,
    /// Serialises calls into the handler with the bookkeeping of what it holds.
    apply_lock: Mutex<()>,
    state: Mutex<ClientState>,
}

#[derive(Default)]
struct ClientState {
    subs: BTreeMap<String, SubState>,
    /// What the handler holds: type URL -> name -> version.
    held: HashMap<String, BTreeMap<String, String>>,
    /// Request sender of the live stream, if any.
    live: Option<mpsc::UnboundedSender<DeltaDiscoveryRequest>>,
    /// Why the last connection attempt or stream failed; cleared by the next response.
    last_error: Option<String>,
}

#[derive(Default)]
struct SubState {
    wildcard: bool,
    names: BTreeSet<String>,
}

impl SubState {
    fn covers(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }

    /// Subscription list of the first request of the type on a stream; `None` when nothing is
    /// subscribed (an empty list would mean wildcard).
    fn initial_names(&self) -> Option<Vec<String>> {
        match (self.wildcard, self.names.is_empty()) {
            (true, true) => Some(Vec::new()),
            (true, false) => Some(
                std::iter::once(WILDCARD.to_owned())
                    .chain(self.names.iter().cloned())
                    .collect(),
            ),
            (false, false) => Some(self.names.iter().cloned().collect()),
            (false, true) => None,
        }
    }
}

impl std::fmt::Debug for XdsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdsClient")
            .field("endpoint", &self.inner.cfg.endpoint)
            .field("node", &self.inner.cfg.node.id)
            .finish()
    }
}

impl XdsClient {
    pub fn new(cfg: ClientConfig, handler: Arc<dyn ClientHandler>) -> Self {
        let mut state = ClientState::default();
        for s in &cfg.subscriptions {
            let sub = state.subs.entry(s.type_url.clone()).or_default();
            if s.names.is_empty() {
                sub.wildcard = true;
            }
            sub.names.extend(s.names.iter().cloned());
        }
        Self {
            inner: Arc::new(ClientInner {
                cfg,
                handler,
                apply_lock: Mutex::new(()),
                state: Mutex::new(state),
            }),
        }
    }

    /// Adds named subscriptions (empty `names`: the whole type), on the live stream and for
    /// later reconnections.
    pub fn subscribe(&self, type_url: &str, names: Vec<String>) {
        let mut st = self.inner.state.lock();
        let new_type = !st.subs.contains_key(type_url);
        let sub = st.subs.entry(type_url.to_owned()).or_default();
        let mut added = Vec::new();
        if names.is_empty() {
            if !sub.wildcard {
                sub.wildcard = true;
                added.push(WILDCARD.to_owned());
            }
        } else {
            for n in names {
                if sub.names.insert(n.clone()) {
                    added.push(n);
                }
            }
        }
        if added.is_empty() {
            return;
        }
        let req = if new_type {
            self.initial_request(type_url, &st)
        } else {
            Some(DeltaDiscoveryRequest {
                node: Some(self.inner.cfg.node.clone()),
                type_url: type_url.to_owned(),
                resource_names_subscribe: added,
                ..DeltaDiscoveryRequest::default()
            })
        };
        if let (Some(tx), Some(req)) = (&st.live, req) {
            // A closed stream is fine: the next connection subscribes from the state.
            let _ = tx.send(req);
        }
    }

    /// Removes named subscriptions. The handler is told to remove what it held of them (unless
    /// the type is also subscribed by wildcard).
    pub fn unsubscribe(&self, type_url: &str, names: Vec<String>) {
        let _apply = self.inner.apply_lock.lock();
        let dropped = {
            let mut st = self.inner.state.lock();
            let ClientState {
                subs, held, live, ..
            } = &mut *st;
            let Some(sub) = subs.get_mut(type_url) else {
                return;
            };
            let gone: Vec<String> = names.into_iter().filter(|n| sub.names.remove(n)).collect();
            if gone.is_empty() {
                return;
            }
            if let Some(tx) = live {
                let _ = tx.send(DeltaDiscoveryRequest {
                    node: Some(self.inner.cfg.node.clone()),
                    type_url: type_url.to_owned(),
                    resource_names_unsubscribe: gone.clone(),
                    ..DeltaDiscoveryRequest::default()
                });
            }
            if sub.wildcard {
                Vec::new()
            } else {
                let held = held.entry(type_url.to_owned()).or_default();
                gone.into_iter()
                    .filter(|n| held.remove(n).is_some())
                    .collect()
            }
        };
        if !dropped.is_empty()
            && let Err(error) = self.inner.handler.apply(type_url, Vec::new(), dropped)
        {
            tracing::warn!(type_url, %error, "handler failed to drop unsubscribed resources");
        }
    }

    /// Versions of the resources of one type the handler holds.
    pub fn held_versions(&self, type_url: &str) -> BTreeMap<String, String> {
        self.inner
            .state
            .lock()
            .held
            .get(type_url)
            .cloned()
            .unwrap_or_default()
    }

    /// Why the last connection attempt or stream failed, until a response arrives again
    /// (for readiness and debug endpoints).
    pub fn last_error(&self) -> Option<String> {
        self.inner.state.lock().last_error.clone()
    }

    /// Runs until `shutdown` completes: connect, subscribe, apply, ACK/NACK; on failure
    /// reconnect with exponential backoff and jitter. A reconnection sends the versions the
    /// handler holds, so it keeps its last good state and receives only what changed, plus
    /// removals.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut backoff = Backoff::new(self.inner.cfg.backoff_initial, self.inner.cfg.backoff_max);
        loop {
            let mut progressed = false;
            let error = tokio::select! {
                () = &mut shutdown => break,
                e = self.connect_and_serve(&mut progressed) => e,
            };
            {
                let mut st = self.inner.state.lock();
                st.live = None;
                st.last_error = Some(error.to_string());
            }
            if progressed {
                backoff.reset();
            }
            let delay = backoff.next_delay();
            tracing::warn!(
                endpoint = %self.inner.cfg.endpoint,
                %error,
                retry_in = ?delay,
                "xDS connection failed"
            );
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(delay) => {}
            }
        }
        self.inner.state.lock().live = None;
        tracing::debug!("xDS client stopped");
    }

    /// One connection: returns why it ended. Sets `progressed` once a response arrived.
    async fn connect_and_serve(&self, progressed: &mut bool) -> XdsError {
        match self.serve_once(progressed).await {
            Ok(never) => match never {},
            Err(e) => e,
        }
    }

    async fn serve_once(
        &self,
        progressed: &mut bool,
    ) -> Result<std::convert::Infallible, XdsError> {
        let cfg = &self.inner.cfg;
        let channel = self.connect().await?;
        let mut grpc = AggregatedDiscoveryServiceClient::new(channel)
            .max_decoding_message_size(MAX_RESPONSE_BYTES);

        let (tx, rx) = mpsc::unbounded_channel();
        let mut awaiting: HashSet<String> = HashSet::new();
        {
            let mut st = self.inner.state.lock();
            for type_url in st.subs.keys() {
                if let Some(req) = self.initial_request(type_url, &st) {
                    awaiting.insert(type_url.clone());
                    let _ = tx.send(req);
                }
            }
            st.live = Some(tx.clone());
        }
        let mut request = Request::new(UnboundedReceiverStream::new(rx));
        for (key, value) in &cfg.metadata {
            let invalid = |reason: String| XdsError::InvalidMetadata {
                key: key.clone(),
                reason,
            };
            let k = MetadataKey::from_bytes(key.to_ascii_lowercase().as_bytes())
                .map_err(|e| invalid(e.to_string()))?;
            let v = MetadataValue::try_from(value.as_str()).map_err(|e| invalid(e.to_string()))?;
            request.metadata_mut().insert(k, v);
        }

        let mut inbound = grpc.delta_aggregated_resources(request).await?.into_inner();
        tracing::info!(endpoint = %cfg.endpoint, "xDS stream established");
        loop {
            let Some(resp) = inbound.message().await? else {
                return Err(XdsError::Closed);
            };
            if !*progressed {
                *progressed = true;
                self.inner.state.lock().last_error = None;
            }
            let type_url = resp.type_url.clone();
            let reply = self.handle_response(resp);
            let _ = tx.send(reply);
            if awaiting.remove(&type_url) && awaiting.is_empty() {
                tracing::info!("xDS initial state received");
                self.inner.handler.on_connected();
            }
        }
    }

    /// The first request of a type on a stream, with what the handler holds of it.
    fn initial_request(&self, type_url: &str, st: &ClientState) -> Option<DeltaDiscoveryRequest> {
        let names = st.subs.get(type_url)?.initial_names()?;
        let held = st.held.get(type_url);
        Some(DeltaDiscoveryRequest {
            node: Some(self.inner.cfg.node.clone()),
            type_url: type_url.to_owned(),
            resource_names_subscribe: names,
            initial_resource_versions: held
                .map(|h| h.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
            ..DeltaDiscoveryRequest::default()
        })
    }

    /// Applies one response through the handler; returns the ACK or NACK to send.
    fn handle_response(&self, resp: DeltaDiscoveryResponse) -> DeltaDiscoveryRequest {
        let _apply = self.inner.apply_lock.lock();
        let DeltaDiscoveryResponse {
            resources,
            type_url,
            nonce,
            removed_resources,
            ..
        } = resp;
        let (updated, removed) = {
            let st = self.inner.state.lock();
            let sub = st.subs.get(&type_url);
            let held = st.held.get(&type_url);
            // Drop what a just-sent unsubscribe raced with, and removals of unknown names.
            let updated: Vec<Resource> = resources
                .into_iter()
                .filter(|r| sub.is_some_and(|s| s.covers(&r.name)))
                .collect();
            let removed: Vec<String> = removed_resources
                .into_iter()
                .filter(|n| held.is_some_and(|h| h.contains_key(n)))
                .collect();
            (updated, removed)
        };
        let versions: Vec<(String, String)> = updated
            .iter()
            .map(|r| (r.name.clone(), r.version.clone()))
            .collect();
        let result = if updated.is_empty() && removed.is_empty() {
            Ok(())
        } else {
            self.inner
                .handler
                .apply(&type_url, updated, removed.clone())
        };
        let error_detail = match result {
            Ok(()) => {
                let mut st = self.inner.state.lock();
                let held = st.held.entry(type_url.clone()).or_default();
                for name in &removed {
                    held.remove(name);
                }
                held.extend(versions);
                tracing::debug!(%type_url, %nonce, "ACK");
                None
            }
            Err(error) => {
                tracing::warn!(%type_url, %nonce, %error, "rejecting xDS response (NACK)");
                Some(RpcStatus {
                    code: CODE_INVALID_ARGUMENT,
                    message: error,
                    details: Vec::new(),
                })
            }
        };
        DeltaDiscoveryRequest {
            type_url,
            response_nonce: nonce,
            error_detail,
            ..DeltaDiscoveryRequest::default()
        }
    }

    async fn connect(&self) -> Result<Channel, XdsError> {
        let cfg = &self.inner.cfg;
        let invalid = |reason: String| XdsError::InvalidEndpoint {
            endpoint: cfg.endpoint.clone(),
            reason,
        };
        let uri: Uri = cfg.endpoint.parse().map_err(|e| invalid(format!("{e}")))?;
        let connect_err = |source| XdsError::Connect {
            endpoint: cfg.endpoint.clone(),
            source,
        };
        match &cfg.tls {
            None => {
                if uri.scheme() == Some(&Scheme::HTTPS) {
                    return Err(XdsError::TlsConfigMissing(cfg.endpoint.clone()));
                }
                configure(Endpoint::from(uri))
                    .connect()
                    .await
                    .map_err(connect_err)
            }
            Some(tls) => {
                // The channel itself sees an http URI: TLS is done by our connector.
                let mut parts = uri.clone().into_parts();
                parts.scheme = Some(Scheme::HTTP);
                if parts.path_and_query.is_none() {
                    parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
                }
                let plain = Uri::from_parts(parts).map_err(|e| invalid(format!("{e}")))?;
                let origin = if uri.scheme() == Some(&Scheme::HTTPS) {
                    uri
                } else {
                    plain.clone()
                };
                configure(Endpoint::from(plain).origin(origin))
                    .connect_with_connector(TlsChannelConnector::new(tls.clone()))
                    .await
                    .map_err(connect_err)
            }
        }
    }
}

fn configure(endpoint: Endpoint) -> Endpoint {
    endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
}

/// Exponential backoff with jitter: each delay is drawn from [d/2, d], d doubling up to `max`.
struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        let max = max.max(initial);
        Self {
            initial,
            max,
            current: initial,
        }
    }

    fn reset(&mut self) {
        self.current = self.initial;
    }

    fn next_delay(&mut self) -> Duration {
        let d = self.current;
        self.current = (d * 2).min(self.max);
        d.mul_f64(rand::random_range(0.5..=1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_max_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let caps = [100, 200, 350, 350];
        for cap in caps {
            let d = b.next_delay();
            let cap = Duration::from_millis(cap);
            assert!(
                d >= cap / 2 && d <= cap,
                "{d:?} not within [{:?}, {cap:?}]",
                cap / 2
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn initial_subscription_lists() {
        let wildcard = SubState {
            wildcard: true,
            names: BTreeSet::new(),
        };
        assert_eq!(wildcard.initial_names(), Some(vec![]));
        let named = SubState {
            wildcard: false,
            names: ["b".to_owned(), "a".to_owned()].into(),
        };
        assert_eq!(
            named.initial_names(),
            Some(vec!["a".to_owned(), "b".to_owned()])
        );
        let both = SubState {
            wildcard: true,
            names: ["a".to_owned()].into(),
        };
        assert_eq!(
            both.initial_names(),
            Some(vec!["*".to_owned(), "a".to_owned()])
        );
        // Everything unsubscribed: nothing to send (an empty list would mean wildcard).
        assert_eq!(SubState::default().initial_names(), None);
    }
}
