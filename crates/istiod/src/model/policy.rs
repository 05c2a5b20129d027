//! `AuthorizationPolicy` compiled into L4 `istio.security.Authorization`s, with Istio's
//! semantics for what ztunnel can enforce.
//!
//! - Scope: no selector in the root namespace → GLOBAL; no selector → NAMESPACE; a selector →
//!   WORKLOAD_SELECTOR, listed on the matching workloads (in every namespace for the root
//!   namespace).
//! - A policy with `targetRefs` belongs to a waypoint and is not sent to ztunnel.
//! - A rule using L7 attributes (hosts, methods, paths, request principals, remote IPs, `when`
//!   keys other than source.ip, source.namespace, source.principal, destination.ip and
//!   destination.port): in an ALLOW policy the rule matches nothing; in a DENY policy the L7
//!   parts are dropped, so the rule denies on its L4 parts alone. Invalid values (ports, CIDRs)
//!   are handled the same way: never widen an ALLOW, always widen a DENY.
//! - No rules (`spec: {}`) matches nothing (an ALLOW then denies everything selected);
//!   `rules: [{}]` matches everything.

use std::collections::BTreeMap;
use std::net::IpAddr;

use mesh_config::objects::kind;
use mesh_config::objects::{
    AuthorizationAction, AuthorizationPolicy, Condition, Operation, Rule, Source,
};
use mesh_config::{ObjectKey, Snapshot};
use mesh_proto::proto::security::{
    Action, Address, Authorization, Group, Match, Rules, Scope, StringMatch, string_match,
};

use super::selector;
use super::{Issues, ModelConfig};

/// Annotation that makes a policy report instead of enforce.
pub const DRY_RUN_ANNOTATION: &str = "istio.io/dry-run";

/// `when` keys ztunnel evaluates.
const L4_CONDITION_KEYS: &[&str] = &[
    "source.ip",
    "source.namespace",
    "source.principal",
    "destination.ip",
    "destination.port",
];

struct Compiled {
    auth: Authorization,
    /// Labels of a WORKLOAD_SELECTOR policy.
    selector: Option<BTreeMap<String, String>>,
}

/// Every policy of a snapshot that ztunnel enforces.
pub(crate) struct CompiledPolicies {
    entries: Vec<Compiled>,
    root_namespace: String,
    pub(crate) waypoint_policies: Vec<ObjectKey>,
}

impl CompiledPolicies {
    /// Names (`namespace/name`) of the selector-scoped policies that select a workload.
    pub(crate) fn selected_for(
        &self,
        namespace: &str,
        labels: Option<&BTreeMap<String, String>>,
    ) -> Vec<String> {
        self.entries
            .iter()
            .filter(|c| c.auth.namespace == namespace || c.auth.namespace == self.root_namespace)
            .filter(|c| {
                c.selector
                    .as_ref()
                    .is_some_and(|s| selector::matches(s, labels))
            })
            .map(|c| super::authorization_resource_name(&c.auth))
            .collect()
    }

    pub(crate) fn authorizations(&self) -> Vec<Authorization> {
        self.entries.iter().map(|c| c.auth.clone()).collect()
    }
}

pub(crate) fn compile_all(
    snapshot: &Snapshot,
    cfg: &ModelConfig,
    issues: &mut Issues<'_>,
) -> CompiledPolicies {
    let mut out = CompiledPolicies {
        entries: Vec::new(),
        root_namespace: cfg.root_namespace.clone(),
        waypoint_policies: Vec::new(),
    };
    for ap in snapshot.authorization_policies() {
        let key = ObjectKey::new(
            kind::AUTHORIZATION_POLICY,
            selector::namespace(&ap.metadata),
            selector::name(&ap.metadata),
        );
        let mut notes = Vec::new();
        if ap.spec.all_target_refs().next().is_some() {
            if ap.spec.selector.is_some() {
                notes.push("selector is ignored: the policy has targetRefs".to_string());
            }
            out.waypoint_policies.push(key.clone());
        } else if let Some(compiled) = compile(ap, cfg, &mut notes) {
            out.entries.push(compiled);
        }
        for note in notes {
            issues.push(&key, note);
        }
    }
    out
}

