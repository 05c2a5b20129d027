//! The parts of an HTTPRoute or GRPCRoute rule other than its matches: filters (header
//! modifiers, redirects, URL rewrites), weighted backends, timeouts and retries.
//!
//! Every value the waypoint would refuse is caught here. A problem that would change what the
//! rule means makes the rule fatal (it is not programmed); a part the waypoint cannot do that
//! leaves the rule's meaning intact (a mirror, an unsupported backend filter) becomes a note.
//! Both are reported as issues.

use mesh_config::Snapshot;
use mesh_config::objects::{self as gw, kind};
use mesh_proto::proto::waypoint as pb;

use super::super::{ModelConfig, service_hostname};
use super::validate;

/// What was wrong with a rule.
#[derive(Default)]
pub(crate) struct Problems {
    /// The rule is not programmed.
    pub fatal: Vec<String>,
    /// The rule is programmed without the part named.
    pub notes: Vec<String>,
}

/// Where the rule comes from, for defaults and lookups.
pub(crate) struct RuleCtx<'a> {
    pub snapshot: &'a Snapshot,
    pub cfg: &'a ModelConfig,
    /// The route's namespace.
    pub namespace: &'a str,
    pub grpc: bool,
}

#[derive(Default)]
pub(crate) struct Filters {
    pub request_headers: Vec<pb::HeaderModifier>,
    pub response_headers: Vec<pb::HeaderModifier>,
    pub redirect: Option<pb::Redirect>,
    pub rewrite: Option<pb::UrlRewrite>,
}

const REQUEST_HEADER_MODIFIER: &str = "RequestHeaderModifier";
const RESPONSE_HEADER_MODIFIER: &str = "ResponseHeaderModifier";

pub(crate) fn filters(
    list: &[gw::HttpRouteFilter],
    ctx: &RuleCtx<'_>,
    p: &mut Problems,
) -> Filters {
    let mut out = Filters::default();
    for f in list {
        match f.type_.as_str() {
            REQUEST_HEADER_MODIFIER => match &f.request_header_modifier {
                Some(m) => out.request_headers.extend(modifiers(m, p)),
                None => p.fatal.push(missing_config(&f.type_)),
            },
            RESPONSE_HEADER_MODIFIER => match &f.response_header_modifier {
                Some(m) => out.response_headers.extend(modifiers(m, p)),
                None => p.fatal.push(missing_config(&f.type_)),
            },
            "RequestRedirect" if !ctx.grpc => match &f.request_redirect {
                Some(r) if out.redirect.is_none() => out.redirect = redirect(r, p),
                Some(_) => p.fatal.push("more than one RequestRedirect filter".into()),
                None => p.fatal.push(missing_config(&f.type_)),
            },
            "URLRewrite" if !ctx.grpc => match &f.url_rewrite {
                Some(r) if out.rewrite.is_none() => out.rewrite = rewrite(r, p),
                Some(_) => p.fatal.push("more than one URLRewrite filter".into()),
                None => p.fatal.push(missing_config(&f.type_)),
            },
            "RequestRedirect" | "URLRewrite" => p
                .fatal
                .push(format!("filter {} is not part of GRPCRoute", f.type_)),
            "RequestMirror" => p.notes.push(
                "filter RequestMirror is not supported by the waypoint; requests are not \
                 mirrored"
                    .into(),
            ),
            "ExtensionRef" => p.fatal.push(
                "filter ExtensionRef is not supported by the waypoint (no extensions)".into(),
            ),
            other => p.fatal.push(format!("unknown filter type {other:?}")),
        }
    }
    if out.redirect.is_some() && out.rewrite.is_some() {
        p.fatal
            .push("RequestRedirect and URLRewrite cannot be used together".into());
    }
    out
}

fn missing_config(type_: &str) -> String {
    format!("filter {type_} has no configuration")
}

