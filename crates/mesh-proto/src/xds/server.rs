//! The delta ADS server: one task per stream, fed by store change notifications.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use futures::Stream;
use identity::Identity;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use super::store::ResourceStore;
use super::stream::{Feedback, StreamState};
use crate::proto::discovery::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use crate::proto::discovery::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, Node};

/// How long a new stream may take to send its first request.
const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request accepted (a reconnecting client lists every resource it holds).
const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;

/// Hooks istiod uses: authorising a stream, observing ACK/NACK.
pub trait ServerHooks: Send + Sync + 'static {
    /// Called on the first request of a stream; `Err(status)` refuses the stream with that
    /// status.
    fn on_connect(
        &self,
        _node: &Node,
        _metadata: &MetadataMap,
        _peer: Option<&Identity>,
    ) -> Result<(), Status> {
        Ok(())
    }

    /// Called for every ACK with the store version the acknowledged response reflected.
    fn on_ack(&self, _node_id: &str, _type_url: &str, _version: u64) {}

    /// Called for every NACK with the client's error text.
    fn on_nack(&self, _node_id: &str, _type_url: &str, _error: &str) {}
}

/// Hooks that accept every stream and ignore ACKs and NACKs.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHooks;

impl ServerHooks for NoHooks {}

/// One connected stream, for debug endpoints.
#[derive(Debug, Clone)]
pub struct ClientStatus {
    /// Server-local stream number.
    pub stream_id: u64,
    pub node_id: String,
    pub cluster: String,
    pub peer: Option<Identity>,
    pub remote_addr: Option<SocketAddr>,
    pub connected_at: SystemTime,
    pub types: Vec<TypeStatus>,
}

/// One type URL of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeStatus {
    pub type_url: String,
    pub wildcard: bool,
    /// Explicitly subscribed names.
    pub names: Vec<String>,
    /// Resources the client holds, as far as the server knows.
    pub resources_sent: usize,
    /// Store version of the last acknowledged response.
    pub last_acked_version: Option<u64>,
    /// Error text of the last NACK.
    pub last_nack: Option<String>,
    /// Nonce of the response awaiting ACK or NACK.
    pub awaiting_ack: Option<String>,
}

type PeerFn = dyn Fn(&http::Extensions) -> Option<Identity> + Send + Sync;

/// Delta ADS server core (implements the tonic `AggregatedDiscoveryService`).
///
/// Every stream gets its own task; store writers only record changed names in the stream's
/// pending set, so a slow client never blocks them. Responses of one type wait for the previous
/// one's ACK or NACK; changes arriving meanwhile are merged into the next response.
#[derive(Clone)]
pub struct XdsServer {
    inner: Arc<ServerInner>,
    peer: Arc<PeerFn>,
}

struct ServerInner {
    store: ResourceStore,
    hooks: Arc<dyn ServerHooks>,
    nonces: AtomicU64,
    next_stream_id: AtomicU64,
    clients: Mutex<BTreeMap<u64, ClientStatus>>,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for XdsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdsServer")
            .field("store", &self.inner.store)
            .field("streams", &self.inner.clients.lock().len())
            .finish()
    }
}

impl XdsServer {
    pub fn new(store: ResourceStore, hooks: Arc<dyn ServerHooks>) -> Self {
        Self {
            inner: Arc::new(ServerInner {
                store,
                hooks,
                nonces: AtomicU64::new(1),
                next_stream_id: AtomicU64::new(1),
                clients: Mutex::new(BTreeMap::new()),
                shutdown: CancellationToken::new(),
            }),
            peer: Arc::new(|ext: &http::Extensions| ext.get::<Identity>().cloned()),
        }
    }

    /// How the authenticated peer of a stream is found in the request extensions. The default
    /// takes an [`Identity`] extension: the simplest way to provide it is a TLS stream type whose
    /// `tonic::transport::server::Connected::ConnectInfo` is the peer's `Identity` (tonic puts
    /// the connect info into every request's extensions); an interceptor works too.
    pub fn with_peer_identity(
        mut self,
        f: impl Fn(&http::Extensions) -> Option<Identity> + Send + Sync + 'static,
    ) -> Self {
        self.peer = Arc::new(f);
        self
    }

    pub fn into_service(self) -> AggregatedDiscoveryServiceServer<Self> {
        AggregatedDiscoveryServiceServer::new(self).max_decoding_message_size(MAX_REQUEST_BYTES)
    }

    pub fn store(&self) -> &ResourceStore {
        &self.inner.store
    }

    /// Connected streams, ordered by stream id.
    pub fn clients(&self) -> Vec<ClientStatus> {
        self.inner.clients.lock().values().cloned().collect()
    }

    /// Ends every stream with `UNAVAILABLE` and refuses new ones, so that the transport's
    /// graceful shutdown can complete (streams otherwise never end on their own).
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
    }
}

