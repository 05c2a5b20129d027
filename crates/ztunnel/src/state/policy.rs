//! L4 authorization: policies from `istio.security.Authorization` and their evaluation.
//!
//! A connection is denied when any applicable DENY policy matches; otherwise it is allowed when
//! no ALLOW policy applies or one of them matches. A policy matches when any of its groups
//! matches; a group when all its rules match; a rule when any of its matches holds; a match when
//! every field it sets holds (values within a field are alternatives, `not_*` fields must not match).

use std::net::IpAddr;

use identity::Identity;
use ipnet::IpNet;
use mesh_proto::proto::security as pb;
use serde::Serialize;

use super::StateError;
use super::workload::{Workload, ip_from_bytes};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Scope {
    Global,
    Namespace,
    WorkloadSelector,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Action {
    Allow,
    Deny,
}

#[derive(Clone, Debug, Serialize)]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Presence,
}

impl StringMatch {
    fn matches(&self, v: Option<&str>) -> bool {
        match (self, v) {
            (_, None) => false,
            (StringMatch::Exact(e), Some(v)) => e == v,
            (StringMatch::Prefix(p), Some(v)) => v.starts_with(p.as_str()),
            (StringMatch::Suffix(s), Some(v)) => v.ends_with(s.as_str()),
            (StringMatch::Presence, Some(v)) => !v.is_empty(),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Match {
    pub namespaces: Vec<StringMatch>,
    pub not_namespaces: Vec<StringMatch>,
    pub principals: Vec<StringMatch>,
    pub not_principals: Vec<StringMatch>,
    pub source_ips: Vec<IpNet>,
    pub not_source_ips: Vec<IpNet>,
    pub destination_ips: Vec<IpNet>,
    pub not_destination_ips: Vec<IpNet>,
    pub destination_ports: Vec<u16>,
    pub not_destination_ports: Vec<u16>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Policy {
    pub name: String,
    pub namespace: String,
    pub scope: Scope,
    pub action: Action,
    pub dry_run: bool,
    /// Alternatives, each a list of rules that must all hold, each a list of alternative matches.
    pub groups: Vec<Vec<Vec<Match>>>,
}

/// What the policy engine knows of a connection.
#[derive(Clone, Debug)]
pub struct Connection<'a> {
    pub src_ip: IpAddr,
    /// Verified peer identity; `None` for plaintext.
    pub src_identity: Option<&'a Identity>,
    pub dst_ip: IpAddr,
    pub dst_port: u16,
}

/// Outcome of an authorization check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Denied, with the reason for logs and the response flags.
    Deny(String),
}

impl Policy {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    pub fn from_proto(p: pb::Authorization) -> Result<Self, StateError> {
        let scope = match pb::Scope::try_from(p.scope) {
            Ok(pb::Scope::Global) => Scope::Global,
            Ok(pb::Scope::Namespace) => Scope::Namespace,
            Ok(pb::Scope::WorkloadSelector) => Scope::WorkloadSelector,
            Err(_) => {
                return Err(StateError::Invalid(format!(
                    "policy {}: unknown scope {}",
                    p.name, p.scope
                )));
            }
        };
        let action = match pb::Action::try_from(p.action) {
            Ok(pb::Action::Allow) => Action::Allow,
            Ok(pb::Action::Deny) => Action::Deny,
            Err(_) => {
                return Err(StateError::Invalid(format!(
                    "policy {}: unknown action {}",
                    p.name, p.action
                )));
            }
        };
        let name = p.name.clone();
        let groups = p
            .groups
            .into_iter()
            .map(|g| {
                g.rules
                    .into_iter()
                    .map(|r| {
                        r.matches
                            .into_iter()
                            .map(convert_match)
                            .collect::<Result<Vec<_>, _>>()
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StateError::Invalid(format!("policy {name}: {e}")))?;
        Ok(Policy {
            name: p.name,
            namespace: p.namespace,
            scope,
            action,
            dry_run: p.dry_run,
            groups,
        })
    }

    /// Whether the policy applies to a destination workload.
    pub fn selects(&self, w: &Workload) -> bool {
        match self.scope {
            Scope::Global => true,
            Scope::Namespace => self.namespace == w.namespace,
            Scope::WorkloadSelector => w.authorization_policies.iter().any(|k| *k == self.key()),
        }
    }

    pub fn matches(&self, c: &Connection<'_>) -> bool {
        self.groups
            .iter()
            .any(|rules| rules.iter().all(|alts| alts.iter().any(|m| m.matches(c))))
    }
}

impl Match {
    fn matches(&self, c: &Connection<'_>) -> bool {
        let principal = c.src_identity.map(|i| i.uri());
        let principal = principal
            .as_deref()
            .map(|p| p.strip_prefix("spiffe://").unwrap_or(p));
        let namespace = c.src_identity.map(|i| i.namespace.as_str());
        fn any_str(ms: &[StringMatch], v: Option<&str>) -> bool {
            ms.iter().any(|m| m.matches(v))
        }
        fn any_net(ns: &[IpNet], ip: IpAddr) -> bool {
            ns.iter().any(|n| n.contains(&ip))
        }
        (self.namespaces.is_empty() || any_str(&self.namespaces, namespace))
            && !any_str(&self.not_namespaces, namespace)
            && (self.principals.is_empty() || any_str(&self.principals, principal))
            && !any_str(&self.not_principals, principal)
            && (self.source_ips.is_empty() || any_net(&self.source_ips, c.src_ip))
            && !any_net(&self.not_source_ips, c.src_ip)
            && (self.destination_ips.is_empty() || any_net(&self.destination_ips, c.dst_ip))
            && !any_net(&self.not_destination_ips, c.dst_ip)
            && (self.destination_ports.is_empty() || self.destination_ports.contains(&c.dst_port))
            && !self.not_destination_ports.contains(&c.dst_port)
    }
}

/// Evaluates the policies that select `dst` for one connection.
pub fn evaluate<'p>(
    policies: impl Iterator<Item = &'p Policy>,
    dst: &Workload,
    c: &Connection<'_>,
) -> Decision {
    let mut have_allow = false;
    let mut allowed = false;
    for p in policies.filter(|p| p.selects(dst)) {
        match p.action {
            Action::Deny if p.matches(c) => {
                if p.dry_run {
                    tracing::info!(policy = %p.key(), "dry-run DENY policy matched");
                    continue;
                }
                return Decision::Deny(format!("denied by policy {}", p.key()));
            }
            Action::Deny => {}
            Action::Allow if p.dry_run => {}
            Action::Allow => {
                have_allow = true;
                allowed = allowed || p.matches(c);
            }
        }
    }
    if have_allow && !allowed {
        Decision::Deny("no ALLOW policy matched".into())
    } else {
        Decision::Allow
    }
}

fn convert_match(m: pb::Match) -> Result<Match, String> {
    let strs =
        |v: Vec<pb::StringMatch>| v.into_iter().filter_map(convert_string).collect::<Vec<_>>();
    let nets = |v: Vec<pb::Address>| {
        v.into_iter()
            .map(convert_net)
            .collect::<Result<Vec<_>, _>>()
    };
    let ports = |v: Vec<u32>| {
        v.into_iter()
            .filter_map(|p| u16::try_from(p).ok())
            .collect::<Vec<_>>()
    };
    Ok(Match {
        namespaces: strs(m.namespaces),
        not_namespaces: strs(m.not_namespaces),
        principals: strs(m.principals),
        not_principals: strs(m.not_principals),
        source_ips: nets(m.source_ips)?,
        not_source_ips: nets(m.not_source_ips)?,
        destination_ips: nets(m.destination_ips)?,
        not_destination_ips: nets(m.not_destination_ips)?,
        destination_ports: ports(m.destination_ports),
        not_destination_ports: ports(m.not_destination_ports),
    })
}

fn convert_string(s: pb::StringMatch) -> Option<StringMatch> {
    use pb::string_match::MatchType;
    Some(match s.match_type? {
        MatchType::Exact(v) => StringMatch::Exact(v),
        MatchType::Prefix(v) => StringMatch::Prefix(v),
        MatchType::Suffix(v) => StringMatch::Suffix(v),
        MatchType::Presence(_) => StringMatch::Presence,
    })
}

fn convert_net(a: pb::Address) -> Result<IpNet, String> {
    let ip = ip_from_bytes(&a.address)?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = u8::try_from(a.length)
        .ok()
        .filter(|l| u32::from(*l) <= max)
        .ok_or(format!("prefix length {} out of range", a.length))?;
    IpNet::new(ip, len).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests;
