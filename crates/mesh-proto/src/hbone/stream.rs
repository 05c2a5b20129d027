//! An HBONE CONNECT stream exposed as an ordinary byte stream.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes};
use h2::{Reason, RecvStream, SendStream};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::error::h2_to_io;
use super::info::ConnectionInfo;
use super::pool::StreamSlot;

/// Largest amount of send capacity requested for one write.
const MAX_WRITE_RESERVATION: usize = 1 << 20;
/// How long a dropped stream whose write side was shut down keeps draining the peer's data so
/// that its own queued data is still delivered (see [`H2Stream`]).
pub const LINGER_TIMEOUT: Duration = Duration::from_secs(30);

/// State shared by both halves of a stream.
#[derive(Debug)]
struct Shared {
    info: Arc<ConnectionInfo>,
    /// Set once END_STREAM has been queued.
    write_done: AtomicBool,
    /// The receive side, kept here when the read half is dropped before the peer finished while
    /// the write half still lives, so that a later clean close can linger with it.
    parked_recv: Mutex<Option<RecvStream>>,
    /// For pooled streams, released when the stream is completely gone.
    _slot: Option<StreamSlot>,
}

/// An HTTP/2 CONNECT stream as a byte stream (`AsyncRead + AsyncWrite`).
///
/// Writes wait for HTTP/2 send capacity, so a slow peer slows the writer instead of growing a
/// buffer. `shutdown()` sends END_STREAM while reads continue. A stream reset by the peer reads
/// and writes as `ConnectionReset`. Received data returns flow-control credit to the peer as it
/// is read.
///
/// Closing: after `shutdown()`, dropping the stream lets data still queued for the peer go out;
/// if the peer has not finished sending, its data is read and discarded for up to
/// [`LINGER_TIMEOUT`] instead of resetting the stream. Dropping the stream (or its write half)
/// without `shutdown()` aborts it with RST_STREAM(CANCEL), as does [`H2Stream::reset`] with
/// CONNECT_ERROR.
#[derive(Debug)]
pub struct H2Stream {
    read: H2ReadHalf,
    write: H2WriteHalf,
}

/// Receiving half of an [`H2Stream`].
#[derive(Debug)]
pub struct H2ReadHalf {
    /// Always present until drop.
    recv: Option<RecvStream>,
    pending: Bytes,
    eof: bool,
    shared: Arc<Shared>,
}

/// Sending half of an [`H2Stream`].
#[derive(Debug)]
pub struct H2WriteHalf {
    send: SendStream<Bytes>,
    shut_down: bool,
    reset: bool,
    shared: Arc<Shared>,
}

impl H2Stream {
    pub(crate) fn new(
        send: SendStream<Bytes>,
        recv: RecvStream,
        info: Arc<ConnectionInfo>,
        slot: Option<StreamSlot>,
    ) -> Self {
        let shared = Arc::new(Shared {
            info,
            write_done: AtomicBool::new(false),
            parked_recv: Mutex::new(None),
            _slot: slot,
        });
        Self {
            read: H2ReadHalf {
                recv: Some(recv),
                pending: Bytes::new(),
                eof: false,
                shared: shared.clone(),
            },
            write: H2WriteHalf {
                send,
                shut_down: false,
                reset: false,
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

    /// Both halves, borrowed, to drive the two directions concurrently.
    pub fn halves_mut(&mut self) -> (&mut H2ReadHalf, &mut H2WriteHalf) {
        (&mut self.read, &mut self.write)
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
        self.reset = true;
        self.send.send_reset(Reason::CONNECT_ERROR);
    }

    /// Waits until HTTP/2 lets this stream send; returns how many of `wanted` bytes it may.
    fn poll_send_capacity(
        &mut self,
        cx: &mut Context<'_>,
        wanted: usize,
    ) -> Poll<io::Result<usize>> {
        loop {
            let capacity = self.send.capacity();
            if capacity > 0 {
                return Poll::Ready(Ok(capacity.min(wanted)));
            }
            self.send
                .reserve_capacity(wanted.min(MAX_WRITE_RESERVATION));
            match ready!(self.send.poll_capacity(cx)) {
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Poll::Ready(Err(self.send_error(cx, Some(e)))),
                None => return Poll::Ready(Err(self.send_error(cx, None))),
            }
        }
    }

    /// Sends `data` as DATA frames, without copying it, as flow control allows; what is sent
    /// is split off the front of `data`, so a pending call resumes where it stopped.
    pub fn poll_send(&mut self, cx: &mut Context<'_>, data: &mut Bytes) -> Poll<io::Result<()>> {
        if self.shut_down {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after shutdown",
            )));
        }
        while !data.is_empty() {
            let n = ready!(self.poll_send_capacity(cx, data.len()))?;
            if let Err(e) = self.send.send_data(data.split_to(n), false) {
                return Poll::Ready(Err(self.send_error(cx, Some(e))));
            }
        }
        Poll::Ready(Ok(()))
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
        let Some(mut recv) = self.recv.take() else {
            return;
        };
        // Return the credit of data taken from the stream but never read.
        if !self.pending.is_empty() {
            let _ = recv.flow_control().release_capacity(self.pending.len());
        }
        if self.eof {
            return;
        }
        if self.shared.write_done.load(Ordering::Acquire) {
            linger(recv, self.shared.clone());
        } else if Arc::strong_count(&self.shared) > 1 {
            // The write half lives on and may still close cleanly.
            *self.shared.parked_recv.lock() = Some(recv);
        }
    }
}

