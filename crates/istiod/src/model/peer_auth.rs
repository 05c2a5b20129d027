//! `PeerAuthentication` compiled into L4 DENY policies, as Istio does for ztunnel.
//!
//! The effective mode of a workload is its own (selector) policy's mode, else its namespace's,
//! else the mesh-wide one (root namespace, no selector), else PERMISSIVE; when several policies
//! compete at one level the oldest (then the first by name) wins. A workload whose effective mode
//! is STRICT lists `<root>/istio_converted_static_strict`: a DENY of every connection without a
//! peer principal (`not_principals: [presence]`), i.e. of plaintext. A selector policy with
//! `portLevelMtls` gets its own `converted_peer_authentication_<name>` policy that denies
//! plaintext on exactly its STRICT ports. PERMISSIVE and DISABLE produce nothing.

use std::collections::BTreeMap;

use mesh_config::objects::{MtlsMode, PeerAuthentication, kind};
use mesh_config::{ObjectKey, Snapshot};
use mesh_proto::proto::security::{
    Action, Authorization, Group, Match, Rules, Scope, StringMatch, string_match,
};

use super::selector;
use super::{Issues, ModelConfig};

/// Name of the policy that denies plaintext to STRICT workloads (in the root namespace).
pub const STATIC_STRICT_POLICY: &str = "istio_converted_static_strict";

/// Name of the policy compiled from the port-level settings of the PeerAuthentication `name`.
pub fn converted_policy_name(name: &str) -> String {
    format!("converted_peer_authentication_{name}")
}

fn key_of(pa: &PeerAuthentication) -> ObjectKey {
    ObjectKey::new(
        kind::PEER_AUTHENTICATION,
        selector::namespace(&pa.metadata),
        selector::name(&pa.metadata),
    )
}

/// Oldest first, then by name.
fn age_order(
    pa: &PeerAuthentication,
) -> (
    Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    String,
) {
    (
        pa.metadata.creation_timestamp.clone(),
        selector::name(&pa.metadata).to_string(),
    )
}

fn selector_labels(pa: &PeerAuthentication) -> Option<&BTreeMap<String, String>> {
    pa.spec
        .selector
        .as_ref()
        .map(|s| &s.match_labels)
        .filter(|l| !l.is_empty())
}

/// The PeerAuthentications of a snapshot, indexed for per-workload lookups.
pub(crate) struct PeerAuthIndex<'a> {
    root_namespace: String,
    mesh: Option<&'a PeerAuthentication>,
    namespaces: BTreeMap<&'a str, &'a PeerAuthentication>,
    /// Selector policies, oldest first.
    selectors: Vec<&'a PeerAuthentication>,
    /// Port-level policies, keyed by the PeerAuthentication's `namespace/name`.
    converted: BTreeMap<String, Authorization>,
    any_strict: bool,
}

impl<'a> PeerAuthIndex<'a> {
    pub(crate) fn build(
        snapshot: &'a Snapshot,
        cfg: &ModelConfig,
        issues: &mut Issues<'_>,
    ) -> Self {
        let mut all: Vec<&PeerAuthentication> = snapshot.peer_authentications().collect();
        all.sort_by_key(|pa| age_order(pa));
        let mut index = PeerAuthIndex {
            root_namespace: cfg.root_namespace.clone(),
            mesh: None,
            namespaces: BTreeMap::new(),
            selectors: Vec::new(),
            converted: BTreeMap::new(),
            any_strict: false,
        };
        for pa in all {
            let ns = selector::namespace(&pa.metadata);
            if selector_labels(pa).is_some() {
                index.selectors.push(pa);
                continue;
            }
            if !pa.spec.port_level_mtls.is_empty() {
                issues.push(&key_of(pa), "portLevelMtls needs a selector; ignored");
            }
            let winner: &PeerAuthentication = if ns == cfg.root_namespace {
                index.mesh.get_or_insert(pa)
            } else {
                index.namespaces.entry(ns).or_insert(pa)
            };
            if !std::ptr::eq(winner, pa) {
                issues.push(
                    &key_of(pa),
                    format!(
                        "ignored: {} is older and applies to the same scope",
                        key_of(winner)
                    ),
                );
            }
        }
        index.any_strict = index
            .mesh
            .iter()
            .chain(index.namespaces.values())
            .chain(index.selectors.iter())
            .any(|pa| {
                pa.spec.mode() == MtlsMode::Strict
                    || pa
                        .spec
                        .port_level_mtls
                        .values()
                        .any(|m| m.mode == MtlsMode::Strict)
            });
        for pa in index.selectors.clone() {
            if let Some(auth) = index.convert_port_level(pa) {
                let name = format!(
                    "{}/{}",
                    selector::namespace(&pa.metadata),
                    selector::name(&pa.metadata)
                );
                index.converted.insert(name, auth);
            }
        }
        index
    }

