//! Generated protobuf and gRPC code, one module per protobuf package.

#![allow(clippy::all, missing_docs, rust_2018_idioms)]

pub mod workload {
    tonic::include_proto!("istio.workload");

    pub mod zds {
        tonic::include_proto!("istio.workload.zds");
    }
}

pub mod security {
    tonic::include_proto!("istio.security");
}

pub mod ca {
    tonic::include_proto!("istio.v1.auth");
}

pub mod discovery {
    tonic::include_proto!("envoy.service.discovery.v3");
}

pub mod waypoint {
    tonic::include_proto!("mesh.waypoint.v1");
}

/// xDS type URLs served by the control plane.
pub mod type_url {
    /// Workloads and services (`istio.workload.Address`).
    pub const ADDRESS: &str = "type.googleapis.com/istio.workload.Address";
    /// L4 authorization policies (`istio.security.Authorization`).
    pub const AUTHORIZATION: &str = "type.googleapis.com/istio.security.Authorization";
    /// Waypoint L7 configuration (`mesh.waypoint.v1.Waypoint`).
    pub const WAYPOINT: &str = "type.googleapis.com/mesh.waypoint.v1.Waypoint";
}
