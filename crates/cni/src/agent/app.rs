//! Builds and runs the cni-agent process: the agent core, the plugin socket, the plugin's
//! installation, and the loop that reconciles on configuration changes, ztunnel (re)connections
//! and a periodic resync.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use mesh_config::{ConfigSource, DirSource};
use mesh_proto::zds::ZdsServerOptions;
use serde::Serialize;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

use super::cli::Args;
use super::install::{self, InstallConfig};
use super::reconcile::{self, Agent, AgentConfig};
use super::rules::RedirectConfig;
use super::server::PluginServer;

/// The effective configuration, logged at start-up.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Effective<'a> {
    node_name: &'a str,
    install: Option<&'a InstallConfig>,
    plugin_socket: &'a PathBuf,
    zds_socket: &'a PathBuf,
    state_dir: &'a PathBuf,
    config_dir: &'a PathBuf,
    netns_dir: &'a PathBuf,
    scan_proc: bool,
    rules: &'a RedirectConfig,
}

pub fn main(args: Args) -> anyhow::Result<()> {
    mesh_proto::telemetry::init_logging(&args.log_format, &args.log_level)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

fn node_name(args: &Args) -> anyhow::Result<String> {
    if let Some(n) = &args.node_name {
        return Ok(n.clone());
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("no --node-name and cannot read the host name")?;
    Ok(host.trim().to_string())
}

fn install_config(args: &Args) -> anyhow::Result<InstallConfig> {
    let plugin_binary = match &args.plugin_binary {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .context("locating this executable")?
            .with_file_name(install::PLUGIN_TYPE),
    };
    Ok(InstallConfig {
        bin_dir: args.cni_bin_dir.clone(),
        conf_dir: args.cni_conf_dir.clone(),
        plugin_binary,
        agent_socket: args.plugin_socket.clone(),
        exclude_namespaces: args.exclude_namespaces.clone(),
        state_dir: args.state_dir.clone(),
    })
}

async fn run(args: Args) -> anyhow::Result<()> {
    let rules = RedirectConfig {
        ipv6: args.ipv6,
        ..RedirectConfig::default()
    };
    let install_cfg = install_config(&args)?;
    if args.uninstall {
        install::uninstall(&install_cfg)?;
        let released = reconcile::release_recorded_pods(&args.state_dir, &rules)?;
        info!(pods = released, "uninstalled");
        return Ok(());
    }
    let node_name = node_name(&args)?;
    let config_dir = args.config_dir.clone().context(
        "--config-dir is required: local mode (a directory of manifests) is the only \
         configuration source of this agent so far",
    )?;
    let effective = Effective {
        node_name: &node_name,
        install: (!args.skip_install).then_some(&install_cfg),
        plugin_socket: &args.plugin_socket,
        zds_socket: &args.zds_socket,
        state_dir: &args.state_dir,
        config_dir: &config_dir,
        netns_dir: &args.netns_dir,
        scan_proc: !args.no_proc_scan,
        rules: &rules,
    };
    info!(config = %serde_json::to_string(&effective)?, "starting cni-agent");

    let source = DirSource::start(config_dir, Duration::from_millis(args.config_poll_ms))?;
    let mut config_rx = source.subscribe();
    let agent = Agent::start(
        AgentConfig {
            node_name,
            state_dir: args.state_dir.clone(),
            zds_socket: args.zds_socket.clone(),
            zds: ZdsServerOptions::default(),
            netns_dir: args.netns_dir.clone(),
            scan_proc: !args.no_proc_scan,
            pod_wait: Duration::from_secs(3),
            rules,
        },
        config_rx.clone(),
    )
    .await?;
    // Listen before chaining the plugin in, so that no pod creation finds the socket missing.
    let _server = PluginServer::start(&args.plugin_socket, agent.clone())?;
    if !args.skip_install {
        ensure_installed(&install_cfg);
    }
    agent.reconcile().await;

    let mut zds_rx = agent.zds_status();
    let mut resync = tokio::time::interval(Duration::from_secs(args.resync_seconds.max(1)));
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            changed = config_rx.changed() => {
                if changed.is_err() {
                    anyhow::bail!("the configuration source stopped");
                }
            }
            changed = zds_rx.changed() => {
                if changed.is_ok() {
                    let st = *zds_rx.borrow_and_update();
                    info!(connected = st.connected, snapshots = st.snapshots, "ztunnel connection changed");
                }
            }
            _ = resync.tick() => {
                if !args.skip_install {
                    ensure_installed(&install_cfg);
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
        agent.reconcile().await;
    }
    info!("shutting down");
    if args.cleanup_on_exit && !args.skip_install {
        install::uninstall(&install_cfg)?;
    }
    drop(agent);
    Ok(())
}

fn ensure_installed(cfg: &InstallConfig) {
    match install::install(cfg) {
        Ok(r) if r.conflist.is_none() => {
            warn!(dir = %cfg.conf_dir.display(), "no CNI configuration to chain into yet")
        }
        Ok(_) => {}
        Err(e) => warn!(error = %e, "cannot install the plugin"),
    }
}
