//! Kubernetes mode: the API client (kubeconfig, context), the Gateway API resources as dynamic
//! objects, and reaching a ztunnel's admin port through the API server's port-forward.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use mesh_config::objects::{GATEWAY_GROUP, Gateway, SECURITY_GROUP};
use serde_json::Value;

use crate::http::{self, HttpError};
use crate::istiod::WaypointState;

/// Field manager meshctl writes with.
pub const FIELD_MANAGER: &str = "meshctl";
/// ztunnel's admin port, inside its pod.
pub const ZTUNNEL_ADMIN_PORT: u16 = 15000;
/// istiod's monitoring and debug port.
pub const ISTIOD_MONITORING_PORT: u16 = 15014;
/// Label selector of the ztunnel pods.
pub const ZTUNNEL_SELECTOR: &str = "app=ztunnel";
/// Label selector of the istiod pods.
pub const ISTIOD_SELECTOR: &str = "app=istiod";
/// Label selector of the node agent pods.
pub const CNI_SELECTOR: &str = "k8s-app=istio-cni-node";

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("cannot read kubeconfig {path}: {reason}")]
    Kubeconfig { path: PathBuf, reason: String },
    #[error(
        "no Kubernetes cluster configured ({0}); set KUBECONFIG or --kubeconfig/--context, or \
         use local mode with --config-dir"
    )]
    NoCluster(String),
    #[error("cannot build the Kubernetes client: {0}")]
    Client(String),
    #[error("{what}: {message}")]
    Api {
        what: String,
        message: String,
        /// HTTP status when the API server answered.
        code: Option<u16>,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("port-forward to {pod}: {reason}")]
    PortForward { pod: String, reason: String },
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("{what} is not valid: {source}")]
    Decode {
        what: String,
        source: serde_json::Error,
    },
}

impl KubeError {
    /// Wraps an API error, explaining the usual causes.
    pub fn api(what: impl Into<String>, e: kube::Error) -> Self {
        let what = what.into();
        match e {
            kube::Error::Api(status) => {
                let hint = match status.code {
                    401 => "; your credentials were refused: log in again or check --context",
                    403 => "; you lack the RBAC permission for this: ask a cluster admin",
                    404 if status.reason == "NotFound"
                        && status
                            .message
                            .contains("the server could not find the requested resource") =>
                    {
                        "; the resource type is not served: are its CRDs installed? (`meshctl precheck`)"
                    }
                    _ => "",
                };
                KubeError::Api {
                    what,
                    message: format!("{}{hint}", status.message),
                    code: Some(status.code),
                }
            }
            other => KubeError::Api {
                what,
                message: format!("{other} (is the cluster reachable?)"),
                code: None,
            },
        }
    }

    pub fn code(&self) -> Option<u16> {
        match self {
            KubeError::Api { code, .. } => *code,
            _ => None,
        }
    }
}

/// How to reach the cluster.
#[derive(Clone, Debug, Default)]
pub struct KubeSettings {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub istio_namespace: String,
}

/// A connected client.
#[derive(Clone)]
pub struct KubeEnv {
    pub client: Client,
    pub istio_namespace: String,
}

impl std::fmt::Debug for KubeEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeEnv")
            .field("default_namespace", &self.client.default_namespace())
            .field("istio_namespace", &self.istio_namespace)
            .finish()
    }
}

