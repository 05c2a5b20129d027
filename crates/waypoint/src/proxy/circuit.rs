//! Circuit breaking per backend service, and outlier ejection per endpoint.
//!
//! - Requests in flight to a service are limited by `max_requests`; for HTTP/1.1 backends,
//!   where a connection carries one request at a time, also by `max_connections`. A request
//!   over the limit waits for a slot as a pending request; when `max_pending_requests` are
//!   already waiting it fails at once with 503 and response flag `UO`. A request holds its slot
//!   until its response has been sent completely.
//! - Upstream connections (tunnels) to a service are limited by `max_connections`; at the limit
//!   an idle connection of the service is closed to make room, and when none is idle the
//!   request fails with 503 `UO`.
//! - An endpoint that answers `consecutive_5xx` times in a row with a 5xx (or cannot be
//!   reached, or times out) is ejected for `ejection`: no request is sent to it meanwhile. When
//!   every endpoint of a service is ejected, requests fail with 503 `UH`.
//! - Retries are bounded by a budget: retries in flight to a service may not exceed a
//!   percentage of its active requests, with a floor.
//!
//! The limits are those of the backend service's own configuration (its `circuit_breaker`,
//! when the service is bound to this waypoint), whichever route sends traffic to it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::ProxyError;
use crate::config_model::CircuitBreakerSpec;

/// Circuits of every backend service that has seen traffic.
#[derive(Default)]
pub struct Circuits {
    services: Mutex<HashMap<String, Arc<ServiceCircuit>>>,
}

impl Circuits {
    /// The circuit of `service`, with `spec` as its current limits.
    pub fn get(&self, service: &str, spec: Option<&CircuitBreakerSpec>) -> Arc<ServiceCircuit> {
        let c = self
            .services
            .lock()
            .entry(service.to_string())
            .or_insert_with(|| {
                Arc::new(ServiceCircuit {
                    service: service.to_string(),
                    state: Mutex::new(State::default()),
                    released: Notify::new(),
                })
            })
            .clone();
        c.state.lock().spec = spec.cloned().unwrap_or_default();
        c
    }