type ResponseStream =
    Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for XdsServer {
    type DeltaAggregatedResourcesStream = ResponseStream;

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let inner = &self.inner;
        if inner.shutdown.is_cancelled() {
            return Err(shutting_down());
        }
        let peer = (self.peer)(request.extensions());
        let remote_addr = request.remote_addr();
        let metadata = request.metadata().clone();
        let mut inbound = request.into_inner();

        let first = tokio::select! {
            _ = inner.shutdown.cancelled() => return Err(shutting_down()),
            r = tokio::time::timeout(FIRST_REQUEST_TIMEOUT, inbound.message()) => match r {
                Err(_) => return Err(Status::deadline_exceeded("no discovery request received")),
                Ok(r) => r?.ok_or_else(|| {
                    Status::invalid_argument("stream closed before the first discovery request")
                })?,
            },
        };
        let node = first.node.clone().unwrap_or_default();
        if let Err(status) = inner.hooks.on_connect(&node, &metadata, peer.as_ref()) {
            tracing::warn!(
                node = %node.id,
                peer = ?peer.as_ref().map(Identity::uri),
                ?remote_addr,
                code = ?status.code(),
                message = status.message(),
                "xDS stream refused"
            );
            return Err(status);
        }

        let stream_id = inner.next_stream_id.fetch_add(1, Ordering::Relaxed);
        let status = ClientStatus {
            stream_id,
            node_id: node.id.clone(),
            cluster: node.cluster.clone(),
            peer,
            remote_addr,
            connected_at: SystemTime::now(),
            types: Vec::new(),
        };
        let span = tracing::info_span!("xds_stream", id = stream_id, node = %node.id);
        let (tx, rx) = mpsc::channel(1);
        let stream = ServerStream {
            inner: inner.clone(),
            id: stream_id,
            node_id: node.id,
            tx,
        };
        inner.clients.lock().insert(stream_id, status);
        tokio::spawn(stream.run(first, inbound).instrument(span));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

fn shutting_down() -> Status {
    Status::unavailable("xDS server is shutting down")
}

/// The task serving one stream.
struct ServerStream {
    inner: Arc<ServerInner>,
    id: u64,
    node_id: String,
    tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
}

impl ServerStream {
    async fn run(self, first: DeltaDiscoveryRequest, inbound: Streaming<DeltaDiscoveryRequest>) {
        tracing::info!("xDS stream connected");
        let end = self.serve(first, inbound).await;
        self.inner.clients.lock().remove(&self.id);
        tracing::info!(reason = end, "xDS stream ended");
    }

    async fn serve(
        &self,
        first: DeltaDiscoveryRequest,
        mut inbound: Streaming<DeltaDiscoveryRequest>,
    ) -> &'static str {
        let inner = &*self.inner;
        let watch = inner.store.watch();
        let mut state = StreamState::default();
        let mut request = Some(first);
        loop {
            if let Some(req) = request.take() {
                match state.handle_request(req, &watch) {
                    Ok(feedback) => self.report(feedback),
                    Err(status) => {
                        let _ = self.tx.try_send(Err(status));
                        return "invalid request";
                    }
                }
                self.update_status(&state);
            }
            state.mark_changed(watch.take());
            let mut sent = false;
            while let Some(resp) = state.next_response(&inner.store, &inner.nonces) {
                tracing::debug!(
                    type_url = %resp.type_url,
                    nonce = %resp.nonce,
                    resources = resp.resources.len(),
                    removed = resp.removed_resources.len(),
                    "push"
                );
                tokio::select! {
                    _ = inner.shutdown.cancelled() => return self.end_shutdown(),
                    r = self.tx.send(Ok(resp)) => if r.is_err() {
                        return "client went away";
                    },
                }
                sent = true;
            }
            if sent {
                self.update_status(&state);
            }
            tokio::select! {
                _ = inner.shutdown.cancelled() => return self.end_shutdown(),
                msg = inbound.message() => match msg {
                    Ok(Some(req)) => request = Some(req),
                    Ok(None) => return "client closed the stream",
                    Err(status) => {
                        tracing::debug!(%status, "xDS stream receive error");
                        return "receive error";
                    }
                },
                () = watch.changed() => {}
            }
        }
    }

    fn end_shutdown(&self) -> &'static str {
        let _ = self.tx.try_send(Err(shutting_down()));
        "server shutting down"
    }

    fn report(&self, feedback: Option<Feedback>) {
        match feedback {
            None => {}
            Some(Feedback::Ack { type_url, version }) => {
                tracing::debug!(%type_url, version, "ACK");
                self.inner.hooks.on_ack(&self.node_id, &type_url, version);
            }
            Some(Feedback::Nack { type_url, error }) => {
                tracing::warn!(%type_url, %error, "NACK");
                self.inner.hooks.on_nack(&self.node_id, &type_url, &error);
            }
        }
    }

    fn update_status(&self, state: &StreamState) {
        if let Some(s) = self.inner.clients.lock().get_mut(&self.id) {
            s.types = state.status();
        }
    }
}
