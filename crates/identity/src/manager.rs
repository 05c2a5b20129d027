//! Workload certificates per identity: fetched from the CA on first use, renewed at half-life in
//! the background, and kept in service while renewal fails until they expire.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::ca::{CaError, CertificateAuthority};
use crate::cert::{CertError, WorkloadCertificate};
use crate::csr::{CsrError, generate_csr};
use crate::spiffe::Identity;

/// Shortest delay before the next renewal, so a CA issuing very short certificates cannot make
/// the manager spin.
const MIN_RENEW_DELAY: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, thiserror::Error)]
pub enum ManagerError {
    /// A remote CA call failed (transport, authentication, refusal); the text says why.
    #[error("CA request failed: {0}")]
    CaRequest(String),
    #[error("CA refused to sign: {0}")]
    LocalCa(Arc<CaError>),
    #[error("could not create a CSR: {0}")]
    Csr(Arc<CsrError>),
    #[error("CA returned an unusable certificate: {0}")]
    Cert(Arc<CertError>),
    #[error("CA returned a certificate for {got}, but {requested} was requested")]
    WrongIdentity { requested: String, got: String },
    #[error("CA returned a certificate for {0} that has already expired")]
    IssuedExpired(String),
    #[error(
        "certificate for {id} expired at {} and renewal keeps failing: {last_error}",
        fmt_time(*.not_after)
    )]
    Expired {
        id: String,
        not_after: SystemTime,
        last_error: String,
    },
    #[error("the certificate manager stopped tracking {0}")]
    Stopped(String),
}

impl From<CaError> for ManagerError {
    fn from(e: CaError) -> Self {
        ManagerError::LocalCa(Arc::new(e))
    }
}

impl From<CsrError> for ManagerError {
    fn from(e: CsrError) -> Self {
        ManagerError::Csr(Arc::new(e))
    }
}

impl From<CertError> for ManagerError {
    fn from(e: CertError) -> Self {
        ManagerError::Cert(Arc::new(e))
    }
}

fn fmt_time(t: SystemTime) -> String {
    time::OffsetDateTime::from(t).to_string()
}

/// Signs CSRs for workload identities: the istiod CA over gRPC, or [`LocalCa`].
#[async_trait::async_trait]
pub trait CaClient: Send + Sync + 'static {
    /// Returns the PEM chain, leaf first (optionally ending with the root).
    async fn sign(&self, id: &Identity, csr_pem: &str) -> Result<Vec<String>, ManagerError>;
}

/// A [`CaClient`] backed by an in-process [`CertificateAuthority`], for tests and local mode.
#[derive(Debug, Clone)]
pub struct LocalCa {
    ca: Arc<CertificateAuthority>,
    ttl: Duration,
}

impl LocalCa {
    pub fn new(ca: Arc<CertificateAuthority>, ttl: Duration) -> Self {
        LocalCa { ca, ttl }
    }

    pub fn authority(&self) -> &Arc<CertificateAuthority> {
        &self.ca
    }

    /// The trust roots to hand to [`CertificateManager::new`].
    pub fn roots_pem(&self) -> Vec<String> {
        vec![self.ca.root_pem()]
    }
}

#[async_trait::async_trait]
impl CaClient for LocalCa {
    async fn sign(&self, id: &Identity, csr_pem: &str) -> Result<Vec<String>, ManagerError> {
        Ok(self.ca.sign_csr(csr_pem, id, self.ttl)?)
    }
}

/// Renewal and retry timing.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// Fraction of the remaining lifetime after which a certificate is renewed (0.5: half-life).
    pub renew_fraction: f64,
    /// First retry delay after a failed CA call; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            renew_fraction: 0.5,
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
        }
    }
}

/// Lifecycle of one identity's certificate, as shown by [`CertificateManager::snapshot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertState {
    /// The first request is in flight.
    Initializing,
    /// A valid certificate is in service.
    Available,
    /// A valid certificate is in service; renewing it has failed and is being retried.
    RenewalFailing,
    /// No certificate was ever obtained; retrying.
    Failed,
    /// The certificate expired while renewal kept failing; retrying.
    Expired,
}

impl std::fmt::Display for CertState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CertState::Initializing => "initializing",
            CertState::Available => "available",
            CertState::RenewalFailing => "renewal-failing",
            CertState::Failed => "failed",
            CertState::Expired => "expired",
        })
    }
}

