//! Helpers shared by the istiod integration tests.
#![allow(dead_code)]

use istiod::model::{Model, ModelConfig};
use mesh_config::Snapshot;

/// Builds the model of manifests given as YAML text; fails on manifests that do not parse.
pub fn model(yaml: &str) -> Model {
    let snap = Snapshot::from_yaml("test.yaml", yaml);
    assert_eq!(snap.issues, vec![], "test manifests must parse");
    Model::build(&snap, &ModelConfig::default())
}

/// A namespace manifest, enrolled in ambient or not.
pub fn namespace(name: &str, ambient: bool) -> String {
    let labels = if ambient {
        "{istio.io/dataplane-mode: ambient}"
    } else {
        "{}"
    };
    format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}, labels: {labels}}}\n---\n")
}

/// A running pod manifest with the given labels (a YAML flow mapping), node and IP.
pub fn pod(ns: &str, name: &str, labels: &str, node: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {labels}}}\n\
         spec:\n  nodeName: {node}\n  serviceAccountName: {name}-sa\n  containers:\n  - name: app\n    image: app\n    ports: [{{name: http, containerPort: 8080}}, {{name: grpc, containerPort: 9090}}]\n\
         status: {{phase: Running, podIP: {ip}}}\n---\n"
    )
}

pub mod harness;
pub mod mesh;
pub mod waypoint;
