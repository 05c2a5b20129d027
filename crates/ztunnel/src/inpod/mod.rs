//! In-pod mode: the node agent hands ztunnel each enrolled pod's network namespace over ZDS,
//! and ztunnel serves the pod from listeners bound inside it.

pub mod netns;
pub mod zds;
