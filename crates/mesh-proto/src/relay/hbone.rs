//! TCP to an HBONE stream.

use std::io;
use std::pin::Pin;

use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

use super::{ReadBuffer, shutdown_write};
use crate::hbone::{H2ReadHalf, H2Stream, H2WriteHalf};

/// Relays between the HBONE `stream` and `tcp` until both directions ended; returns the bytes
/// moved `stream → tcp` and `tcp → stream`.
pub async fn relay_hbone(stream: &mut H2Stream, tcp: &TcpStream) -> io::Result<(u64, u64)> {
    let (read, write) = stream.halves_mut();
    tokio::try_join!(to_tcp(read, tcp), from_tcp(tcp, write))
}

/// DATA frames to the socket, each written as it arrived.
async fn to_tcp(read: &mut H2ReadHalf, tcp: &TcpStream) -> io::Result<u64> {
    let mut moved = 0u64;
    while std::future::poll_fn(|cx| read.poll_fill(cx)).await? {
        tcp.writable().await?;
        match tcp.try_write(read.buffered()) {
            Ok(n) => {
                read.consume(n);
                moved += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    shutdown_write(tcp)?;
    Ok(moved)
}

/// Socket reads to DATA frames, each read sent as one frame's payload without a copy.
async fn from_tcp(tcp: &TcpStream, write: &mut H2WriteHalf) -> io::Result<u64> {
    let mut buf = ReadBuffer::default();
    let mut moved = 0u64;
    while let Some(mut chunk) = buf.read(tcp).await? {
        moved += chunk.len() as u64;
        std::future::poll_fn(|cx| write.poll_send(cx, &mut chunk)).await?;
    }
    std::future::poll_fn(|cx| Pin::new(&mut *write).poll_shutdown(cx)).await?;
    Ok(moved)
}
