//! The waypoint end to end on loopback: real HBONE with mutual TLS on both sides, HTTP/1.1,
//! HTTP/2 and gRPC through the request phases.

mod harness;

mod grpc;
mod policy;
mod resilience;
mod routing;
mod telemetry;
