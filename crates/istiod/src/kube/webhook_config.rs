//! Writes the webhook's CA bundle (the mesh root certificate, which signs the webhook's serving
//! certificate) into `clientConfig.caBundle` of every webhook of the
//! ValidatingWebhookConfiguration the chart installs. Only that field is applied (server-side
//! apply, its own field manager), so the chart keeps owning the rest. Runs on the leader;
//! re-checked periodically, since a chart upgrade may recreate the configuration.

use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

/// Field manager of the CA bundle (distinct from the chart's and the controllers').
const BUNDLE_MANAGER: &str = "istiod-webhook-ca-bundle";
const RECHECK: Duration = Duration::from_secs(60);

/// The apply patch setting `ca_bundle` on every webhook of `config` that lacks it, or `None`
/// when all carry it already.
pub fn bundle_patch(config: &ValidatingWebhookConfiguration, ca_bundle: &[u8]) -> Option<Value> {
    let webhooks = config.webhooks.as_deref().unwrap_or_default();
    let stale = webhooks
        .iter()
        .any(|w| w.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()) != Some(ca_bundle));
    if !stale {
        return None;
    }
    let encoded = serde_json::to_value(ByteString(ca_bundle.to_vec())).ok()?;
    let entries: Vec<Value> = webhooks
        .iter()
        .map(|w| json!({"name": w.name, "clientConfig": {"caBundle": encoded}}))
        .collect();
    Some(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": config.metadata.name},
        "webhooks": entries,
    }))
}

/// Keeps the bundle written until the task is aborted.
pub async fn run(client: Client, name: String, root_pem: String) {
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client);
    let mut missing_logged = false;
    loop {
        match api.get_opt(&name).await {
            Ok(Some(config)) => {
                missing_logged = false;
                if let Some(patch) = bundle_patch(&config, root_pem.as_bytes()) {
                    match api
                        .patch(
                            &name,
                            &PatchParams::apply(BUNDLE_MANAGER).force(),
                            &Patch::Apply(&patch),
                        )
                        .await
                    {
                        Ok(_) => {
                            tracing::info!(webhook_config = %name, "webhook CA bundle written")
                        }
                        Err(e) => {
                            tracing::warn!(webhook_config = %name, error = %e, "cannot write the webhook CA bundle")
                        }
                    }
                }
            }
            Ok(None) => {
                if !missing_logged {
                    tracing::info!(webhook_config = %name, "ValidatingWebhookConfiguration not found; its CA bundle will be written once it exists");
                    missing_logged = true;
                }
            }
            Err(e) => {
                tracing::warn!(webhook_config = %name, error = %e, "cannot read the ValidatingWebhookConfiguration")
            }
        }
        tokio::time::sleep(RECHECK).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(bundle: Option<&[u8]>) -> ValidatingWebhookConfiguration {
        serde_json::from_value(json!({
            "metadata": {"name": "istio-validator-istio-system"},
            "webhooks": [{
                "name": "validation.istio.io",
                "clientConfig": {
                    "service": {"name": "istiod", "namespace": "istio-system", "path": "/validate"},
                    "caBundle": bundle.map(|b| serde_json::to_value(ByteString(b.to_vec())).expect("bytes")),
                },
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
            }],
        }))
        .expect("configuration")
    }

    #[test]
    fn the_bundle_is_applied_only_where_missing_or_stale() {
        let root = b"-----BEGIN CERTIFICATE-----\nroot\n-----END CERTIFICATE-----\n";
        let patch = bundle_patch(&config(None), root).expect("missing bundle");
        assert_eq!(patch["webhooks"][0]["name"], "validation.istio.io");
        let encoded = patch["webhooks"][0]["clientConfig"]["caBundle"]
            .as_str()
            .expect("base64 text");
        let decoded: ByteString = serde_json::from_value(json!(encoded)).expect("base64");
        assert_eq!(decoded.0, root);
        assert!(
            patch["webhooks"][0]["clientConfig"]
                .get("service")
                .is_none(),
            "only the bundle"
        );

        assert!(bundle_patch(&config(Some(b"old root")), root).is_some());
        assert_eq!(bundle_patch(&config(Some(root)), root), None);
    }
}
