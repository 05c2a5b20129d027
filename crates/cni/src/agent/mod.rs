//! The node agent (`cni-agent`).

pub mod app;
pub mod cli;
pub mod desired;
pub mod enroller;
pub mod install;
pub mod k8s;
pub mod netns;
pub mod reconcile;
pub mod rules;
pub mod server;
pub mod state;
pub mod zds_sender;