fn modifiers(m: &gw::HeaderModifier, p: &mut Problems) -> Vec<pb::HeaderModifier> {
    use pb::header_modifier::Op;
    let mut out = Vec::new();
    let with_value = [(Op::Set, &m.set), (Op::Add, &m.add)];
    for (op, headers) in with_value {
        for h in headers {
            match validate::modifiable_header(&h.name)
                .and_then(|n| validate::header_value(&n, &h.value).map(|()| n))
            {
                Ok(name) => out.push(pb::HeaderModifier {
                    op: op as i32,
                    name,
                    value: h.value.clone(),
                }),
                Err(e) => p.fatal.push(e),
            }
        }
    }
    for name in &m.remove {
        match validate::modifiable_header(name) {
            Ok(name) => out.push(pb::HeaderModifier {
                op: Op::Remove as i32,
                name,
                value: String::new(),
            }),
            Err(e) => p.fatal.push(e),
        }
    }
    out
}

fn path_rewrite(m: &gw::PathModifier, p: &mut Problems) -> Option<pb::PathRewrite> {
    use pb::path_rewrite::Kind;
    let kind = match (
        m.type_.as_str(),
        &m.replace_full_path,
        &m.replace_prefix_match,
    ) {
        ("ReplaceFullPath", Some(v), _) => Kind::Full(v.clone()),
        ("ReplacePrefixMatch", _, Some(v)) => Kind::Prefix(v.clone()),
        ("ReplaceFullPath" | "ReplacePrefixMatch", _, _) => {
            p.fatal
                .push(format!("path modifier {} has no value", m.type_));
            return None;
        }
        (other, _, _) => {
            p.fatal
                .push(format!("unknown path modifier type {other:?}"));
            return None;
        }
    };
    let (Kind::Full(v) | Kind::Prefix(v)) = &kind;
    if let Err(e) = validate::path(v) {
        p.fatal.push(e);
        return None;
    }
    Some(pb::PathRewrite { kind: Some(kind) })
}

fn redirect(r: &gw::RequestRedirect, p: &mut Problems) -> Option<pb::Redirect> {
    let scheme = r.scheme.clone().unwrap_or_default();
    if !matches!(scheme.as_str(), "" | "http" | "https") {
        p.fatal
            .push(format!("redirect scheme {scheme:?} is not http or https"));
        return None;
    }
    let status = r.status_code.unwrap_or(302);
    if !matches!(status, 301 | 302 | 303 | 307 | 308) {
        p.fatal.push(format!(
            "redirect statusCode {status} is not one of 301, 302, 303, 307, 308"
        ));
        return None;
    }
    if r.port == Some(0) {
        p.fatal.push("redirect port 0 is not a port".into());
        return None;
    }
    let hostname = r.hostname.clone().unwrap_or_default();
    if let Err(e) = validate::header_value("location", &hostname) {
        p.fatal.push(e);
        return None;
    }
    let path = match &r.path {
        Some(m) => Some(path_rewrite(m, p)?),
        None => None,
    };
    Some(pb::Redirect {
        scheme,
        hostname,
        port: r.port.map(u32::from).unwrap_or(0),
        path,
        status_code: u32::from(status),
    })
}

fn rewrite(r: &gw::UrlRewrite, p: &mut Problems) -> Option<pb::UrlRewrite> {
    let hostname = r.hostname.clone().unwrap_or_default();
    if let Err(e) = validate::header_value("host", &hostname) {
        p.fatal.push(e);
        return None;
    }
    let path = match &r.path {
        Some(m) => Some(path_rewrite(m, p)?),
        None => None,
    };
    Some(pb::UrlRewrite { hostname, path })
}

