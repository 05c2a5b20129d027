//! One HTTPRoute or GRPCRoute rule compiled into waypoint routes, one route per match, each
//! with its precedence.
//!
//! Precedence follows the Gateway API: for HTTP, an exact path before a prefix path (longer
//! prefixes first) before a regular expression, then a method match, then more header matches,
//! then more query parameter matches; a match without a path is the prefix `/`. A gRPC match
//! ranks like the path it stands for: service and method (`/svc/method`, exact), service only
//! (`/svc/`, prefix), method only or regular expressions (after prefixes). Ties go to the
//! oldest route, then by `namespace/name`, then rule and match order.

use std::cmp::Reverse;
use std::collections::BTreeSet;

use mesh_config::objects as gw;
use mesh_proto::proto::waypoint as pb;

use super::filter::{self, Problems, RuleCtx};
use super::validate;

/// Precedence of one match; greater comes first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Rank {
    /// 3 exact, 2 prefix, 1 regular expression.
    path_kind: u8,
    path_len: usize,
    method: bool,
    headers: usize,
    query: usize,
}

impl Rank {
    /// The key that sorts higher ranks first.
    pub fn order(self) -> Reverse<Self> {
        Reverse(self)
    }
}

const PREFIX_ROOT: Rank = Rank {
    path_kind: 2,
    path_len: 1,
    method: false,
    headers: 0,
    query: 0,
};

/// A compiled route with its precedence and its match's position in the rule.
pub(crate) struct Entry {
    pub rank: Rank,
    pub match_index: usize,
    pub route: pb::Route,
}

/// Routes of an HTTPRoute rule, or none when the rule is fatally wrong (see `p.fatal`).
pub(crate) fn http_rule(
    name: &str,
    rule: &gw::HttpRouteRule,
    ctx: &RuleCtx<'_>,
    p: &mut Problems,
) -> Vec<Entry> {
    let matches: Vec<(Rank, pb::RouteMatch)> = rule
        .matches
        .iter()
        .filter_map(|m| http_match(m, p))
        .collect();
    let (timeout_ms, backend_timeout_ms) = filter::timeouts(rule.timeouts.as_ref(), p);
    let base = pb::Route {
        name: name.to_string(),
        kind: pb::Kind::Http as i32,
        timeout_ms,
        backend_timeout_ms,
        retry: filter::retry(rule.retry.as_ref(), p),
        ..Default::default()
    };
    assemble(base, matches, &rule.filters, &rule.backend_refs, ctx, p)
}

/// Routes of a GRPCRoute rule, or none when the rule is fatally wrong (see `p.fatal`).
pub(crate) fn grpc_rule(
    name: &str,
    rule: &gw::GrpcRouteRule,
    ctx: &RuleCtx<'_>,
    p: &mut Problems,
) -> Vec<Entry> {
    let matches: Vec<(Rank, pb::RouteMatch)> = rule
        .matches
        .iter()
        .filter_map(|m| grpc_match(m, p))
        .collect();
    let base = pb::Route {
        name: name.to_string(),
        kind: pb::Kind::Grpc as i32,
        ..Default::default()
    };
    assemble(base, matches, &rule.filters, &rule.backend_refs, ctx, p)
}

fn assemble(
    mut base: pb::Route,
    matches: Vec<(Rank, pb::RouteMatch)>,
    filters: &[gw::HttpRouteFilter],
    backend_refs: &[gw::BackendRef],
    ctx: &RuleCtx<'_>,
    p: &mut Problems,
) -> Vec<Entry> {
    let f = filter::filters(filters, ctx, p);
    base.backends = filter::backends(backend_refs, ctx, p);
    if f.redirect.is_some() && !base.backends.is_empty() {
        p.notes
            .push("backendRefs are ignored: the rule redirects every request".into());
        base.backends.clear();
    }
    let prefix_rewrite = [
        f.redirect.as_ref().and_then(|r| r.path.as_ref()),
        f.rewrite.as_ref().and_then(|r| r.path.as_ref()),
    ]
    .into_iter()
    .flatten()
    .any(|p| matches!(p.kind, Some(pb::path_rewrite::Kind::Prefix(_))));
    let non_prefix_match = matches.iter().any(|(_, m)| {
        !matches!(
            m.path.as_ref().and_then(|p| p.kind.as_ref()),
            None | Some(pb::path_match::Kind::Prefix(_))
        )
    });
    if prefix_rewrite && non_prefix_match {
        p.fatal
            .push("ReplacePrefixMatch needs every match to be a PathPrefix match".into());
    }
    base.request_headers = f.request_headers;
    base.response_headers = f.response_headers;
    base.redirect = f.redirect;
    base.rewrite = f.rewrite;
    if !p.fatal.is_empty() {
        return Vec::new();
    }
    if matches.is_empty() {
        return vec![Entry {
            rank: PREFIX_ROOT,
            match_index: 0,
            route: base,
        }];
    }
    matches
        .into_iter()
        .enumerate()
        .map(|(i, (rank, m))| {
            let mut route = base.clone();
            route.matches = vec![m];
            Entry {
                rank,
                match_index: i,
                route,
            }
        })
        .collect()
}

