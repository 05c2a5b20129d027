//! Retries: the request body each attempt sends, and the delay between attempts.
//!
//! The downstream body is never collected before forwarding: it streams to the first attempt
//! as it arrives. While it does, its chunks are also kept, up to [`DEFAULT_BUFFER_LIMIT`]
//! bytes; a later attempt replays the kept chunks and then continues with the rest of the
//! stream. Once a body outgrows the limit the kept chunks are dropped and the request can no
//! longer be retried (the attempt in progress is unaffected). So retries apply to bodiless
//! requests and to bodies of at most 64 KiB, whether or not they were fully received when the
//! attempt failed.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use parking_lot::Mutex;

use super::BoxError;

/// Largest request body kept for replay.
pub const DEFAULT_BUFFER_LIMIT: usize = 64 << 10;

type Source = Pin<Box<dyn Body<Data = Bytes, Error = BoxError> + Send>>;

struct Shared {
    source: Source,
    /// Data chunks kept for replay, after the `dropped` first ones.
    kept: Vec<Bytes>,
    kept_bytes: usize,
    /// Chunks no longer kept (from the start of the body).
    dropped: usize,
    trailers: Option<HeaderMap>,
    /// The source has ended.
    done: bool,
    /// Bytes read from the downstream body.
    total: u64,
    limit: usize,
    exact_len: Option<u64>,
}

/// The downstream request body, shared by the attempts.
#[derive(Clone)]
pub struct ReplayBody {
    shared: Arc<Mutex<Shared>>,
}

impl ReplayBody {
    pub fn new<B>(body: B, limit: usize) -> Self
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        use http_body_util::BodyExt;
        let exact_len = body.size_hint().exact();
        let done = body.is_end_stream();
        ReplayBody {
            shared: Arc::new(Mutex::new(Shared {
                source: Box::pin(body.map_err(Into::into)),
                kept: Vec::new(),
                kept_bytes: 0,
                dropped: 0,
                trailers: None,
                done,
                total: 0,
                limit,
                exact_len,
            })),
        }
    }

    /// A body for the next attempt, starting from the first byte.
    pub fn attempt(&self) -> AttemptBody {
        AttemptBody {
            shared: self.shared.clone(),
            next: 0,
            trailers_sent: false,
        }
    }

    /// Whether a new attempt could send the whole body again.
    pub fn can_replay(&self) -> bool {
        self.shared.lock().dropped == 0
    }

    /// Bytes received from downstream so far.
    pub fn bytes_received(&self) -> u64 {
        self.shared.lock().total
    }
}

/// The body of one upstream attempt.
pub struct AttemptBody {
    shared: Arc<Mutex<Shared>>,
    /// Index of the next chunk this attempt sends.
    next: usize,
    trailers_sent: bool,
}

impl Body for AttemptBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let mut sh = this.shared.lock();
        if this.next < sh.dropped {
            return Poll::Ready(Some(Err(
                "request body was already partly sent and is too large to replay".into(),
            )));
        }
        if let Some(chunk) = sh.kept.get(this.next - sh.dropped) {
            this.next += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk.clone()))));
        }
        if sh.done {
            if !this.trailers_sent {
                this.trailers_sent = true;
                if let Some(t) = sh.trailers.clone() {
                    return Poll::Ready(Some(Ok(Frame::trailers(t))));
                }
            }
            return Poll::Ready(None);
        }
        let frame = match sh.source.as_mut().poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(f) => f,
        };
        match frame {
            None => {
                sh.done = true;
                this.trailers_sent = true;
                Poll::Ready(None)
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e))),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    sh.total += data.len() as u64;
                    this.next += 1;
                    if sh.dropped == 0 && sh.kept_bytes + data.len() <= sh.limit {
                        sh.kept_bytes += data.len();
                        sh.kept.push(data.clone());
                    } else {
                        sh.dropped += sh.kept.len() + 1;
                        sh.kept.clear();
                        sh.kept_bytes = 0;
                    }
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                Err(frame) => match frame.into_trailers() {
                    Ok(t) => {
                        sh.trailers = Some(t.clone());
                        sh.done = true;
                        this.trailers_sent = true;
                        Poll::Ready(Some(Ok(Frame::trailers(t))))
                    }
                    Err(_) => Poll::Ready(None),
                },
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        let sh = self.shared.lock();
        sh.done && this_at_end(self.next, &sh) && (self.trailers_sent || sh.trailers.is_none())
    }

    fn size_hint(&self) -> SizeHint {
        let sh = self.shared.lock();
        match sh.exact_len {
            Some(n) if self.next == 0 => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

fn this_at_end(next: usize, sh: &Shared) -> bool {
    next >= sh.dropped + sh.kept.len()
}

/// Delay before retry number `retry` (1-based): `base` doubling per retry, at most ten times
/// `base`, drawn from its upper half.
pub fn backoff(base: Duration, retry: u32) -> Duration {
    if base.is_zero() {
        return Duration::ZERO;
    }
    let d = base
        .saturating_mul(1u32 << retry.saturating_sub(1).min(10))
        .min(base * 10);
    d.mul_f64(rand::random_range(0.5..=1.0))
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, StreamBody};

    use super::*;

    fn streamed(chunks: Vec<&'static [u8]>) -> impl Body<Data = Bytes, Error = BoxError> + Send {
        StreamBody::new(futures::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, BoxError>(Frame::data(Bytes::from_static(c)))),
        ))
    }

    async fn collect(b: AttemptBody) -> Result<Vec<u8>, BoxError> {
        Ok(b.collect().await?.to_bytes().to_vec())
    }

    #[tokio::test]
    async fn a_small_body_replays_in_full() {
        let body = ReplayBody::new(streamed(vec![b"hello ", b"world"]), 64);
        // The first attempt stops after one chunk (the backend failed early).
        let mut first = body.attempt();
        let f = first.frame().await.expect("frame").expect("ok");
        assert_eq!(f.into_data().ok(), Some(Bytes::from_static(b"hello ")));
        drop(first);
        assert!(body.can_replay());
        assert_eq!(
            collect(body.attempt()).await.expect("second"),
            b"hello world"
        );
        assert_eq!(
            collect(body.attempt()).await.expect("third"),
            b"hello world"
        );
        assert_eq!(body.bytes_received(), 11);
    }

    #[tokio::test]
    async fn a_large_body_streams_once_and_cannot_replay() {
        let body = ReplayBody::new(streamed(vec![b"0123456789", b"abcdefghij"]), 12);
        assert_eq!(
            collect(body.attempt()).await.expect("first"),
            b"0123456789abcdefghij"
        );
        assert!(!body.can_replay());
        let err = collect(body.attempt()).await.expect_err("replay refused");
        assert!(err.to_string().contains("too large to replay"), "{err}");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_millis(10);
        assert!(backoff(base, 1) <= base);
        assert!(backoff(base, 3) <= base * 4 && backoff(base, 3) >= base * 2);
        assert!(backoff(base, 30) <= base * 10);
        assert_eq!(backoff(Duration::ZERO, 3), Duration::ZERO);
    }
}
