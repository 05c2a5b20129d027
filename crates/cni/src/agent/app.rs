//! Builds and runs the cni-agent process: the configuration source (a directory of manifests,
//! or the API server), the agent core, the plugin socket, the plugin's installation, the loop
//! that reconciles on configuration changes, ztunnel (re)connections and a periodic resync,
//! and the clean-up when the process is stopped.
//!
//! Stopping (SIGTERM/SIGINT). Without `--cleanup-on-exit` nothing is undone. With it:
//!
//! - uninstall (Kubernetes mode, the agent's DaemonSet is gone or being deleted, see
//!   [`lifecycle`]): the plugin is taken out of the CNI configuration and its binary removed,
//!   every enrolled pod is released (redirect rules removed, ztunnel told), the redirection
//!   annotation is removed from the node's pods, and the state files are deleted;
//! - any other stop (an upgrade, an eviction, local mode): the plugin is taken out and its
//!   binary removed unless `--keep-chained-on-exit`; enrolled pods keep their rules and
//!   ztunnel keeps serving them; the next agent adopts them from its state directory. Pods
//!   created meanwhile start without the plugin and are enrolled by that next agent, which
//!   finds their network namespace by address.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use mesh_config::{ConfigSource, DirSource};
use mesh_proto::zds::ZdsServerOptions;
use serde::Serialize;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tracing::{info, warn};

use super::cli::Args;
use super::install::{self, InstallConfig};
use super::k8s::annotate::{self, Annotator};
use super::k8s::lifecycle::{self, Exit, ExitKind};
use super::k8s::{self, KubeSource};
use super::reconcile::{self, Agent, AgentConfig};
use super::rules::RedirectConfig;
use super::server::PluginServer;
use super::state;

/// Where the Pods and Namespaces come from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
enum Mode {
    /// A directory of manifests.
    Local { config_dir: PathBuf },
    /// The API server.
    Kubernetes { kubeconfig: Option<PathBuf> },
}

impl Mode {
    fn of(args: &Args) -> anyhow::Result<Self> {
        match (&args.config_dir, args.kubernetes) {
            (Some(dir), false) => Ok(Mode::Local {
                config_dir: dir.clone(),
            }),
            (None, true) => Ok(Mode::Kubernetes {
                kubeconfig: args.kubeconfig.clone(),
            }),
            _ => anyhow::bail!(
                "choose a configuration source: --kubernetes (the API server) or --config-dir \
                 (local mode, a directory of manifests)"
            ),
        }
    }
}

/// The effective configuration, logged at start-up.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Effective<'a> {
    node_name: &'a str,
    mode: &'a Mode,
    install: Option<&'a InstallConfig>,
    plugin_socket: &'a PathBuf,
    zds_socket: &'a PathBuf,
    state_dir: &'a PathBuf,
    netns_dir: &'a PathBuf,
    proc_dir: Option<&'a PathBuf>,
    cleanup_on_exit: bool,
    keep_chained_on_exit: bool,
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

/// SIGTERM and SIGINT.
struct Stop {
    term: Signal,
    int: Signal,
}

