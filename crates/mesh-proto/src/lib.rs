//! Every wire protocol of the mesh: the protobuf messages and gRPC services (workload discovery,
//! authorization, CA, ZDS, waypoint configuration), a delta-xDS client and server core, and HBONE.

pub mod hbone;
pub mod proto;
pub mod relay;
pub mod telemetry;
pub mod xds;
pub mod zds;
