//! AuthorizationPolicies with `targetRefs`, compiled into the waypoint's L7 policies
//! (`mesh.waypoint.v1.Policy`).
//!
//! Targets: the waypoint Gateway (`kind: Gateway`, group `gateway.networking.k8s.io`; every
//! service of the waypoint), a Service bound to a waypoint (`kind: Service`, group `""`; that
//! service at its waypoint), or, from the root namespace, the `istio-waypoint` GatewayClass
//! (every waypoint). Targets are in the policy's namespace.
//!
//! Actions: ALLOW and DENY as written; CUSTOM (no external authorizer here) is enforced as a
//! DENY of the requests its rules select, so they are never let through unchecked; AUDIT and
//! dry-run policies have no enforcement to offer and are not sent. Each is reported.
//!
//! Fields: `from.source` principals, namespaces, serviceAccounts (as principal suffixes) and
//! their `not` forms; `to.operation` methods, paths, hosts, ports and their `not` forms;
//! `when` on `request.headers[<name>]` (values), `source.namespace`, `source.principal` and
//! `destination.port`. Anything else (request principals, IP blocks, other `when` keys, `when`
//! notValues on headers) cannot be enforced: in an ALLOW policy the rule then matches nothing;
//! in a DENY policy the rule is kept without those parts, so it denies more. Invalid values are
//! handled the same way.

use std::collections::BTreeMap;

use mesh_config::objects::{
    AuthorizationAction, AuthorizationPolicy, Condition, GATEWAY_GROUP, Operation, Rule, Source,
    WAYPOINT_GATEWAY_CLASS, kind,
};
use mesh_config::{Object, ObjectKey, Snapshot};
use mesh_proto::proto::waypoint as pb;

use super::super::policy::DRY_RUN_ANNOTATION;
use super::super::selector;
use super::super::{ModelConfig, service_hostname};
use super::Report;
use super::bind::Bindings;
use super::gateway::{WaypointDef, WaypointRef};
use super::validate;

/// Compiles the policies `keys` (those with targetRefs) into per-waypoint policy lists.
pub(crate) fn compile_all(
    snapshot: &Snapshot,
    cfg: &ModelConfig,
    defs: &BTreeMap<WaypointRef, WaypointDef>,
    bindings: &Bindings,
    keys: &[ObjectKey],
    report: &mut Report<'_, '_>,
) -> BTreeMap<WaypointRef, Vec<pb::Policy>> {
    let mut out: BTreeMap<WaypointRef, Vec<pb::Policy>> = BTreeMap::new();
    for key in keys {
        let Some(Object::AuthorizationPolicy(ap)) = snapshot.get(key) else {
            continue;
        };
        let targets = targets(ap, key, snapshot, cfg, defs, bindings, report);
        if targets.is_empty() {
            continue;
        }
        let waypoints: Vec<WaypointRef> = targets.keys().cloned().collect();
        let mut notes = Vec::new();
        let Some(policy) = compile(ap, &mut notes) else {
            for n in notes {
                report.waypoints(&waypoints, key, n);
            }
            continue;
        };
        for n in notes {
            report.waypoints(&waypoints, key, n);
        }
        for (wp, services) in targets {
            let mut p = policy.clone();
            p.targets = services.unwrap_or_default();
            out.entry(wp).or_default().push(p);
        }
    }
    for list in out.values_mut() {
        list.sort_by(|a, b| a.name.cmp(&b.name));
    }
    out
}