fn http_match(m: &gw::HttpRouteMatch, p: &mut Problems) -> Option<(Rank, pb::RouteMatch)> {
    use pb::path_match::Kind;
    let mut rank = PREFIX_ROOT;
    let mut out = pb::RouteMatch::default();
    if let Some(path) = &m.path {
        let value = path.value.clone().unwrap_or_else(|| "/".to_string());
        let (kind, path_kind) = match path.type_.as_deref().unwrap_or("PathPrefix") {
            "Exact" => (Kind::Exact(value.clone()), 3),
            "PathPrefix" => (Kind::Prefix(value.clone()), 2),
            "RegularExpression" => (Kind::Regex(value.clone()), 1),
            other => {
                p.fatal.push(format!("unknown path match type {other:?}"));
                return None;
            }
        };
        let check = if path_kind == 1 {
            validate::regex(&value)
        } else {
            validate::path(&value)
        };
        if let Err(e) = check {
            p.fatal.push(e);
            return None;
        }
        rank.path_kind = path_kind;
        rank.path_len = value.len();
        out.path = Some(pb::PathMatch { kind: Some(kind) });
    }
    out.headers = header_matches(&m.headers, p)?;
    out.query_params = value_matches("query parameter", &m.query_params, false, p)?;
    if let Some(method) = &m.method {
        match validate::method(method) {
            Ok(method) => out.method = method,
            Err(e) => {
                p.fatal.push(e);
                return None;
            }
        }
    }
    rank.method = !out.method.is_empty();
    rank.headers = out.headers.len();
    rank.query = out.query_params.len();
    Some((rank, out))
}

fn grpc_match(m: &gw::GrpcRouteMatch, p: &mut Problems) -> Option<(Rank, pb::RouteMatch)> {
    let mut rank = PREFIX_ROOT;
    let mut out = pb::RouteMatch::default();
    if let Some(method) = &m.method {
        let service = method.service.clone().unwrap_or_default();
        let name = method.method.clone().unwrap_or_default();
        if service.is_empty() && name.is_empty() {
            p.fatal
                .push("a gRPC method match needs a service or a method".into());
            return None;
        }
        match method.type_.as_deref().unwrap_or("Exact") {
            "Exact" => {
                if service.contains('/') || name.contains('/') {
                    p.fatal.push(format!(
                        "gRPC service {service:?} or method {name:?} contains a /"
                    ));
                    return None;
                }
                (rank.path_kind, rank.path_len) = match (service.is_empty(), name.is_empty()) {
                    (false, false) => (3, service.len() + name.len() + 2),
                    (false, true) => (2, service.len() + 2),
                    _ => (1, name.len()),
                };
                out.grpc_service = service;
                out.grpc_method = name;
            }
            "RegularExpression" => {
                let part = |v: &str| {
                    if v.is_empty() {
                        "[^/]+".to_string()
                    } else {
                        v.to_string()
                    }
                };
                for v in [&service, &name].into_iter().filter(|v| !v.is_empty()) {
                    if let Err(e) = validate::regex(v) {
                        p.fatal.push(e);
                        return None;
                    }
                }
                let regex = format!("/(?:{})/(?:{})", part(&service), part(&name));
                rank.path_kind = 1;
                rank.path_len = service.len() + name.len();
                out.path = Some(pb::PathMatch {
                    kind: Some(pb::path_match::Kind::Regex(regex)),
                });
            }
            other => {
                p.fatal
                    .push(format!("unknown gRPC method match type {other:?}"));
                return None;
            }
        }
    }
    out.headers = header_matches(&m.headers, p)?;
    rank.headers = out.headers.len();
    Some((rank, out))
}

fn header_matches(list: &[gw::HeaderMatch], p: &mut Problems) -> Option<Vec<pb::HeaderMatch>> {
    value_matches("header", list, true, p)
}

/// Header or query parameter matches. Per the Gateway API, only the first match of a name
/// counts (header names case-insensitively); later ones are reported and skipped.
fn value_matches(
    what: &str,
    list: &[gw::HeaderMatch],
    header: bool,
    p: &mut Problems,
) -> Option<Vec<pb::HeaderMatch>> {
    use pb::header_match::Kind;
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for m in list {
        let name = if header {
            match validate::header_name(&m.name) {
                Ok(n) => n,
                Err(e) => {
                    p.fatal.push(e);
                    return None;
                }
            }
        } else if m.name.is_empty() {
            p.fatal.push(format!("{what} match without a name"));
            return None;
        } else {
            m.name.clone()
        };
        if !seen.insert(name.clone()) {
            p.notes.push(format!(
                "{what} {name} is matched more than once; only the first match counts"
            ));
            continue;
        }
        let kind = match m.type_.as_deref().unwrap_or("Exact") {
            "Exact" => Kind::Exact(m.value.clone()),
            "RegularExpression" => {
                if let Err(e) = validate::regex(&m.value) {
                    p.fatal.push(format!("{what} {name}: {e}"));
                    return None;
                }
                Kind::Regex(m.value.clone())
            }
            other => {
                p.fatal
                    .push(format!("{what} {name}: unknown match type {other:?}"));
                return None;
            }
        };
        out.push(pb::HeaderMatch {
            name,
            kind: Some(kind),
        });
    }
    Some(out)
}
