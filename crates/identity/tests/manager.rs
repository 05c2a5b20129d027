//! The certificate manager against an in-process CA that can be slowed down or made to fail.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use common::{TD, id};
use identity::{
    CaClient, CertState, CertificateAuthority, CertificateManager, Identity, LocalCa,
    ManagerConfig, ManagerError, WorkloadCertificate,
};
use parking_lot::Mutex;

/// A CA that counts calls, records when they happened, can be slow, and can be switched off.
struct TestCa {
    local: LocalCa,
    delay: Duration,
    calls: AtomicUsize,
    failures: AtomicUsize,
    failing: AtomicBool,
    call_times: Mutex<Vec<SystemTime>>,
}

impl TestCa {
    fn new(ttl: Duration, delay: Duration) -> Arc<Self> {
        let ca = Arc::new(CertificateAuthority::generate(TD).unwrap());
        Arc::new(TestCa {
            local: LocalCa::new(ca, ttl),
            delay,
            calls: AtomicUsize::new(0),
            failures: AtomicUsize::new(0),
            failing: AtomicBool::new(false),
            call_times: Mutex::new(Vec::new()),
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn failures(&self) -> usize {
        self.failures.load(Ordering::SeqCst)
    }

    fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }
}

#[identity::async_trait]
impl CaClient for TestCa {
    async fn sign(&self, id: &Identity, csr_pem: &str) -> Result<Vec<String>, ManagerError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.call_times.lock().push(SystemTime::now());
        tokio::time::sleep(self.delay).await;
        if self.failing.load(Ordering::SeqCst) {
            self.failures.fetch_add(1, Ordering::SeqCst);
            return Err(ManagerError::CaRequest("CA unavailable (test)".into()));
        }
        self.local.sign(id, csr_pem).await
    }
}

fn fast_retries() -> ManagerConfig {
    ManagerConfig {
        min_backoff: Duration::from_millis(200),
        max_backoff: Duration::from_millis(400),
        ..ManagerConfig::default()
    }
}

fn manager(ca: &Arc<TestCa>, config: ManagerConfig) -> CertificateManager {
    CertificateManager::with_config(ca.clone(), ca.local.roots_pem(), config)
}

/// Polls `check` every 50ms until it returns Some, or panics after `deadline`.
async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_fetches_share_one_ca_call() {
    let ca = TestCa::new(Duration::from_secs(3600), Duration::from_millis(300));
    let mgr = manager(&ca, ManagerConfig::default());
    let web = id(TD, "web");

    let fetches = (0..16).map(|_| {
        let mgr = mgr.clone();
        let web = web.clone();
        tokio::spawn(async move { mgr.fetch(&web).await })
    });
    let certs: Vec<Arc<WorkloadCertificate>> = futures::future::join_all(fetches)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .collect();

    assert_eq!(ca.calls(), 1);
    assert!(certs.iter().all(|c| c.serial() == certs[0].serial()));
    assert_eq!(certs[0].identity(), &web);
    // Later fetches are served from the cache, and another identity gets its own certificate.
    assert_eq!(mgr.fetch(&web).await.unwrap().serial(), certs[0].serial());
    let other = mgr.fetch(&id(TD, "db")).await.unwrap();
    assert_eq!(other.identity(), &id(TD, "db"));
    assert_eq!(ca.calls(), 2);
}

#[tokio::test]
async fn certificate_is_renewed_around_half_life() {
    let ttl = Duration::from_secs(4);
    let ca = TestCa::new(ttl, Duration::ZERO);
    let mgr = manager(&ca, ManagerConfig::default());
    let web = id(TD, "web");

    let first = mgr.fetch(&web).await.unwrap();
    let info = &mgr.snapshot()[0];
    assert_eq!(info.state, CertState::Available);
    assert_eq!(info.serial.as_deref(), Some(first.serial()));
    assert!(info.renew_at.unwrap() < first.not_after());

    let second = eventually(Duration::from_secs(10), "a renewed certificate", || async {
        let c = mgr.fetch(&web).await.unwrap();
        (c.serial() != first.serial()).then_some(c)
    })
    .await;

    assert_eq!(ca.calls(), 2);
    assert!(second.not_after() > first.not_after());
    let times = ca.call_times.lock().clone();
    let waited = times[1].duration_since(times[0]).unwrap();
    assert!(
        waited >= Duration::from_secs(1),
        "renewed after {waited:?}, long before half-life"
    );
    assert!(
        times[1] < first.not_after(),
        "renewal must happen before the old certificate expires"
    );
}

#[tokio::test]
async fn old_certificate_is_served_while_the_ca_fails_then_renewed() {
    let ca = TestCa::new(Duration::from_secs(6), Duration::ZERO);
    let mgr = manager(&ca, fast_retries());
    let web = id(TD, "web");
    let first = mgr.fetch(&web).await.unwrap();

    ca.set_failing(true);
    // The renewal at half-life fails and is retried.
    eventually(Duration::from_secs(10), "two failed renewals", || async {
        (ca.failures() >= 2).then_some(())
    })
    .await;
    let served = mgr.fetch(&web).await.unwrap();
    assert_eq!(served.serial(), first.serial());
    let info = mgr.snapshot().remove(0);
    assert_eq!(info.state, CertState::RenewalFailing);
    assert!(info.failures >= 2);
    assert!(
        info.last_error
            .as_deref()
            .unwrap()
            .contains("CA unavailable (test)")
    );

    ca.set_failing(false);
    let renewed = eventually(
        Duration::from_secs(10),
        "renewal after recovery",
        || async {
            let c = mgr.fetch(&web).await.unwrap();
            (c.serial() != first.serial()).then_some(c)
        },
    )
    .await;
    assert!(renewed.not_after() > first.not_after());
    let info = mgr.snapshot().remove(0);
    assert_eq!(info.state, CertState::Available);
    assert_eq!(info.failures, 0);
    assert_eq!(info.last_error, None);
}

#[tokio::test]
async fn expired_certificate_is_not_served_while_the_ca_is_down() {
    let ca = TestCa::new(Duration::from_secs(2), Duration::ZERO);
    let mgr = manager(&ca, fast_retries());
    let web = id(TD, "web");
    let first = mgr.fetch(&web).await.unwrap();
    ca.set_failing(true);

    let err = eventually(
        Duration::from_secs(10),
        "the certificate to expire",
        || async { mgr.fetch(&web).await.err() },
    )
    .await;
    assert!(SystemTime::now() > first.not_after());
    let msg = err.to_string();
    assert!(
        msg.contains("certificate for spiffe://cluster.local/ns/default/sa/web expired"),
        "{msg}"
    );
    assert!(msg.contains("CA unavailable (test)"), "{msg}");
    assert_eq!(mgr.snapshot()[0].state, CertState::Expired);

    ca.set_failing(false);
    let fresh = eventually(Duration::from_secs(10), "a fresh certificate", || async {
        mgr.fetch(&web).await.ok()
    })
    .await;
    assert!(fresh.not_after() > SystemTime::now());
}

#[tokio::test]
async fn first_fetch_failure_is_reported_and_retried_in_the_background() {
    let ca = TestCa::new(Duration::from_secs(3600), Duration::ZERO);
    ca.set_failing(true);
    let mgr = manager(&ca, fast_retries());
    let web = id(TD, "web");

    let err = mgr.fetch(&web).await.unwrap_err();
    assert_eq!(err.to_string(), "CA request failed: CA unavailable (test)");
    assert_eq!(mgr.snapshot()[0].state, CertState::Failed);

    ca.set_failing(false);
    let cert = eventually(
        Duration::from_secs(10),
        "a certificate after recovery",
        || async { mgr.fetch(&web).await.ok() },
    )
    .await;
    assert_eq!(cert.identity(), &web);
}

#[tokio::test]
async fn forget_stops_tracking_an_identity() {
    let ca = TestCa::new(Duration::from_secs(3600), Duration::ZERO);
    let mgr = manager(&ca, ManagerConfig::default());
    let web = id(TD, "web");
    let first = mgr.fetch(&web).await.unwrap();
    assert_eq!(mgr.snapshot().len(), 1);

    mgr.forget(&web);
    assert!(mgr.snapshot().is_empty());
    let second = mgr.fetch(&web).await.unwrap();
    assert_ne!(second.serial(), first.serial());
    assert_eq!(ca.calls(), 2);
}

#[tokio::test]
async fn roots_can_come_with_the_chain() {
    let ca = TestCa::new(Duration::from_secs(3600), Duration::ZERO);
    let mgr = CertificateManager::new(ca.clone(), Vec::new());
    let cert = mgr.fetch(&id(TD, "web")).await.unwrap();
    assert_eq!(cert.roots_pem(), ca.local.roots_pem());
}

#[tokio::test]
async fn certificate_for_another_identity_is_rejected() {
    /// A CA that signs the requested key but names someone else in the certificate.
    struct Confused {
        issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    }
    #[identity::async_trait]
    impl CaClient for Confused {
        async fn sign(&self, _id: &Identity, csr: &str) -> Result<Vec<String>, ManagerError> {
            let mut req = rcgen::CertificateSigningRequestParams::from_pem(csr).unwrap();
            req.params.subject_alt_names = vec![rcgen::SanType::URI(
                id(TD, "admin").uri().try_into().unwrap(),
            )];
            Ok(vec![req.signed_by(&self.issuer).unwrap().pem()])
        }
    }
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let root = params.self_signed(&key).unwrap();
    let confused = Confused {
        issuer: rcgen::Issuer::new(params, key),
    };
    let mgr = CertificateManager::new(Arc::new(confused), vec![root.pem()]);

    let err = mgr.fetch(&id(TD, "web")).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "CA returned a certificate for spiffe://cluster.local/ns/default/sa/admin, but \
         spiffe://cluster.local/ns/default/sa/web was requested"
    );
}