/// One identity's certificate status, for admin dumps.
#[derive(Debug, Clone, PartialEq)]
pub struct CertInfo {
    pub identity: Identity,
    pub state: CertState,
    pub serial: Option<String>,
    pub not_before: Option<SystemTime>,
    pub not_after: Option<SystemTime>,
    /// When the next renewal is scheduled (absent while retrying after a failure).
    pub renew_at: Option<SystemTime>,
    /// CA failures since the last success.
    pub failures: u32,
    pub last_error: Option<String>,
}

#[derive(Clone)]
enum Status {
    Pending,
    Ready(Arc<WorkloadCertificate>),
    Failed(ManagerError),
}

#[derive(Default)]
struct Progress {
    cert: Option<Arc<WorkloadCertificate>>,
    renew_at: Option<SystemTime>,
    failures: u32,
    last_error: Option<String>,
}

struct Entry {
    rx: watch::Receiver<Status>,
    progress: Arc<Mutex<Progress>>,
    task: AbortHandle,
}

struct Inner {
    ca: Arc<dyn CaClient>,
    roots_pem: Arc<Vec<String>>,
    config: ManagerConfig,
    entries: Mutex<HashMap<Identity, Entry>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for entry in self.entries.get_mut().values() {
            entry.task.abort();
        }
    }
}