impl Drop for H2WriteHalf {
    fn drop(&mut self) {
        if !self.shut_down {
            self.send.send_reset(Reason::CANCEL);
            return;
        }
        if self.reset {
            return;
        }
        if let Some(recv) = self.shared.parked_recv.lock().take() {
            linger(recv, self.shared.clone());
        }
    }
}

/// Keeps a cleanly closed stream open until the peer finishes (discarding what it sends) or
/// [`LINGER_TIMEOUT`] passes, so that our queued data is delivered instead of being cancelled.
fn linger(mut recv: RecvStream, shared: Arc<Shared>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let _shared = shared;
        let drain = async {
            while let Some(Ok(chunk)) = recv.data().await {
                let _ = recv.flow_control().release_capacity(chunk.len());
            }
        };
        if tokio::time::timeout(LINGER_TIMEOUT, drain).await.is_err() {
            tracing::debug!("peer did not finish the stream in time; resetting it");
        }
    });
}

impl H2ReadHalf {
    /// Waits for received data: `Ok(true)` when [`H2ReadHalf::buffered`] holds some, `Ok(false)`
    /// at the end of the stream.
    pub fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        let Some(recv) = self.recv.as_mut() else {
            return Poll::Ready(Ok(false));
        };
        loop {
            if !self.pending.is_empty() {
                return Poll::Ready(Ok(true));
            }
            if self.eof {
                return Poll::Ready(Ok(false));
            }
            match ready!(recv.poll_data(cx)) {
                Some(Ok(chunk)) => self.pending = chunk,
                None => self.eof = true,
                // The peer finished its side and then told us to stop sending: everything it
                // meant to send has been received, so this reads as end of stream.
                Some(Err(e)) if e.is_reset() && e.reason() == Some(Reason::NO_ERROR) => {
                    self.eof = true
                }
                Some(Err(e)) => return Poll::Ready(Err(h2_to_io(e))),
            }
        }
    }

    /// Data received and not yet consumed: the DATA frame as it arrived, without a copy.
    pub fn buffered(&self) -> &[u8] {
        &self.pending
    }

    /// Marks the first `n` buffered bytes as delivered, returning their flow-control credit
    /// to the peer.
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.pending.len());
        self.pending.advance(n);
        if let Some(recv) = self.recv.as_mut()
            && let Err(e) = recv.flow_control().release_capacity(n)
        {
            tracing::debug!(error = %e, "releasing HTTP/2 receive capacity failed");
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
        if ready!(this.poll_fill(cx))? {
            let n = out.remaining().min(this.pending.len());
            out.put_slice(&this.pending[..n]);
            this.consume(n);
        }
        Poll::Ready(Ok(()))
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
        let n = ready!(this.poll_send_capacity(cx, buf.len()))?;
        match this
            .send
            .send_data(Bytes::copy_from_slice(&buf[..n]), false)
        {
            Ok(()) => Poll::Ready(Ok(n)),
            Err(e) => Poll::Ready(Err(this.send_error(cx, Some(e)))),
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
        let result = match this.send.send_data(Bytes::new(), true) {
            Ok(()) => Ok(()),
            Err(e) => match this.send_error(cx, Some(e)) {
                // The peer already ended the exchange and wants no more data: nothing to close.
                err if err.kind() == io::ErrorKind::BrokenPipe => Ok(()),
                err => Err(err),
            },
        };
        match &result {
            Ok(()) => this.shared.write_done.store(true, Ordering::Release),
            Err(_) => this.reset = true,
        }
        Poll::Ready(result)
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
