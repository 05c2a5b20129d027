//! The kinds the Kubernetes source watches, and where the API server serves each one.

use kube::api::ApiResource;
use kube::core::GroupVersionKind;

use crate::objects::{GATEWAY_GROUP, SECURITY_GROUP, kind};

/// One kind of object the source watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WatchedKind {
    Namespace,
    Pod,
    Service,
    Node,
    GatewayClass,
    Gateway,
    HttpRoute,
    GrpcRoute,
    AuthorizationPolicy,
    PeerAuthentication,
}

impl WatchedKind {
    /// Every kind, in the order the watches start.
    pub const ALL: [WatchedKind; 10] = [
        WatchedKind::Namespace,
        WatchedKind::Pod,
        WatchedKind::Service,
        WatchedKind::Node,
        WatchedKind::GatewayClass,
        WatchedKind::Gateway,
        WatchedKind::HttpRoute,
        WatchedKind::GrpcRoute,
        WatchedKind::AuthorizationPolicy,
        WatchedKind::PeerAuthentication,
    ];

    /// The kind as written in manifests, and in [`crate::ObjectKey::kind`].
    pub fn kind(self) -> &'static str {
        match self {
            WatchedKind::Namespace => kind::NAMESPACE,
            WatchedKind::Pod => kind::POD,
            WatchedKind::Service => kind::SERVICE,
            WatchedKind::Node => kind::NODE,
            WatchedKind::GatewayClass => kind::GATEWAY_CLASS,
            WatchedKind::Gateway => kind::GATEWAY,
            WatchedKind::HttpRoute => kind::HTTP_ROUTE,
            WatchedKind::GrpcRoute => kind::GRPC_ROUTE,
            WatchedKind::AuthorizationPolicy => kind::AUTHORIZATION_POLICY,
            WatchedKind::PeerAuthentication => kind::PEER_AUTHENTICATION,
        }
    }

    /// API group, version and plural resource name the source reads the kind from.
    pub fn group_version_plural(self) -> (&'static str, &'static str, &'static str) {
        match self {
            WatchedKind::Namespace => ("", "v1", "namespaces"),
            WatchedKind::Pod => ("", "v1", "pods"),
            WatchedKind::Service => ("", "v1", "services"),
            WatchedKind::Node => ("", "v1", "nodes"),
            WatchedKind::GatewayClass => (GATEWAY_GROUP, "v1", "gatewayclasses"),
            WatchedKind::Gateway => (GATEWAY_GROUP, "v1", "gateways"),
            WatchedKind::HttpRoute => (GATEWAY_GROUP, "v1", "httproutes"),
            WatchedKind::GrpcRoute => (GATEWAY_GROUP, "v1", "grpcroutes"),
            WatchedKind::AuthorizationPolicy => (SECURITY_GROUP, "v1", "authorizationpolicies"),
            WatchedKind::PeerAuthentication => (SECURITY_GROUP, "v1", "peerauthentications"),
        }
    }

    /// The resource, for dynamic API access.
    pub fn api_resource(self) -> ApiResource {
        let (group, version, plural) = self.group_version_plural();
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(group, version, self.kind()),
            plural,
        )
    }

    /// Whether the kind comes from a CustomResourceDefinition that may not be installed.
    pub fn is_custom(self) -> bool {
        !self.group_version_plural().0.is_empty()
    }

    /// `plural.group/version` (`pods/v1` for the core group), for logs and issues.
    pub fn resource_label(self) -> String {
        match self.group_version_plural() {
            ("", version, plural) => format!("{plural}/{version}"),
            (group, version, plural) => format!("{plural}.{group}/{version}"),
        }
    }
}

impl std::fmt::Display for WatchedKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_match_the_api_server_paths() {
        let ar = WatchedKind::AuthorizationPolicy.api_resource();
        assert_eq!(ar.api_version, "security.istio.io/v1");
        assert_eq!(ar.plural, "authorizationpolicies");
        assert_eq!(ar.kind, "AuthorizationPolicy");
        let ar = WatchedKind::Pod.api_resource();
        assert_eq!(ar.api_version, "v1");
        assert_eq!(ar.group, "");
        assert_eq!(
            WatchedKind::GrpcRoute.resource_label(),
            "grpcroutes.gateway.networking.k8s.io/v1"
        );
        assert!(WatchedKind::Gateway.is_custom());
        assert!(!WatchedKind::Node.is_custom());
    }
}
