//! HTTP/2 settings used on both ends of an HBONE connection.
//!
//! Large windows keep a single stream fast across a high bandwidth-delay path; the per-stream
//! window still bounds how much a peer can make us buffer for a stream that is not being read.

use std::time::Duration;

/// Initial per-stream receive window (4 MiB).
pub const STREAM_WINDOW: u32 = 4 << 20;
/// Initial connection receive window (16 MiB), shared by all streams of a connection.
pub const CONNECTION_WINDOW: u32 = 16 << 20;
/// Largest DATA frame we accept (256 KiB).
pub const MAX_FRAME_SIZE: u32 = 256 << 10;
/// Send buffer per stream in the HTTP/2 layer (1 MiB); writers wait beyond this.
pub const MAX_SEND_BUFFER: usize = 1 << 20;
/// Concurrent streams a server accepts on one connection.
pub const SERVER_MAX_CONCURRENT_STREAMS: u32 = 1024;
/// Time allowed for the TLS and HTTP/2 handshakes of an accepted connection.
pub const SERVER_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn server_builder() -> h2::server::Builder {
    let mut builder = h2::server::Builder::new();
    builder
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .max_concurrent_streams(SERVER_MAX_CONCURRENT_STREAMS);
    builder
}

pub(crate) fn client_builder() -> h2::client::Builder {
    let mut builder = h2::client::Builder::new();
    builder
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .enable_push(false);
    builder
}