impl KubeEnv {
    /// Builds the client from the kubeconfig (explicit file, context, or the usual inference).
    pub async fn connect(settings: &KubeSettings) -> Result<Self, KubeError> {
        let options = KubeConfigOptions {
            context: settings.context.clone(),
            ..Default::default()
        };
        let config = match (&settings.kubeconfig, &settings.context) {
            (Some(path), _) => {
                let kc = Kubeconfig::read_from(path).map_err(|e| KubeError::Kubeconfig {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                Config::from_custom_kubeconfig(kc, &options)
                    .await
                    .map_err(|e| KubeError::Kubeconfig {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?
            }
            (None, Some(_)) => Config::from_kubeconfig(&options)
                .await
                .map_err(|e| KubeError::NoCluster(e.to_string()))?,
            (None, None) => Config::infer()
                .await
                .map_err(|e| KubeError::NoCluster(e.to_string()))?,
        };
        let client = Client::try_from(config).map_err(|e| KubeError::Client(e.to_string()))?;
        Ok(KubeEnv {
            client,
            istio_namespace: settings.istio_namespace.clone(),
        })
    }

    pub fn default_namespace(&self) -> &str {
        self.client.default_namespace()
    }

    /// Gateways of one namespace, or of all.
    pub fn gateways(&self, namespace: Option<&str>) -> Api<DynamicObject> {
        dynamic_api(&self.client, &gateway_resource(), namespace)
    }

    /// Sets (`Some`) or removes (`None`) labels of a Namespace.
    pub async fn label_namespace(
        &self,
        name: &str,
        labels: &[(&str, Option<&str>)],
    ) -> Result<Namespace, KubeError> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let map: serde_json::Map<String, Value> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.map_or(Value::Null, Value::from)))
            .collect();
        let patch = serde_json::json!({"metadata": {"labels": map}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| KubeError::api(format!("label namespace {name}"), e))
    }

    pub async fn get_namespace(&self, name: &str) -> Result<Option<Namespace>, KubeError> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        api.get_opt(name)
            .await
            .map_err(|e| KubeError::api(format!("get namespace {name}"), e))
    }

    pub async fn pods(&self, namespace: &str, lp: &ListParams) -> Result<Vec<Pod>, KubeError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        api.list(lp)
            .await
            .map(|l| l.items)
            .map_err(|e| KubeError::api(format!("list pods in {namespace}"), e))
    }

    /// The ztunnel pod running on `node`.
    pub async fn ztunnel_on_node(&self, node: &str) -> Result<Option<Pod>, KubeError> {
        let lp = ListParams::default()
            .labels(ZTUNNEL_SELECTOR)
            .fields(&format!("spec.nodeName={node}"));
        Ok(self
            .pods(&self.istio_namespace, &lp)
            .await?
            .into_iter()
            .next())
    }

    /// Every ztunnel pod.
    pub async fn ztunnels(&self) -> Result<Vec<Pod>, KubeError> {
        self.pods(
            &self.istio_namespace,
            &ListParams::default().labels(ZTUNNEL_SELECTOR),
        )
        .await
    }

    /// `GET path` on a port of a pod, through the API server's port-forward.
    pub async fn get_via_port_forward(
        &self,
        namespace: &str,
        pod: &str,
        port: u16,
        path: &str,
        timeout: Duration,
    ) -> Result<bytes::Bytes, KubeError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let target = format!("{namespace}/{pod}:{port}");
        let work = async {
            let mut pf =
                api.portforward(pod, &[port])
                    .await
                    .map_err(|e| KubeError::PortForward {
                        pod: target.clone(),
                        reason: format!("{e} (you need the pods/portforward permission)"),
                    })?;
            let stream = pf.take_stream(port).ok_or_else(|| KubeError::PortForward {
                pod: target.clone(),
                reason: "no stream for the port".into(),
            })?;
            let body =
                http::get_over(stream, "localhost", path, &format!("pod {target}{path}")).await?;
            pf.abort();
            Ok::<_, KubeError>(body)
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| KubeError::PortForward {
                pod: target.clone(),
                reason: format!("no answer within {timeout:?}"),
            })?
    }
}

/// `gateway.networking.k8s.io/v1` `Gateway`.
pub fn gateway_resource() -> ApiResource {
    resource(GATEWAY_GROUP, "v1", "Gateway", "gateways")
}

/// `gateway.networking.k8s.io/v1` `HTTPRoute`.
pub fn http_route_resource() -> ApiResource {
    resource(GATEWAY_GROUP, "v1", "HTTPRoute", "httproutes")
}

/// `gateway.networking.k8s.io/v1` `GRPCRoute`.
pub fn grpc_route_resource() -> ApiResource {
    resource(GATEWAY_GROUP, "v1", "GRPCRoute", "grpcroutes")
}

/// `security.istio.io/v1` `AuthorizationPolicy`.
pub fn authorization_policy_resource() -> ApiResource {
    resource(
        SECURITY_GROUP,
        "v1",
        "AuthorizationPolicy",
        "authorizationpolicies",
    )
}

