//! L7 authorization: the typed form of `mesh.waypoint.v1.Policy` (compiled from
//! AuthorizationPolicy with `targetRefs`) and its evaluation.
//!
//! Order: a request is denied when any applicable DENY policy matches; otherwise, when ALLOW
//! policies apply, it is allowed only if one of them matches; with no ALLOW policy it is
//! allowed. A policy applies when its targets are empty or name the request's service. A
//! policy matches when any of its rules matches (no rules: never). A rule matches when one of
//! its `from` sources (if any) and one of its `to` operations (if any) match. Within a source or
//! operation every field that is set must hold: one of its values must match and none of its
//! `not_` values may.
//!
//! String values use Istio's forms: `*` (present, non-empty), `prefix*`, `*suffix`, exact.
//! Principals may be written with or without `spiffe://`. Hosts match case-insensitively,
//! with or without the port. For plain TCP (no HTTP attributes) a rule that needs HTTP
//! attributes never matches in an ALLOW policy, and in a DENY policy is checked on its other
//! fields only, so L4 traffic is never let through by an HTTP-only rule.

use http::HeaderMap;
use identity::Identity;
use mesh_proto::proto::waypoint as pb;
use serde::Serialize;

use super::ModelError;
use super::route::HeaderMatch;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Action {
    Allow,
    Deny,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Present,
}

impl StringMatch {
    pub fn parse(s: &str) -> Self {
        if s == "*" {
            StringMatch::Present
        } else if let Some(p) = s.strip_suffix('*') {
            StringMatch::Prefix(p.to_string())
        } else if let Some(p) = s.strip_prefix('*') {
            StringMatch::Suffix(p.to_string())
        } else {
            StringMatch::Exact(s.to_string())
        }
    }

    pub fn matches(&self, v: &str) -> bool {
        match self {
            StringMatch::Exact(e) => e == v,
            StringMatch::Prefix(p) => v.starts_with(p.as_str()),
            StringMatch::Suffix(s) => v.ends_with(s.as_str()),
            StringMatch::Present => !v.is_empty(),
        }
    }