impl Stop {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// `--uninstall`: plugin, rules of the recorded pods, and with `--kubernetes` the annotations.
async fn uninstall_now(
    args: &Args,
    install_cfg: &InstallConfig,
    rules: &RedirectConfig,
) -> anyhow::Result<()> {
    install::uninstall(install_cfg)?;
    let released = reconcile::release_recorded_pods(&args.state_dir, rules)?;
    let mut annotations = 0;
    if args.kubernetes {
        let client = k8s::connect(args.kubeconfig.as_deref()).await?;
        annotations = annotate::clear_node(&client, &node_name(args)?).await?;
    }
    state::remove_state(&args.state_dir)?;
    info!(pods = released, annotations, "uninstalled");
    Ok(())
}

async fn run(args: Args) -> anyhow::Result<()> {
    let rules = RedirectConfig {
        ipv6: args.ipv6,
        ..RedirectConfig::default()
    };
    let install_cfg = install_config(&args)?;
    if args.uninstall {
        return uninstall_now(&args, &install_cfg, &rules).await;
    }
    let mode = Mode::of(&args)?;
    let node_name = node_name(&args)?;
    let proc_dir = (!args.no_proc_scan).then(|| args.proc_dir.clone());
    let effective = Effective {
        node_name: &node_name,
        mode: &mode,
        install: (!args.skip_install).then_some(&install_cfg),
        plugin_socket: &args.plugin_socket,
        zds_socket: &args.zds_socket,
        state_dir: &args.state_dir,
        netns_dir: &args.netns_dir,
        proc_dir: proc_dir.as_ref(),
        cleanup_on_exit: args.cleanup_on_exit,
        keep_chained_on_exit: args.keep_chained_on_exit,
        rules: &rules,
    };
    info!(config = %serde_json::to_string(&effective)?, "starting cni-agent");
    let mut stop = Stop::new()?;

    let (source, client): (Box<dyn ConfigSource>, Option<kube::Client>) = match &mode {
        Mode::Local { config_dir } => {
            let poll = Duration::from_millis(args.config_poll_ms);
            (Box::new(DirSource::start(config_dir.clone(), poll)?), None)
        }
        Mode::Kubernetes { kubeconfig } => {
            let client = k8s::connect(kubeconfig.as_deref()).await?;
            let source = KubeSource::start(client.clone(), &node_name);
            tokio::select! {
                _ = wait_synced(&source) => {}
                _ = stop.recv() => {
                    info!("stopped before the first list of pods and namespaces");
                    return Ok(());
                }
            }
            (Box::new(source), Some(client))
        }
    };
    let mut config_rx = source.subscribe();
    let agent = Agent::start(
        AgentConfig {
            node_name: node_name.clone(),
            state_dir: args.state_dir.clone(),
            zds_socket: args.zds_socket.clone(),
            zds: ZdsServerOptions::default(),
            netns_dir: args.netns_dir.clone(),
            proc_dir,
            pod_wait: Duration::from_secs(3),
            rules: rules.clone(),
        },
        config_rx.clone(),
    )
    .await?;
    // Listen before chaining the plugin in, so that no pod creation finds the socket missing.
    let server = PluginServer::start(&args.plugin_socket, agent.clone())?;
    if !args.skip_install {
        ensure_installed(&install_cfg);
    }
    agent.reconcile().await;
    let annotator = client.clone().map(|client| {
        tokio::spawn(Annotator::new(client).run(source.subscribe(), agent.enrolled()))
    });

    let mut zds_rx = agent.zds_status();
    let mut resync = tokio::time::interval(Duration::from_secs(args.resync_seconds.max(1)));
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
            _ = stop.recv() => break,
        }
        agent.reconcile().await;
    }
    info!("shutting down");
    if let Some(task) = annotator {
        task.abort();
    }
    if !args.cleanup_on_exit {
        return Ok(());
    }
    let exit = match (&client, &args.pod_namespace, &args.pod_name) {
        (Some(client), Some(ns), Some(pod)) => lifecycle::detect(client, ns, pod).await,
        (Some(_), _, _) => Exit::restart("the agent's pod is unknown (POD_NAME, POD_NAMESPACE)"),
        (None, _, _) => Exit::restart("local mode"),
    };
    info!(exit = %exit, "cleaning up");
    let unchain = exit.kind == ExitKind::Uninstall || !args.keep_chained_on_exit;
    if unchain && !args.skip_install {
        // First, so that no pod creation reaches the agent any more.
        if let Err(e) = install::uninstall(&install_cfg) {
            warn!(error = %e, "cannot take the plugin out of the CNI configuration");
        }
    }
    if exit.kind == ExitKind::Uninstall {
        drop(server);
        let released = agent.release_all().await;
        let annotations = match &client {
            Some(client) => annotate::clear_node(client, &node_name)
                .await
                .unwrap_or_else(|e| {
                    warn!(error = %e, "cannot remove the redirection annotations");
                    0
                }),
            None => 0,
        };
        drop(agent);
        if let Err(e) = state::remove_state(&args.state_dir) {
            warn!(error = %e, "cannot remove the state files");
        }
        info!(pods = released, annotations, "uninstalled from the node");
    }
    Ok(())
}

/// Waits for the first complete snapshot, saying so while it takes long.
async fn wait_synced(source: &KubeSource) {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), source.synced()).await {
            Ok(()) => return,
            Err(_) => warn!("still waiting for the API server to list pods and namespaces"),
        }
    }
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("cni-agent").chain(args.iter().copied()))
    }

    #[test]
    fn the_configuration_source_is_chosen_explicitly() {
        let kube = parse(&["--kubernetes", "--kubeconfig", "/etc/kc"]).expect("kubernetes");
        assert_eq!(
            Mode::of(&kube).expect("mode"),
            Mode::Kubernetes {
                kubeconfig: Some("/etc/kc".into())
            }
        );
        let local = parse(&["--config-dir", "/srv/mesh"]).expect("local");
        assert_eq!(
            Mode::of(&local).expect("mode"),
            Mode::Local {
                config_dir: "/srv/mesh".into()
            }
        );
        let neither = parse(&[]).expect("no source");
        let err = Mode::of(&neither).expect_err("a source is required");
        assert!(
            err.to_string().contains("--kubernetes") && err.to_string().contains("--config-dir"),
            "{err}"
        );
        let both = parse(&["--kubernetes", "--config-dir", "/srv/mesh"]).expect_err("both");
        assert_eq!(both.kind(), clap::error::ErrorKind::ArgumentConflict);
        let stray = parse(&["--kubeconfig", "/etc/kc"]).expect_err("kubeconfig alone");
        assert_eq!(
            stray.kind(),
            clap::error::ErrorKind::MissingRequiredArgument
        );
    }

    #[test]
    fn kubernetes_flags_default_for_a_daemonset() {
        let args = parse(&["--kubernetes"]).expect("parse");
        assert_eq!(args.proc_dir, PathBuf::from("/proc"));
        assert_eq!(args.netns_dir, PathBuf::from("/var/run/netns"));
        assert!(!args.cleanup_on_exit && !args.keep_chained_on_exit);
        let args = parse(&[
            "--kubernetes",
            "--proc-dir",
            "/host/proc",
            "--cleanup-on-exit",
            "--keep-chained-on-exit",
        ])
        .expect("parse");
        assert_eq!(args.proc_dir, PathBuf::from("/host/proc"));
        assert!(args.cleanup_on_exit && args.keep_chained_on_exit);
    }
}
