//! istiod on a Kubernetes API server.
//!
//! Every replica:
//! - reads its configuration from the API server ([`mesh_config::KubeSource`]);
//! - shares one root CA with the others through a Secret ([`ca_secret`]);
//! - authenticates CA callers with TokenReview ([`token_review`]);
//! - serves xDS, the CA and the validating webhook.
//!
//! The replica elected through a Lease ([`leader`]) also runs the controllers: the waypoint
//! deployment controller ([`waypoint`]), the `istio-waypoint` GatewayClass ([`gateway_class`]),
//! the status of AuthorizationPolicies and PeerAuthentications ([`policy_status`]) and of
//! HTTPRoutes and GRPCRoutes ([`route_status`]), the root
//! certificate ConfigMap in every namespace ([`root_cert`]) and the webhook's CA bundle
//! ([`webhook_config`]). They stop when leadership is lost.
//!
//! What a deployment must give istiod (the chart's side of the contract):
//! - environment `POD_NAME` and `POD_NAMESPACE` (downward API); a writable `--ca-dir`
//!   (emptyDir) unless a CA is mounted there with `--ca-secret=""`;
//! - a Service named `--istiod-service` (`istiod`) exposing 15010, 15012, 15014 and 15017;
//! - a ValidatingWebhookConfiguration named `--webhook-config-name`
//!   (`istio-validator-<namespace>`) calling `/validate` on that Service for
//!   `security.istio.io` CREATE/UPDATE, `admissionReviewVersions: [v1]`, without `caBundle`
//!   (istiod writes it);
//! - RBAC, cluster-wide: get/list/watch namespaces, pods, services, nodes, gatewayclasses,
//!   gateways, httproutes, grpcroutes, authorizationpolicies, peerauthentications,
//!   deployments and configmaps; create tokenreviews; patch/create configmaps,
//!   serviceaccounts, services and deployments (waypoints, root certificate); create and
//!   update gatewayclasses; update/patch `gateways/status`, `gatewayclasses/status`,
//!   `authorizationpolicies/status`, `peerauthentications/status`; update `gateways/finalizers`
//!   (owner references that block deletion); get/patch validatingwebhookconfigurations;
//! - RBAC in istiod's namespace: get/create/update leases (coordination.k8s.io) and get/create
//!   secrets (the CA Secret);
//! - with `--owner-cluster-role`: get on that ClusterRole, which then owns the objects istiod
//!   creates at run time ([`owner`]), so that uninstalling removes them.

pub mod ca_secret;
pub mod conditions;
pub mod gateway_class;
pub mod leader;
pub mod owner;
pub mod policy_status;
pub mod root_cert;
pub mod route_status;
pub mod settings;
pub mod status_writer;
pub mod token_review;
pub mod waypoint;
pub mod webhook_config;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DynamicObject, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use mesh_config::{KubeSource, KubeSourceError, KubeSourceOptions, Snapshot};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::model::ModelConfig;
use crate::status::ControlPlaneStatus;
use settings::KubeSettings;
use token_review::TokenReviewer;
use waypoint::desired::WaypointSettings;

pub use ca_secret::CaSecretError;

