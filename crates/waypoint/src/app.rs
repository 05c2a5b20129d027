//! Builds and runs the waypoint process.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use identity::CertificateManager;
use mesh_proto::hbone::Drain;
use mesh_proto::proto::discovery::Node;
use mesh_proto::telemetry::LogHandle;
use mesh_proto::xds::{ClientConfig, XdsClient};
use parking_lot::{Mutex, RwLock};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use ztunnel::ca_client::GrpcCaClient;
use ztunnel::control;
use ztunnel::state::ProxyState;

use crate::admin::{self, Admin};
use crate::cli::Args;
use crate::config::Config;
use crate::discovery::{self, Discovery};
use crate::proxy::{ProxyInputs, ProxySettings, inbound};
use crate::telemetry::{Metrics, Tracer};

pub fn main(args: Args) -> anyhow::Result<()> {
    identity::install_crypto_provider();
    let log = mesh_proto::telemetry::init_logging(&args.log_format, &args.log_level)?;
    let config = Config::from_args(&args)?;
    tracing::info!(config = %serde_json::to_string(&config)?, "starting waypoint {}", env!("CARGO_PKG_VERSION"));
    let rt = tokio::runtime::Builder::new_multi_thread()
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
    let ca_channel = control::channel(&config.ca_address, control_tls.clone())?;
    let certs = CertificateManager::new(
        Arc::new(GrpcCaClient::new(
            ca_channel,
            token_source(config.token_file.as_ref()),
        )),
        roots,
    );

    let tracer = match &config.otlp_endpoint {
        Some(endpoint) => Tracer::otlp(endpoint, format!("{}.{}", config.name, config.namespace))?,
        None => Tracer::disabled(),
    };
    let state = Arc::new(RwLock::new(ProxyState::default()));
    let waypoint = Arc::new(ArcSwapOption::empty());
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let registry = Arc::new(registry);
    let mut settings = ProxySettings::new(config.identity());
    settings.hbone_port = config.hbone_port;
    settings.pool.max_streams_per_conn = config.pool_max_streams;
    let inputs = ProxyInputs::new(
        settings,
        state.clone(),
        waypoint.clone(),
        certs.clone(),
        metrics,
        tracer.clone(),
    );

    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();
    let synced = Arc::new(AtomicBool::new(false));

    // xDS: addresses and this waypoint's configuration.
    let mut xds_cfg = ClientConfig::new(
        config.xds_address.clone(),
        Node {
            id: format!("waypoint~{}~{}", config.resource_name(), config.identity()),
            cluster: "Kubernetes".into(),
            metadata: Some(node_metadata(&config)),
            user_agent_name: "waypoint".into(),
        },
    );
    xds_cfg.tls = control_tls;
    xds_cfg.subscriptions = discovery::subscriptions(&config.resource_name());
    xds_cfg.backoff_max = Duration::from_secs(5);
    if let Some(t) = &token {
        xds_cfg
            .metadata
            .push(("authorization".into(), format!("Bearer {t}")));
    }
    let handler = Discovery::new(
        state,
        config.trust_domain.clone(),
        waypoint,
        config.resource_name(),
        synced.clone(),
    );
    let xds = XdsClient::new(xds_cfg, Arc::new(handler));
    let c = cancel.clone();
    tasks.spawn(async move { xds.run(c.cancelled_owned()).await });

    // Fetch the certificate early, so the first connection does not wait for it.
    {
        let certs = certs.clone();
        let id = config.identity();
        tasks.spawn(async move {
            if let Err(e) = certs.fetch(&id).await {
                tracing::warn!(identity = %id, error = %e, "waypoint certificate not available yet");
            }
        });
    }

    // Data path.
    let (drain_trigger, drain) = Drain::new();
    let listener = TcpListener::bind(config.listen).await?;
    tasks.spawn(inbound::serve(listener, inputs.clone(), drain));

    // Admin, metrics, readiness.
    let admin = Arc::new(Admin {
        config: config.clone(),
        inputs: inputs.clone(),
        log,
        log_level: Mutex::new(log_level),
    });
    let l = TcpListener::bind(config.admin_address).await?;
    tasks.spawn(ztunnel::admin::serve(l, cancel.clone(), move |r| {
        admin.handle(r)
    }));
    let l = TcpListener::bind(config.metrics_address).await?;
    tasks.spawn(ztunnel::admin::serve(
        l,
        cancel.clone(),
        ztunnel::admin::metrics_handler(registry),
    ));
    let l = TcpListener::bind(config.readiness_address).await?;
    tasks.spawn(ztunnel::admin::serve(
        l,
        cancel.clone(),
        admin::readiness_handler(synced, inputs),
    ));
    tracing::info!(listen = %config.listen, admin = %config.admin_address, metrics = %config.metrics_address, readiness = %config.readiness_address, "waypoint running");

    shutdown_signal().await;
    tracing::info!("shutting down: draining connections");
    let drained = drain_trigger.drain();
    cancel.cancel();
    tasks.close();
    let all = async {
        drained.await;
        tasks.wait().await;
    };
    if tokio::time::timeout(Duration::from_secs(10), all)
        .await
        .is_err()
    {
        tracing::warn!("drain timed out; exiting anyway");
    }
    tracer.shutdown();
    tracing::info!("waypoint stopped");
    Ok(())
}

fn node_metadata(config: &Config) -> prost_types::Struct {
    let mut s = prost_types::Struct::default();
    for (k, v) in [
        ("NAMESPACE", config.namespace.as_str()),
        ("WAYPOINT_NAME", config.name.as_str()),
        ("SERVICE_ACCOUNT", config.service_account.as_str()),
    ] {
        s.fields.insert(
            k.into(),
            prost_types::Value {
                kind: Some(prost_types::value::Kind::StringValue(v.into())),
            },
        );
    }
    s
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the waypoint");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// The CA client re-reads the token file for every request (projected tokens rotate).
fn token_source(file: Option<&std::path::PathBuf>) -> ztunnel::ca_client::TokenSource {
    match file {
        Some(p) => ztunnel::ca_client::TokenSource::File(p.clone()),
        None => ztunnel::ca_client::TokenSource::None,
    }
}