/// The waypoints a policy applies to, each with its service keys (`None`: every service).
fn targets(
    ap: &AuthorizationPolicy,
    key: &ObjectKey,
    snapshot: &Snapshot,
    cfg: &ModelConfig,
    defs: &BTreeMap<WaypointRef, WaypointDef>,
    bindings: &Bindings,
    report: &mut Report<'_, '_>,
) -> BTreeMap<WaypointRef, Option<Vec<String>>> {
    let ns = selector::namespace(&ap.metadata);
    let mut out: BTreeMap<WaypointRef, Option<Vec<String>>> = BTreeMap::new();
    if ap.spec.selector.is_some() {
        report.issue(key, "selector is ignored: the policy has targetRefs");
    }
    for t in ap.spec.all_target_refs() {
        let what = format!("targetRef {} {}", t.kind, t.name);
        if t.namespace.as_deref().is_some_and(|n| n != ns) {
            report.issue(
                key,
                format!("{what}: targets must be in the policy's namespace {ns}; ignored"),
            );
            continue;
        }
        match (t.group.as_str(), t.kind.as_str()) {
            (GATEWAY_GROUP, kind::GATEWAY) => {
                let wp = WaypointRef::new(ns, &t.name);
                match defs.get(&wp) {
                    Some(def) if def.accepted() => {
                        out.insert(wp, None);
                    }
                    Some(def) => report.waypoint(
                        &wp,
                        key,
                        format!(
                            "{what}: the waypoint is not accepted ({}); not enforced",
                            def.rejected.as_deref().unwrap_or("")
                        ),
                    ),
                    None => report.issue(
                        key,
                        format!("{what}: no waypoint Gateway {wp}; not enforced"),
                    ),
                }
            }
            (GATEWAY_GROUP, "GatewayClass") if t.name == WAYPOINT_GATEWAY_CLASS => {
                if ns != cfg.root_namespace {
                    report.issue(
                        key,
                        format!(
                            "{what}: only policies in the root namespace {} may target the \
                             GatewayClass; not enforced",
                            cfg.root_namespace
                        ),
                    );
                    continue;
                }
                for def in defs.values().filter(|d| d.accepted()) {
                    out.insert(def.wp.clone(), None);
                }
            }
            ("" | "core", kind::SERVICE) => {
                let service = format!("{ns}/{}", service_hostname(&t.name, ns, &cfg.domain_suffix));
                let exists = snapshot
                    .get(&ObjectKey::new(kind::SERVICE, ns, &t.name))
                    .is_some();
                match bindings.services.get(&service) {
                    Some(b) if b.accepted => {
                        let entry = out.entry(b.waypoint.clone()).or_insert(Some(Vec::new()));
                        if let Some(list) = entry {
                            list.push(service);
                        }
                    }
                    Some(b) => report.waypoint(
                        &b.waypoint,
                        key,
                        format!(
                            "{what}: bound to waypoint {}, which refuses its traffic; not \
                             enforced (the traffic is refused anyway)",
                            b.waypoint
                        ),
                    ),
                    None if !exists => report.issue(
                        key,
                        format!("{what}: the Service does not exist; not enforced"),
                    ),
                    None => report.issue(
                        key,
                        format!(
                            "{what}: the Service is not bound to a waypoint \
                             (istio.io/use-waypoint); not enforced"
                        ),
                    ),
                }
            }
            (group, kind_) => report.issue(
                key,
                format!(
                    "{what}: kind {kind_} (group {group:?}) is not supported; targets are a \
                     waypoint Gateway, a Service or the istio-waypoint GatewayClass"
                ),
            ),
        }
    }
    for list in out.values_mut().flatten() {
        list.sort();
        list.dedup();
    }
    out
}

/// The policy, or `None` when it is not sent (AUDIT, dry-run); `notes` say what was changed.
fn compile(ap: &AuthorizationPolicy, notes: &mut Vec<String>) -> Option<pb::Policy> {
    let dry_run = ap
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DRY_RUN_ANNOTATION))
        .is_some_and(|v| v == "true");
    if dry_run {
        notes.push(
            "dry-run policies are not evaluated by the waypoint (no shadow mode); not sent".into(),
        );
        return None;
    }
    let action = match ap.spec.action {
        AuthorizationAction::Allow => pb::policy::Action::Allow,
        AuthorizationAction::Deny => pb::policy::Action::Deny,
        AuthorizationAction::Custom => {
            let provider = ap.spec.provider.as_ref().map_or("", |p| p.name.as_str());
            notes.push(format!(
                "action CUSTOM (provider {provider:?}) is not supported: there is no external \
                 authorizer, so the requests its rules select are denied"
            ));
            pb::policy::Action::Deny
        }
        AuthorizationAction::Audit => {
            notes.push("action AUDIT is not supported by the waypoint; not sent".into());
            return None;
        }
    };
    let ns = selector::namespace(&ap.metadata);
    let mut rules = Vec::new();
    for (i, rule) in ap.spec.rules.iter().enumerate() {
        let mut conv = RuleConversion {
            allow: action == pb::policy::Action::Allow,
            namespace: ns,
            problems: Vec::new(),
        };
        let compiled = conv.rule(rule);
        if conv.problems.is_empty() {
            rules.push(compiled);
        } else if conv.allow {
            notes.push(format!(
                "rule {} {}: the waypoint cannot enforce it, so this ALLOW rule matches nothing",
                i + 1,
                conv.problems.join(" and ")
            ));
        } else {
            notes.push(format!(
                "rule {} {}: those parts are dropped, so this DENY rule denies more",
                i + 1,
                conv.problems.join(" and ")
            ));
            rules.push(compiled);
        }
    }
    Some(pb::Policy {
        name: format!("{ns}/{}", selector::name(&ap.metadata)),
        action: action as i32,
        targets: Vec::new(),
        rules,
    })
}

