//! Where ztunnel's sockets live: in the host namespace, or inside a pod's namespace.
//!
//! Sockets ztunnel opens on behalf of a pod carry the mark [`ZTUNNEL_MARK`], which the pod's
//! redirect rules exempt, so ztunnel's own traffic is never captured again.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};

use crate::inpod::netns::Netns;

/// Packet mark of ztunnel's own sockets (Istio's value, exempted by the redirect rules).
pub const ZTUNNEL_MARK: u32 = 0x539;

#[derive(Clone, Debug)]
pub enum SocketFactory {
    /// The namespace ztunnel runs in.
    Host,
    /// A pod's namespace.
    Pod(Netns),
}

impl SocketFactory {
    async fn make<F, R>(&self, f: F) -> io::Result<R>
    where
        F: FnOnce() -> io::Result<R> + Send + 'static,
        R: Send + 'static,
    {
        match self {
            SocketFactory::Host => f(),
            SocketFactory::Pod(ns) => ns.run(f).await.map_err(io::Error::other)?,
        }
    }

    /// A listening TCP socket on `addr`.
    pub async fn listen(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        let std = self
            .make(move || {
                let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
                s.set_reuse_address(true)?;
                s.set_nonblocking(true)?;
                s.bind(&addr.into())?;
                s.listen(1024)?;
                Ok(std::net::TcpListener::from(s))
            })
            .await?;
        TcpListener::from_std(std)
    }

    /// A UDP socket bound to `addr`.
    pub async fn udp(&self, addr: SocketAddr) -> io::Result<UdpSocket> {
        let std = self
            .make(move || {
                let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
                s.set_reuse_address(true)?;
                s.set_nonblocking(true)?;
                s.bind(&addr.into())?;
                Ok(std::net::UdpSocket::from(s))
            })
            .await?;
        UdpSocket::from_std(std)
    }

    /// Connects to `addr` from this namespace with ztunnel's mark.
    pub async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let marked = !matches!(self, SocketFactory::Host);
        let std = self
            .make(move || {
                let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
                if marked {
                    s.set_mark(ZTUNNEL_MARK)?;
                }
                s.set_tcp_nodelay(true)?;
                s.set_nonblocking(true)?;
                Ok(std::net::TcpStream::from(s))
            })
            .await?;
        TcpSocket::from_std_stream(std).connect(addr).await
    }
}

/// The destination a connection had before the redirect rules sent it to ztunnel.
pub fn original_dst(stream: &TcpStream) -> io::Result<SocketAddr> {
    use nix::sys::socket::{getsockopt, sockopt};
    let local = stream.local_addr()?;
    if local.is_ipv4() {
        let a = getsockopt(stream, sockopt::OriginalDst).map_err(io::Error::from)?;
        let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
        Ok(SocketAddr::new(ip.into(), u16::from_be(a.sin_port)))
    } else {
        let a = getsockopt(stream, sockopt::Ip6tOriginalDst).map_err(io::Error::from)?;
        let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
        Ok(SocketAddr::new(ip.into(), u16::from_be(a.sin6_port)))
    }
}
