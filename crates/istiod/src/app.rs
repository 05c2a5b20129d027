//! Builds and runs the istiod process: the configuration source, the projection loop, the gRPC
//! listeners (xDS + CA), the monitoring endpoints, and in Kubernetes mode the webhook and the
//! leader-elected controllers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use identity::{CaError, CertificateAuthority};
use mesh_config::{ConfigError, ConfigSource, DirSource, Snapshot};
use mesh_proto::xds::{ResourceStore, XdsServer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::ca_auth::CaAuth;
use crate::ca_service::CaService;
use crate::cli::{Args, Config};
use crate::debug::{self, DebugState};
use crate::kube::{ControllerContext, KubeError, KubeRuntime};
use crate::metrics::Metrics;
use crate::node_tokens::{NodeTokens, NodeTokensError};
use crate::server::{self, GrpcServices};
use crate::serving_cert::{SERVING_CERT_TTL, ServingCert, ServingCertError};
use crate::status::ControlPlaneStatus;
use crate::webhook::{self, WebhookStartError, WebhookState};
use crate::xds::Projector;
use crate::xds_hooks::XdsHooks;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("CA in {dir}: {source}")]
    Ca { dir: PathBuf, source: CaError },
    #[error(transparent)]
    NodeTokens(#[from] NodeTokensError),
    #[error(transparent)]
    ServingCert(#[from] ServingCertError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("--source dir needs --config-dir")]
    NoConfigDir,
    #[error(transparent)]
    Kube(#[from] KubeError),
    #[error(transparent)]
    Webhook(#[from] WebhookStartError),
}

/// A running istiod. Dropping it does not stop it; call [`Istiod::shutdown`].
pub struct Istiod {
    grpc_addr: SocketAddr,
    secure_grpc_addr: SocketAddr,
    monitoring_addr: SocketAddr,
    ca: Arc<CertificateAuthority>,
    serving_identity: identity::Identity,
    xds: XdsServer,
    status: Arc<ControlPlaneStatus>,
    snapshot: watch::Receiver<Arc<Snapshot>>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    webhook_addr: Option<SocketAddr>,
    _source: Box<dyn ConfigSource>,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

impl Istiod {
    /// Loads the CA and the configuration, binds every listener and starts serving. The first
    /// configuration is projected before this returns.
    pub async fn start(config: Config) -> Result<Istiod, StartError> {
        identity::install_crypto_provider();
        let metrics = Arc::new(Metrics::new());
        let status = Arc::new(ControlPlaneStatus::default());
        let kube = match &config.kubernetes {
            Some(settings) => Some(KubeRuntime::connect(settings).await?),
            None => None,
        };
        if let Some(kube) = &kube {
            kube.prepare_ca(&config.ca_dir, &config.model.trust_domain)
                .await?;
        }

        let ca = CertificateAuthority::load_or_create(&config.ca_dir, &config.model.trust_domain)
            .map_err(|source| StartError::Ca {
            dir: config.ca_dir.clone(),
            source,
        })?;
        let ca = Arc::new(ca);
        let tokens = match &config.node_tokens {
            Some(path) => Some(NodeTokens::load(path)?),
            None => {
                if kube.is_none() {
                    tracing::warn!(
                        "no --node-tokens file: the CA refuses every certificate request"
                    );
                }
                None
            }
        };
        let serving = ServingCert::new(ca.clone(), &config.model.root_namespace, SERVING_CERT_TTL)?;
        let tls = serving.server_config()?;

        let source: Box<dyn ConfigSource> = match &kube {
            Some(kube) => Box::new(kube.source().await?),
            None => {
                let dir = config.config_dir.clone().ok_or(StartError::NoConfigDir)?;
                Box::new(DirSource::start(dir, config.config_poll_interval)?)
            }
        };
        let snapshot = source.subscribe();
        let auth: CaAuth = match &kube {
            Some(kube) => kube.token_reviewer().into(),
            None => tokens.into(),
        };

        let store = ResourceStore::new();
        let projector = Projector::new(
            store.clone(),
            config.model.clone(),
            status.clone(),
            metrics.clone(),
        );
        projector.project(&snapshot.borrow().clone());

        let xds = XdsServer::new(store, Arc::new(XdsHooks::new(metrics.clone())));
        let ca_service = CaService::new(
            ca.clone(),
            auth,
            snapshot.clone(),
            config.max_workload_cert_ttl,
            metrics.clone(),
        );
        let services = GrpcServices {
            xds: xds.clone(),
            ca: ca_service,
        };

        let grpc = bind(config.grpc_addr).await?;
        let secure = bind(config.secure_grpc_addr).await?;
        let monitoring = bind(config.monitoring_addr).await?;
        let local = |l: &TcpListener, fallback: SocketAddr| l.local_addr().unwrap_or(fallback);
        let grpc_addr = local(&grpc, config.grpc_addr);
        let secure_grpc_addr = local(&secure, config.secure_grpc_addr);
        let monitoring_addr = local(&monitoring, config.monitoring_addr);

        let (shutdown, _) = watch::channel(false);
        let stopped = |tx: &watch::Sender<bool>| {
            let mut rx = tx.subscribe();
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }
        };
        let mut tasks = Vec::new();
        let mut rx = snapshot.clone();
        rx.mark_unchanged();
        let stop = stopped(&shutdown);
        let debounce = config.debounce();
        tasks.push(tokio::spawn(async move {
            tokio::select! {
                _ = projector.run(rx, debounce) => {}
                _ = stop => {}
            }
        }));
        let serving_identity = serving.identity().clone();
        let stop = stopped(&shutdown);
        tasks.push(tokio::spawn(async move {
            tokio::select! {
                _ = serving.run_renewal() => {}
                _ = stop => {}
            }
        }));
        let (svc, stop) = (services.clone(), stopped(&shutdown));
        tasks.push(tokio::spawn(async move {
            if let Err(e) = server::serve_plaintext(grpc, svc, stop).await {
                tracing::error!(error = %e, "plaintext gRPC server failed");
            }
        }));
        let stop = stopped(&shutdown);
        tasks.push(tokio::spawn(async move {
            if let Err(e) = server::serve_tls(secure, tls, services, stop).await {
                tracing::error!(error = %e, "TLS gRPC server failed");
            }
        }));
        let debug_state = DebugState {
            status: status.clone(),
            xds: xds.clone(),
            metrics,
            config: serde_json::to_value(&config).unwrap_or_default(),
        };
        let stop = stopped(&shutdown);
        tasks.push(tokio::spawn(debug::serve(monitoring, debug_state, stop)));
        let webhook_addr = match &config.webhook {
            Some(settings) => {
                let state = WebhookState {
                    model: config.model.clone(),
                    snapshot: snapshot.clone(),
                };
                let (addr, handles) =
                    webhook::start(settings, &config.ca_dir, state, shutdown.subscribe()).await?;
                tasks.extend(handles);
                Some(addr)
            }
            None => None,
        };
        if let Some(kube) = &kube {
            let ctx = ControllerContext {
                root_cert_pem: ca.root_pem(),
                snapshot: snapshot.clone(),
                status: status.clone(),
                model: config.model.clone(),
            };
            tasks.push(kube.spawn_controllers(ctx, shutdown.subscribe()));
        }

        tracing::info!(
            %grpc_addr,
            %secure_grpc_addr,
            %monitoring_addr,
            trust_domain = %config.model.trust_domain,
            "istiod started"
        );
        Ok(Istiod {
            grpc_addr,
            secure_grpc_addr,
            monitoring_addr,
            serving_identity,
            ca,
            xds,
            status,
            snapshot,
            shutdown,
            tasks,
            webhook_addr,
            _source: source,
        })
    }

    /// Address of the plaintext gRPC listener (xDS and CA).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// Address of the TLS gRPC listener (xDS and CA).
    pub fn secure_grpc_addr(&self) -> SocketAddr {
        self.secure_grpc_addr
    }

    /// Address of the validating webhook (HTTPS), when it is served.
    pub fn webhook_addr(&self) -> Option<SocketAddr> {
        self.webhook_addr
    }

    /// Address of the monitoring and debug HTTP listener.
    pub fn monitoring_addr(&self) -> SocketAddr {
        self.monitoring_addr
    }

    /// The CA's root certificate (PEM): the trust anchor of every workload and of istiod.
    pub fn root_cert_pem(&self) -> String {
        self.ca.root_pem()
    }

    /// The SPIFFE identity of istiod's TLS serving certificate.
    pub fn serving_identity(&self) -> &identity::Identity {
        &self.serving_identity
    }

    pub fn xds(&self) -> &XdsServer {
        &self.xds
    }

    pub fn status(&self) -> &ControlPlaneStatus {
        &self.status
    }

    /// The configuration snapshot published last.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// Stops serving: ends xDS streams, closes listeners, waits for the tasks (a few seconds at
    /// most; stragglers are aborted).
    pub async fn shutdown(self) {
        self.xds.shutdown();
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

/// Entry point of the binary: logging, runtime, start, wait for a signal, shut down.
pub fn main(args: Args) -> anyhow::Result<()> {
    mesh_proto::telemetry::init_logging(&args.log_format, &args.log_level)?;
    let config = Config::from_args(&args);
    tracing::info!(config = %serde_json::to_string(&config)?, "starting istiod");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("istiod")
        .build()?;
    runtime.block_on(async move {
        let istiod = Istiod::start(config).await?;
        wait_for_signal().await?;
        tracing::info!("shutting down");
        istiod.shutdown().await;
        Ok(())
    })
}

async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}
