//! TCP to TCP.

use std::io;

use tokio::net::TcpStream;

use super::{ReadBuffer, shutdown_write, write_all};

/// Relays between `a` and `b` until both directions ended; returns the bytes moved `a → b`
/// and `b → a`.
pub async fn relay_tcp(a: &TcpStream, b: &TcpStream) -> io::Result<(u64, u64)> {
    tokio::try_join!(one_way(a, b), one_way(b, a))
}

async fn one_way(from: &TcpStream, to: &TcpStream) -> io::Result<u64> {
    let mut buf = ReadBuffer::default();
    let mut moved = 0u64;
    while let Some(chunk) = buf.read(from).await? {
        write_all(to, &chunk).await?;
        moved += chunk.len() as u64;
    }
    shutdown_write(to)?;
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let a = TcpStream::connect(l.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (b, _) = l.accept().await.expect("accept");
        (a, b)
    }

    #[tokio::test]
    async fn bytes_and_half_closes_cross_both_ways() {
        // client <-> (a | relay | b) <-> server
        let (mut client, a) = pair().await;
        let (b, mut server) = pair().await;
        let relay = tokio::spawn(async move { relay_tcp(&a, &b).await });

        let up: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let expected = up.clone();
        let sender = tokio::spawn(async move {
            client.write_all(&up).await.expect("client write");
            client.shutdown().await.expect("client shutdown");
            let mut back = Vec::new();
            client.read_to_end(&mut back).await.expect("client read");
            back
        });
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.expect("server read");
        assert_eq!(got, expected, "client → server bytes, then end of stream");
        server.write_all(b"done").await.expect("server write");
        server.shutdown().await.expect("server shutdown");
        assert_eq!(sender.await.expect("join"), b"done");
        let (up_n, down_n) = relay.await.expect("join").expect("relay");
        assert_eq!((up_n, down_n), (3_000_000, 4));
    }

    #[tokio::test]
    async fn a_reset_ends_the_relay_with_an_error() {
        let (client, a) = pair().await;
        let (b, _server) = pair().await;
        let relay = tokio::spawn(async move { relay_tcp(&a, &b).await });
        socket2::SockRef::from(&client)
            .set_linger(Some(std::time::Duration::ZERO))
            .expect("linger");
        drop(client);
        let err = relay.await.expect("join").expect_err("reset");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    }
}