fn compile(
    ap: &AuthorizationPolicy,
    cfg: &ModelConfig,
    notes: &mut Vec<String>,
) -> Option<Compiled> {
    let action = match ap.spec.action {
        AuthorizationAction::Allow => Action::Allow,
        AuthorizationAction::Deny => Action::Deny,
        other => {
            notes.push(format!(
                "action {other:?} is not enforced by ztunnel; the policy is not sent to ztunnel \
                 (attach it to a waypoint with targetRefs)"
            ));
            return None;
        }
    };
    let namespace = selector::namespace(&ap.metadata).to_string();
    let labels = ap
        .spec
        .selector
        .as_ref()
        .map(|s| s.match_labels.clone())
        .filter(|l| !l.is_empty());
    let scope = match (&labels, namespace == cfg.root_namespace) {
        (Some(_), _) => Scope::WorkloadSelector,
        (None, true) => Scope::Global,
        (None, false) => Scope::Namespace,
    };
    let mut groups = Vec::new();
    for (i, rule) in ap.spec.rules.iter().enumerate() {
        let mut conv = RuleConversion::new(action, i + 1, &namespace);
        let rules = conv.convert(rule);
        match conv.finish(notes) {
            RuleOutcome::Keep => groups.push(Group { rules }),
            RuleOutcome::MatchNothing => {}
        }
    }
    let dry_run = ap
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DRY_RUN_ANNOTATION))
        .is_some_and(|v| v == "true");
    Some(Compiled {
        auth: Authorization {
            name: selector::name(&ap.metadata).to_string(),
            namespace,
            scope: scope as i32,
            action: action as i32,
            groups,
            dry_run,
        },
        selector: labels,
    })
}

enum RuleOutcome {
    Keep,
    MatchNothing,
}

/// Converts one rule, remembering what could not be expressed at L4.
struct RuleConversion<'a> {
    action: Action,
    index: usize,
    namespace: &'a str,
    /// L7 attributes the rule uses.
    l7: Vec<String>,
    /// Values that are not valid.
    invalid: Vec<String>,
    /// A construct that would widen an ALLOW (empty condition, mixed principal forms).
    unsupported: Vec<String>,
}

impl<'a> RuleConversion<'a> {
    fn new(action: Action, index: usize, namespace: &'a str) -> Self {
        RuleConversion {
            action,
            index,
            namespace,
            l7: Vec::new(),
            invalid: Vec::new(),
            unsupported: Vec::new(),
        }
    }

    fn convert(&mut self, rule: &Rule) -> Vec<Rules> {
        let mut rules = Vec::new();
        let to: Vec<Match> = rule
            .to
            .iter()
            .map(|t| self.operation(&t.operation))
            .collect();
        if !to.is_empty() {
            rules.push(Rules { matches: to });
        }
        let from: Vec<Match> = rule.from.iter().map(|f| self.source(&f.source)).collect();
        if !from.is_empty() {
            rules.push(Rules { matches: from });
        }
        for cond in &rule.when {
            if let Some(m) = self.condition(cond) {
                rules.push(Rules { matches: vec![m] });
            }
        }
        rules
    }

    fn finish(self, notes: &mut Vec<String>) -> RuleOutcome {
        let n = self.index;
        let mut problems = Vec::new();
        if !self.l7.is_empty() {
            problems.push(format!("uses L7 attributes ({})", self.l7.join(", ")));
        }
        if !self.invalid.is_empty() {
            problems.push(format!("has invalid values ({})", self.invalid.join("; ")));
        }
        if self.action == Action::Allow {
            problems.extend(self.unsupported);
        }
        if problems.is_empty() {
            return RuleOutcome::Keep;
        }
        let problems = problems.join(" and ");
        if self.action == Action::Allow {
            notes.push(format!(
                "rule {n} {problems}: ztunnel cannot enforce it, so this ALLOW rule matches \
                 nothing (use a waypoint with targetRefs for L7 rules)"
            ));
            RuleOutcome::MatchNothing
        } else {
            notes.push(format!(
                "rule {n} {problems}: ztunnel ignores those parts, so this DENY rule matches on \
                 its remaining L4 parts (denies more)"
            ));
            RuleOutcome::Keep
        }
    }

    fn operation(&mut self, op: &Operation) -> Match {
        for (field, values) in [
            ("hosts", &op.hosts),
            ("notHosts", &op.not_hosts),
            ("methods", &op.methods),
            ("notMethods", &op.not_methods),
            ("paths", &op.paths),
            ("notPaths", &op.not_paths),
        ] {
            if !values.is_empty() {
                self.l7.push(format!("to.operation.{field}"));
            }
        }
        Match {
            destination_ports: self.ports("ports", &op.ports),
            not_destination_ports: self.ports("notPorts", &op.not_ports),
            ..Default::default()
        }
    }