struct RuleConversion<'a> {
    allow: bool,
    namespace: &'a str,
    problems: Vec<String>,
}

impl RuleConversion<'_> {
    fn rule(&mut self, rule: &Rule) -> pb::PolicyRule {
        let mut from: Vec<pb::Source> = rule.from.iter().map(|f| self.source(&f.source)).collect();
        let mut to: Vec<pb::Operation> = rule
            .to
            .iter()
            .map(|t| self.operation(&t.operation))
            .collect();
        let mut when_source = pb::Source::default();
        let mut when_op = pb::Operation::default();
        for c in &rule.when {
            self.condition(c, &mut when_source, &mut when_op);
        }
        if when_source != pb::Source::default() {
            if from.is_empty() {
                from.push(pb::Source::default());
            }
            for s in &mut from {
                self.merge_source(s, &when_source);
            }
        }
        if when_op != pb::Operation::default() {
            if to.is_empty() {
                to.push(pb::Operation::default());
            }
            for o in &mut to {
                self.merge_ports(o, &when_op);
                o.headers.extend(when_op.headers.iter().cloned());
            }
        }
        pb::PolicyRule { from, to }
    }

    fn unsupported(&mut self, field: &str, values: &[String]) {
        if !values.is_empty() {
            self.problems.push(format!("uses {field}"));
        }
    }

    fn source(&mut self, s: &Source) -> pb::Source {
        self.unsupported("from.source.requestPrincipals", &s.request_principals);
        self.unsupported(
            "from.source.notRequestPrincipals",
            &s.not_request_principals,
        );
        self.unsupported("from.source.ipBlocks", &s.ip_blocks);
        self.unsupported("from.source.notIpBlocks", &s.not_ip_blocks);
        self.unsupported("from.source.remoteIpBlocks", &s.remote_ip_blocks);
        self.unsupported("from.source.notRemoteIpBlocks", &s.not_remote_ip_blocks);
        if self.allow && !s.principals.is_empty() && !s.service_accounts.is_empty() {
            self.problems
                .push("combines principals and serviceAccounts".into());
        }
        let sa = |v: &String| {
            let (ns, sa) = v.split_once('/').unwrap_or((self.namespace, v));
            format!("*/ns/{ns}/sa/{sa}")
        };
        pb::Source {
            principals: s
                .principals
                .iter()
                .cloned()
                .chain(s.service_accounts.iter().map(sa))
                .collect(),
            not_principals: s
                .not_principals
                .iter()
                .cloned()
                .chain(s.not_service_accounts.iter().map(sa))
                .collect(),
            namespaces: s.namespaces.clone(),
            not_namespaces: s.not_namespaces.clone(),
        }
    }

    fn operation(&mut self, o: &Operation) -> pb::Operation {
        let mut methods = Vec::new();
        for m in &o.methods {
            match validate::method(m) {
                Ok(m) => methods.push(m),
                Err(e) => self.problems.push(format!("has an invalid method ({e})")),
            }
        }
        pb::Operation {
            methods,
            not_methods: o.not_methods.clone(),
            paths: o.paths.clone(),
            not_paths: o.not_paths.clone(),
            hosts: o.hosts.clone(),
            not_hosts: o.not_hosts.clone(),
            ports: self.ports("to.operation.ports", &o.ports),
            not_ports: self.ports("to.operation.notPorts", &o.not_ports),
            headers: Vec::new(),
        }
    }

    fn ports(&mut self, field: &str, values: &[String]) -> Vec<u32> {
        let mut out = Vec::new();
        for v in values {
            match v.trim().parse::<u16>() {
                Ok(p) if p > 0 => out.push(u32::from(p)),
                _ => self.problems.push(format!(
                    "has an invalid value ({field}: {v:?} is not a port)"
                )),
            }
        }
        out
    }

    fn condition(&mut self, c: &Condition, source: &mut pb::Source, op: &mut pb::Operation) {
        let key = c.key.as_str();
        if c.values.is_empty() && c.not_values.is_empty() {
            self.problems
                .push(format!("has a condition on {key} without values"));
            return;
        }
        let once = |this: &mut Self, taken: bool| {
            if taken {
                this.problems
                    .push(format!("has more than one condition on {key}"));
            }
            !taken
        };
        if let Some(header) = key
            .strip_prefix("request.headers[")
            .and_then(|k| k.strip_suffix(']'))
        {
            if !c.not_values.is_empty() {
                self.problems.push(format!("uses notValues on {key}"));
                return;
            }
            match validate::header_name(header) {
                Ok(name) => op.headers.push(header_match(name, &c.values)),
                Err(e) => self.problems.push(format!("has an invalid header ({e})")),
            }
            return;
        }
        match key {
            "source.namespace" => {
                if once(
                    self,
                    !source.namespaces.is_empty() || !source.not_namespaces.is_empty(),
                ) {
                    source.namespaces = c.values.clone();
                    source.not_namespaces = c.not_values.clone();
                }
            }
            "source.principal" => {
                if once(
                    self,
                    !source.principals.is_empty() || !source.not_principals.is_empty(),
                ) {
                    source.principals = c.values.clone();
                    source.not_principals = c.not_values.clone();
                }
            }
            "destination.port" => {
                if once(self, !op.ports.is_empty() || !op.not_ports.is_empty()) {
                    op.ports = self.ports(key, &c.values);
                    op.not_ports = self.ports(key, &c.not_values);
                }
            }
            _ => self.problems.push(format!(
                "uses the when key {key}, which the waypoint does not evaluate"
            )),
        }
    }

    /// ANDs `when` source conditions into a `from` entry; a field set on both sides cannot be
    /// expressed and is reported.
    fn merge_source(&mut self, s: &mut pb::Source, w: &pb::Source) {
        let pairs = [
            (
                &mut s.namespaces,
                &mut s.not_namespaces,
                &w.namespaces,
                &w.not_namespaces,
                "namespaces",
            ),
            (
                &mut s.principals,
                &mut s.not_principals,
                &w.principals,
                &w.not_principals,
                "principals",
            ),
        ];
        for (values, not_values, wv, wn, field) in pairs {
            if wv.is_empty() && wn.is_empty() {
                continue;
            }
            if values.is_empty() && not_values.is_empty() {
                values.clone_from(wv);
                not_values.clone_from(wn);
            } else {
                self.problems.push(format!(
                    "combines from.source.{field} with a when condition on the same attribute"
                ));
            }
        }
    }

    fn merge_ports(&mut self, o: &mut pb::Operation, w: &pb::Operation) {
        if w.ports.is_empty() && w.not_ports.is_empty() {
            return;
        }
        if o.ports.is_empty() && o.not_ports.is_empty() {
            o.ports.clone_from(&w.ports);
            o.not_ports.clone_from(&w.not_ports);
        } else {
            self.problems.push(
                "combines to.operation.ports with a when condition on destination.port".into(),
            );
        }
    }
}

/// A header condition: one exact value as is, otherwise Istio's forms as one expression.
fn header_match(name: String, values: &[String]) -> pb::HeaderMatch {
    use pb::header_match::Kind;
    let kind = match values {
        [v] if !v.starts_with('*') && !v.ends_with('*') => Kind::Exact(v.clone()),
        _ => Kind::Regex(validate::istio_forms_regex(values)),
    };
    pb::HeaderMatch {
        name,
        kind: Some(kind),
    }
}
