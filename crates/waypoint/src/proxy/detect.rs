//! Protocol detection on a freshly accepted tunnel: HTTP/2 (the client preface, as gRPC and
//! prior-knowledge h2c clients send it), HTTP/1.1 (a request line starting with a method), or
//! anything else, which is passed through as TCP. Bytes read while deciding are replayed.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// How long a silent client is waited for before the stream is treated as TCP (protocols where
/// the server speaks first).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const METHODS: [&[u8]; 9] = [
    b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS", b"TRACE", b"PATCH",
];
/// Longest method plus the space after it.
const MAX_METHOD: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detected {
    Http1,
    Http2,
    Tcp,
}

/// What the bytes so far say, if they say enough.
pub fn classify(buf: &[u8]) -> Option<Detected> {
    if buf.is_empty() {
        return None;
    }
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        if n == H2_PREFACE.len() {
            return Some(Detected::Http2);
        }
        // `PRI` could still be an HTTP/1 method-like token, but no client sends it.
        return None;
    }
    match buf.iter().position(|b| *b == b' ') {
        Some(i) => Some(if METHODS.contains(&&buf[..i]) {
            Detected::Http1
        } else {
            Detected::Tcp
        }),
        None if buf.len() >= MAX_METHOD => Some(Detected::Tcp),
        None if METHODS.iter().any(|m| m.starts_with(buf)) => None,
        None => Some(Detected::Tcp),
    }
}

/// Reads until the protocol is known, the peer goes quiet for `timeout`, or closes. Returns
/// the verdict and the bytes read.
pub async fn detect<S: AsyncRead + Unpin>(
    stream: &mut S,
    timeout: Duration,
) -> io::Result<(Detected, Bytes)> {
    let mut buf = BytesMut::with_capacity(64);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(d) = classify(&buf) {
            return Ok((d, buf.freeze()));
        }
        let read = tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await;
        match read {
            Err(_) | Ok(Ok(0)) => return Ok((Detected::Tcp, buf.freeze())),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
        }
    }
}

/// A stream whose first reads return `prefix`.
#[derive(Debug)]
pub struct Rewind<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Rewind<S> {
    pub fn new(prefix: Bytes, inner: S) -> Self {
        Rewind { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(out.remaining());
            out.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, out)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_first_bytes() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Detected::Http1));
        assert_eq!(classify(b"DELETE /x"), Some(Detected::Http1));
        assert_eq!(classify(H2_PREFACE), Some(Detected::Http2));
        assert_eq!(classify(b"PRI * HTTP/2.0\r\n"), None, "preface incomplete");
        assert_eq!(classify(b"GE"), None, "could still be GET");
        assert_eq!(classify(b"\x16\x03\x01"), Some(Detected::Tcp), "TLS hello");
        assert_eq!(classify(b"SSH-2.0-OpenSSH"), Some(Detected::Tcp));
        assert_eq!(classify(b"get / HTTP/1.1"), Some(Detected::Tcp));
        assert_eq!(classify(b"PROPFIND "), Some(Detected::Tcp));
    }

    #[tokio::test]
    async fn replays_what_detection_read() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        tokio::io::AsyncWriteExt::write_all(&mut client, b"POST /a HTTP/1.1\r\n")
            .await
            .expect("write");
        let (d, prefix) = detect(&mut server, Duration::from_secs(5))
            .await
            .expect("detect");
        assert_eq!(d, Detected::Http1);
        drop(client);
        let mut all = Vec::new();
        Rewind::new(prefix, server)
            .read_to_end(&mut all)
            .await
            .expect("read");
        assert_eq!(all, b"POST /a HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn a_silent_client_is_tcp() {
        let (_client, mut server) = tokio::io::duplex(1024);
        let (d, prefix) = detect(&mut server, Duration::from_millis(20))
            .await
            .expect("detect");
        assert_eq!((d, prefix.len()), (Detected::Tcp, 0));
    }
}
