//! Builds and runs the ztunnel process.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use identity::CertificateManager;
use mesh_proto::proto::discovery::Node;
use mesh_proto::proto::type_url;
use mesh_proto::telemetry::LogHandle;
use mesh_proto::xds::{ClientConfig, Subscription, XdsClient};
use parking_lot::{Mutex, RwLock};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{self, Admin};
use crate::ca_client::GrpcCaClient;
use crate::cli::Args;
use crate::config::Config;
use crate::control;
use crate::inpod::zds::ZdsLoop;
use crate::metrics::Metrics;
use crate::proxy::ProxyInputs;
use crate::state::ProxyState;
use crate::state::local::LocalConfig;
use crate::state::xds::StateUpdater;

pub fn main(args: Args) -> anyhow::Result<()> {
    identity::tls::install_crypto_provider();
    let log = mesh_proto::telemetry::init_logging(&args.log_format, &args.log_level)?;
    let config = Config::from_args(&args)?;
    tracing::info!(config = %serde_json::to_string(&config)?, "starting ztunnel {}", env!("CARGO_PKG_VERSION"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::from(args.worker_threads))
        .enable_all()
        .build()?;
    rt.block_on(run(config, Some(log), args.log_level))
}

/// Runs until SIGTERM or Ctrl-C, then drains.
pub async fn run(config: Config, log: Option<LogHandle>, log_level: String) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let root_pem = config.root_pem()?;
    let roots = root_pem
        .as_deref()
        .map(control::split_pem)
        .transpose()?
        .unwrap_or_default();
    let control_tls = root_pem
        .as_deref()
        .map(|r| control::istiod_tls(r, &config.istiod_identity))
        .transpose()?;
    let token = config.token()?;

    let certs = match &config.local_ca_dir {
        Some(dir) => {
            let ca = Arc::new(identity::CertificateAuthority::load_or_create(
                dir,
                &config.trust_domain,
            )?);
            let local = identity::manager::LocalCa::new(ca, Duration::from_secs(24 * 3600));
            let roots = local.roots_pem();
            CertificateManager::new(Arc::new(local), roots)
        }
        None => {
            let ca_channel = control::channel(&config.ca_address, control_tls.clone())?;
            CertificateManager::new(
                Arc::new(GrpcCaClient::new(
                    ca_channel,
                    token_source(config.token_file.as_ref()),
                )),
                roots,
            )
        }
    };

    let mut initial = ProxyState::default();
    if let Some(path) = &config.local_config {
        LocalConfig::load(path)?.apply(&mut initial, &config.trust_domain)?;
    }
    let state = Arc::new(RwLock::new(initial));
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let registry = Arc::new(registry);
    let inputs = Arc::new(ProxyInputs {
        node: config.node_name.clone(),
        state: state.clone(),
        certs,
        metrics,
        pods: RwLock::new(HashMap::new()),
        pool: mesh_proto::hbone::PoolConfig {
            max_streams_per_conn: config.pool_max_streams,
            ..Default::default()
        },
    });

    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();
    let xds_synced = Arc::new(AtomicBool::new(false));
    let zds_synced = Arc::new(AtomicBool::new(false));

    // xDS: workloads, services and policies from istiod.
    let mut xds_cfg = ClientConfig::new(
        config.xds_address.clone(),
        Node {
            id: format!("ztunnel~{}", config.node_name),
            cluster: "Kubernetes".into(),
            metadata: Some(node_metadata(&config.node_name)),
            user_agent_name: "ztunnel".into(),
        },
    );
    xds_cfg.tls = control_tls;
    xds_cfg.subscriptions = vec![
        Subscription::wildcard(type_url::ADDRESS),
        Subscription::wildcard(type_url::AUTHORIZATION),
    ];
    xds_cfg.backoff_max = Duration::from_secs(5);
    if let Some(t) = &token {
        xds_cfg
            .metadata
            .push(("authorization".into(), format!("Bearer {t}")));
    }
    let updater = StateUpdater::new(
        state.clone(),
        config.trust_domain.clone(),
        xds_synced.clone(),
    );
    if config.local_config.is_some() {
        tracing::info!("static local mode: no xDS");
        xds_synced.store(true, std::sync::atomic::Ordering::Release);
    } else {
        let xds = XdsClient::new(xds_cfg, Arc::new(updater));
        let c = cancel.clone();
        tasks.spawn(async move { xds.run(c.cancelled_owned()).await });
    }

    // ZDS: pods from the node agent.
    let zds = ZdsLoop {
        inputs: inputs.clone(),
        socket: config.zds_socket.clone(),
        trust_domain: config.trust_domain.clone(),
        synced: zds_synced.clone(),
    };
    tasks.spawn(zds.run(cancel.clone()));

    // Admin, metrics, readiness.
    let admin = Arc::new(Admin {
        config: config.clone(),
        inputs: inputs.clone(),
        log,
        log_level: Mutex::new(log_level),
    });
    let l = TcpListener::bind(config.admin_address).await?;
    tasks.spawn(admin::serve(l, cancel.clone(), move |r| admin.handle(r)));
    let l = TcpListener::bind(config.metrics_address).await?;
    tasks.spawn(admin::serve(
        l,
        cancel.clone(),
        admin::metrics_handler(registry),
    ));
    let l = TcpListener::bind(config.readiness_address).await?;
    tasks.spawn(admin::serve(
        l,
        cancel.clone(),
        admin::readiness_handler(xds_synced, zds_synced),
    ));
    tracing::info!(admin = %config.admin_address, metrics = %config.metrics_address, readiness = %config.readiness_address, "ztunnel running");

    shutdown_signal().await;
    tracing::info!("shutting down: draining connections");
    cancel.cancel();
    tasks.close();
    if tokio::time::timeout(Duration::from_secs(10), tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("drain timed out; exiting anyway");
    }
    tracing::info!("ztunnel stopped");
    Ok(())
}

fn node_metadata(node: &str) -> prost_types::Struct {
    let mut s = prost_types::Struct::default();
    s.fields.insert(
        "NODE_NAME".into(),
        prost_types::Value {
            kind: Some(prost_types::value::Kind::StringValue(node.into())),
        },
    );
    s
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// The CA client re-reads the token file for every request (projected tokens rotate).
fn token_source(file: Option<&std::path::PathBuf>) -> crate::ca_client::TokenSource {
    match file {
        Some(p) => crate::ca_client::TokenSource::File(p.clone()),
        None => crate::ca_client::TokenSource::None,
    }
}
