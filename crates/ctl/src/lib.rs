//! `meshctl`, the operator CLI of the ambient mesh: waypoints, ztunnel inspection, namespace
//! enrollment, install checks and configuration analysis, against a Kubernetes cluster or the
//! local mode (a directory of manifests).

pub mod analyze;
pub mod app;
pub mod cli;
pub mod cni_status;
pub mod commands;
pub mod context;
pub mod http;
pub mod istiod;
pub mod kube_client;
pub mod local;
pub mod output;
pub mod waypoint_gateway;
pub mod ztunnel_dump;
