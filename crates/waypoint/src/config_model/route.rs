//! Routes: the typed, validated form of `mesh.waypoint.v1.Route` (compiled from HTTPRoute and
//! GRPCRoute rules), and how a request is matched against them.
//!
//! Matching follows the Gateway API: a route applies when any of its matches holds (no matches:
//! every request); a match holds when every condition it sets holds. Path prefixes match whole
//! path segments (`/foo` matches `/foo` and `/foo/bar`, not `/foobar`); regular expressions must
//! match the whole value. Header names are case-insensitive; several values of one header are
//! joined with `,` before matching. Query parameters are percent-decoded and the first
//! occurrence of a name is used.

use std::fmt;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use mesh_proto::proto::waypoint as pb;
use serde::Serialize;

use super::{ModelError, ser_display};

/// A compiled regular expression that must match a whole value.
#[derive(Clone)]
pub struct Pattern {
    source: String,
    regex: regex::Regex,
}

impl Pattern {
    pub fn new(source: &str, context: &str) -> Result<Self, ModelError> {
        let regex =
            regex::Regex::new(&format!("^(?:{source})$")).map_err(|e| ModelError::Regex {
                context: context.to_string(),
                pattern: source.to_string(),
                source: Box::new(e),
            })?;
        Ok(Self {
            source: source.to_string(),
            regex,
        })
    }

    pub fn is_match(&self, value: &str) -> bool {
        self.regex.is_match(value)
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}/", self.source)
    }
}

impl Serialize for Pattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

/// Which Gateway API kind a route was compiled from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum RouteKind {
    Http,
    Grpc,
}

