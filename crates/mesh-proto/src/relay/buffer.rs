//! The read side of a relayed socket: a buffer that grows while reads fill it and is released
//! while the socket has nothing to read.

use std::future::Future;
use std::io;
use std::pin::pin;
use std::task::Poll;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::net::TcpStream;

/// Size of the first read of a connection, and after an idle period.
pub const INITIAL_READ: usize = 4 * 1024;
/// Largest read.
pub const MAX_READ: usize = 256 * 1024;

/// Reads from a socket into buffers sized to the traffic.
#[derive(Debug)]
pub struct ReadBuffer {
    buf: BytesMut,
    size: usize,
}

impl Default for ReadBuffer {
    fn default() -> Self {
        ReadBuffer {
            buf: BytesMut::new(),
            size: INITIAL_READ,
        }
    }
}

impl ReadBuffer {
    /// The next read's size.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Bytes held by the buffer now (zero while idle).
    pub fn held(&self) -> usize {
        self.buf.capacity()
    }

    /// Reads what `tcp` has: `Some(bytes)`, or `None` at end of stream. The bytes are the
    /// buffer's own (no copy); once they are dropped their memory serves the next read. While
    /// the socket has nothing to read, the buffer is released and the next read starts small.
    pub async fn read(&mut self, tcp: &TcpStream) -> io::Result<Option<Bytes>> {
        loop {
            self.ready(tcp).await?;
            // Reuses the memory of the previous read when its bytes are gone.
            self.buf.reserve(self.size);
            match tcp.try_read_buf(&mut (&mut self.buf).limit(self.size)) {
                Ok(0) => return Ok(None),
                Ok(n) => {
                    if n >= self.size {
                        self.size = (self.size * 2).min(MAX_READ);
                    }
                    return Ok(Some(self.buf.split().freeze()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits until `tcp` is readable, first releasing the buffer when that means waiting.
    async fn ready(&mut self, tcp: &TcpStream) -> io::Result<()> {
        let mut readable = pin!(tcp.readable());
        let now = std::future::poll_fn(|cx| match readable.as_mut().poll(cx) {
            Poll::Ready(r) => Poll::Ready(Some(r)),
            Poll::Pending => Poll::Ready(None),
        })
        .await;
        match now {
            Some(r) => r,
            None => {
                self.buf = BytesMut::new();
                self.size = INITIAL_READ;
                readable.await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;

    async fn pair() -> (tokio::net::TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let a = tokio::net::TcpStream::connect(l.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (b, _) = l.accept().await.expect("accept");
        (a, b)
    }

    #[tokio::test]
    async fn reads_grow_with_the_traffic_and_the_buffer_is_released_when_idle() {
        let (mut a, b) = pair().await;
        let mut r = ReadBuffer::default();
        let big = vec![7u8; 1 << 20];
        let writer = tokio::spawn(async move {
            a.write_all(&big).await.expect("write");
            a
        });
        let mut got = 0;
        let mut largest = 0;
        while got < 1 << 20 {
            let chunk = r.read(&b).await.expect("read").expect("data");
            assert!(chunk.iter().all(|&x| x == 7));
            largest = largest.max(chunk.len());
            got += chunk.len();
        }
        assert_eq!(got, 1 << 20);
        let mut a = writer.await.expect("writer");
        assert!(
            largest > INITIAL_READ,
            "reads grew past {INITIAL_READ}: {largest}"
        );
        assert!(largest <= MAX_READ);

        // Nothing to read: the read gives the buffer back before it waits.
        assert!(r.read(&b).now_or_never().is_none(), "nothing to read yet");
        assert_eq!(r.held(), 0, "no buffer held while idle");
        assert_eq!(r.size(), INITIAL_READ, "the next read starts small");

        a.write_all(b"hello").await.expect("write");
        assert_eq!(
            &r.read(&b).await.expect("read").expect("data")[..],
            b"hello"
        );
        drop(a);
        assert_eq!(r.read(&b).await.expect("read"), None, "end of stream");
    }
}