    fn lowercase(self) -> Self {
        match self {
            StringMatch::Exact(s) => StringMatch::Exact(s.to_ascii_lowercase()),
            StringMatch::Prefix(s) => StringMatch::Prefix(s.to_ascii_lowercase()),
            StringMatch::Suffix(s) => StringMatch::Suffix(s.to_ascii_lowercase()),
            StringMatch::Present => StringMatch::Present,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Source {
    pub principals: Vec<StringMatch>,
    pub not_principals: Vec<StringMatch>,
    pub namespaces: Vec<StringMatch>,
    pub not_namespaces: Vec<StringMatch>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Operation {
    pub methods: Vec<String>,
    pub not_methods: Vec<String>,
    pub paths: Vec<StringMatch>,
    pub not_paths: Vec<StringMatch>,
    pub hosts: Vec<StringMatch>,
    pub not_hosts: Vec<StringMatch>,
    pub ports: Vec<u16>,
    pub not_ports: Vec<u16>,
    pub headers: Vec<HeaderMatch>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Rule {
    pub from: Vec<Source>,
    pub to: Vec<Operation>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Policy {
    /// `namespace/name` of the AuthorizationPolicy.
    pub name: String,
    pub action: Action,
    /// Service keys; empty means every service of the waypoint.
    pub targets: Vec<String>,
    pub rules: Vec<Rule>,
}

/// HTTP attributes of a request, absent for plain TCP.
#[derive(Clone, Copy, Debug)]
pub struct HttpAttributes<'a> {
    pub method: &'a str,
    /// Normalized path, without the query.
    pub path: &'a str,
    pub host: &'a str,
    pub headers: &'a HeaderMap,
}

/// What authorization looks at.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    /// Verified identity of the peer (from its certificate).
    pub principal: Option<&'a Identity>,
    /// Destination (service) port.
    pub port: u16,
    pub http: Option<HttpAttributes<'a>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Denied; names the DENY policy that matched, or says no ALLOW policy matched.
    Deny(String),
}

impl Policy {
    pub fn from_proto(p: pb::Policy) -> Result<Self, ModelError> {
        let ctx = format!("policy {}", p.name);
        let action = match pb::policy::Action::try_from(p.action) {
            Ok(pb::policy::Action::Allow) => Action::Allow,
            Ok(pb::policy::Action::Deny) => Action::Deny,
            Err(_) => {
                return Err(ModelError::invalid(
                    &ctx,
                    format!("unknown action {}", p.action),
                ));
            }
        };
        let rules = p
            .rules
            .into_iter()
            .map(|r| {
                Ok::<_, ModelError>(Rule {
                    from: r.from.into_iter().map(Source::from_proto).collect(),
                    to: r
                        .to
                        .into_iter()
                        .map(|o| Operation::from_proto(o, &ctx))
                        .collect::<Result<Vec<_>, _>>()?,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Policy {
            name: p.name,
            action,
            targets: p.targets,
            rules,
        })
    }

    pub fn applies_to(&self, service_key: &str) -> bool {
        self.targets.is_empty() || self.targets.iter().any(|t| t == service_key)
    }

    fn matches(&self, s: &Subject<'_>) -> bool {
        self.rules.iter().any(|r| r.matches(s, self.action))
    }
}

impl Rule {
    fn matches(&self, s: &Subject<'_>, action: Action) -> bool {
        (self.from.is_empty() || self.from.iter().any(|f| f.matches(s)))
            && (self.to.is_empty() || self.to.iter().any(|o| o.matches(s, action)))
    }
}

impl Source {
    fn from_proto(s: pb::Source) -> Self {
        let principals = |v: Vec<String>| {
            v.iter()
                .map(|p| StringMatch::parse(p.strip_prefix("spiffe://").unwrap_or(p)))
                .collect()
        };
        let plain = |v: Vec<String>| v.iter().map(|p| StringMatch::parse(p)).collect();
        Source {
            principals: principals(s.principals),
            not_principals: principals(s.not_principals),
            namespaces: plain(s.namespaces),
            not_namespaces: plain(s.not_namespaces),
        }
    }

    fn matches(&self, s: &Subject<'_>) -> bool {
        let principal = s.principal.map(|id| {
            let uri = id.uri();
            uri.strip_prefix("spiffe://").unwrap_or(&uri).to_string()
        });
        let namespace = s.principal.map(|id| id.namespace.as_str());
        field(&self.principals, &self.not_principals, principal.as_deref())
            && field(&self.namespaces, &self.not_namespaces, namespace)
    }
}

impl Operation {
    fn from_proto(o: pb::Operation, ctx: &str) -> Result<Self, ModelError> {
        let strings = |v: Vec<String>| v.iter().map(|p| StringMatch::parse(p)).collect();
        let hosts = |v: Vec<String>| {
            v.iter()
                .map(|p| StringMatch::parse(p).lowercase())
                .collect()
        };
        let ports = |v: Vec<u32>| {
            v.into_iter()
                .map(|p| super::route::port(p, ctx))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Operation {
            methods: o.methods,
            not_methods: o.not_methods,
            paths: strings(o.paths),
            not_paths: strings(o.not_paths),
            hosts: hosts(o.hosts),
            not_hosts: hosts(o.not_hosts),
            ports: ports(o.ports)?,
            not_ports: ports(o.not_ports)?,
            headers: o
                .headers
                .into_iter()
                .map(|h| HeaderMatch::from_proto(h, ctx))
                .collect::<Result<Vec<_>, _>>()?,
        })
    }

    fn needs_http(&self) -> bool {
        !(self.methods.is_empty()
            && self.not_methods.is_empty()
            && self.paths.is_empty()
            && self.not_paths.is_empty()
            && self.hosts.is_empty()
            && self.not_hosts.is_empty()
            && self.headers.is_empty())
    }

    fn matches(&self, s: &Subject<'_>, action: Action) -> bool {
        let ports_ok = (self.ports.is_empty() || self.ports.contains(&s.port))
            && !self.not_ports.contains(&s.port);
        if !ports_ok {
            return false;
        }
        let Some(h) = &s.http else {
            // Plain TCP: see the module documentation.
            return action == Action::Deny || !self.needs_http();
        };
        let method_ok = (self.methods.is_empty() || self.methods.iter().any(|m| m == h.method))
            && !self.not_methods.iter().any(|m| m == h.method);
        let host = h.host.to_ascii_lowercase();
        let bare_host = strip_port(&host);
        let host_hit = |list: &[StringMatch]| {
            list.iter()
                .any(|m| m.matches(&host) || m.matches(bare_host))
        };
        let hosts_ok =
            (self.hosts.is_empty() || host_hit(&self.hosts)) && !host_hit(&self.not_hosts);
        method_ok
            && hosts_ok
            && field(&self.paths, &self.not_paths, Some(h.path))
            && self.headers.iter().all(|m| m.matches(h.headers))
    }
}

/// One field of a source or operation: `values` (when set) must contain a match, `not_values`
/// must not. An absent attribute matches no value (so a set `values` fails).
fn field(values: &[StringMatch], not_values: &[StringMatch], attr: Option<&str>) -> bool {
    let hit = |list: &[StringMatch]| attr.is_some_and(|a| list.iter().any(|m| m.matches(a)));
    (values.is_empty() || hit(values)) && !hit(not_values)
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [v6]:port
        return host
            .split_once("]:")
            .map(|(h, _)| &host[..=h.len()])
            .unwrap_or(host);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') => h,
        _ => host,
    }
}

/// Evaluates the policies that apply to `service_key`, DENY first.
pub fn evaluate<'a>(
    policies: impl IntoIterator<Item = &'a Policy>,
    service_key: &str,
    s: &Subject<'_>,
) -> Decision {
    let mut allow_policies = 0usize;
    let mut allowed = false;
    for p in policies.into_iter().filter(|p| p.applies_to(service_key)) {
        match p.action {
            Action::Deny => {
                if p.matches(s) {
                    return Decision::Deny(format!("denied by policy {}", p.name));
                }
            }
            Action::Allow => {
                allow_policies += 1;
                allowed = allowed || p.matches(s);
            }
        }
    }
    if allow_policies == 0 || allowed {
        Decision::Allow
    } else {
        Decision::Deny("no ALLOW policy matched".to_string())
    }
}

#[cfg(test)]
mod tests;
