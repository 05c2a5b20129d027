//! An HBONE CONNECT stream exposed as an ordinary byte stream.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use h2::{Reason, RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::error::h2_to_io;
use super::info::ConnectionInfo;
use super::pool::StreamSlot;

/// Largest amount of send capacity requested for one write.
const MAX_WRITE_RESERVATION: usize = 1 << 20;

/// State shared by both halves of a stream: the connection facts and, for pooled streams, the
/// pool slot released when the last half is dropped.
#[derive(Debug)]
struct Shared {
    info: Arc<ConnectionInfo>,
    _slot: Option<StreamSlot>,
}

/// An HTTP/2 CONNECT stream as a byte stream (`AsyncRead + AsyncWrite`).
///
/// Writes wait for HTTP/2 send capacity, so a slow peer slows the writer instead of growing a
/// buffer. `shutdown()` sends END_STREAM while reads continue. A stream reset by the peer reads
/// and writes as `ConnectionReset`. Received data returns flow-control credit to the peer as it
/// is read. Dropping the stream before both directions have ended resets it.
#[derive(Debug)]
pub struct H2Stream {
    read: H2ReadHalf,
    write: H2WriteHalf,
}

/// Receiving half of an [`H2Stream`].
#[derive(Debug)]
pub struct H2ReadHalf {
    recv: RecvStream,
    pending: Bytes,
    eof: bool,
    shared: Arc<Shared>,
}

/// Sending half of an [`H2Stream`].
#[derive(Debug)]
pub struct H2WriteHalf {
    send: SendStream<Bytes>,
    shut_down: bool,
    shared: Arc<Shared>,
}

impl H2Stream {
    pub(crate) fn new(
        send: SendStream<Bytes>,
        recv: RecvStream,
        info: Arc<ConnectionInfo>,
        slot: Option<StreamSlot>,
    ) -> Self {
        let shared = Arc::new(Shared { info, _slot: slot });
        Self {
            read: H2ReadHalf {
                recv,
                pending: Bytes::new(),
                eof: false,
                shared: shared.clone(),
            },
            write: H2WriteHalf {
                send,
                shut_down: false,
                shared,
            },
        }
    }

    /// The connection carrying this stream: peer identity, certificates and addresses.
    pub fn connection(&self) -> &Arc<ConnectionInfo> {
        &self.read.shared.info
    }

    /// Aborts both directions with RST_STREAM(CONNECT_ERROR), the HTTP/2 counterpart of a TCP
    /// reset; the peer's reads and writes fail with `ConnectionReset`.
    pub fn reset(&mut self) {
        self.write.reset();
    }

    /// Splits into halves that can be moved to different tasks.
    pub fn into_split(self) -> (H2ReadHalf, H2WriteHalf) {
        (self.read, self.write)
    }
}

impl H2ReadHalf {
    /// The connection carrying this stream.
    pub fn connection(&self) -> &Arc<ConnectionInfo> {
        &self.shared.info
    }
}

impl H2WriteHalf {
    /// The connection carrying this stream.
    pub fn connection(&self) -> &Arc<ConnectionInfo> {
        &self.shared.info
    }

    /// Aborts the stream with RST_STREAM(CONNECT_ERROR).
    pub fn reset(&mut self) {
        self.shut_down = true;
        self.send.send_reset(Reason::CONNECT_ERROR);
    }

    /// The error to report after the send side stopped accepting data: the peer's reset reason
    /// when there is one, otherwise `fallback`.
    fn send_error(&mut self, cx: &mut Context<'_>, fallback: Option<h2::Error>) -> io::Error {
        match self.send.poll_reset(cx) {
            Poll::Ready(Ok(Reason::NO_ERROR)) => io::Error::new(
                io::ErrorKind::BrokenPipe,
                "peer closed the stream (RST_STREAM NO_ERROR)",
            ),
            Poll::Ready(Ok(reason)) => io::Error::new(
                io::ErrorKind::ConnectionReset,
                format!("stream reset by peer: {reason}"),
            ),
            Poll::Ready(Err(e)) => h2_to_io(e),
            Poll::Pending => match fallback {
                Some(e) => h2_to_io(e),
                None => io::Error::new(io::ErrorKind::BrokenPipe, "stream send side is closed"),
            },
        }
    }
}

impl Drop for H2ReadHalf {
    fn drop(&mut self) {
        // Return the credit of data taken from the stream but never read, so it does not stay
        // charged to the connection window while the send half lives on.
        if !self.pending.is_empty() {
            let _ = self.recv.flow_control().release_capacity(self.pending.len());
        }
    }
}

impl AsyncRead for H2ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.pending.is_empty() {
                let n = out.remaining().min(this.pending.len());
                out.put_slice(&this.pending[..n]);
                this.pending.advance(n);
                if let Err(e) = this.recv.flow_control().release_capacity(n) {
                    tracing::debug!(error = %e, "releasing HTTP/2 receive capacity failed");
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(chunk)) => this.pending = chunk,
                None => this.eof = true,
                // The peer finished its side and then told us to stop sending: everything it
                // meant to send has been received, so this reads as end of stream.
                Some(Err(e)) if e.is_reset() && e.reason() == Some(Reason::NO_ERROR) => {
                    this.eof = true
                }
                Some(Err(e)) => return Poll::Ready(Err(h2_to_io(e))),
            }
        }
    }
}

impl AsyncWrite for H2WriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.shut_down {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after shutdown",
            )));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        loop {
            let capacity = this.send.capacity();
            if capacity > 0 {
                let n = capacity.min(buf.len());
                return match this
                    .send
                    .send_data(Bytes::copy_from_slice(&buf[..n]), false)
                {
                    Ok(()) => Poll::Ready(Ok(n)),
                    Err(e) => Poll::Ready(Err(this.send_error(cx, Some(e)))),
                };
            }
            this.send
                .reserve_capacity(buf.len().min(MAX_WRITE_RESERVATION));
            match ready!(this.send.poll_capacity(cx)) {
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Poll::Ready(Err(this.send_error(cx, Some(e)))),
                None => return Poll::Ready(Err(this.send_error(cx, None))),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Frames are written by the connection task as soon as flow control allows.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.shut_down {
            return Poll::Ready(Ok(()));
        }
        this.shut_down = true;
        match this.send.send_data(Bytes::new(), true) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(e) => match this.send_error(cx, Some(e)) {
                // The peer already ended the exchange and wants no more data: nothing to close.
                err if err.kind() == io::ErrorKind::BrokenPipe => Poll::Ready(Ok(())),
                err => Poll::Ready(Err(err)),
            },
        }
    }
}

impl AsyncRead for H2Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().read).poll_read(cx, out)
    }
}

impl AsyncWrite for H2Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().write).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().write).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().write).poll_shutdown(cx)
    }
}