    /// Ejected endpoints per service, for the admin dump.
    pub fn dump(&self) -> Vec<CircuitDump> {
        let mut out: Vec<CircuitDump> = self
            .services
            .lock()
            .values()
            .map(|c| {
                let st = c.state.lock();
                let now = Instant::now();
                CircuitDump {
                    service: c.service.clone(),
                    active_requests: st.active,
                    pending_requests: st.pending,
                    connections: st.connections,
                    ejected: st
                        .outliers
                        .iter()
                        .filter(|(_, o)| o.ejected_until.is_some_and(|t| t > now))
                        .map(|(uid, _)| uid.clone())
                        .collect(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.service.cmp(&b.service));
        out
    }
}

#[derive(Debug, serde::Serialize)]
pub struct CircuitDump {
    pub service: String,
    pub active_requests: u32,
    pub pending_requests: u32,
    pub connections: u32,
    pub ejected: Vec<String>,
}

pub struct ServiceCircuit {
    service: String,
    state: Mutex<State>,
    released: Notify,
}

#[derive(Default)]
struct State {
    spec: CircuitBreakerSpec,
    active: u32,
    pending: u32,
    connections: u32,
    retries: u32,
    outliers: HashMap<String, Outlier>,
}

#[derive(Default)]
struct Outlier {
    consecutive: u32,
    ejected_until: Option<Instant>,
}

/// A request slot, released on drop.
pub struct RequestPermit {
    circuit: Arc<ServiceCircuit>,
}

/// An upstream connection's place in the count, released on drop.
pub struct ConnectionPermit {
    circuit: Arc<ServiceCircuit>,
}

/// A retry in flight, released on drop.
pub struct RetryPermit {
    circuit: Arc<ServiceCircuit>,
}

impl ServiceCircuit {
    pub fn service(&self) -> &str {
        &self.service
    }

    fn request_limit(st: &State, http1: bool) -> Option<u32> {
        match (
            st.spec.max_requests,
            st.spec.max_connections.filter(|_| http1),
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn try_acquire(&self, http1: bool) -> bool {
        let mut st = self.state.lock();
        if Self::request_limit(&st, http1).is_none_or(|l| st.active < l) {
            st.active += 1;
            true
        } else {
            false
        }
    }

    /// Waits for a request slot, or fails with `UO` when too many requests already wait.
    pub async fn admit(self: &Arc<Self>, http1: bool) -> Result<RequestPermit, ProxyError> {
        if self.try_acquire(http1) {
            return Ok(RequestPermit {
                circuit: self.clone(),
            });
        }
        {
            let mut st = self.state.lock();
            if st
                .spec
                .max_pending_requests
                .is_some_and(|max| st.pending >= max)
            {
                return Err(ProxyError::Overflow(format!(
                    "{}: {} requests in flight and {} pending",
                    self.service, st.active, st.pending
                )));
            }
            st.pending += 1;
        }
        let _pending = PendingGuard(self);
        loop {
            let notified = self.released.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.try_acquire(http1) {
                return Ok(RequestPermit {
                    circuit: self.clone(),
                });
            }
            notified.await;
        }
    }

    /// Counts a new upstream connection; `false` when the service is at `max_connections`.
    pub fn open_connection(self: &Arc<Self>) -> Option<ConnectionPermit> {
        let mut st = self.state.lock();
        if st
            .spec
            .max_connections
            .is_some_and(|max| st.connections >= max)
        {
            return None;
        }
        st.connections += 1;
        Some(ConnectionPermit {
            circuit: self.clone(),
        })
    }

    /// A retry slot within the budget, if any.
    pub fn try_retry(
        self: &Arc<Self>,
        budget_percent: u32,
        min_concurrency: u32,
    ) -> Option<RetryPermit> {
        let mut st = self.state.lock();
        let budget = (u64::from(st.active) * u64::from(budget_percent) / 100)
            .max(u64::from(min_concurrency));
        if u64::from(st.retries) >= budget {
            return None;
        }
        st.retries += 1;
        Some(RetryPermit {
            circuit: self.clone(),
        })
    }

    pub fn is_ejected(&self, uid: &str) -> bool {
        let st = self.state.lock();
        st.outliers
            .get(uid)
            .and_then(|o| o.ejected_until)
            .is_some_and(|t| t > Instant::now())
    }

    /// Records an attempt's outcome for endpoint `uid`; `failed` for 5xx and connection
    /// failures. Returns `true` when this outcome ejected the endpoint.
    pub fn report(&self, uid: &str, failed: bool) -> bool {
        let mut st = self.state.lock();
        let threshold = st.spec.consecutive_5xx;
        let ejection = st.spec.ejection;
        if threshold == 0 {
            st.outliers.remove(uid);
            return false;
        }
        let o = st.outliers.entry(uid.to_string()).or_default();
        if !failed {
            o.consecutive = 0;
            return false;
        }
        o.consecutive += 1;
        if o.consecutive >= threshold {
            o.consecutive = 0;
            o.ejected_until = Some(Instant::now() + ejection);
            tracing::info!(service = %self.service, endpoint = uid, ?ejection, "endpoint ejected after consecutive failures");
            return true;
        }
        false
    }
}

struct PendingGuard<'a>(&'a ServiceCircuit);

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.0.state.lock().pending -= 1;
    }
}

impl Drop for RequestPermit {
    fn drop(&mut self) {
        self.circuit.state.lock().active -= 1;
        self.circuit.released.notify_one();
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.circuit.state.lock().connections -= 1;
    }
}

impl Drop for RetryPermit {
    fn drop(&mut self) {
        self.circuit.state.lock().retries -= 1;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn spec(max_requests: u32, max_pending: u32) -> CircuitBreakerSpec {
        CircuitBreakerSpec {
            max_requests: (max_requests > 0).then_some(max_requests),
            max_pending_requests: (max_pending > 0).then_some(max_pending),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn pending_requests_wait_for_a_slot_and_overflow_fails() {
        let circuits = Circuits::default();
        let c = circuits.get("ns/svc", Some(&spec(1, 1)));
        let first = c.admit(false).await.expect("first slot");
        let waiter = {
            let c = c.clone();
            tokio::spawn(async move { c.admit(false).await.map(|_| ()) })
        };
        test_support::eventually("second request pending", Duration::from_secs(5), || {
            c.state.lock().pending == 1
        })
        .await;
        let err = c.admit(false).await.err().expect("third overflows");
        assert_eq!(err.response_flag(), "UO");
        assert_eq!(err.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        drop(first);
        waiter
            .await
            .expect("join")
            .expect("pending request admitted");
    }

    #[test]
    fn consecutive_failures_eject_and_success_resets() {
        let circuits = Circuits::default();
        let c = circuits.get(
            "ns/svc",
            Some(&CircuitBreakerSpec {
                consecutive_5xx: 2,
                ejection: Duration::from_secs(60),
                ..Default::default()
            }),
        );
        assert!(!c.report("a", true));
        assert!(!c.report("a", false), "success resets the count");
        assert!(!c.report("a", true));
        assert!(!c.is_ejected("a"));
        assert!(c.report("a", true));
        assert!(c.is_ejected("a"));
        assert!(!c.is_ejected("b"));
    }

    #[test]
    fn retry_budget_has_a_floor_and_a_percentage() {
        let circuits = Circuits::default();
        let c = circuits.get("ns/svc", None);
        let retries: Vec<_> = (0..3).filter_map(|_| c.try_retry(20, 3)).collect();
        assert_eq!(retries.len(), 3);
        assert!(c.try_retry(20, 3).is_none(), "floor of 3 reached");
        drop(retries);
        assert!(c.try_retry(20, 3).is_some());
    }

    #[test]
    fn connection_limit() {
        let circuits = Circuits::default();
        let c = circuits.get(
            "ns/svc",
            Some(&CircuitBreakerSpec {
                max_connections: Some(1),
                ..Default::default()
            }),
        );
        let one = c.open_connection().expect("first connection");
        assert!(c.open_connection().is_none());
        drop(one);
        assert!(c.open_connection().is_some());
    }
}
