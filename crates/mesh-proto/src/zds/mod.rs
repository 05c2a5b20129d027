//! ZDS: the node agent to ztunnel protocol ("ztunnel discovery service").
//!
//! The node agent listens on a unix `SOCK_SEQPACKET` socket (default [`DEFAULT_SOCKET_PATH`]);
//! ztunnel connects and sends `ZdsHello { version: V1 }`. Every message is one packet holding one
//! protobuf message (no length prefix): `WorkloadRequest` from the agent, `WorkloadResponse` (an
//! `Ack`, with non-empty `error` text on failure) from ztunnel, strictly alternating.
//!
//! After the hello the agent sends a snapshot: one `AddWorkload` per enrolled pod, each carrying
//! the pod's network namespace file descriptor as `SCM_RIGHTS` ancillary data (or a
//! `KeepWorkload` when the agent knows the pod but holds no netns for it), each acked, then
//! `SnapshotSent` (acked): ztunnel drops any workload not named since it connected. Incremental
//! `AddWorkload`/`DelWorkload` requests follow, each acked.
//!
//! [`ZdsServer`] is the agent side, [`ZdsClient`] the ztunnel side.

mod client;
mod seqpacket;
mod server;

#[cfg(test)]
mod tests;

use std::io;
use std::os::fd::OwnedFd;
use std::time::Duration;

pub use crate::proto::workload::zds::WorkloadInfo;
pub use client::ZdsClient;
pub use server::{ZdsServer, ZdsServerOptions, ZdsStatus};

/// Where the node agent listens and ztunnel connects, unless configured otherwise.
pub const DEFAULT_SOCKET_PATH: &str = "/var/run/ztunnel/ztunnel.sock";

/// Largest message either side sends or accepts.
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024;

/// Errors of both sides of the protocol.
#[derive(Debug, thiserror::Error)]
pub enum ZdsError {
    #[error("zds socket I/O: {0}")]
    Io(#[from] io::Error),
    #[error("no ztunnel is connected")]
    NotConnected,
    #[error("ztunnel rejected the request: {0}")]
    Rejected(String),
    #[error("no acknowledgement within {0:?}")]
    AckTimeout(Duration),
    #[error("connection closed by the peer")]
    Closed,
    #[error("malformed message: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("protocol violation: {0}")]
    Protocol(String),
}

/// A request received by ztunnel; each must be answered with [`ZdsClient::ack`].
#[derive(Debug)]
pub enum ZdsMessage {
    /// Start serving the pod; `netns` is its network namespace.
    Add {
        uid: String,
        info: WorkloadInfo,
        netns: OwnedFd,
    },
    /// Snapshot only: the agent knows the pod but has no netns for it; keep what you have.
    Keep { uid: String },
    /// Stop serving the pod.
    Del { uid: String },
    /// End of the snapshot: drop workloads not named since connecting.
    SnapshotSent,
}
