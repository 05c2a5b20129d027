//! The echo client: one TCP echo exchange or one HTTP GET, blocking, with a deadline.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::http1::{self, HttpError, Response, Url};

/// Why an echo exchange failed; the text is what the user (or a test log) reads.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot resolve {addr:?}: {reason}")]
    Resolve { addr: String, reason: String },
    #[error("connection to {addr} refused")]
    Refused { addr: String },
    #[error("connecting to {addr} timed out after {timeout:?}")]
    ConnectTimeout { addr: String, timeout: Duration },
    #[error("connecting to {addr} failed: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "connection to {addr} {how} after {got} of {want} echoed bytes{}",
        if *got == 0 { " (nothing echoed)" } else { "" }
    )]
    Closed {
        addr: String,
        how: &'static str,
        got: usize,
        want: usize,
    },
    #[error("no complete echo from {addr} within {timeout:?} (got {got} of {want} bytes)")]
    ReadTimeout {
        addr: String,
        timeout: Duration,
        got: usize,
        want: usize,
    },
    #[error("echo from {addr} differs: sent {sent:?}, got {got:?}")]
    Mismatch {
        addr: String,
        sent: String,
        got: String,
    },
    #[error("i/o error talking to {addr}: {source}")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP request to {url} failed: {source}")]
    Http {
        url: String,
        #[source]
        source: HttpError,
    },
}

fn resolve(addr: &str) -> Result<SocketAddr, ClientError> {
    addr.to_socket_addrs()
        .map_err(|e| ClientError::Resolve {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?
        .next()
        .ok_or_else(|| ClientError::Resolve {
            addr: addr.to_string(),
            reason: "no address".into(),
        })
}

/// Connects to `addr` within `timeout`, with read and write timeouts set to `timeout`.
pub fn connect(addr: &str, timeout: Duration) -> Result<TcpStream, ClientError> {
    let sa = resolve(addr)?;
    let stream = TcpStream::connect_timeout(&sa, timeout).map_err(|e| match e.kind() {
        ErrorKind::ConnectionRefused => ClientError::Refused {
            addr: addr.to_string(),
        },
        ErrorKind::TimedOut | ErrorKind::WouldBlock => ClientError::ConnectTimeout {
            addr: addr.to_string(),
            timeout,
        },
        _ => ClientError::Connect {
            addr: addr.to_string(),
            source: e,
        },
    })?;
    let io = |source| ClientError::Io {
        addr: addr.to_string(),
        source,
    };
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    Ok(stream)
}

/// Sends `message` to the TCP echo server at `addr` and returns the echoed text, which must be
/// exactly `message`.
pub fn tcp(addr: &str, message: &str, timeout: Duration) -> Result<String, ClientError> {
    let deadline = Instant::now() + timeout;
    let mut stream = connect(addr, timeout)?;
    let want = message.len();
    let closed = |how, got| ClientError::Closed {
        addr: addr.to_string(),
        how,
        got,
        want,
    };
    if let Err(e) = stream.write_all(message.as_bytes()) {
        return Err(match e.kind() {
            ErrorKind::ConnectionReset | ErrorKind::BrokenPipe => closed("was reset", 0),
            _ => ClientError::Io {
                addr: addr.to_string(),
                source: e,
            },
        });
    }
    let mut got = Vec::with_capacity(want);
    let mut buf = [0u8; 4096];
    while got.len() < want {
        if Instant::now() >= deadline {
            return Err(ClientError::ReadTimeout {
                addr: addr.to_string(),
                timeout,
                got: got.len(),
                want,
            });
        }
        match stream.read(&mut buf) {
            Ok(0) => return Err(closed("was closed by the peer", got.len())),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(ClientError::ReadTimeout {
                    addr: addr.to_string(),
                    timeout,
                    got: got.len(),
                    want,
                });
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                return Err(closed("was reset", got.len()));
            }
            Err(e) => {
                return Err(ClientError::Io {
                    addr: addr.to_string(),
                    source: e,
                });
            }
        }
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    if text != message {
        return Err(ClientError::Mismatch {
            addr: addr.to_string(),
            sent: message.to_string(),
            got: text,
        });
    }
    Ok(text)
}

/// `GET url` (http:// only); returns the response whatever its status.
pub fn http(url: &str, timeout: Duration) -> Result<Response, ClientError> {
    http_with_headers(url, &[], timeout)
}

/// `GET url` with extra request headers.
pub fn http_with_headers(
    url: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<Response, ClientError> {
    let http_err = |source| ClientError::Http {
        url: url.to_string(),
        source,
    };
    let parsed = Url::parse(url).map_err(http_err)?;
    let stream = connect(&parsed.authority(), timeout)?;
    http1::get(stream, &parsed.authority(), &parsed.path, headers).map_err(|e| match e {
        HttpError::Io(io) if io.kind() == ErrorKind::ConnectionReset => ClientError::Closed {
            addr: parsed.authority(),
            how: "was reset",
            got: 0,
            want: 0,
        },
        other => http_err(other),
    })
}

/// What `count` GETs of one URL got: how many of each status, which pods answered (the
/// `x-echo-pod` header of `mesh-echo server`, else the `pod` field of its JSON body), and the
/// failures that got no response.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RepeatSummary {
    pub requests: u32,
    pub statuses: BTreeMap<u16, u32>,
    pub pods: BTreeMap<String, u32>,
    pub errors: BTreeMap<String, u32>,
}

/// `GET url` `count` times, each on a new connection (so that every request is balanced on its
/// own), and counts the outcomes.
pub fn http_repeat(
    url: &str,
    headers: &[(&str, &str)],
    count: u32,
    timeout: Duration,
) -> RepeatSummary {
    let mut sum = RepeatSummary::default();
    for _ in 0..count {
        sum.requests += 1;
        match http_with_headers(url, headers, timeout) {
            Ok(resp) => {
                *sum.statuses.entry(resp.status).or_default() += 1;
                if let Some(pod) = answering_pod(&resp) {
                    *sum.pods.entry(pod).or_default() += 1;
                }
            }
            Err(e) => *sum.errors.entry(e.to_string()).or_default() += 1,
        }
    }
    sum
}

fn answering_pod(resp: &Response) -> Option<String> {
    if let Some(p) = resp.header("x-echo-pod") {
        return Some(p.to_string());
    }
    let v: serde_json::Value = serde_json::from_slice(&resp.body).ok()?;
    v.get("pod")?.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn refused_connection_says_so() {
        // Bind then drop to get a port nobody listens on.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = tcp(&format!("127.0.0.1:{port}"), "x", Duration::from_secs(2)).unwrap_err();
        assert!(err.to_string().contains("refused"), "{err}");
    }

    #[test]
    fn peer_closing_without_echo_is_an_error() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut b = [0u8; 16];
            let _ = s.read(&mut b);
            // Close without answering.
        });
        let err = tcp(&addr, "secret", Duration::from_secs(5)).unwrap_err();
        t.join().unwrap();
        let text = err.to_string();
        assert!(
            text.contains("nothing echoed") && text.contains(&addr),
            "{text}"
        );
    }

    #[test]
    fn wrong_echo_is_a_mismatch() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut b = [0u8; 16];
            let _ = s.read(&mut b);
            s.write_all(b"nope!!").unwrap();
        });
        let err = tcp(&addr, "hello!", Duration::from_secs(5)).unwrap_err();
        t.join().unwrap();
        assert!(matches!(err, ClientError::Mismatch { .. }), "{err}");
    }
}