#[derive(Clone, Debug, Serialize)]
pub struct Route {
    /// `namespace/name` of the HTTPRoute or GRPCRoute, with the rule index.
    pub name: String,
    pub kind: RouteKind,
    pub matches: Vec<RouteMatch>,
    pub backends: Vec<Backend>,
    pub request_headers: Vec<HeaderModifier>,
    pub response_headers: Vec<HeaderModifier>,
    pub redirect: Option<Redirect>,
    pub rewrite: Option<UrlRewrite>,
    /// Limit for the whole request (all attempts) to get response headers.
    pub timeout: Option<Duration>,
    /// Limit for each attempt to get response headers.
    pub backend_timeout: Option<Duration>,
    pub retry: Option<RetryPolicy>,
    /// Service ports the route applies to; empty means all.
    pub ports: Vec<u16>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct RouteMatch {
    pub path: Option<PathMatch>,
    pub headers: Vec<HeaderMatch>,
    pub query_params: Vec<QueryMatch>,
    #[serde(serialize_with = "ser_opt_display")]
    pub method: Option<Method>,
    pub grpc_service: Option<String>,
    pub grpc_method: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub enum PathMatch {
    Exact(String),
    /// Stored without a trailing `/` (the empty string matches every path).
    Prefix(String),
    Regex(Pattern),
}

#[derive(Clone, Debug, Serialize)]
pub enum ValueMatch {
    Exact(String),
    Regex(Pattern),
}

impl ValueMatch {
    fn from_proto(kind: Option<pb::header_match::Kind>, context: &str) -> Result<Self, ModelError> {
        match kind {
            Some(pb::header_match::Kind::Exact(v)) => Ok(ValueMatch::Exact(v)),
            Some(pb::header_match::Kind::Regex(r)) => {
                Ok(ValueMatch::Regex(Pattern::new(&r, context)?))
            }
            None => Err(ModelError::invalid(context, "match without a value")),
        }
    }

    pub fn matches(&self, value: &str) -> bool {
        match self {
            ValueMatch::Exact(e) => e == value,
            ValueMatch::Regex(p) => p.is_match(value),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct HeaderMatch {
    #[serde(serialize_with = "ser_display")]
    pub name: HeaderName,
    pub value: ValueMatch,
}

impl HeaderMatch {
    pub fn from_proto(m: pb::HeaderMatch, context: &str) -> Result<Self, ModelError> {
        let name = header_name(&m.name, context)?;
        Ok(HeaderMatch {
            value: ValueMatch::from_proto(m.kind, &format!("{context}: header {name}"))?,
            name,
        })
    }

    /// Whether the header is present and its (joined) value matches.
    pub fn matches(&self, headers: &HeaderMap) -> bool {
        joined_header(headers, &self.name).is_some_and(|v| self.value.matches(&v))
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct QueryMatch {
    pub name: String,
    pub value: ValueMatch,
}

/// One backend of a route: a service port and its weight.
#[derive(Clone, Debug, Serialize)]
pub struct Backend {
    /// `namespace/hostname`.
    pub service: String,
    pub namespace: String,
    pub hostname: String,
    pub port: u16,
    pub weight: u32,
    pub request_headers: Vec<HeaderModifier>,
    pub response_headers: Vec<HeaderModifier>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum HeaderOp {
    Set,
    Add,
    Remove,
}

#[derive(Clone, Debug, Serialize)]
pub struct HeaderModifier {
    pub op: HeaderOp,
    #[serde(serialize_with = "ser_display")]
    pub name: HeaderName,
    #[serde(serialize_with = "ser_header_value")]
    pub value: HeaderValue,
}

impl HeaderModifier {
    fn from_proto(m: pb::HeaderModifier, context: &str) -> Result<Self, ModelError> {
        let name = header_name(&m.name, context)?;
        if name.as_str().starts_with(':') || name == http::header::HOST {
            return Err(ModelError::invalid(
                context,
                format!("header {name} cannot be modified (use a URL rewrite for the host)"),
            ));
        }
        let op = match pb::header_modifier::Op::try_from(m.op) {
            Ok(pb::header_modifier::Op::Set) => HeaderOp::Set,
            Ok(pb::header_modifier::Op::Add) => HeaderOp::Add,
            Ok(pb::header_modifier::Op::Remove) => HeaderOp::Remove,
            Err(_) => {
                return Err(ModelError::invalid(
                    context,
                    format!("unknown header op {}", m.op),
                ));
            }
        };
        let value = HeaderValue::try_from(m.value.as_str()).map_err(|_| {
            ModelError::invalid(
                context,
                format!("header {name}: invalid value {:?}", m.value),
            )
        })?;
        Ok(HeaderModifier { op, name, value })
    }

    fn list(v: Vec<pb::HeaderModifier>, context: &str) -> Result<Vec<Self>, ModelError> {
        v.into_iter()
            .map(|m| Self::from_proto(m, context))
            .collect()
    }
}

/// Applies modifiers in order: `Set` replaces every value, `Add` appends one, `Remove` drops
/// every value.
pub fn apply_modifiers(mods: &[HeaderModifier], headers: &mut HeaderMap) {
    for m in mods {
        match m.op {
            HeaderOp::Set => {
                headers.insert(m.name.clone(), m.value.clone());
            }
            HeaderOp::Add => {
                headers.append(m.name.clone(), m.value.clone());
            }
            HeaderOp::Remove => {
                headers.remove(&m.name);
            }
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub enum PathRewrite {
    /// Replace the whole path.
    Full(String),
    /// Replace the prefix matched by the route's path prefix match.
    Prefix(String),
}

impl PathRewrite {
    fn from_proto(p: Option<pb::PathRewrite>, context: &str) -> Result<Option<Self>, ModelError> {
        let Some(kind) = p.and_then(|p| p.kind) else {
            return Ok(None);
        };
        let (value, rewrite): (String, fn(String) -> PathRewrite) = match kind {
            pb::path_rewrite::Kind::Full(v) => (v, PathRewrite::Full),
            pb::path_rewrite::Kind::Prefix(v) => (v, PathRewrite::Prefix),
        };
        if !value.starts_with('/') {
            return Err(ModelError::invalid(
                context,
                format!("path rewrite {value:?} must start with /"),
            ));
        }
        Ok(Some(rewrite(value)))
    }

    /// The new path for `path`, given the path prefix the route matched with (if any).
    pub fn apply(&self, path: &str, matched_prefix: Option<&str>) -> String {
        match self {
            PathRewrite::Full(p) => p.clone(),
            PathRewrite::Prefix(replacement) => {
                let prefix = matched_prefix.unwrap_or("");
                let rest = path.get(prefix.len()..).unwrap_or("");
                let replacement = replacement.trim_end_matches('/');
                match (replacement.is_empty(), rest.is_empty()) {
                    (true, true) => "/".to_string(),
                    (true, false) => rest.to_string(),
                    (false, _) => format!("{replacement}{rest}"),
                }
            }
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Redirect {
    pub scheme: Option<String>,
    pub hostname: Option<String>,
    pub port: Option<u16>,
    pub path: Option<PathRewrite>,
    #[serde(serialize_with = "ser_display")]
    pub status: StatusCode,
}

#[derive(Clone, Debug, Serialize)]
pub struct UrlRewrite {
    pub hostname: Option<String>,
    pub path: Option<PathRewrite>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub attempts: u32,
    /// Statuses that are retried; empty means any 5xx. Connection failures and per-attempt
    /// timeouts are always retried.
    pub codes: Vec<u16>,
    pub backoff: Duration,
    pub budget_percent: u32,
    pub min_retry_concurrency: u32,
}

impl RetryPolicy {
    pub fn retries_status(&self, status: StatusCode) -> bool {
        if self.codes.is_empty() {
            status.is_server_error()
        } else {
            self.codes.contains(&status.as_u16())
        }
    }
}

/// What route matching looks at.
#[derive(Clone, Copy, Debug)]
pub struct RequestView<'a> {
    pub method: &'a Method,
    /// Normalized path, without the query.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
}

impl Route {
    pub fn from_proto(r: pb::Route) -> Result<Self, ModelError> {
        let ctx = format!("route {}", r.name);
        let kind = match pb::Kind::try_from(r.kind) {
            Ok(pb::Kind::Http) => RouteKind::Http,
            Ok(pb::Kind::Grpc) => RouteKind::Grpc,
            Err(_) => {
                return Err(ModelError::invalid(
                    &ctx,
                    format!("unknown kind {}", r.kind),
                ));
            }
        };
        let matches = r
            .matches
            .into_iter()
            .map(|m| RouteMatch::from_proto(m, &ctx))
            .collect::<Result<Vec<_>, _>>()?;
        let backends = r
            .backends
            .into_iter()
            .map(|b| Backend::from_proto(b, &ctx))
            .collect::<Result<Vec<_>, _>>()?;
        let redirect = r
            .redirect
            .map(|d| redirect_from_proto(d, &ctx))
            .transpose()?;
        let rewrite = r
            .rewrite
            .map(|w| {
                Ok::<_, ModelError>(UrlRewrite {
                    hostname: non_empty(w.hostname),
                    path: PathRewrite::from_proto(w.path, &ctx)?,
                })
            })
            .transpose()?;
        if redirect.is_some() && rewrite.is_some() {
            return Err(ModelError::invalid(
                &ctx,
                "a redirect and a URL rewrite exclude each other",
            ));
        }
        let uses_prefix = matches!(
            redirect.as_ref().and_then(|d| d.path.as_ref()),
            Some(PathRewrite::Prefix(_))
        ) || matches!(
            rewrite.as_ref().and_then(|w| w.path.as_ref()),
            Some(PathRewrite::Prefix(_))
        );
        if uses_prefix
            && matches
                .iter()
                .any(|m| !matches!(m.path, None | Some(PathMatch::Prefix(_))))
        {
            return Err(ModelError::invalid(
                &ctx,
                "a prefix path rewrite needs path prefix matches",
            ));
        }
        let retry = r
            .retry
            .map(|rt| {
                let codes = rt
                    .codes
                    .iter()
                    .map(|c| match u16::try_from(*c) {
                        Ok(c) if (100..=599).contains(&c) => Ok(c),
                        _ => Err(ModelError::invalid(
                            &ctx,
                            format!("retry code {c} is not an HTTP status"),
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok::<_, ModelError>(RetryPolicy {
                    attempts: rt.attempts,
                    codes,
                    backoff: Duration::from_millis(rt.backoff_ms),
                    budget_percent: if rt.budget_percent == 0 {
                        20
                    } else {
                        rt.budget_percent
                    },
                    min_retry_concurrency: if rt.min_retry_concurrency == 0 {
                        3
                    } else {
                        rt.min_retry_concurrency
                    },
                })
            })
            .transpose()?
            .filter(|r| r.attempts > 0);
        let ports = r
            .ports
            .iter()
            .map(|p| port(*p, &ctx))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Route {
            name: r.name,
            kind,
            matches,
            backends,
            request_headers: HeaderModifier::list(r.request_headers, &ctx)?,
            response_headers: HeaderModifier::list(r.response_headers, &ctx)?,
            redirect,
            rewrite,
            timeout: millis(r.timeout_ms),
            backend_timeout: millis(r.backend_timeout_ms),
            retry,
            ports,
        })
    }

    pub fn applies_to_port(&self, port: u16) -> bool {
        self.ports.is_empty() || self.ports.contains(&port)
    }

    /// The match that selects this route for `req`; `Some(None)` when the route has no
    /// matches and so takes every request.
    pub fn find_match(&self, req: &RequestView<'_>) -> Option<Option<&RouteMatch>> {
        if self.matches.is_empty() {
            return Some(None);
        }
        self.matches.iter().find(|m| m.matches(req)).map(Some)
    }
}

impl RouteMatch {
    fn from_proto(m: pb::RouteMatch, ctx: &str) -> Result<Self, ModelError> {
        let path = match m.path.and_then(|p| p.kind) {
            None => None,
            Some(pb::path_match::Kind::Exact(p)) => Some(PathMatch::Exact(abs_path(p, ctx)?)),
            Some(pb::path_match::Kind::Prefix(p)) => Some(PathMatch::Prefix(
                abs_path(p, ctx)?.trim_end_matches('/').to_string(),
            )),
            Some(pb::path_match::Kind::Regex(r)) => {
                Some(PathMatch::Regex(Pattern::new(&r, &format!("{ctx}: path"))?))
            }
        };
        let headers = m
            .headers
            .into_iter()
            .map(|h| HeaderMatch::from_proto(h, ctx))
            .collect::<Result<Vec<_>, _>>()?;
        let query_params = m
            .query_params
            .into_iter()
            .map(|q| {
                if q.name.is_empty() {
                    return Err(ModelError::invalid(
                        ctx,
                        "query parameter match without a name",
                    ));
                }
                let value =
                    ValueMatch::from_proto(q.kind, &format!("{ctx}: query parameter {}", q.name))?;
                Ok(QueryMatch {
                    name: q.name,
                    value,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let method = non_empty(m.method)
            .map(|s| {
                Method::from_bytes(s.as_bytes())
                    .map_err(|_| ModelError::invalid(ctx, format!("invalid method {s:?}")))
            })
            .transpose()?;
        Ok(RouteMatch {
            path,
            headers,
            query_params,
            method,
            grpc_service: non_empty(m.grpc_service),
            grpc_method: non_empty(m.grpc_method),
        })
    }

    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        if let Some(p) = &self.path
            && !p.matches(req.path)
        {
            return false;
        }
        if let Some(m) = &self.method
            && m != req.method
        {
            return false;
        }
        if (self.grpc_service.is_some() || self.grpc_method.is_some())
            && !self.grpc_matches(req.path)
        {
            return false;
        }
        if !self.headers.iter().all(|h| h.matches(req.headers)) {
            return false;
        }
        self.query_params
            .iter()
            .all(|q| query_param(req.query, &q.name).is_some_and(|v| q.value.matches(&v)))
    }

    /// gRPC requests go to `/<package.Service>/<Method>`.
    fn grpc_matches(&self, path: &str) -> bool {
        let Some((service, method)) = path.strip_prefix('/').and_then(|p| p.split_once('/')) else {
            return false;
        };
        self.grpc_service.as_deref().is_none_or(|s| s == service)
            && self.grpc_method.as_deref().is_none_or(|m| m == method)
    }

    /// The path prefix this match matched with, for prefix rewrites.
    pub fn matched_prefix(&self) -> Option<&str> {
        match &self.path {
            Some(PathMatch::Prefix(p)) => Some(p),
            None => Some(""),
            _ => None,
        }
    }
}

impl PathMatch {
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(p) => p == path,
            PathMatch::Prefix(p) => {
                p.is_empty()
                    || path == p
                    || path
                        .strip_prefix(p.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
            }
            PathMatch::Regex(r) => r.is_match(path),
        }
    }
}

impl Backend {
    fn from_proto(b: pb::WeightedBackend, ctx: &str) -> Result<Self, ModelError> {
        let Some((namespace, hostname)) = b.service.split_once('/') else {
            return Err(ModelError::invalid(
                ctx,
                format!("backend {:?} is not namespace/hostname", b.service),
            ));
        };
        let bctx = format!("{ctx}: backend {}", b.service);
        Ok(Backend {
            namespace: namespace.to_string(),
            hostname: hostname.to_string(),
            port: port(b.port, &bctx)?,
            weight: b.weight,
            request_headers: HeaderModifier::list(b.request_headers, &bctx)?,
            response_headers: HeaderModifier::list(b.response_headers, &bctx)?,
            service: b.service,
        })
    }
}

fn redirect_from_proto(d: pb::Redirect, ctx: &str) -> Result<Redirect, ModelError> {
    let status = match d.status_code {
        0 => StatusCode::FOUND,
        c @ (301 | 302 | 303 | 307 | 308) => {
            StatusCode::from_u16(c as u16).map_err(|_| ModelError::invalid(ctx, "bad status"))?
        }
        c => {
            return Err(ModelError::invalid(
                ctx,
                format!("redirect status {c} is not one of 301, 302, 303, 307, 308"),
            ));
        }
    };
    let scheme = non_empty(d.scheme);
    if let Some(s) = &scheme
        && s != "http"
        && s != "https"
    {
        return Err(ModelError::invalid(
            ctx,
            format!("redirect scheme {s:?} is not http or https"),
        ));
    }
    Ok(Redirect {
        scheme,
        hostname: non_empty(d.hostname),
        port: if d.port == 0 {
            None
        } else {
            Some(port(d.port, ctx)?)
        },
        path: PathRewrite::from_proto(d.path, ctx)?,
        status,
    })
}

fn abs_path(p: String, ctx: &str) -> Result<String, ModelError> {
    if p.starts_with('/') {
        Ok(p)
    } else {
        Err(ModelError::invalid(
            ctx,
            format!("path {p:?} must start with /"),
        ))
    }
}

fn millis(ms: u64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms))
}

pub(super) fn port(p: u32, ctx: &str) -> Result<u16, ModelError> {
    match u16::try_from(p) {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(ModelError::invalid(
            ctx,
            format!("port {p} is out of range"),
        )),
    }
}

pub(super) fn header_name(name: &str, ctx: &str) -> Result<HeaderName, ModelError> {
    HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
        .map_err(|_| ModelError::invalid(ctx, format!("invalid header name {name:?}")))
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// All values of a header joined with `,`; `None` when absent or not text.
pub fn joined_header(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?.to_str().ok()?;
    let mut out = first.to_string();
    for v in values {
        out.push(',');
        out.push_str(v.to_str().ok()?);
    }
    Some(out)
}

/// The percent-decoded value of the first `name` parameter of a query string.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn ser_header_value<S: serde::Serializer>(v: &HeaderValue, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(v.as_bytes()))
}

fn ser_opt_display<S: serde::Serializer, T: fmt::Display>(
    v: &Option<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests;
