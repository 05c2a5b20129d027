//! Polling assertions with a deadline, instead of fixed sleeps.

use std::time::Duration;

use tokio::time::{Instant, sleep};

/// How often the condition is re-evaluated.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Polls `f` until it returns `true`; panics with `what` if `timeout` passes first.
///
/// The condition is always evaluated at least once, and once more after the deadline, so a
/// condition that became true while the runtime was busy is not reported as a failure.
pub async fn eventually<F: FnMut() -> bool>(what: &str, timeout: Duration, mut f: F) {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return;
        }
        if Instant::now() >= deadline {
            break;
        }
        sleep(POLL_INTERVAL).await;
    }
    assert!(f(), "timed out after {timeout:?} waiting for: {what}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_once_the_condition_holds() {
        let mut calls = 0;
        eventually("third call", Duration::from_secs(5), || {
            calls += 1;
            calls >= 3
        })
        .await;
        assert_eq!(calls, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "timed out after 50ms waiting for: never true")]
    async fn panics_with_the_description_on_timeout() {
        eventually("never true", Duration::from_millis(50), || false).await;
    }
}
