//! New TCP connections per second: each connection is opened, carries a one-byte echo and is
//! closed (with a reset, so no TIME_WAIT piles up), `concurrency` at a time, for a while.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{FirstError, RateReport, close_with_reset, connect_and_echo};

/// Runs the test against `addr` for `duration`.
pub async fn run(addr: SocketAddr, duration: Duration, concurrency: usize) -> RateReport {
    let start = Instant::now();
    let deadline = start + duration;
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first = FirstError::default();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (done, errors, first) = (done.clone(), errors.clone(), first.clone());
        tasks.spawn(async move {
            while Instant::now() < deadline {
                match connect_and_echo(addr).await {
                    Ok(s) => {
                        close_with_reset(&s);
                        drop(s);
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        first.set(e.to_string());
                        // Do not spin on a refused port.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    RateReport::new(
        done.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
        start.elapsed().as_secs_f64(),
        first.get(),
    )
}