    fn source(&mut self, src: &Source) -> Match {
        for (field, values) in [
            ("requestPrincipals", &src.request_principals),
            ("notRequestPrincipals", &src.not_request_principals),
            ("remoteIpBlocks", &src.remote_ip_blocks),
            ("notRemoteIpBlocks", &src.not_remote_ip_blocks),
        ] {
            if !values.is_empty() {
                self.l7.push(format!("from.source.{field}"));
            }
        }
        let mut principals: Vec<StringMatch> =
            src.principals.iter().map(|p| principal(p)).collect();
        let mut not_principals: Vec<StringMatch> =
            src.not_principals.iter().map(|p| principal(p)).collect();
        if !src.service_accounts.is_empty() && !src.principals.is_empty() {
            self.unsupported
                .push("combines principals and serviceAccounts".to_string());
        }
        principals.extend(
            src.service_accounts
                .iter()
                .map(|sa| self.service_account(sa)),
        );
        not_principals.extend(
            src.not_service_accounts
                .iter()
                .map(|sa| self.service_account(sa)),
        );
        Match {
            namespaces: src.namespaces.iter().map(|v| string_match_of(v)).collect(),
            not_namespaces: src
                .not_namespaces
                .iter()
                .map(|v| string_match_of(v))
                .collect(),
            principals,
            not_principals,
            source_ips: self.cidrs("ipBlocks", &src.ip_blocks),
            not_source_ips: self.cidrs("notIpBlocks", &src.not_ip_blocks),
            ..Default::default()
        }
    }

    /// `namespace/sa` (or `sa` in the policy's namespace) as a principal suffix match.
    fn service_account(&self, sa: &str) -> StringMatch {
        let (ns, sa) = sa.split_once('/').unwrap_or((self.namespace, sa));
        matcher(string_match::MatchType::Suffix(format!("/ns/{ns}/sa/{sa}")))
    }

    fn condition(&mut self, cond: &Condition) -> Option<Match> {
        let key = cond.key.as_str();
        if !L4_CONDITION_KEYS.contains(&key) {
            self.l7.push(format!("when.key {key}"));
            return None;
        }
        if cond.values.is_empty() && cond.not_values.is_empty() {
            self.unsupported
                .push(format!("has a condition on {key} without values"));
        }
        let (v, nv) = (&cond.values, &cond.not_values);
        let mut m = Match::default();
        match key {
            "source.ip" => {
                m.source_ips = self.cidrs(key, v);
                m.not_source_ips = self.cidrs(key, nv);
            }
            "destination.ip" => {
                m.destination_ips = self.cidrs(key, v);
                m.not_destination_ips = self.cidrs(key, nv);
            }
            "source.namespace" => {
                m.namespaces = v.iter().map(|s| string_match_of(s)).collect();
                m.not_namespaces = nv.iter().map(|s| string_match_of(s)).collect();
            }
            "source.principal" => {
                m.principals = v.iter().map(|s| principal(s)).collect();
                m.not_principals = nv.iter().map(|s| principal(s)).collect();
            }
            _ => {
                m.destination_ports = self.ports(key, v);
                m.not_destination_ports = self.ports(key, nv);
            }
        }
        Some(m)
    }

    fn ports(&mut self, field: &str, values: &[String]) -> Vec<u32> {
        let mut out = Vec::new();
        for v in values {
            match v.trim().parse::<u16>() {
                Ok(p) if p > 0 => out.push(u32::from(p)),
                _ => self.invalid.push(format!("{field}: {v:?} is not a port")),
            }
        }
        out
    }

    fn cidrs(&mut self, field: &str, values: &[String]) -> Vec<Address> {
        let mut out = Vec::new();
        for v in values {
            match parse_cidr(v) {
                Some(a) => out.push(a),
                None => self
                    .invalid
                    .push(format!("{field}: {v:?} is not an IP or CIDR")),
            }
        }
        out
    }
}

fn matcher(m: string_match::MatchType) -> StringMatch {
    StringMatch {
        match_type: Some(m),
    }
}

/// Istio's string forms: `*` any present value, `prefix*`, `*suffix`, else exact.
fn string_match_of(v: &str) -> StringMatch {
    use string_match::MatchType;
    if v == "*" {
        matcher(MatchType::Presence(()))
    } else if let Some(prefix) = v.strip_suffix('*') {
        matcher(MatchType::Prefix(prefix.to_string()))
    } else if let Some(suffix) = v.strip_prefix('*') {
        matcher(MatchType::Suffix(suffix.to_string()))
    } else {
        matcher(MatchType::Exact(v.to_string()))
    }
}

/// Principals are matched without the `spiffe://` scheme (`td/ns/<ns>/sa/<sa>`).
fn principal(v: &str) -> StringMatch {
    string_match_of(v.strip_prefix("spiffe://").unwrap_or(v))
}

/// `10.0.0.0/8`, `fd00::/8`, or a bare address (a /32 or /128).
fn parse_cidr(v: &str) -> Option<Address> {
    let v = v.trim();
    let (addr, len) = match v.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (v, None),
    };
    let ip: IpAddr = addr.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let length = match len {
        Some(l) => l.parse::<u32>().ok().filter(|l| *l <= max)?,
        None => max,
    };
    Some(Address {
        address: super::service::ip_bytes(ip),
        length,
    })
}
