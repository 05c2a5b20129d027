//! Async unix `SOCK_SEQPACKET` sockets whose packets may carry file descriptors (`SCM_RIGHTS`).

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use futures::FutureExt;
use nix::sys::socket::{self, ControlMessage, ControlMessageOwned, MsgFlags};
use socket2::{Domain, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;

/// Most descriptors accepted beside one packet; the protocol sends at most one.
const MAX_FDS: usize = 4;

/// A listening socket.
pub(crate) struct SeqPacketListener {
    fd: AsyncFd<Socket>,
}

impl SeqPacketListener {
    /// Binds and listens on `path` (which must not exist).
    pub(crate) fn bind(path: &Path) -> io::Result<Self> {
        let sock = Socket::new(Domain::UNIX, Type::SEQPACKET.cloexec(), None)?;
        sock.set_nonblocking(true)?;
        sock.bind(&SockAddr::unix(path)?)?;
        sock.listen(16)?;
        Ok(Self {
            fd: register(sock)?,
        })
    }

    pub(crate) async fn accept(&self) -> io::Result<SeqPacket> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|s| s.get_ref().accept()) {
                Ok(Ok((sock, _addr))) => {
                    sock.set_nonblocking(true)?;
                    return SeqPacket::new(sock);
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

/// Outcome of a non-blocking look at an idle connection.
pub(crate) enum Peek {
    /// Nothing to read.
    Idle,
    /// The peer closed the connection.
    Closed,
    /// The peer sent something (consumed and dropped).
    Unexpected(usize),
}

/// A connected socket.
pub(crate) struct SeqPacket {
    fd: AsyncFd<Socket>,
}

impl SeqPacket {
    fn new(sock: Socket) -> io::Result<Self> {
        Ok(Self {
            fd: register(sock)?,
        })
    }

    /// Connects to a listening socket at `path`.
    pub(crate) fn connect(path: &Path) -> io::Result<Self> {
        let sock = Socket::new(Domain::UNIX, Type::SEQPACKET.cloexec(), None)?;
        // A unix connect completes (or fails) at once; switch to non-blocking afterwards.
        sock.connect(&SockAddr::unix(path)?)?;
        sock.set_nonblocking(true)?;
        Self::new(sock)
    }

    /// Sends one packet, with `fd` as ancillary data when given.
    pub(crate) async fn send(&self, data: &[u8], fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
        let fds: Vec<RawFd> = fd.iter().map(|f| f.as_raw_fd()).collect();
        loop {
            let mut guard = self.fd.writable().await?;
            let res = guard.try_io(|s| {
                let iov = [IoSlice::new(data)];
                let cmsgs: Vec<ControlMessage<'_>> = if fds.is_empty() {
                    Vec::new()
                } else {
                    vec![ControlMessage::ScmRights(&fds)]
                };
                socket::sendmsg::<()>(
                    s.get_ref().as_raw_fd(),
                    &iov,
                    &cmsgs,
                    MsgFlags::MSG_NOSIGNAL,
                    None,
                )
                .map_err(io::Error::from)
            });
            match res {
                Ok(Ok(n)) if n == data.len() => return Ok(()),
                Ok(Ok(n)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!("short packet write: {n} of {} bytes", data.len()),
                    ));
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    /// Receives one packet into `buf`: its length (0 when the peer closed) and any descriptors.
    pub(crate) async fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|s| recv_packet(s.get_ref(), buf, MsgFlags::empty())) {
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(res) => return res,
                Err(_would_block) => continue,
            }
        }
    }

    /// Shuts both directions down: the peer sees end-of-stream even while clones stay open.
    pub(crate) fn shutdown(&self) {
        let _ = self.fd.get_ref().shutdown(std::net::Shutdown::Both);
    }

    /// Waits until the socket is readable (input or hang-up) without consuming anything.
    pub(crate) async fn readable(&self) -> io::Result<()> {
        self.fd.readable().await.map(drop)
    }

    /// Reads whatever is pending without waiting; used to notice that an idle peer went away.
    pub(crate) fn poll_idle(&self) -> io::Result<Peek> {
        let Some(guard) = self.fd.readable().now_or_never() else {
            return Ok(Peek::Idle);
        };
        let mut guard = guard?;
        let mut buf = vec![0u8; super::MAX_MESSAGE_SIZE];
        match guard.try_io(|s| recv_packet(s.get_ref(), &mut buf, MsgFlags::MSG_DONTWAIT)) {
            Ok(Ok((0, _))) => Ok(Peek::Closed),
            Ok(Ok((n, _fds))) => Ok(Peek::Unexpected(n)),
            Ok(Err(e)) => Err(e),
            // Nothing pending: `try_io` cleared the readiness.
            Err(_would_block) => Ok(Peek::Idle),
        }
    }
}

/// Registers a non-blocking socket with the tokio reactor.
fn register(sock: Socket) -> io::Result<AsyncFd<Socket>> {
    #[allow(unsafe_code)]
    // SAFETY: `Socket` owns its descriptor: it stays open and keeps the same number until the
    // `AsyncFd` (which takes the `Socket` by value and never hands out `&mut`) drops it.
    let fd = unsafe { AsyncFd::register(sock) }?;
    Ok(fd)
}

fn recv_packet(
    sock: &Socket,
    buf: &mut [u8],
    flags: MsgFlags,
) -> io::Result<(usize, Vec<OwnedFd>)> {
    let cap = buf.len();
    let mut iov = [IoSliceMut::new(buf)];
    let mut cmsg_buf = nix::cmsg_space!([RawFd; MAX_FDS]);
    let msg = socket::recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg_buf),
        flags | MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            for fd in raw {
                #[allow(unsafe_code)]
                // SAFETY: the kernel installed `fd` in this process's table for this message and
                // nothing else refers to it, so taking sole ownership is sound.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    if msg.flags.contains(MsgFlags::MSG_TRUNC) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("packet larger than {cap} bytes"),
        ));
    }
    Ok((msg.bytes, fds))
}