/// Certificates per identity, fetched on demand and kept fresh. Cheap to clone.
#[derive(Clone)]
pub struct CertificateManager {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for CertificateManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateManager")
            .field("identities", &self.inner.entries.lock().len())
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl CertificateManager {
    /// `roots_pem` are the trust roots for issued certificates; when empty, the last certificate
    /// of each chain the CA returns is taken as the root.
    pub fn new(ca: Arc<dyn CaClient>, roots_pem: Vec<String>) -> Self {
        Self::with_config(ca, roots_pem, ManagerConfig::default())
    }

    pub fn with_config(
        ca: Arc<dyn CaClient>,
        roots_pem: Vec<String>,
        config: ManagerConfig,
    ) -> Self {
        CertificateManager {
            inner: Arc::new(Inner {
                ca,
                roots_pem: Arc::new(roots_pem),
                config,
                entries: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Current certificate, fetched on first use; concurrent callers share one request.
    ///
    /// After a failed first request the error is returned until a background retry succeeds.
    /// While renewal fails the previous certificate is returned until it expires.
    pub async fn fetch(&self, id: &Identity) -> Result<Arc<WorkloadCertificate>, ManagerError> {
        let (mut rx, progress) = self.entry(id);
        let status = rx
            .wait_for(|s| !matches!(s, Status::Pending))
            .await
            .map_err(|_| ManagerError::Stopped(id.uri()))?
            .clone();
        match status {
            Status::Ready(cert) => {
                if cert.is_expired_at(SystemTime::now()) {
                    let last_error = progress
                        .lock()
                        .last_error
                        .clone()
                        .unwrap_or_else(|| "renewal has not completed".to_string());
                    return Err(ManagerError::Expired {
                        id: id.uri(),
                        not_after: cert.not_after(),
                        last_error,
                    });
                }
                Ok(cert)
            }
            Status::Failed(e) => Err(e),
            Status::Pending => Err(ManagerError::Stopped(id.uri())),
        }
    }

    /// Stops renewing `id` and drops its certificate.
    pub fn forget(&self, id: &Identity) {
        if let Some(entry) = self.inner.entries.lock().remove(id) {
            entry.task.abort();
            tracing::debug!(identity = %id, "stopped tracking certificate");
        }
    }

    /// The identities being tracked and their certificates' state, sorted by identity.
    pub fn snapshot(&self) -> Vec<CertInfo> {
        let now = SystemTime::now();
        let entries = self.inner.entries.lock();
        let mut out: Vec<CertInfo> = entries
            .iter()
            .map(|(id, entry)| {
                let p = entry.progress.lock();
                let state = match &p.cert {
                    None if p.failures == 0 => CertState::Initializing,
                    None => CertState::Failed,
                    Some(c) if c.is_expired_at(now) => CertState::Expired,
                    Some(_) if p.failures > 0 => CertState::RenewalFailing,
                    Some(_) => CertState::Available,
                };
                CertInfo {
                    identity: id.clone(),
                    state,
                    serial: p.cert.as_ref().map(|c| c.serial().to_string()),
                    not_before: p.cert.as_ref().map(|c| c.not_before()),
                    not_after: p.cert.as_ref().map(|c| c.not_after()),
                    renew_at: p.renew_at,
                    failures: p.failures,
                    last_error: p.last_error.clone(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.identity.cmp(&b.identity));
        out
    }

    fn entry(&self, id: &Identity) -> (watch::Receiver<Status>, Arc<Mutex<Progress>>) {
        let mut entries = self.inner.entries.lock();
        if let Some(e) = entries.get(id) {
            return (e.rx.clone(), e.progress.clone());
        }
        let (tx, rx) = watch::channel(Status::Pending);
        let progress = Arc::new(Mutex::new(Progress::default()));
        let worker = Worker {
            id: id.clone(),
            ca: self.inner.ca.clone(),
            roots_pem: self.inner.roots_pem.clone(),
            config: self.inner.config.clone(),
            tx,
            progress: progress.clone(),
        };
        let task = tokio::spawn(worker.run()).abort_handle();
        entries.insert(
            id.clone(),
            Entry {
                rx: rx.clone(),
                progress: progress.clone(),
                task,
            },
        );
        (rx, progress)
    }
}

struct Worker {
    id: Identity,
    ca: Arc<dyn CaClient>,
    roots_pem: Arc<Vec<String>>,
    config: ManagerConfig,
    tx: watch::Sender<Status>,
    progress: Arc<Mutex<Progress>>,
}

impl Worker {
    async fn run(self) {
        let mut backoff = self.config.min_backoff;
        loop {
            match self.request().await {
                Ok(cert) => {
                    let now = SystemTime::now();
                    let remaining = cert.not_after().duration_since(now).unwrap_or_default();
                    let delay = remaining
                        .mul_f64(self.config.renew_fraction.clamp(0.0, 1.0))
                        .max(MIN_RENEW_DELAY);
                    tracing::info!(
                        identity = %self.id,
                        serial = cert.serial(),
                        expires = %fmt_time(cert.not_after()),
                        renew_in = ?delay,
                        "certificate issued"
                    );
                    let cert = Arc::new(cert);
                    {
                        let mut p = self.progress.lock();
                        p.cert = Some(cert.clone());
                        p.renew_at = Some(now + delay);
                        p.failures = 0;
                        p.last_error = None;
                    }
                    self.tx.send_replace(Status::Ready(cert));
                    backoff = self.config.min_backoff;
                    tokio::time::sleep(delay).await;
                }
                Err(e) => {
                    let delay = jitter(backoff);
                    let previous = {
                        let mut p = self.progress.lock();
                        p.failures += 1;
                        p.last_error = Some(e.to_string());
                        p.renew_at = None;
                        p.cert.clone()
                    };
                    let keep_serving = previous
                        .as_ref()
                        .is_some_and(|c| !c.is_expired_at(SystemTime::now()));
                    tracing::warn!(
                        identity = %self.id,
                        error = %e,
                        retry_in = ?delay,
                        keep_serving,
                        "certificate request failed"
                    );
                    match previous {
                        _ if keep_serving => {}
                        Some(expired) => {
                            self.tx.send_replace(Status::Failed(ManagerError::Expired {
                                id: self.id.uri(),
                                not_after: expired.not_after(),
                                last_error: e.to_string(),
                            }));
                        }
                        None => {
                            self.tx.send_replace(Status::Failed(e));
                        }
                    }
                    tokio::time::sleep(delay).await;
                    backoff = (backoff * 2).min(self.config.max_backoff);
                }
            }
        }
    }

    async fn request(&self) -> Result<WorkloadCertificate, ManagerError> {
        let bundle = generate_csr(&self.id)?;
        let chain = self.ca.sign(&self.id, &bundle.csr_pem).await?;
        let roots: &[String] = if !self.roots_pem.is_empty() {
            &self.roots_pem
        } else if chain.len() > 1 {
            &chain[chain.len() - 1..]
        } else {
            &[]
        };
        let cert = WorkloadCertificate::from_pem(&chain, &bundle.key_pem, roots)?;
        if cert.identity() != &self.id {
            return Err(ManagerError::WrongIdentity {
                requested: self.id.uri(),
                got: cert.identity().uri(),
            });
        }
        if cert.is_expired_at(SystemTime::now()) {
            return Err(ManagerError::IssuedExpired(self.id.uri()));
        }
        Ok(cert)
    }
}

/// Spreads retries of many identities over ±20% of the delay.
fn jitter(d: Duration) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    let factor = 0.8 + f64::from(nanos % 1000) / 2500.0;
    d.mul_f64(factor)
}
