//! Recently reviewed tokens, so that a burst of certificate requests with one token (a node
//! proxy starting up, a rotation of many pods) costs one TokenReview. Only authenticated
//! reviews are kept, for a short time, keyed by the SHA-256 of the token (the token itself is
//! not kept). What the token allows is still decided on each request, against the current
//! configuration (a deleted bound pod refuses at once).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_lc_rs::digest::{SHA256, digest};
use k8s_openapi::api::authentication::v1::TokenReviewStatus;
use parking_lot::Mutex;

/// How long a review is reused.
pub const REVIEW_TTL: Duration = Duration::from_secs(60);
/// Most reviews kept.
pub const MAX_REVIEWS: usize = 10_000;

type Key = [u8; 32];

/// Authenticated reviews by token digest.
#[derive(Debug)]
pub struct ReviewCache {
    ttl: Duration,
    max: usize,
    entries: Mutex<HashMap<Key, (Instant, TokenReviewStatus)>>,
}

impl Default for ReviewCache {
    fn default() -> Self {
        ReviewCache::new(REVIEW_TTL, MAX_REVIEWS)
    }
}

impl ReviewCache {
    pub fn new(ttl: Duration, max: usize) -> Self {
        ReviewCache {
            ttl,
            max: max.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn key(token: &str) -> Key {
        let mut key = [0u8; 32];
        key.copy_from_slice(digest(&SHA256, token.as_bytes()).as_ref());
        key
    }

    /// The review of `token` made less than the TTL before `now`.
    pub fn get(&self, token: &str, now: Instant) -> Option<TokenReviewStatus> {
        let entries = self.entries.lock();
        let (at, status) = entries.get(&Self::key(token))?;
        (now.saturating_duration_since(*at) < self.ttl).then(|| status.clone())
    }

    /// Keeps the review of `token` made at `now`, when it authenticated the token.
    pub fn put(&self, token: &str, status: &TokenReviewStatus, now: Instant) {
        if status.authenticated != Some(true) {
            return;
        }
        let mut entries = self.entries.lock();
        if entries.len() >= self.max {
            let ttl = self.ttl;
            entries.retain(|_, (at, _)| now.saturating_duration_since(*at) < ttl);
            if entries.len() >= self.max {
                entries.clear();
            }
        }
        entries.insert(Self::key(token), (now, status.clone()));
    }

    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::authentication::v1::UserInfo;

    use super::*;

    fn authenticated(user: &str) -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated: Some(true),
            user: Some(UserInfo {
                username: Some(user.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_review_is_reused_for_the_same_token_until_it_expires() {
        let cache = ReviewCache::new(Duration::from_secs(60), 100);
        let t0 = Instant::now();
        let status = authenticated("system:serviceaccount:istio-system:ztunnel");
        cache.put("token-a", &status, t0);
        assert_eq!(
            cache.get("token-a", t0 + Duration::from_secs(59)),
            Some(status)
        );
        assert_eq!(
            cache.get("token-b", t0),
            None,
            "another token is reviewed again"
        );
        assert_eq!(
            cache.get("token-a", t0 + Duration::from_secs(60)),
            None,
            "expired"
        );
    }

    #[test]
    fn refusals_are_not_kept_and_the_size_is_bounded() {
        let cache = ReviewCache::new(Duration::from_secs(60), 3);
        let t0 = Instant::now();
        let refused = TokenReviewStatus {
            authenticated: Some(false),
            error: Some("token expired".into()),
            ..Default::default()
        };
        cache.put("bad", &refused, t0);
        assert!(
            cache.is_empty(),
            "a refused token is reviewed again next time"
        );
        for i in 0..10 {
            cache.put(&format!("token-{i}"), &authenticated("u"), t0);
            assert!(cache.len() <= 3, "{} reviews kept", cache.len());
        }
        assert!(
            cache.get("token-9", t0).is_some(),
            "the newest review is kept"
        );
    }
}
