//! What a command runs against: local mode (a configuration directory and the components'
//! endpoints) or a Kubernetes cluster, plus the output format and namespace flags.

use mesh_config::parse::DEFAULT_NAMESPACE;

use crate::cli::GlobalArgs;
use crate::istiod::IstiodClient;
use crate::kube_client::{KubeEnv, KubeError, KubeSettings};
use crate::local::{LocalEnv, LocalError, ZtunnelAdmins};
use crate::output::OutputFormat;

#[derive(Clone, Debug)]
pub enum Mode {
    Local(LocalEnv),
    Kube(KubeSettings),
}

#[derive(Clone, Debug)]
pub struct Ctx {
    pub mode: Mode,
    pub output: OutputFormat,
    /// `-n`, when given.
    pub namespace: Option<String>,
}

impl Ctx {
    /// Local mode when `--config-dir` is given, Kubernetes otherwise.
    pub fn from_args(g: &GlobalArgs) -> Result<Self, LocalError> {
        let mode = match &g.config_dir {
            Some(dir) => Mode::Local(LocalEnv {
                config_dir: dir.clone(),
                istiod: g.istiod_url.as_deref().map(IstiodClient::new),
                ztunnels: ZtunnelAdmins::parse(&g.ztunnel_admin)?,
                cni_status: g.cni_status.clone(),
            }),
            None => Mode::Kube(KubeSettings {
                kubeconfig: g.kubeconfig.clone(),
                context: g.context.clone(),
                istio_namespace: g.istio_namespace.clone(),
            }),
        };
        Ok(Ctx {
            mode,
            output: g.output,
            namespace: g.namespace.clone(),
        })
    }

    /// `-n`, else `default`.
    pub fn local_namespace(&self) -> String {
        self.namespace
            .clone()
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string())
    }

    /// `-n`, else the kubeconfig context's namespace.
    pub fn kube_namespace(&self, kube: &KubeEnv) -> String {
        self.namespace
            .clone()
            .unwrap_or_else(|| kube.default_namespace().to_string())
    }

    /// Connects to the cluster (Kubernetes mode only).
    pub async fn kube(settings: &KubeSettings) -> Result<KubeEnv, KubeError> {
        KubeEnv::connect(settings).await
    }
}
