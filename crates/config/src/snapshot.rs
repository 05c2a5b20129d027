//! A complete, consistent view of the configuration at one moment.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use serde::Serialize;

use crate::objects::{
    AuthorizationPolicy, Gateway, GatewayClass, GrpcRoute, HttpRoute, Object, ObjectKey,
    PeerAuthentication, kind,
};
use crate::parse::parse_manifests;

/// An invalid manifest or object: where it is and why it was not taken.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConfigIssue {
    pub file: PathBuf,
    /// `Kind ns/name`, `document #3`, or `None` when the whole file is concerned.
    pub object: Option<String>,
    pub reason: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.object {
            Some(obj) => write!(f, "{}: {}: {}", self.file.display(), obj, self.reason),
            None => write!(f, "{}: {}", self.file.display(), self.reason),
        }
    }
}

/// Every object of the source, its invalid manifests, and a generation that grows with each
/// published change.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub objects: BTreeMap<ObjectKey, Object>,
    pub issues: Vec<ConfigIssue>,
    pub generation: u64,
    /// The file each object was read from (empty for sources without files).
    pub sources: BTreeMap<ObjectKey, PathBuf>,
}

macro_rules! kind_iter {
    ($(#[$doc:meta])* $fn:ident, $variant:ident, $ty:ty) => {
        $(#[$doc])*
        pub fn $fn(&self) -> impl Iterator<Item = &$ty> + '_ {
            self.objects.values().filter_map(|o| match o {
                Object::$variant(x) => Some(&**x),
                _ => None,
            })
        }
    };
}

impl Snapshot {
    /// A snapshot holding `objects` (later duplicates replace earlier ones), generation 0.
    pub fn from_objects(objects: impl IntoIterator<Item = Object>) -> Self {
        let mut snap = Snapshot::default();
        for obj in objects {
            snap.objects.insert(obj.key(), obj);
        }
        snap
    }

    /// Parses manifests given as text (tests, `meshctl analyze` on stdin). Document errors
    /// become issues attributed to `file`.
    pub fn from_yaml(file: impl Into<PathBuf>, text: &str) -> Self {
        let file = file.into();
        let parsed = parse_manifests(text);
        let mut snap = Snapshot::from_objects(parsed.objects);
        for key in snap.objects.keys() {
            snap.sources.insert(key.clone(), file.clone());
        }
        snap.issues = parsed
            .errors
            .iter()
            .map(|e| ConfigIssue {
                file: file.clone(),
                object: e.object_label(),
                reason: e.reason.clone(),
            })
            .collect();
        snap
    }

    pub fn get(&self, key: &ObjectKey) -> Option<&Object> {
        self.objects.get(key)
    }

    pub fn namespace(&self, name: &str) -> Option<&Namespace> {
        match self.objects.get(&ObjectKey::new(kind::NAMESPACE, "", name)) {
            Some(Object::Namespace(ns)) => Some(ns),
            _ => None,
        }
    }

    /// The pod `namespace/name`.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<&Pod> {
        match self
            .objects
            .get(&ObjectKey::new(kind::POD, namespace, name))
        {
            Some(Object::Pod(pod)) => Some(pod),
            _ => None,
        }
    }

    kind_iter!(namespaces, Namespace, Namespace);
    kind_iter!(nodes, Node, Node);
    kind_iter!(pods, Pod, Pod);
    kind_iter!(services, Service, Service);
    kind_iter!(
        authorization_policies,
        AuthorizationPolicy,
        AuthorizationPolicy
    );
    kind_iter!(peer_authentications, PeerAuthentication, PeerAuthentication);
    kind_iter!(gateways, Gateway, Gateway);
    kind_iter!(gateway_classes, GatewayClass, GatewayClass);
    kind_iter!(http_routes, HttpRoute, HttpRoute);
    kind_iter!(grpc_routes, GrpcRoute, GrpcRoute);
}
