//! The waypoint: a Rust-native L7 proxy for the services that ask for it.
//!
//! Layout: `config_model` (typed L7 configuration: routes, policies), `discovery` (the xDS
//! handler), `proxy` (the data path: HBONE inbound, protocol detection, request phases,
//! retries, circuit breaking, upstream forwarding, TCP passthrough), `telemetry` (metrics,
//! access log, traces), `admin`, `config` and `cli` (what it runs with), `app` (wiring).

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod config_model;
pub mod discovery;
pub mod proxy;
pub mod telemetry;