/// Field manager of everything istiod applies.
pub const FIELD_MANAGER: &str = "istiod";
/// Delay between checks for an API that is not served yet.
const NOT_SERVED_RECHECK: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("cannot read kubeconfig {path}: {reason}")]
    Kubeconfig { path: PathBuf, reason: String },
    #[error(
        "no Kubernetes configuration found ({0}): give --kubeconfig, run in a pod, or serve a \
         directory with --config-dir"
    )]
    NoConfig(String),
    #[error("cannot build the Kubernetes client: {0}")]
    Client(String),
    #[error(transparent)]
    Source(#[from] KubeSourceError),
    #[error(transparent)]
    CaSecret(#[from] CaSecretError),
    #[error(transparent)]
    Owner(#[from] owner::OwnerError),
}

/// A connection to the API server and what istiod does with it.
#[derive(Clone)]
pub struct KubeRuntime {
    client: Client,
    settings: KubeSettings,
    /// Owner of the objects istiod creates at run time (`--owner-cluster-role`).
    owner: Option<OwnerReference>,
}

/// What the leader's controllers need from the rest of istiod.
pub struct ControllerContext {
    pub root_cert_pem: String,
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    pub status: Arc<ControlPlaneStatus>,
    pub model: ModelConfig,
}

impl KubeRuntime {
    /// Builds the client: the kubeconfig given, else in-cluster, else the usual inference.
    pub async fn connect(settings: &KubeSettings) -> Result<Self, KubeError> {
        let config = match &settings.kubeconfig {
            Some(path) => {
                let bad = |reason: String| KubeError::Kubeconfig {
                    path: path.clone(),
                    reason,
                };
                let kc = Kubeconfig::read_from(path).map_err(|e| bad(e.to_string()))?;
                Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                    .await
                    .map_err(|e| bad(e.to_string()))?
            }
            None => Config::infer()
                .await
                .map_err(|e| KubeError::NoConfig(e.to_string()))?,
        };
        tracing::info!(api_server = %config.cluster_url, "connecting to the Kubernetes API server");
        let client = Client::try_from(config).map_err(|e| KubeError::Client(e.to_string()))?;
        let owner = match &settings.owner_cluster_role {
            Some(name) => Some(owner::cluster_role_owner(&client, name).await?),
            None => None,
        };
        Ok(KubeRuntime {
            client,
            settings: settings.clone(),
            owner,
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn settings(&self) -> &KubeSettings {
        &self.settings
    }

    /// Makes `ca_dir` hold the root shared through the CA Secret (when one is configured).
    pub async fn prepare_ca(&self, ca_dir: &Path, trust_domain: &str) -> Result<(), KubeError> {
        if let Some(name) = &self.settings.ca_secret {
            ca_secret::sync_root(
                &self.client,
                &self.settings.namespace,
                name,
                ca_dir,
                trust_domain,
                self.owner.as_ref(),
            )
            .await?;
        }
        Ok(())
    }

    /// Starts watching the configuration; returns once every kind is listed.
    pub async fn source(&self) -> Result<KubeSource, KubeError> {
        let options = KubeSourceOptions {
            sync_timeout: self.settings.sync_timeout,
            ..Default::default()
        };
        Ok(KubeSource::start(self.client.clone(), options).await?)
    }

    pub fn token_reviewer(&self) -> TokenReviewer {
        TokenReviewer::new(self.client.clone(), self.settings.token_review.clone())
    }

    fn waypoint_settings(&self, model: &ModelConfig) -> WaypointSettings {
        WaypointSettings {
            image: self.settings.waypoint_image.clone(),
            image_pull_policy: self.settings.waypoint_image_pull_policy.clone(),
            trust_domain: model.trust_domain.clone(),
            xds_address: self
                .settings
                .waypoint_xds_address
                .clone()
                .unwrap_or_else(|| format!("https://{}:15012", self.settings.istiod_host())),
            istiod_identity: identity::Identity::new(
                &model.trust_domain,
                &model.root_namespace,
                "istiod",
            )
            .uri(),
            token_audience: self.settings.token_review.audience.clone(),
        }
    }

    /// Campaigns for leadership and runs the controllers while leading, until `stop` turns
    /// true. Returns the task; it releases the lease before it ends.
    pub fn spawn_controllers(
        &self,
        ctx: ControllerContext,
        stop: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        let (leader_tx, leader_rx) = watch::channel(false);
        let elector = leader::LeaderElector::new(
            self.client.clone(),
            &self.settings.namespace,
            &self.settings.leader_lease,
            &self.settings.pod_name,
            self.settings.leader_lease_duration,
            self.owner.clone(),
        );
        let runtime = self.clone();
        let ctx = Arc::new(ctx);
        tokio::spawn(async move {
            let supervisor = tokio::spawn(lead(runtime, ctx, leader_rx));
            elector.run(leader_tx, stop).await;
            // Leadership ended (released): the supervisor has stopped the controllers.
            supervisor.abort();
        })
    }

    /// The controllers the leader runs.
    fn start_controllers(&self, ctx: &ControllerContext) -> Vec<JoinHandle<()>> {
        let client = &self.client;
        let mut tasks = vec![
            tokio::spawn(root_cert::run(
                client.clone(),
                ctx.root_cert_pem.clone(),
                self.owner.clone(),
            )),
            tokio::spawn(status_writer::run(
                client.clone(),
                ctx.snapshot.clone(),
                ctx.status.clone(),
                policy_status::PolicyStatuses,
            )),
            tokio::spawn(status_writer::run(
                client.clone(),
                ctx.snapshot.clone(),
                ctx.status.clone(),
                route_status::RouteStatuses,
            )),
        ];
        if self.settings.waypoint_controller {
            let class = gateway_class::ClassSettings {
                create: self.settings.create_gateway_class,
                owner: self.owner.clone(),
            };
            tasks.push(tokio::spawn(gateway_class::run(client.clone(), class)));
            let wctx = waypoint::Context {
                client: client.clone(),
                settings: self.waypoint_settings(&ctx.model),
                status: ctx.status.clone(),
            };
            tasks.push(tokio::spawn(waypoint::run(Arc::new(wctx))));
        }
        if let Some(name) = &self.settings.webhook_config_name {
            tasks.push(tokio::spawn(webhook_config::run(
                client.clone(),
                name.clone(),
                ctx.root_cert_pem.clone(),
            )));
        }
        tasks
    }
}

/// Starts the controllers on each gain of leadership and stops them on each loss.
async fn lead(
    runtime: KubeRuntime,
    ctx: Arc<ControllerContext>,
    mut leader: watch::Receiver<bool>,
) {
    loop {
        if leader.wait_for(|l| *l).await.is_err() {
            return;
        }
        tracing::info!("starting the controllers");
        let tasks = runtime.start_controllers(&ctx);
        let lost = leader.wait_for(|l| !*l).await.is_err();
        tracing::info!("stopping the controllers");
        for task in &tasks {
            task.abort();
        }
        if lost {
            return;
        }
    }
}

/// Waits until the API server serves the resource of `api` (its CRD may be installed later).
pub(crate) async fn wait_until_served(api: &Api<DynamicObject>, what: &str) {
    let mut logged = false;
    loop {
        match api.list(&ListParams::default().limit(1)).await {
            Ok(_) => {
                if logged {
                    tracing::info!(api = what, "now served");
                }
                return;
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {
                if !logged {
                    tracing::warn!(
                        api = what,
                        "not served (CRDs not installed?); waiting for it"
                    );
                    logged = true;
                }
            }
            Err(e) => tracing::warn!(api = what, error = %e, "cannot check whether it is served"),
        }
        tokio::time::sleep(NOT_SERVED_RECHECK).await;
    }
}
