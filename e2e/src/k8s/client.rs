//! The API client of the suite: the kubeconfig of [`Settings`], checked reachable.

use std::time::Duration;

use kube::Client;
use kube::config::{Config, KubeConfigOptions, Kubeconfig};

use super::{K8sError, Settings};

/// How long the API server has to answer its version at connection time.
const REACH_TIMEOUT: Duration = Duration::from_secs(15);

/// A client for the cluster of `settings.kubeconfig`, after the API server answered.
/// Returns the client and the server's version (`v1.36.3`).
pub async fn connect(settings: &Settings) -> Result<(Client, String), K8sError> {
    identity::tls::install_crypto_provider();
    let bad = |reason: String| K8sError::Kubeconfig {
        path: settings.kubeconfig.clone(),
        reason,
    };
    let kubeconfig = Kubeconfig::read_from(&settings.kubeconfig).map_err(|e| bad(e.to_string()))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| bad(e.to_string()))?;
    let server = config.cluster_url.to_string();
    let client = Client::try_from(config).map_err(|e| bad(e.to_string()))?;
    let unreachable = |reason: String| K8sError::Unreachable {
        kubeconfig: settings.kubeconfig.clone(),
        server: server.clone(),
        reason,
    };
    let info = tokio::time::timeout(REACH_TIMEOUT, client.apiserver_version())
        .await
        .map_err(|_| unreachable(format!("no answer within {REACH_TIMEOUT:?}")))?
        .map_err(|e| unreachable(chain(&e)))?;
    Ok((client, info.git_version))
}

/// An error with its sources, `a: b: c`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}
