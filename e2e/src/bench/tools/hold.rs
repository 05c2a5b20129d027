//! Opens many connections, checks each with a one-byte echo, and keeps them open and idle: how
//! much memory a proxy spends per idle connection.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use super::connect_and_echo;

/// Line printed once the connections are open: `held <ok> of <n> (<errors> errors)`.
pub const HELD: &str = "held";

/// The open connections.
#[derive(Debug)]
pub struct Held {
    pub streams: Vec<TcpStream>,
    pub errors: u64,
    pub first_error: Option<String>,
}

/// Opens `n` connections to `addr`, at most `parallel` handshakes at a time.
pub async fn open(addr: SocketAddr, n: usize, parallel: usize) -> Held {
    let permits = Arc::new(Semaphore::new(parallel.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let permits = permits.clone();
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            connect_and_echo(addr).await
        });
    }
    let mut held = Held {
        streams: Vec::with_capacity(n),
        errors: 0,
        first_error: None,
    };
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok(s)) => held.streams.push(s),
            Ok(Err(e)) => {
                held.errors += 1;
                held.first_error.get_or_insert_with(|| e.to_string());
            }
            Err(e) => {
                held.errors += 1;
                held.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    held
}

/// The summary line for `held`.
pub fn summary(held: &Held, n: usize) -> String {
    let mut line = format!(
        "{HELD} {} of {n} ({} errors)",
        held.streams.len(),
        held.errors
    );
    if let Some(e) = &held.first_error {
        line.push_str(&format!("; first error: {e}"));
    }
    line
}

/// Parses a [`summary`] line back into (held, requested).
pub fn parse_summary(line: &str) -> Option<(usize, usize)> {
    let rest = line.trim().strip_prefix(HELD)?.trim_start();
    let mut words = rest.split_whitespace();
    let ok = words.next()?.parse().ok()?;
    (words.next()? == "of").then_some(())?;
    let n = words.next()?.parse().ok()?;
    Some((ok, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_round_trips() {
        let held = Held {
            streams: Vec::new(),
            errors: 3,
            first_error: Some("refused".into()),
        };
        let line = summary(&held, 10);
        assert_eq!(line, "held 0 of 10 (3 errors); first error: refused");
        assert_eq!(parse_summary(&line), Some((0, 10)));
        assert_eq!(parse_summary("something else"), None);
    }
}
