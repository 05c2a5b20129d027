//! The plugin's side of the agent socket: one blocking request with a deadline.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::api::{MAX_LINE, PluginRequest, PluginResponse};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {path}: {source}")]
    Connect {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("agent socket I/O: {0}")]
    Io(#[from] io::Error),
    #[error("the agent closed the connection without answering")]
    NoAnswer,
    #[error("cannot decode the agent's answer: {0}")]
    Decode(#[from] serde_json::Error),
}

/// Sends `req` to the agent listening at `socket` and waits up to `timeout` for each of the
/// write and the read.
pub fn call(
    socket: &Path,
    req: &PluginRequest,
    timeout: Duration,
) -> Result<PluginResponse, ClientError> {
    let mut stream = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
        path: socket.display().to_string(),
        source,
    })?;
    stream.set_write_timeout(Some(timeout))?;
    stream.set_read_timeout(Some(timeout))?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    stream.flush()?;
    let mut reader = BufReader::new(stream.take(MAX_LINE as u64));
    let mut answer = String::new();
    if reader.read_line(&mut answer)? == 0 {
        return Err(ClientError::NoAnswer);
    }
    Ok(serde_json::from_str(answer.trim_end())?)
}

/// Whether something accepts connections at `socket`.
pub fn reachable(socket: &Path) -> Result<(), ClientError> {
    UnixStream::connect(socket)
        .map(drop)
        .map_err(|source| ClientError::Connect {
            path: socket.display().to_string(),
            source,
        })
}
