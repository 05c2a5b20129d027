//! Kubernetes mode of the agent (`cni-agent --kubernetes`): the pods of this node and every
//! namespace, watched on the API server and published as [`mesh_config::Snapshot`]s, so the
//! agent decides exactly as in local mode ([`super::desired`], [`super::reconcile`]); the
//! `ambient.istio.io/redirection` annotation on enrolled pods; and telling an uninstall from a
//! restart when the agent is stopped.
//!
//! Layers: [`objects`] (watch events to the desired-state snapshot, no I/O) and the pure parts of
//! [`annotate`] and [`lifecycle`]; then the clients ([`client`], [`source`], the API calls of
//! [`annotate`] and [`lifecycle`]).

pub mod annotate;
pub mod client;
pub mod lifecycle;
pub mod objects;
pub mod source;

pub use client::{ClientError, connect};
pub use source::KubeSource;