    /// The mode a namespace's workloads get when their own policy does not set one.
    fn parent_mode(&self, namespace: &str) -> MtlsMode {
        [self.namespaces.get(namespace).copied(), self.mesh]
            .into_iter()
            .flatten()
            .map(|pa| pa.spec.mode())
            .find(|m| *m != MtlsMode::Unset)
            .unwrap_or(MtlsMode::Permissive)
    }

    fn effective_mode(&self, namespace: &str, own: Option<&PeerAuthentication>) -> MtlsMode {
        match own.map(|pa| pa.spec.mode()) {
            Some(m) if m != MtlsMode::Unset => m,
            _ => self.parent_mode(namespace),
        }
    }

    /// The DENY policy of a selector policy with port-level settings, if it denies anything.
    fn convert_port_level(&self, pa: &PeerAuthentication) -> Option<Authorization> {
        if pa.spec.port_level_mtls.is_empty() {
            return None;
        }
        let ns = selector::namespace(&pa.metadata);
        let mode = self.effective_mode(ns, Some(pa));
        let port_mode = |m: MtlsMode| if m == MtlsMode::Unset { mode } else { m };
        let mut deny = Match {
            not_principals: vec![presence()],
            ..Default::default()
        };
        let levels = pa.spec.port_level_mtls.iter();
        if mode == MtlsMode::Strict {
            deny.not_destination_ports = levels
                .filter(|(_, m)| port_mode(m.mode) != MtlsMode::Strict)
                .map(|(p, _)| *p)
                .collect();
        } else {
            deny.destination_ports = levels
                .filter(|(_, m)| port_mode(m.mode) == MtlsMode::Strict)
                .map(|(p, _)| *p)
                .collect();
            if deny.destination_ports.is_empty() {
                return None;
            }
        }
        Some(deny_policy(
            converted_policy_name(selector::name(&pa.metadata)),
            ns,
            deny,
        ))
    }

    /// Names of the policies a workload gets from PeerAuthentications.
    pub(crate) fn policies_for(
        &self,
        namespace: &str,
        labels: Option<&BTreeMap<String, String>>,
    ) -> Vec<String> {
        let own = self.selectors.iter().copied().find(|pa| {
            selector::namespace(&pa.metadata) == namespace
                && selector_labels(pa).is_some_and(|s| selector::matches(s, labels))
        });
        if let Some(pa) = own
            && !pa.spec.port_level_mtls.is_empty()
        {
            let name = format!("{namespace}/{}", selector::name(&pa.metadata));
            return match self.converted.get(&name) {
                Some(auth) => vec![super::authorization_resource_name(auth)],
                None => Vec::new(),
            };
        }
        if self.effective_mode(namespace, own) == MtlsMode::Strict {
            vec![format!("{}/{STATIC_STRICT_POLICY}", self.root_namespace)]
        } else {
            Vec::new()
        }
    }

    /// The policies to serve: the static STRICT policy when any policy is STRICT, and the
    /// port-level conversions.
    pub(crate) fn authorizations(&self) -> Vec<Authorization> {
        let mut out: Vec<Authorization> = self.converted.values().cloned().collect();
        if self.any_strict {
            out.push(deny_policy(
                STATIC_STRICT_POLICY.to_string(),
                &self.root_namespace,
                Match {
                    not_principals: vec![presence()],
                    ..Default::default()
                },
            ));
        }
        out
    }
}

fn presence() -> StringMatch {
    StringMatch {
        match_type: Some(string_match::MatchType::Presence(())),
    }
}

fn deny_policy(name: String, namespace: &str, m: Match) -> Authorization {
    Authorization {
        name,
        namespace: namespace.to_string(),
        scope: Scope::WorkloadSelector as i32,
        action: Action::Deny as i32,
        groups: vec![Group {
            rules: vec![Rules { matches: vec![m] }],
        }],
        dry_run: false,
    }
}
