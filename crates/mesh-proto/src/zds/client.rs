//! ztunnel's side of ZDS: connects to the node agent and receives workload requests.

use std::path::Path;

use prost::Message;

use super::seqpacket::SeqPacket;
use super::{MAX_MESSAGE_SIZE, ZdsError, ZdsMessage};
use crate::proto::workload::zds::{
    Ack, Version, WorkloadRequest, WorkloadResponse, ZdsHello, workload_request, workload_response,
};

/// A connection to the node agent. Every message from [`recv`](Self::recv) (errors included,
/// once the message was read) must be answered with [`ack`](Self::ack) before the next one.
pub struct ZdsClient {
    sock: SeqPacket,
    buf: Vec<u8>,
}

impl ZdsClient {
    /// Connects to the agent's socket and says hello (protocol version 1).
    pub async fn connect(path: impl AsRef<Path>) -> Result<Self, ZdsError> {
        let sock = SeqPacket::connect(path.as_ref())?;
        let hello = ZdsHello {
            version: Version::V1 as i32,
        };
        sock.send(&hello.encode_to_vec(), None).await?;
        Ok(Self {
            sock,
            buf: vec![0u8; MAX_MESSAGE_SIZE],
        })
    }

    /// Waits for the next request. [`ZdsError::Closed`] when the agent closed the connection
    /// (for instance because a newer ztunnel connection replaced this one).
    pub async fn recv(&mut self) -> Result<ZdsMessage, ZdsError> {
        let (n, mut fds) = self.sock.recv(&mut self.buf).await?;
        if n == 0 {
            return Err(ZdsError::Closed);
        }
        let req = WorkloadRequest::decode(&self.buf[..n])?;
        let payload = req
            .payload
            .ok_or_else(|| ZdsError::Protocol("request without a payload".into()))?;
        match payload {
            workload_request::Payload::Add(add) => {
                if fds.len() != 1 {
                    return Err(ZdsError::Protocol(format!(
                        "AddWorkload {} carries {} descriptors, expected one netns",
                        add.uid,
                        fds.len()
                    )));
                }
                let netns = fds.remove(0);
                Ok(ZdsMessage::Add {
                    uid: add.uid,
                    info: add.workload_info.unwrap_or_default(),
                    netns,
                })
            }
            workload_request::Payload::Keep(keep) => Ok(ZdsMessage::Keep { uid: keep.uid }),
            workload_request::Payload::Del(del) => Ok(ZdsMessage::Del { uid: del.uid }),
            workload_request::Payload::SnapshotSent(_) => Ok(ZdsMessage::SnapshotSent),
        }
    }

    /// Answers the last request: `Err(text)` reports a failure to the agent.
    pub async fn ack(&mut self, result: Result<(), String>) -> Result<(), ZdsError> {
        let resp = WorkloadResponse {
            payload: Some(workload_response::Payload::Ack(Ack {
                error: result.err().unwrap_or_default(),
            })),
        };
        self.sock.send(&resp.encode_to_vec(), None).await?;
        Ok(())
    }
}
