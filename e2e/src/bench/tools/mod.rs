//! The load tools `mesh-bench` runs inside pods (and a node): a quiet TCP echo server, a client
//! that opens and holds many idle connections, a new-connection rate client, and an in-process
//! HBONE client that opens a fresh mutual-TLS connection per tunnel.

pub mod connrate;
pub mod echo;
pub mod hbone;
pub mod hold;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Port of the quiet echo server (`mesh-bench serve`) in the server pods.
pub const ECHO_PORT: u16 = 9000;

/// Deadline of one connection attempt and of its one-byte echo.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Raises the open-files limit to the most the kernel allows (as root: up to 2^20), so that
/// this process and the ones it starts can hold tens of thousands of sockets. Returns the new
/// soft limit.
pub fn raise_nofile() -> u64 {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 0;
    };
    for want in [1u64 << 20, hard] {
        if want > soft && setrlimit(Resource::RLIMIT_NOFILE, want, want.max(hard)).is_ok() {
            return want;
        }
    }
    soft
}

/// Counters of a client run, printed as one JSON line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RateReport {
    /// Completed connections (or tunnels).
    pub completed: u64,
    pub errors: u64,
    pub seconds: f64,
    pub per_second: f64,
    /// The first error seen, if any.
    pub first_error: Option<String>,
}

impl RateReport {
    pub fn new(completed: u64, errors: u64, seconds: f64, first_error: Option<String>) -> Self {
        Self {
            completed,
            errors,
            seconds,
            per_second: if seconds > 0.0 {
                completed as f64 / seconds
            } else {
                0.0
            },
            first_error,
        }
    }
}

/// The first error message of a run, shared between tasks.
#[derive(Debug, Clone, Default)]
pub struct FirstError(Arc<Mutex<Option<String>>>);

impl FirstError {
    pub fn set(&self, e: String) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(e);
    }

    pub fn get(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Connects, sends one byte and reads its echo: proof the path is open end to end.
pub async fn connect_and_echo(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let mut s = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    s.set_nodelay(true)?;
    echo_byte(&mut s).await?;
    Ok(s)
}

/// Writes one byte and reads one back within [`IO_TIMEOUT`].
pub async fn echo_byte<S>(s: &mut S) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let round_trip = async {
        s.write_all(b"x").await?;
        s.flush().await?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await?;
        Ok::<_, std::io::Error>(())
    };
    tokio::time::timeout(IO_TIMEOUT, round_trip)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "echo timed out"))?
}

/// Closes with a reset instead of a FIN, so a rate test does not fill the port range with
/// TIME_WAIT sockets.
pub fn close_with_reset(s: &TcpStream) {
    let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn echo_server_and_clients_work_on_loopback() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(echo::serve_on(listener));
        let s = connect_and_echo(addr).await.unwrap();
        close_with_reset(&s);
        drop(s);
        let report = connrate::run(addr, Duration::from_millis(300), 4).await;
        assert!(report.completed > 0, "{report:?}");
        assert_eq!(report.errors, 0, "{report:?}");
        let held = hold::open(addr, 50, 10).await;
        assert_eq!(held.streams.len(), 50);
        assert_eq!(held.errors, 0);
    }

    #[test]
    fn rate_is_completed_over_seconds() {
        let r = RateReport::new(300, 2, 1.5, None);
        assert!((r.per_second - 200.0).abs() < 1e-9);
        assert_eq!(RateReport::new(1, 0, 0.0, None).per_second, 0.0);
    }
}
