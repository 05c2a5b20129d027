//! `istio.v1.auth.IstioCertificateService/CreateCertificate`: signs workload certificates for
//! node proxies, for the identities of the pods on their node only.
//!
//! The caller authenticates with `authorization: Bearer <token>` ([`CaAuth`]): a node token
//! (local mode) or a ServiceAccount token reviewed by the API server (Kubernetes) identifies a
//! [`Caller`]. The requested identity is the CSR's URI SAN; an `ImpersonatedIdentity` metadata
//! entry, when present, must name the same identity. A node proxy may get it only when a pod
//! with that namespace and service account is scheduled on its node in the current snapshot;
//! any other workload gets only its own identity.

use std::sync::Arc;
use std::time::Duration;

use identity::{CaError, CertificateAuthority, Identity};
use mesh_config::Snapshot;
use mesh_proto::proto::ca::istio_certificate_service_server::{
    IstioCertificateService, IstioCertificateServiceServer,
};
use mesh_proto::proto::ca::{IstioCertificateRequest, IstioCertificateResponse};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::ca_auth::{CaAuth, Caller};
use crate::metrics::Metrics;

/// Metadata key (in the request's `metadata` struct) naming the identity asked for.
pub const IMPERSONATED_IDENTITY: &str = "ImpersonatedIdentity";

/// Why a request was refused; the text is returned to the caller.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("no bearer token: send `authorization: Bearer <token>` metadata")]
    MissingToken,
    #[error("istiod has no node tokens configured (--node-tokens); every request is refused")]
    NoTokens,
    #[error("unknown bearer token")]
    UnknownToken,
    #[error("invalid CSR: {0}")]
    BadCsr(String),
    #[error("invalid {IMPERSONATED_IDENTITY} {value:?}: {reason}")]
    BadImpersonation { value: String, reason: String },
    #[error("{IMPERSONATED_IDENTITY} {impersonated} does not match the CSR identity {csr}")]
    ImpersonationMismatch { impersonated: String, csr: String },
    #[error("identity {identity} is outside the trust domain {trust_domain}")]
    ForeignTrustDomain {
        identity: String,
        trust_domain: String,
    },
    #[error(
        "node {node} may not request {identity}: no pod with service account {sa} in namespace {ns} is scheduled on node {node}"
    )]
    NotOnNode {
        node: String,
        identity: String,
        ns: String,
        sa: String,
    },
    #[error("{caller} may obtain only its own identity {own}, not {identity}")]
    NotOwnIdentity {
        caller: String,
        own: String,
        identity: String,
    },
    #[error("token not authenticated: {0}")]
    NotAuthenticated(String),
    #[error("{0}")]
    NotAllowed(String),
    #[error("cannot review the token with the Kubernetes API server: {0}")]
    ReviewUnavailable(String),
    #[error("signing failed: {0}")]
    Sign(#[from] CaError),
}

impl Refusal {
    fn status(&self) -> Status {
        let msg = self.to_string();
        match self {
            Refusal::MissingToken
            | Refusal::NoTokens
            | Refusal::UnknownToken
            | Refusal::NotAuthenticated(_) => Status::unauthenticated(msg),
            Refusal::ReviewUnavailable(_) => Status::unavailable(msg),
            Refusal::NotAllowed(_) | Refusal::NotOwnIdentity { .. } => {
                Status::permission_denied(msg)
            }
            Refusal::BadCsr(_) | Refusal::BadImpersonation { .. } => Status::invalid_argument(msg),
            Refusal::ImpersonationMismatch { .. }
            | Refusal::ForeignTrustDomain { .. }
            | Refusal::NotOnNode { .. } => Status::permission_denied(msg),
            Refusal::Sign(CaError::Sign(_)) => Status::internal(msg),
            Refusal::Sign(_) => Status::invalid_argument(msg),
        }
    }
}

/// The CA gRPC service.
#[derive(Clone)]
pub struct CaService {
    inner: Arc<Inner>,
}

struct Inner {
    ca: Arc<CertificateAuthority>,
    auth: CaAuth,
    snapshot: watch::Receiver<Arc<Snapshot>>,
    max_ttl: Duration,
    metrics: Arc<Metrics>,
}

impl CaService {
    /// `auth` authenticates callers (`Option<NodeTokens>` converts into it); `snapshot` tells
    /// which pods run where; `max_ttl` caps the requested validity (a request without one gets
    /// `max_ttl`).
    pub fn new(
        ca: Arc<CertificateAuthority>,
        auth: impl Into<CaAuth>,
        snapshot: watch::Receiver<Arc<Snapshot>>,
        max_ttl: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        CaService {
            inner: Arc::new(Inner {
                ca,
                auth: auth.into(),
                snapshot,
                max_ttl,
                metrics,
            }),
        }
    }

