//! The sample apps: `mesh-echo` servers in two versions behind three Services, and two clients
//! (the same image; a client runs commands with `kubectl exec`), each with a ServiceAccount of
//! its own so that identities tell them apart.

use std::collections::BTreeMap;

use anyhow::Context;
use e2e::k8s::workloads;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Api;

use super::Suite;

/// Ports of every echo server.
pub const TCP_PORT: u16 = 9000;
pub const HTTP_PORT: u16 = 8080;

/// The Deployments of the sample, by name: (app label, version label, service account).
pub const DEPLOYMENTS: [(&str, &str, &str, &str); 4] = [
    ("client", "client", "v1", "client"),
    ("intruder", "intruder", "v1", "intruder"),
    ("echo-v1", "echo", "v1", "echo"),
    ("echo-v2", "echo", "v2", "echo"),
];

/// The echo image: `MESH_E2E_ECHO_IMAGE`, else what `make images` builds.
pub fn echo_image() -> String {
    std::env::var("MESH_E2E_ECHO_IMAGE")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| format!("ambient-mesh/mesh-echo:{}", env!("CARGO_PKG_VERSION")))
}

/// The container of every sample pod: an echo server (TCP and HTTP) that names its pod.
pub fn container_yaml(indent: &str) -> String {
    let image = echo_image();
    format!(
        "{i}- name: app
{i}  image: {image}
{i}  imagePullPolicy: IfNotPresent
{i}  args: [server, --tcp, \"{TCP_PORT}\", --http, \"{HTTP_PORT}\"]
{i}  env:
{i}    - name: POD_NAME
{i}      valueFrom:
{i}        fieldRef:
{i}          fieldPath: metadata.name
{i}  ports:
{i}    - containerPort: {TCP_PORT}
{i}      name: tcp-echo
{i}    - containerPort: {HTTP_PORT}
{i}      name: http
",
        i = indent
    )
}

/// Namespace (no label), service accounts, deployments and services.
pub fn manifests(ns: &str) -> String {
    let mut y = format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n");
    for sa in ["client", "intruder", "echo"] {
        y.push_str(&format!(
            "---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {sa}\n  namespace: {ns}\n"
        ));
    }
    for (name, app, version, sa) in DEPLOYMENTS {
        y.push_str(&format!(
            "---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {ns}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: {app}, version: {version}}}
  template:
    metadata:
      labels: {{app: {app}, version: {version}}}
    spec:
      serviceAccountName: {sa}
      containers:
{containers}",
            containers = container_yaml("        ")
        ));
    }
    for (svc, selector) in [
        ("echo", "{app: echo}"),
        ("echo-v1", "{app: echo, version: v1}"),
        ("echo-v2", "{app: echo, version: v2}"),
    ] {
        y.push_str(&format!(
            "---
apiVersion: v1
kind: Service
metadata:
  name: {svc}
  namespace: {ns}
spec:
  selector: {selector}
  ports:
    - {{name: tcp-echo, port: {TCP_PORT}, targetPort: {TCP_PORT}}}
    - {{name: http, port: {HTTP_PORT}, targetPort: {HTTP_PORT}, appProtocol: http}}
"
        ));
    }
    y
}

/// One sample pod as deployed.
#[derive(Debug, Clone)]
pub struct AppPod {
    pub name: String,
    pub uid: String,
    pub ip: String,
    pub node: String,
}

/// The deployed sample.
#[derive(Debug, Clone)]
pub struct Apps {
    /// By Deployment name.
    pub pods: BTreeMap<String, AppPod>,
    /// Cluster IP by Service name.
    pub services: BTreeMap<String, String>,
}

impl Apps {
    /// Reads the pods (one per Deployment) and the Service IPs.
    pub async fn observe(suite: &Suite) -> anyhow::Result<Self> {
        let ns = &suite.settings.namespace;
        let mut pods = BTreeMap::new();
        for (name, app, version, _) in DEPLOYMENTS {
            let list =
                workloads::pods(&suite.client, ns, &format!("app={app},version={version}")).await?;
            let running: Vec<&Pod> = list
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect();
            let [pod] = running.as_slice() else {
                anyhow::bail!(
                    "deployment {name}: expected one pod, found {}: {:?}",
                    running.len(),
                    running
                        .iter()
                        .map(|p| workloads::summary(p))
                        .collect::<Vec<_>>()
                );
            };
            pods.insert(
                name.to_string(),
                AppPod {
                    name: workloads::name(pod).to_string(),
                    uid: workloads::uid(pod).to_string(),
                    ip: workloads::ip(pod)
                        .with_context(|| format!("pod {} has no IP", workloads::name(pod)))?
                        .to_string(),
                    node: workloads::node(pod).unwrap_or("").to_string(),
                },
            );
        }
        let api: Api<Service> = Api::namespaced(suite.client.clone(), ns);
        let mut services = BTreeMap::new();
        for svc in ["echo", "echo-v1", "echo-v2"] {
            let s = api
                .get(svc)
                .await
                .with_context(|| format!("get service {svc}"))?;
            let ip = s
                .spec
                .and_then(|s| s.cluster_ip)
                .with_context(|| format!("service {svc} has no cluster IP"))?;
            services.insert(svc.to_string(), ip);
        }
        Ok(Apps { pods, services })
    }

    pub fn pod(&self, deployment: &str) -> anyhow::Result<&AppPod> {
        self.pods
            .get(deployment)
            .with_context(|| format!("no sample pod of {deployment}"))
    }

    /// `ip:port` of a Service.
    pub fn service(&self, name: &str, port: u16) -> anyhow::Result<String> {
        let ip = self
            .services
            .get(name)
            .with_context(|| format!("no service {name}"))?;
        Ok(format!("{ip}:{port}"))
    }
}
