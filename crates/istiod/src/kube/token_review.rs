//! CA authentication in a cluster: the bearer token is a ServiceAccount token, reviewed by the
//! API server (TokenReview) for the CA's audience, `istio-ca` by default.
//!
//! What the reviewed token allows ([`decide`]):
//! - it must be authenticated, for the audience;
//! - its user must be a service account (`system:serviceaccount:<namespace>:<name>`);
//! - a node proxy's service account (ztunnel, `istio-system/ztunnel` by default) is a
//!   [`Caller::Node`] for the node its token is bound to: the
//!   `authentication.kubernetes.io/node-name` extra of a pod-bound (projected) token, else the
//!   node of the pod named by `authentication.kubernetes.io/pod-name`; a node proxy token bound
//!   to no pod is refused, since nothing ties it to a node;
//! - any other service account is a [`Caller::Workload`] and obtains only its own identity.

mod cache;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::Client;
use kube::api::{Api, PostParams};
use mesh_config::Snapshot;
use serde::Serialize;

use crate::ca_auth::Caller;
use crate::ca_service::Refusal;
pub use cache::ReviewCache;

/// TokenReview extra naming the node of the pod a token is bound to (Kubernetes 1.30+).
pub const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";
/// TokenReview extra naming the pod a token is bound to.
pub const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";
/// TokenReview extra holding the uid of the pod a token is bound to.
pub const POD_UID_EXTRA: &str = "authentication.kubernetes.io/pod-uid";
/// Prefix of service account user names.
const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

/// A service account, written `namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServiceAccountRef {
    pub namespace: String,
    pub name: String,
}

impl FromStr for ServiceAccountRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(ServiceAccountRef {
                    namespace: ns.to_string(),
                    name: name.to_string(),
                })
            }
            _ => Err(format!("{s:?}: expected <namespace>/<service-account>")),
        }
    }
}

impl fmt::Display for ServiceAccountRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What the CA asks of reviewed tokens.
#[derive(Clone, Debug, Serialize)]
pub struct ReviewPolicy {
    /// Audience the tokens must be issued for.
    pub audience: String,
    /// Service accounts of node proxies, which obtain the identities of the pods on their node.
    pub node_proxies: Vec<ServiceAccountRef>,
}

fn first_extra<'a>(status: &'a TokenReviewStatus, key: &str) -> Option<&'a str> {
    status
        .user
        .as_ref()?
        .extra
        .as_ref()?
        .get(key)?
        .first()
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

/// Decides who the reviewed token identifies; `snapshot` locates the pod a node proxy's token
/// is bound to when the review does not name its node.
pub fn decide(
    status: &TokenReviewStatus,
    policy: &ReviewPolicy,
    snapshot: &Snapshot,
) -> Result<Caller, Refusal> {
    if status.authenticated != Some(true) {
        let why = status
            .error
            .as_deref()
            .filter(|e| !e.is_empty())
            .unwrap_or("the API server did not authenticate it");
        return Err(Refusal::NotAuthenticated(format!(
            "{why} (a ServiceAccount token for audience {} is expected)",
            policy.audience
        )));
    }
    if let Some(audiences) = &status.audiences
        && !audiences.contains(&policy.audience)
    {
        return Err(Refusal::NotAuthenticated(format!(
            "the token is for audiences {audiences:?}, not {}",
            policy.audience
        )));
    }
    let username = status
        .user
        .as_ref()
        .and_then(|u| u.username.as_deref())
        .unwrap_or("");
    let account = username
        .strip_prefix(SERVICE_ACCOUNT_PREFIX)
        .and_then(|rest| rest.split_once(':'))
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty())
        .map(|(ns, name)| ServiceAccountRef {
            namespace: ns.to_string(),
            name: name.to_string(),
        })
        .ok_or_else(|| {
            Refusal::NotAllowed(format!(
                "user {username:?} is not a service account; only ServiceAccount tokens are accepted"
            ))
        })?;
    if !policy.node_proxies.contains(&account) {
        return Ok(Caller::Workload {
            namespace: account.namespace,
            service_account: account.name,
        });
    }
    let node = match first_extra(status, NODE_NAME_EXTRA) {
        Some(node) => node.to_string(),
        None => bound_pod_node(status, &account, snapshot)?,
    };
    Ok(Caller::Node {
        node,
        proxy: account.to_string(),
    })
}

/// The node of the pod a node proxy's token is bound to, from the snapshot.
fn bound_pod_node(
    status: &TokenReviewStatus,
    account: &ServiceAccountRef,
    snapshot: &Snapshot,
) -> Result<String, Refusal> {
    let pod_name = first_extra(status, POD_NAME_EXTRA).ok_or_else(|| {
        Refusal::NotAllowed(format!(
            "the token of node proxy {account} is not bound to a pod, so it names no node; \
             mount a projected ServiceAccount token (audience istio-ca)"
        ))
    })?;
    let pod = snapshot.pod(&account.namespace, pod_name).ok_or_else(|| {
        Refusal::NotAllowed(format!(
            "the token of node proxy {account} is bound to pod {}/{pod_name}, which istiod \
                 does not know (yet)",
            account.namespace
        ))
    })?;
    if let Some(uid) = first_extra(status, POD_UID_EXTRA)
        && pod.metadata.uid.as_deref() != Some(uid)
    {
        return Err(Refusal::NotAllowed(format!(
            "the token of node proxy {account} is bound to an earlier pod named {pod_name}"
        )));
    }
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            Refusal::NotAllowed(format!(
                "pod {}/{pod_name} of node proxy {account} is not scheduled on a node",
                account.namespace
            ))
        })
}

/// Reviews tokens with the API server, reusing recent reviews ([`ReviewCache`]).
#[derive(Clone)]
pub struct TokenReviewer {
    client: Client,
    policy: ReviewPolicy,
    cache: Arc<ReviewCache>,
}

impl TokenReviewer {
    pub fn new(client: Client, policy: ReviewPolicy) -> Self {
        TokenReviewer {
            client,
            policy,
            cache: Arc::new(ReviewCache::default()),
        }
    }

    pub fn policy(&self) -> &ReviewPolicy {
        &self.policy
    }

    /// Reviews `token` (or reuses a recent review of it), then [`decide`]s.
    pub async fn authenticate(&self, token: &str, snapshot: &Snapshot) -> Result<Caller, Refusal> {
        let status = match self.cache.get(token, Instant::now()) {
            Some(status) => status,
            None => {
                let status = self.review(token).await?;
                self.cache.put(token, &status, Instant::now());
                status
            }
        };
        decide(&status, &self.policy, snapshot)
    }

    async fn review(&self, token: &str) -> Result<TokenReviewStatus, Refusal> {
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: Some(vec![self.policy.audience.clone()]),
            },
            ..Default::default()
        };
        match api.create(&PostParams::default(), &review).await {
            Ok(done) => Ok(done.status.unwrap_or_default()),
            Err(kube::Error::Api(s)) if s.code == 403 => Err(Refusal::ReviewUnavailable(format!(
                "istiod may not create TokenReviews (RBAC: create tokenreviews.authentication.k8s.io): {}",
                s.message
            ))),
            Err(e) => Err(Refusal::ReviewUnavailable(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests;
