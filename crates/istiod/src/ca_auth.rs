//! Who asks the CA for a certificate: the bearer-token authenticators (a node tokens file in
//! local mode, Kubernetes TokenReview in a cluster) and the callers they recognise.

use std::fmt;

use mesh_config::Snapshot;

use crate::ca_service::Refusal;
use crate::kube::token_review::TokenReviewer;
use crate::node_tokens::NodeTokens;

/// An authenticated caller of the CA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A node proxy (ztunnel): may obtain the identity of any pod scheduled on `node`.
    Node {
        node: String,
        /// Who presented the token: `node token` or the proxy's `namespace/service-account`.
        proxy: String,
    },
    /// A workload (a waypoint, a pod): may obtain only its own identity.
    Workload {
        namespace: String,
        service_account: String,
    },
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::Node { node, proxy } => write!(f, "node proxy {proxy} on node {node}"),
            Caller::Workload {
                namespace,
                service_account,
            } => write!(f, "workload {namespace}/{service_account}"),
        }
    }
}

/// How the CA authenticates bearer tokens.
pub enum CaAuth {
    /// No authenticator configured: every request is refused.
    Disabled,
    /// Local mode: a file of node tokens.
    NodeTokens(NodeTokens),
    /// Kubernetes: ServiceAccount tokens checked with TokenReview.
    Kubernetes(TokenReviewer),
}

impl From<Option<NodeTokens>> for CaAuth {
    fn from(tokens: Option<NodeTokens>) -> Self {
        tokens.map_or(CaAuth::Disabled, CaAuth::NodeTokens)
    }
}

impl From<TokenReviewer> for CaAuth {
    fn from(reviewer: TokenReviewer) -> Self {
        CaAuth::Kubernetes(reviewer)
    }
}

impl CaAuth {
    /// The caller `token` identifies; `snapshot` locates the pods tokens are bound to.
    pub async fn authenticate(&self, token: &str, snapshot: &Snapshot) -> Result<Caller, Refusal> {
        match self {
            CaAuth::Disabled => Err(Refusal::NoTokens),
            CaAuth::NodeTokens(tokens) => tokens
                .node_for(token)
                .map(|node| Caller::Node {
                    node: node.to_string(),
                    proxy: "node token".to_string(),
                })
                .ok_or(Refusal::UnknownToken),
            CaAuth::Kubernetes(reviewer) => reviewer.authenticate(token, snapshot).await,
        }
    }
}
