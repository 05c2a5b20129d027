//! Relaying a connection's bytes both ways: TCP to TCP, and TCP to an HBONE stream.
//!
//! Both directions run concurrently until each has seen its end of stream, which is passed on
//! as a half-close (TCP `shutdown(SHUT_WR)`, HTTP/2 END_STREAM); the first error ends both.
//! Buffers are sized to the traffic (a small read first, doubling while reads fill them) and
//! given back while a connection is idle, so an idle relayed connection holds no buffer.
//! Towards HBONE, what a socket read produced becomes the DATA frame as it is; from HBONE, a
//! received DATA frame is written to the socket as it is.

mod buffer;
mod hbone;
mod tcp;

pub use buffer::{INITIAL_READ, MAX_READ, ReadBuffer};
pub use hbone::relay_hbone;
pub use tcp::relay_tcp;

use std::io;

use tokio::net::TcpStream;

/// Ends the write side of `tcp` (the peer reads end of stream); a socket the peer already
/// closed has nothing to end.
fn shutdown_write(tcp: &TcpStream) -> io::Result<()> {
    match socket2::SockRef::from(tcp).shutdown(std::net::Shutdown::Write) {
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
        other => other,
    }
}

/// Writes all of `data` to `tcp`.
async fn write_all(tcp: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        tcp.writable().await?;
        match tcp.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
