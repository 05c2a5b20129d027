//! The agent's Kubernetes API client.

use std::path::{Path, PathBuf};

use kube::config::{InClusterError, KubeConfigOptions, Kubeconfig, KubeconfigError};
use kube::{Client, Config};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        source: KubeconfigError,
    },
    #[error(
        "no Kubernetes API configuration: not in a pod ({in_cluster}) and no usable kubeconfig \
         ({kubeconfig}); run the agent in its DaemonSet or pass --kubeconfig"
    )]
    NoConfig {
        in_cluster: InClusterError,
        kubeconfig: KubeconfigError,
    },
    #[error("cannot build the Kubernetes client: {0}")]
    Build(#[from] kube::Error),
}

/// A client for the cluster: `kubeconfig` when given; otherwise the in-cluster configuration
/// (service account token and `KUBERNETES_SERVICE_HOST`), falling back to `KUBECONFIG` or
/// `~/.kube/config` outside a pod. Installs the process's TLS provider first.
pub async fn connect(kubeconfig: Option<&Path>) -> Result<Client, ClientError> {
    identity::tls::install_crypto_provider();
    let config = match kubeconfig {
        Some(path) => {
            let read_err = |source| ClientError::Kubeconfig {
                path: path.to_path_buf(),
                source,
            };
            let file = Kubeconfig::read_from(path).map_err(read_err)?;
            Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(read_err)?
        }
        None => match Config::incluster() {
            Ok(config) => config,
            Err(in_cluster) => Config::from_kubeconfig(&KubeConfigOptions::default())
                .await
                .map_err(|kubeconfig| ClientError::NoConfig {
                    in_cluster,
                    kubeconfig,
                })?,
        },
    };
    Ok(Client::try_from(config)?)
}
