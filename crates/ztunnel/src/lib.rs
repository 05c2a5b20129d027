//! ztunnel: the per-node L4 proxy of the ambient mesh.
//!
//! Layout: `state` (what the mesh looks like, fed by xDS), `inpod` (pods handed over by the node
//! agent), `proxy` (the data path: outbound, inbound HBONE, inbound plaintext), `dns`,
//! `metrics`, `admin` (admin, metrics and readiness endpoints), `app` (wiring).

pub mod admin;
pub mod app;
pub mod ca_client;
pub mod cli;
pub mod config;
pub mod control;
pub mod dns;
pub mod inpod;
pub mod metrics;
pub mod proxy;
pub mod state;