/// `security.istio.io/v1` `PeerAuthentication`.
pub fn peer_authentication_resource() -> ApiResource {
    resource(
        SECURITY_GROUP,
        "v1",
        "PeerAuthentication",
        "peerauthentications",
    )
}

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: format!("{group}/{version}"),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// A dynamic API for `ar`, in one namespace or all.
pub fn dynamic_api(
    client: &Client,
    ar: &ApiResource,
    namespace: Option<&str>,
) -> Api<DynamicObject> {
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, ar),
        None => Api::all_with(client.clone(), ar),
    }
}

/// A dynamic object as a typed one (through its JSON form).
pub fn typed<T: serde::de::DeserializeOwned>(obj: &DynamicObject) -> Result<T, KubeError> {
    let what = format!(
        "{} {}/{}",
        obj.types
            .as_ref()
            .map(|t| t.kind.as_str())
            .unwrap_or("object"),
        obj.metadata.namespace.as_deref().unwrap_or(""),
        obj.metadata.name.as_deref().unwrap_or("")
    );
    let v = serde_json::to_value(obj).map_err(|source| KubeError::Decode {
        what: what.clone(),
        source,
    })?;
    serde_json::from_value(v).map_err(|source| KubeError::Decode { what, source })
}

/// A Gateway as a dynamic object, for server-side apply.
pub fn gateway_object(gw: &Gateway) -> Result<Value, KubeError> {
    serde_json::to_value(gw).map_err(|source| KubeError::Decode {
        what: "Gateway".into(),
        source,
    })
}

/// The `Programmed` condition of a Gateway's status.
pub fn gateway_state(obj: &DynamicObject) -> WaypointState {
    let mut entry = obj.data.clone();
    if let Some(map) = entry.as_object_mut() {
        map.insert(
            "metadata".into(),
            serde_json::json!({
                "name": obj.metadata.name,
                "namespace": obj.metadata.namespace,
            }),
        );
    }
    crate::istiod::parse_waypoints(&Value::Array(vec![entry]))
        .into_iter()
        .next()
        .unwrap_or_default()
}

/// Apply (server-side) `gw`.
pub async fn apply_gateway(env: &KubeEnv, gw: &Gateway, force: bool) -> Result<(), KubeError> {
    let ns = gw.metadata.namespace.as_deref().unwrap_or("default");
    let name = gw.metadata.name.as_deref().unwrap_or("");
    let api = env.gateways(Some(ns));
    let mut pp = PatchParams::apply(FIELD_MANAGER);
    if force {
        pp = pp.force();
    }
    match api
        .patch(name, &pp, &Patch::Apply(gateway_object(gw)?))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Err(KubeError::Api {
            what: format!("apply Gateway {ns}/{name}"),
            message: format!(
                "{}; another field manager owns these fields: pass --overwrite to take them over",
                status.message
            ),
            code: Some(409),
        }),
        Err(e) => Err(KubeError::api(format!("apply Gateway {ns}/{name}"), e)),
    }
}

/// The image tag of the first container of a pod (`unknown` without one).
pub fn image_tag(pod: &Pod) -> String {
    let image = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.as_deref())
        .unwrap_or("");
    tag_of(image)
}

/// `1.2.3` of `registry:5000/x/istiod:1.2.3`, the digest for `...@sha256:...`.
pub fn tag_of(image: &str) -> String {
    if let Some((_, digest)) = image.split_once('@') {
        return digest.to_string();
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, tag)) => tag.to_string(),
        None if image.is_empty() => "unknown".into(),
        None => "latest".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_tags() {
        assert_eq!(tag_of("registry:5000/mesh/istiod:0.1.0"), "0.1.0");
        assert_eq!(tag_of("istiod"), "latest");
        assert_eq!(tag_of("x/y@sha256:abc"), "sha256:abc");
        assert_eq!(tag_of(""), "unknown");
    }

    #[test]
    fn gateway_status_reads_programmed() {
        let mut obj = DynamicObject::new("wp", &gateway_resource()).within("shop");
        obj.data = serde_json::json!({"status": {"conditions": [
            {"type": "Programmed", "status": "True", "reason": "Programmed"}]}});
        let st = gateway_state(&obj);
        assert_eq!(st.programmed, Some(true));
        assert_eq!((st.namespace.as_str(), st.name.as_str()), ("shop", "wp"));
    }
}
