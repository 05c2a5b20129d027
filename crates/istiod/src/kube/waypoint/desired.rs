//! The objects that run a waypoint, as a pure function of its Gateway: a ServiceAccount, a
//! Deployment of the waypoint proxy and a Service, each named like the Gateway and owned by it
//! (deleting the Gateway deletes them).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, HTTPGetAction,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ProjectedVolumeSource,
    ResourceRequirements, SecurityContext, Service, ServiceAccount, ServiceAccountTokenProjection,
    ServicePort, ServiceSpec, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mesh_config::objects::{GATEWAY_GROUP, Gateway};
use mesh_config::{DATAPLANE_MODE, GATEWAY_NAME_LABEL};
use serde::Serialize;

/// Label marking the objects this controller manages (Istio's value).
pub const MANAGED_LABEL: &str = "gateway.istio.io/managed";
pub const MANAGED_VALUE: &str = "istio.io-mesh-controller";
/// ConfigMap holding the mesh root certificate, published in every namespace.
pub const ROOT_CERT_CONFIGMAP: &str = "istio-ca-root-cert";
/// Key of the root certificate in [`ROOT_CERT_CONFIGMAP`].
pub const ROOT_CERT_KEY: &str = "root-cert.pem";
/// Where the waypoint container finds the root certificate and its token.
pub const ROOT_CERT_DIR: &str = "/var/run/secrets/istio";
pub const TOKEN_DIR: &str = "/var/run/secrets/tokens";
pub const TOKEN_FILE: &str = "istio-token";
/// Lifetime of the projected token (the kubelet refreshes it at 80 %).
const TOKEN_EXPIRATION_SECONDS: i64 = 43_200;
/// Ports of a waypoint.
pub const HBONE_PORT: i32 = 15008;
pub const STATUS_PORT: i32 = 15021;
pub const METRICS_PORT: i32 = 15020;
/// User the proxy runs as.
const PROXY_UID: i64 = 1337;

/// What every waypoint deployment shares.
#[derive(Clone, Debug, Serialize)]
pub struct WaypointSettings {
    pub image: String,
    pub image_pull_policy: String,
    pub trust_domain: String,
    /// istiod's xDS and CA address, `https://istiod.istio-system.svc:15012`.
    pub xds_address: String,
    /// SPIFFE identity of istiod's serving certificate.
    pub istiod_identity: String,
    /// Audience of the token the waypoint presents to the CA.
    pub token_audience: String,
}

/// The objects of one waypoint.
#[derive(Clone, Debug, PartialEq)]
pub struct WaypointObjects {
    pub service_account: ServiceAccount,
    pub deployment: Deployment,
    pub service: Service,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DesiredError {
    #[error("the Gateway has no {0} yet")]
    Incomplete(&'static str),
}

/// The owner reference every object of the waypoint carries.
pub fn owner_reference(gw: &Gateway) -> Result<OwnerReference, DesiredError> {
    let name = gw
        .metadata
        .name
        .clone()
        .ok_or(DesiredError::Incomplete("name"))?;
    let uid = gw
        .metadata
        .uid
        .clone()
        .filter(|u| !u.is_empty())
        .ok_or(DesiredError::Incomplete("uid"))?;
    Ok(OwnerReference {
        api_version: format!("{GATEWAY_GROUP}/v1"),
        kind: "Gateway".into(),
        name,
        uid,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The ServiceAccount, Deployment and Service of the waypoint `gw`.
pub fn waypoint_objects(
    gw: &Gateway,
    settings: &WaypointSettings,
) -> Result<WaypointObjects, DesiredError> {
    let owner = owner_reference(gw)?;
    let name = owner.name.clone();
    let namespace = gw
        .metadata
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or(DesiredError::Incomplete("namespace"))?;
    let selector = labels(&[(GATEWAY_NAME_LABEL, &name)]);
    let object_labels = labels(&[(GATEWAY_NAME_LABEL, &name), (MANAGED_LABEL, MANAGED_VALUE)]);
    let meta = ObjectMeta {
        name: Some(name.clone()),
        namespace: Some(namespace.clone()),
        labels: Some(object_labels.clone()),
        owner_references: Some(vec![owner]),
        ..Default::default()
    };

    let service_account = ServiceAccount {
        metadata: meta.clone(),
        ..Default::default()
    };

    let mut pod_labels = object_labels;
    pod_labels.insert(DATAPLANE_MODE.into(), "none".into());
    pod_labels.insert("service.istio.io/canonical-name".into(), name.clone());
    let pod_annotations = labels(&[
        ("prometheus.io/scrape", "true"),
        ("prometheus.io/port", "15020"),
        ("prometheus.io/path", "/metrics"),
    ]);
    let args = vec![
        format!("--name={name}"),
        format!("--namespace={namespace}"),
        format!("--service-account={name}"),
        format!("--trust-domain={}", settings.trust_domain),
        format!("--xds-address={}", settings.xds_address),
        format!("--istiod-identity={}", settings.istiod_identity),
        format!("--ca-root-file={ROOT_CERT_DIR}/{ROOT_CERT_KEY}"),
        format!("--token-file={TOKEN_DIR}/{TOKEN_FILE}"),
    ];
    let port = |name: &str, port: i32| ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    let container = Container {
        name: "waypoint".into(),
        image: Some(settings.image.clone()),
        image_pull_policy: Some(settings.image_pull_policy.clone()),
        args: Some(args),
        ports: Some(vec![
            port("mesh", HBONE_PORT),
            port("status-port", STATUS_PORT),
            port("metrics", METRICS_PORT),
        ]),
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/healthz/ready".into()),
                port: IntOrString::Int(STATUS_PORT),
                ..Default::default()
            }),
            period_seconds: Some(5),
            failure_threshold: Some(4),
            ..Default::default()
        }),
        resources: Some(ResourceRequirements {
            requests: Some(
                [
                    ("cpu".to_string(), Quantity("100m".into())),
                    ("memory".to_string(), Quantity("128Mi".into())),
                ]
                .into(),
            ),
            limits: Some([("memory".to_string(), Quantity("1Gi".into()))].into()),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            privileged: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "istio-token".into(),
                mount_path: TOKEN_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            },
            VolumeMount {
                name: "istio-ca-root-cert".into(),
                mount_path: ROOT_CERT_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    let volumes = vec![
        Volume {
            name: "istio-token".into(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: Some(settings.token_audience.clone()),
                        expiration_seconds: Some(TOKEN_EXPIRATION_SECONDS),
                        path: TOKEN_FILE.into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: "istio-ca-root-cert".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: ROOT_CERT_CONFIGMAP.into(),
                ..Default::default()
            }),
            ..Default::default()
        },
    ];
    let deployment = Deployment {
        metadata: meta.clone(),
        spec: DeploymentSpec {
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(pod_annotations),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(name.clone()),
                    automount_service_account_token: Some(false),
                    termination_grace_period_seconds: Some(30),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(PROXY_UID),
                        run_as_group: Some(PROXY_UID),
                        ..Default::default()
                    }),
                    containers: vec![container],
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        },
        ..Default::default()
    };

    let service_port = |name: &str, port: i32| ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    let service = Service {
        metadata: meta,
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector),
            ports: Some(vec![
                service_port("mesh", HBONE_PORT),
                service_port("status-port", STATUS_PORT),
                service_port("metrics", METRICS_PORT),
            ]),
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok(WaypointObjects {
        service_account,
        deployment,
        service,
    })
}

#[cfg(test)]
mod tests;