/// The rule's backends. Invalid references are dropped with a note; a rule whose every
/// reference is invalid is fatal.
pub(crate) fn backends(
    refs: &[gw::BackendRef],
    ctx: &RuleCtx<'_>,
    p: &mut Problems,
) -> Vec<pb::WeightedBackend> {
    let mut out = Vec::new();
    for r in refs {
        let group = r.group.as_deref().unwrap_or("");
        let kind_ = r.kind.as_deref().unwrap_or(kind::SERVICE);
        let what = format!("backendRef {kind_} {}", r.name);
        if !matches!(group, "" | "core") || kind_ != kind::SERVICE {
            p.notes.push(format!(
                "{what}: only Service backends are supported; dropped"
            ));
            continue;
        }
        let ns = r.namespace.as_deref().unwrap_or(ctx.namespace);
        if ns != ctx.namespace {
            p.notes.push(format!(
                "{what}: a backend in another namespace ({ns}) needs a ReferenceGrant, which \
                 this mesh does not support; dropped"
            ));
            continue;
        }
        let Some(port) = r.port.filter(|p| *p > 0) else {
            p.notes
                .push(format!("{what}: a Service backend needs a port; dropped"));
            continue;
        };
        let key = mesh_config::ObjectKey::new(kind::SERVICE, ns, &r.name);
        if ctx.snapshot.get(&key).is_none() {
            p.notes.push(format!(
                "{what}: Service {ns}/{} does not exist; requests sent to it fail",
                r.name
            ));
        }
        let mut backend = pb::WeightedBackend {
            service: format!(
                "{ns}/{}",
                service_hostname(&r.name, ns, &ctx.cfg.domain_suffix)
            ),
            port: u32::from(port),
            weight: r.weight.unwrap_or(1),
            ..Default::default()
        };
        for f in &r.filters {
            let mut fp = Problems::default();
            match (
                f.type_.as_str(),
                &f.request_header_modifier,
                &f.response_header_modifier,
            ) {
                (REQUEST_HEADER_MODIFIER, Some(m), _) => {
                    backend.request_headers.extend(modifiers(m, &mut fp))
                }
                (RESPONSE_HEADER_MODIFIER, _, Some(m)) => {
                    backend.response_headers.extend(modifiers(m, &mut fp))
                }
                (other, _, _) => fp.fatal.push(format!(
                    "filter {other:?} is not supported on a backend (only header modifiers)"
                )),
            }
            p.fatal
                .extend(fp.fatal.into_iter().map(|e| format!("{what}: {e}")));
        }
        out.push(backend);
    }
    if !refs.is_empty() && out.is_empty() {
        p.fatal.push("no valid backendRef".into());
    } else if !out.is_empty() && out.iter().all(|b| b.weight == 0) {
        p.notes
            .push("every backendRef has weight 0: requests matching this rule get a 500".into());
    }
    out
}

/// `(timeout_ms, backend_timeout_ms)` of an HTTP rule.
pub(crate) fn timeouts(t: Option<&gw::HttpRouteTimeouts>, p: &mut Problems) -> (u64, u64) {
    let Some(t) = t else {
        return (0, 0);
    };
    let mut read = |field: &str, v: &Option<String>| match v.as_deref().map(validate::duration_ms) {
        None => 0,
        Some(Ok(ms)) => ms,
        Some(Err(e)) => {
            p.notes.push(format!("timeouts.{field}: {e}; no timeout"));
            0
        }
    };
    let request = read("request", &t.request);
    let backend = read("backendRequest", &t.backend_request);
    if request > 0 && backend > request {
        p.notes.push(
            "timeouts.backendRequest is longer than timeouts.request; the request timeout \
             bounds every attempt"
                .into(),
        );
    }
    (request, backend)
}

/// Attempts when a `retry` stanza gives none (Istio's default).
pub const DEFAULT_RETRY_ATTEMPTS: u32 = 2;

pub(crate) fn retry(r: Option<&gw::HttpRouteRetry>, p: &mut Problems) -> Option<pb::Retry> {
    let r = r?;
    let backoff_ms = match r.backoff.as_deref().map(validate::duration_ms) {
        None => 0,
        Some(Ok(ms)) => ms,
        Some(Err(e)) => {
            p.notes
                .push(format!("retry.backoff: {e}; the default backoff applies"));
            0
        }
    };
    let mut codes = Vec::new();
    for c in &r.codes {
        if (400..=599).contains(c) {
            codes.push(u32::from(*c));
        } else {
            p.notes.push(format!(
                "retry.codes: {c} is not a 4xx or 5xx status; not retried"
            ));
        }
    }
    if !r.codes.is_empty() && codes.is_empty() {
        p.notes
            .push("retry: no valid status code; retries are disabled".into());
        return None;
    }
    Some(pb::Retry {
        attempts: r.attempts.unwrap_or(DEFAULT_RETRY_ATTEMPTS),
        codes,
        backoff_ms,
        ..Default::default()
    })
}
