//! Waiting for a condition with a deadline (instead of sleeping a fixed time).

use std::time::{Duration, Instant};

/// A condition that did not hold in time.
#[derive(Debug, thiserror::Error)]
#[error(
    "timed out after {waited:?} ({attempts} attempts) waiting for {what}; last observation: {last}"
)]
pub struct PollError {
    pub what: String,
    pub waited: Duration,
    pub attempts: u32,
    pub last: String,
}

/// Calls `check` until it returns `Ok` or `timeout` passes; `Err(text)` describes what was seen
/// and ends up in the timeout error. The interval grows from 50 ms to 500 ms.
pub fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> Result<T, PollError> {
    let start = Instant::now();
    let mut interval = Duration::from_millis(50);
    let mut attempts = 0;
    loop {
        attempts += 1;
        match check() {
            Ok(v) => return Ok(v),
            Err(last) => {
                if start.elapsed() >= timeout {
                    return Err(PollError {
                        what: what.to_string(),
                        waited: start.elapsed(),
                        attempts,
                        last,
                    });
                }
            }
        }
        let left = timeout.saturating_sub(start.elapsed());
        std::thread::sleep(interval.min(left).max(Duration::from_millis(1)));
        interval = (interval * 2).min(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_first_success() {
        let mut n = 0;
        let v = eventually("n reaches 3", Duration::from_secs(5), || {
            n += 1;
            if n >= 3 {
                Ok(n)
            } else {
                Err(format!("n = {n}"))
            }
        })
        .unwrap();
        assert_eq!(v, 3);
    }

    #[test]
    fn times_out_with_the_last_observation() {
        let e = eventually::<()>("never", Duration::from_millis(120), || {
            Err("still no".into())
        })
        .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("never") && text.contains("still no"),
            "{text}"
        );
        assert!(e.attempts >= 2);
    }
}