    pub fn into_service(self) -> IstioCertificateServiceServer<Self> {
        IstioCertificateServiceServer::new(self)
    }

    /// Authenticates, authorizes and signs; returns the PEM chain and who asked.
    async fn sign(
        &self,
        request: &Request<IstioCertificateRequest>,
    ) -> Result<(Vec<String>, Caller, Identity), Refusal> {
        let inner = &*self.inner;
        let snapshot = inner.snapshot.borrow().clone();
        let caller = self.authenticate(request, &snapshot).await?;
        let req = request.get_ref();
        let id = csr_identity(&req.csr)?;
        if let Some(value) = impersonated(req) {
            let asked: Identity =
                value
                    .parse()
                    .map_err(|e: identity::SpiffeError| Refusal::BadImpersonation {
                        value: value.to_string(),
                        reason: e.to_string(),
                    })?;
            if asked != id {
                return Err(Refusal::ImpersonationMismatch {
                    impersonated: asked.uri(),
                    csr: id.uri(),
                });
            }
        }
        if id.trust_domain != inner.ca.trust_domain() {
            return Err(Refusal::ForeignTrustDomain {
                identity: id.uri(),
                trust_domain: inner.ca.trust_domain().to_string(),
            });
        }
        match &caller {
            Caller::Node { node, .. } => {
                let on_node = snapshot.pods().any(|pod| {
                    pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node.as_str())
                        && pod.metadata.namespace.as_deref() == Some(id.namespace.as_str())
                        && mesh_config::pod_service_account(pod) == id.service_account
                });
                if !on_node {
                    return Err(Refusal::NotOnNode {
                        node: node.clone(),
                        identity: id.uri(),
                        ns: id.namespace.clone(),
                        sa: id.service_account.clone(),
                    });
                }
            }
            Caller::Workload {
                namespace,
                service_account,
            } => {
                if *namespace != id.namespace || *service_account != id.service_account {
                    let own = Identity::new(inner.ca.trust_domain(), namespace, service_account);
                    return Err(Refusal::NotOwnIdentity {
                        caller: caller.to_string(),
                        own: own.uri(),
                        identity: id.uri(),
                    });
                }
            }
        }
        let ttl = match u64::try_from(req.validity_duration) {
            Ok(secs) if secs > 0 => Duration::from_secs(secs).min(inner.max_ttl),
            _ => inner.max_ttl,
        };
        let chain = inner.ca.sign_csr(&req.csr, &id, ttl)?;
        Ok((chain, caller, id))
    }

    async fn authenticate(
        &self,
        request: &Request<IstioCertificateRequest>,
        snapshot: &Snapshot,
    ) -> Result<Caller, Refusal> {
        let value = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or(Refusal::MissingToken)?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(Refusal::MissingToken)?;
        self.inner.auth.authenticate(token, snapshot).await
    }
}

/// The identity named by the CSR's (first) URI SAN.
fn csr_identity(csr_pem: &str) -> Result<Identity, Refusal> {
    let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| Refusal::BadCsr(format!("cannot parse it: {e}")))?;
    let uri = csr
        .params
        .subject_alt_names
        .iter()
        .find_map(|san| match san {
            rcgen::SanType::URI(uri) => Some(uri.as_str().to_string()),
            _ => None,
        })
        .ok_or_else(|| Refusal::BadCsr("it has no URI SAN naming a SPIFFE identity".into()))?;
    uri.parse()
        .map_err(|e: identity::SpiffeError| Refusal::BadCsr(format!("URI SAN {uri:?}: {e}")))
}

fn impersonated(req: &IstioCertificateRequest) -> Option<&str> {
    let field = req.metadata.as_ref()?.fields.get(IMPERSONATED_IDENTITY)?;
    match field.kind.as_ref()? {
        prost_types::value::Kind::StringValue(s) => Some(s.as_str()),
        _ => None,
    }
}

#[tonic::async_trait]
impl IstioCertificateService for CaService {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let metrics = &self.inner.metrics;
        metrics.csr_count.inc();
        let remote = request.remote_addr();
        match self.sign(&request).await {
            Ok((cert_chain, caller, id)) => {
                metrics.cert_issued.inc();
                tracing::info!(%caller, identity = %id, ?remote, "certificate issued");
                Ok(Response::new(IstioCertificateResponse { cert_chain }))
            }
            Err(refusal) => {
                let status = refusal.status();
                match status.code() {
                    tonic::Code::Unauthenticated => metrics.authn_failures.inc(),
                    tonic::Code::PermissionDenied => metrics.authz_failures.inc(),
                    _ => 0,
                };
                tracing::warn!(?remote, code = ?status.code(), reason = %refusal, "certificate request refused");
                Err(status)
            }
        }
    }
}
