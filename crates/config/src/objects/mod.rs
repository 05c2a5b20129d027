//! The typed objects a configuration source yields: Kubernetes core objects (k8s-openapi types)
//! and the mesh's own serde types for the Istio security CRDs and the Gateway API.

mod gateway;
mod gateway_class;
mod security;

pub use gateway::*;
pub use gateway_class::*;
pub use security::*;

use std::fmt;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Kind names, as written in manifests.
pub mod kind {
    pub const NAMESPACE: &str = "Namespace";
    pub const POD: &str = "Pod";
    pub const SERVICE: &str = "Service";
    pub const NODE: &str = "Node";
    pub const AUTHORIZATION_POLICY: &str = "AuthorizationPolicy";
    pub const PEER_AUTHENTICATION: &str = "PeerAuthentication";
    pub const GATEWAY: &str = "Gateway";
    pub const GATEWAY_CLASS: &str = "GatewayClass";
    pub const HTTP_ROUTE: &str = "HTTPRoute";
    pub const GRPC_ROUTE: &str = "GRPCRoute";

    /// Whether objects of `kind` live outside namespaces.
    pub fn is_cluster_scoped(kind: &str) -> bool {
        matches!(kind, NAMESPACE | NODE | GATEWAY_CLASS)
    }
}

/// One configuration object. The payload is shared: cloning an object (into a snapshot, a
/// last-good copy) copies a pointer, and a map of objects stays compact whatever the kind.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    Namespace(Arc<Namespace>),
    Pod(Arc<Pod>),
    Service(Arc<Service>),
    Node(Arc<Node>),
    AuthorizationPolicy(Arc<AuthorizationPolicy>),
    PeerAuthentication(Arc<PeerAuthentication>),
    Gateway(Arc<Gateway>),
    GatewayClass(Arc<GatewayClass>),
    HttpRoute(Arc<HttpRoute>),
    GrpcRoute(Arc<GrpcRoute>),
}

macro_rules! object_from {
    ($($variant:ident($ty:ty)),* $(,)?) => {
        $(
            impl From<$ty> for Object {
                fn from(o: $ty) -> Self {
                    Object::$variant(Arc::new(o))
                }
            }
        )*
    };
}

object_from!(
    Namespace(Namespace),
    Pod(Pod),
    Service(Service),
    Node(Node),
    AuthorizationPolicy(AuthorizationPolicy),
    PeerAuthentication(PeerAuthentication),
    Gateway(Gateway),
    GatewayClass(GatewayClass),
    HttpRoute(HttpRoute),
    GrpcRoute(GrpcRoute),
);

impl Object {
    /// The kind as written in manifests (`Pod`, `HTTPRoute`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Namespace(_) => kind::NAMESPACE,
            Object::Pod(_) => kind::POD,
            Object::Service(_) => kind::SERVICE,
            Object::Node(_) => kind::NODE,
            Object::AuthorizationPolicy(_) => kind::AUTHORIZATION_POLICY,
            Object::PeerAuthentication(_) => kind::PEER_AUTHENTICATION,
            Object::Gateway(_) => kind::GATEWAY,
            Object::GatewayClass(_) => kind::GATEWAY_CLASS,
            Object::HttpRoute(_) => kind::HTTP_ROUTE,
            Object::GrpcRoute(_) => kind::GRPC_ROUTE,
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::Namespace(o) => &o.metadata,
            Object::Pod(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::Node(o) => &o.metadata,
            Object::AuthorizationPolicy(o) => &o.metadata,
            Object::PeerAuthentication(o) => &o.metadata,
            Object::Gateway(o) => &o.metadata,
            Object::GatewayClass(o) => &o.metadata,
            Object::HttpRoute(o) => &o.metadata,
            Object::GrpcRoute(o) => &o.metadata,
        }
    }

    pub(crate) fn metadata_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Object::Namespace(o) => &mut Arc::make_mut(o).metadata,
            Object::Pod(o) => &mut Arc::make_mut(o).metadata,
            Object::Service(o) => &mut Arc::make_mut(o).metadata,
            Object::Node(o) => &mut Arc::make_mut(o).metadata,
            Object::AuthorizationPolicy(o) => &mut Arc::make_mut(o).metadata,
            Object::PeerAuthentication(o) => &mut Arc::make_mut(o).metadata,
            Object::Gateway(o) => &mut Arc::make_mut(o).metadata,
            Object::GatewayClass(o) => &mut Arc::make_mut(o).metadata,
            Object::HttpRoute(o) => &mut Arc::make_mut(o).metadata,
            Object::GrpcRoute(o) => &mut Arc::make_mut(o).metadata,
        }
    }

    /// Whether objects of this kind live outside namespaces.
    pub fn is_cluster_scoped(&self) -> bool {
        kind::is_cluster_scoped(self.kind())
    }

    pub fn key(&self) -> ObjectKey {
        let meta = self.metadata();
        ObjectKey {
            kind: self.kind().to_string(),
            namespace: if self.is_cluster_scoped() {
                String::new()
            } else {
                meta.namespace.clone().unwrap_or_default()
            },
            name: meta.name.clone().unwrap_or_default(),
        }
    }
}

/// Identifies an object: kind, namespace (`""` for cluster-scoped kinds) and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(
        kind: impl Into<String>,
        namespace: impl Into<String>,
        name: impl Into<String>,
    ) -> Self {
        ObjectKey {
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// `Kind ns/name`, or `Kind name` for cluster-scoped objects.
impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}
