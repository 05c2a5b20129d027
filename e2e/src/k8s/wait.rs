//! Waiting for a condition of the cluster with a deadline, instead of sleeping a fixed time.

use std::future::Future;
use std::time::{Duration, Instant};

use super::K8sError;

/// Calls `check` until it returns `Ok` or `timeout` passes. `Err(text)` describes what was seen
/// and ends up in the timeout error. The interval grows from 200 ms to 2 s.
pub async fn eventually<T, F, Fut>(
    what: &str,
    timeout: Duration,
    mut check: F,
) -> Result<T, K8sError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    let mut interval = Duration::from_millis(200);
    let mut attempts = 0;
    loop {
        attempts += 1;
        match check().await {
            Ok(v) => return Ok(v),
            Err(last) => {
                if start.elapsed() >= timeout {
                    return Err(K8sError::Timeout {
                        what: what.to_string(),
                        waited: start.elapsed(),
                        attempts,
                        last,
                    });
                }
            }
        }
        let left = timeout.saturating_sub(start.elapsed());
        tokio::time::sleep(interval.min(left).max(Duration::from_millis(1))).await;
        interval = (interval * 2).min(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_first_success() {
        let mut n = 0;
        let v = eventually("n reaches 3", Duration::from_secs(10), || {
            n += 1;
            let now = n;
            async move {
                if now >= 3 {
                    Ok(now)
                } else {
                    Err(format!("n = {now}"))
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(v, 3);
    }

    #[tokio::test]
    async fn times_out_with_the_last_observation() {
        let e = eventually::<(), _, _>("never", Duration::from_millis(300), || async {
            Err("still no".to_string())
        })
        .await
        .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("never") && text.contains("still no"),
            "{text}"
        );
    }
}
