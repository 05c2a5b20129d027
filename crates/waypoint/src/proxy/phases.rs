//! The request pipeline. Every HTTP request (HTTP/1.1, HTTP/2 or gRPC) arriving through a
//! tunnel runs these phases, in this order:
//!
//! 1. **Match route**: the bound service's routes for the request's port, in precedence order;
//!    the first whose match holds wins. No route matched (or a route without backends): the
//!    request goes to the bound service itself, port mapped by workload discovery.
//! 2. **Authorize**: the L7 policies of the service (DENY first, then ALLOW); a denial answers
//!    403 `RBAC: access denied`. Redirect routes answer here, after authorization.
//! 3. **Pick backend**: one of the route's backends by weight; then, per attempt, a healthy,
//!    non-ejected endpoint of that backend service, at random. The backend service's circuit
//!    breaker admits the request (or it waits as pending, or fails with 503 `UO`).
//! 4. **Retry and timeout**: attempts as the route's retry policy allows (within the service's
//!    retry budget, and only while the request body can be replayed, see [`super::retry`]);
//!    each attempt limited by the per-attempt timeout, all of them by the request timeout
//!    (both bound the wait for response headers; a streaming body is not cut).
//! 5. **Forward**: request headers modified (hop-by-hop headers dropped, route and backend
//!    modifiers, URL rewrite, `traceparent` with the waypoint's span, `x-request-id` and
//!    `x-forwarded-proto` when absent), sent over HBONE to the endpoint's ztunnel.
//! 6. **Respond**: response header modifiers, body streamed back.
//! 7. **Log and metrics**: when the response body ends (or the client goes away): the
//!    `istio_request*` metrics, the access log line and the span.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use identity::Identity;
use ztunnel::state::Workload;

use super::circuit::ServiceCircuit;
use super::endpoints::{self, Endpoint, ServiceRef};
use super::exchange::{Exchange, ObservedBody};
use super::forward::{UpstreamBody, UpstreamProtocol};
use super::retry::{ReplayBody, backoff};
use super::{BoxError, ProxyError, ProxyInputs, ResponseBody};
use crate::config_model::policy::{self, HttpAttributes};
use crate::config_model::route::{self, Redirect, RequestView};
use crate::config_model::{Backend, BoundService, Decision, Protocol, Route, Subject};
use crate::telemetry::SourceLabels;

/// Body of a denied request.
pub const RBAC_DENIED: &str = "RBAC: access denied";

/// What is known of the connection a request arrived on.
pub struct Downstream {
    pub inputs: Arc<ProxyInputs>,
    /// The CONNECT target: a VIP and port of a bound service.
    pub target: SocketAddr,
    pub peer_identity: Identity,
    pub peer_addr: SocketAddr,
    pub src_workload: Option<Arc<Workload>>,
    pub source: SourceLabels,
    /// The client speaks HTTP/2.
    pub http2: bool,
}

/// Runs the phases for one request; never fails (errors become local replies).
pub async fn handle(ds: Arc<Downstream>, req: Request<Incoming>) -> Response<ResponseBody> {
    let start = Instant::now();
    let (parts, body) = req.into_parts();
    let authority = request_authority(&parts.uri, &parts.headers);
    let path = normalize_path(parts.uri.path());
    let grpc = is_grpc(&parts.headers);
    let span_name = format!("{authority}{path}");
    let span = ds
        .inputs
        .tracer
        .start(&parts.headers, span_name, SystemTime::now());
    let mut ex = Exchange {
        ds: ds.clone(),
        start,
        method: parts.method.clone(),
        path,
        authority,
        protocol: if grpc { "grpc" } else { "http" },
        grpc,
        service: None,
        route: None,
        endpoint: None,
        attempts: 0,
        flags: "-",
        span,
        body: None,
        error: None,
        permit: None,
    };

    let config = match ds.inputs.waypoint.load_full() {
        Some(c) => c,
        None => return ex.fail(ProxyError::NotConfigured),
    };
    let Some((svc, port)) = config.service_for(ds.target) else {
        return ex.fail(ProxyError::NotBound(ds.target));
    };
    ex.service = Some(bound_ref(svc, ds.target));

    // 1. Match route.
    let view = RequestView {
        method: &parts.method,
        path: &ex.path,
        query: parts.uri.query(),
        headers: &parts.headers,
    };
    let matched = svc
        .routes
        .iter()
        .filter(|r| r.applies_to_port(port.port))
        .find_map(|r| r.find_match(&view).map(|m| (r, m)));
    ex.route = matched.map(|(r, _)| r.name.clone());

    // 2. Authorize.
    let subject = Subject {
        principal: Some(&ds.peer_identity),
        port: port.port,
        http: Some(HttpAttributes {
            method: parts.method.as_str(),
            path: &ex.path,
            host: &ex.authority,
            headers: &parts.headers,
        }),
    };
    if let Decision::Deny(reason) = policy::evaluate(&config.policies, &svc.key, &subject) {
        ex.error = Some(reason);
        return ex.local(StatusCode::FORBIDDEN, RBAC_DENIED);
    }
    if let Some((r, m)) = matched
        && let Some(redirect) = &r.redirect
    {
        let prefix = m.map_or(Some(""), |m| m.matched_prefix());
        let location =
            redirect_location(redirect, &ex.authority, &ex.path, parts.uri.query(), prefix);
        return ex.redirect(redirect.status, location);
    }

    // 3. Pick backend.
    let route = matched.map(|(r, _)| r);
    let backend = match route.filter(|r| !r.backends.is_empty()) {
        Some(r) => match pick_weighted(&r.backends) {
            Some(b) => Some(b),
            None => return ex.fail(ProxyError::NoWeight(r.name.clone())),
        },
        None => None,
    };
    let (dest, dest_port) = match backend {
        Some(b) => {
            let found = endpoints::find_service(&ds.inputs.state.read(), &config, &b.service);
            match found {
                Some(s) => (s, b.port),
                None => return ex.fail(ProxyError::UnknownBackend(b.service.clone())),
            }
        }
        None => (bound_ref(svc, ds.target), port.port),
    };
    ex.service = Some(dest.clone());
    let dest_bound = config.service(&dest.key);
    let upstream_protocol = match dest_bound
        .and_then(|s| s.port(dest_port))
        .map(|p| p.protocol)
    {
        Some(Protocol::Http) => UpstreamProtocol::Http1,
        Some(Protocol::Http2 | Protocol::Grpc) => UpstreamProtocol::Http2,
        _ if ds.http2 => UpstreamProtocol::Http2,
        _ => UpstreamProtocol::Http1,
    };
    let circuit = ds.inputs.circuits.get(
        &dest.key,
        dest_bound.and_then(|s| s.circuit_breaker.as_ref()),
    );
    let admitted = match route.and_then(|r| r.timeout) {
        Some(t) => tokio::time::timeout(
            t,
            circuit.admit(upstream_protocol == UpstreamProtocol::Http1),
        )
        .await
        .unwrap_or(Err(ProxyError::Timeout(t))),
        None => {
            circuit
                .admit(upstream_protocol == UpstreamProtocol::Http1)
                .await
        }
    };
    match admitted {
        Ok(p) => ex.permit = Some(p),
        Err(e) => return ex.fail(e),
    }

    // 5. (prepared once) The upstream request head.
    let matched_prefix = matched.and_then(|(_, m)| m.map_or(Some(""), |m| m.matched_prefix()));
    let head = upstream_head(
        &parts.method,
        &parts.uri,
        parts.headers,
        &ex,
        route,
        backend,
        matched_prefix,
        upstream_protocol,
    );
    let replay = ReplayBody::new(body, ds.inputs.settings.retry_buffer);
    ex.body = Some(replay.clone());

    // 4. Retry and timeout, around 5. Forward.
    let plan = Attempts {
        inputs: &ds.inputs,
        circuit: &circuit,
        service: &dest,
        port: dest_port,
        protocol: upstream_protocol,
        route,
        head: &head,
        body: &replay,
    };
    let mut log = AttemptLog::default();
    let result = match route.and_then(|r| r.timeout) {
        Some(t) => match tokio::time::timeout(t, plan.run(&mut log)).await {
            Ok(r) => r,
            Err(_) => Err(ProxyError::Timeout(t)),
        },
        None => plan.run(&mut log).await,
    };
    ex.attempts = log.attempts;
    ex.endpoint = log.endpoint;
    if log.retries_exhausted {
        ex.flags = "URX";
    }

    // 6. Respond.
    match result {
        Ok(resp) => {
            let (mut rparts, rbody) = resp.into_parts();
            strip_hop_by_hop(&mut rparts.headers);
            if let Some(r) = route {
                route::apply_modifiers(&r.response_headers, &mut rparts.headers);
            }
            if let Some(b) = backend {
                route::apply_modifiers(&b.response_headers, &mut rparts.headers);
            }
            let status = rparts.status;
            let body =
                ObservedBody::new(rbody.map_err(BoxError::from), ex, status, &rparts.headers);
            Response::from_parts(rparts, body.boxed_unsync())
        }
        Err(e) => ex.fail(e),
    }
}

/// The service a CONNECT target names, for labels and endpoint lookup.
fn bound_ref(svc: &BoundService, target: SocketAddr) -> ServiceRef {
    ServiceRef {
        key: svc.key.clone(),
        hostname: svc.hostname.clone(),
        namespace: svc.namespace.clone(),
        name: svc.name.clone(),
        vip: target.ip(),
    }
}

fn pick_weighted(backends: &[Backend]) -> Option<&Backend> {
    let total: u64 = backends.iter().map(|b| u64::from(b.weight)).sum();
    if total == 0 {
        return None;
    }
    let mut n = rand::random_range(0..total);
    for b in backends {
        let w = u64::from(b.weight);
        if n < w {
            return Some(b);
        }
        n -= w;
    }
    None
}

/// The request head sent upstream, minus the body.
struct Head {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

#[allow(clippy::too_many_arguments)]
fn upstream_head(
    method: &Method,
    uri: &Uri,
    mut headers: HeaderMap,
    ex: &Exchange,
    route: Option<&Route>,
    backend: Option<&Backend>,
    matched_prefix: Option<&str>,
    protocol: UpstreamProtocol,
) -> Head {
    strip_hop_by_hop(&mut headers);
    if let Some(r) = route {
        route::apply_modifiers(&r.request_headers, &mut headers);
    }
    if let Some(b) = backend {
        route::apply_modifiers(&b.request_headers, &mut headers);
    }
    let mut authority = ex.authority.clone();
    let mut path = ex.path.clone();
    if let Some(rw) = route.and_then(|r| r.rewrite.as_ref()) {
        if let Some(h) = &rw.hostname {
            authority = h.clone();
        }
        if let Some(p) = &rw.path {
            path = p.apply(&ex.path, matched_prefix);
        }
    }
    let path_and_query = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    ex.span.ctx.inject(&mut headers);
    if !headers.contains_key("x-request-id") {
        let id = uuid_v4();
        if let Ok(v) = HeaderValue::try_from(id) {
            headers.insert(HeaderName::from_static("x-request-id"), v);
        }
    }
    if !headers.contains_key("x-forwarded-proto") {
        headers.insert(
            HeaderName::from_static("x-forwarded-proto"),
            HeaderValue::from_static("http"),
        );
    }
    let (uri, version) = match protocol {
        UpstreamProtocol::Http1 => {
            if let Ok(v) = HeaderValue::try_from(authority.as_str()) {
                headers.insert(header::HOST, v);
            }
            (
                path_and_query
                    .parse()
                    .unwrap_or_else(|_| Uri::from_static("/")),
                Version::HTTP_11,
            )
        }
        UpstreamProtocol::Http2 => {
            headers.remove(header::HOST);
            let uri = Uri::builder()
                .scheme("http")
                .authority(authority.as_str())
                .path_and_query(path_and_query.as_str())
                .build()
                .unwrap_or_else(|_| Uri::from_static("/"));
            (uri, Version::HTTP_2)
        }
    };
    Head {
        method: method.clone(),
        uri,
        version,
        headers,
    }
}

#[derive(Default)]
struct AttemptLog {
    attempts: u32,
    endpoint: Option<Endpoint>,
    retries_exhausted: bool,
}

/// Phases 3 to 5 for every attempt of one request.
struct Attempts<'a> {
    inputs: &'a ProxyInputs,
    circuit: &'a Arc<ServiceCircuit>,
    service: &'a ServiceRef,
    port: u16,
    protocol: UpstreamProtocol,
    route: Option<&'a Route>,
    head: &'a Head,
    body: &'a ReplayBody,
}

impl Attempts<'_> {
    async fn run(&self, log: &mut AttemptLog) -> Result<Response<UpstreamBody>, ProxyError> {
        let retry = self.route.and_then(|r| r.retry.as_ref());
        let per_try = self.route.and_then(|r| r.backend_timeout);
        let mut failed_uid: Option<String> = None;
        let mut _retry_permit = None;
        loop {
            log.attempts += 1;
            let ep = self.pick_endpoint(failed_uid.as_deref())?;
            log.endpoint = Some(ep.clone());
            let req = self.request();
            let send = self
                .inputs
                .upstreams
                .send(self.circuit, &ep, self.protocol, req);
            let result = match per_try {
                Some(t) => tokio::time::timeout(t, send)
                    .await
                    .unwrap_or(Err(ProxyError::AttemptTimeout(t))),
                None => send.await,
            };
            let failed = match &result {
                Ok(resp) => resp.status().is_server_error(),
                Err(e) => e.is_endpoint_failure(),
            };
            self.circuit.report(&ep.workload.uid, failed);
            let retryable = match (&result, retry) {
                (_, None) => false,
                (Ok(resp), Some(p)) => p.retries_status(resp.status()),
                (Err(e), Some(_)) => e.is_retryable(),
            };
            let Some(policy) = retry.filter(|_| retryable) else {
                return result;
            };
            if log.attempts > policy.attempts {
                log.retries_exhausted = true;
                return result;
            }
            if !self.body.can_replay() {
                tracing::debug!("not retrying: the request body is too large to replay");
                return result;
            }
            let Some(permit) = self
                .circuit
                .try_retry(policy.budget_percent, policy.min_retry_concurrency)
            else {
                tracing::debug!(service = %self.service.key, "not retrying: retry budget exhausted");
                return result;
            };
            _retry_permit = Some(permit);
            match &result {
                Ok(resp) => {
                    tracing::debug!(status = %resp.status(), endpoint = %ep.target, "retrying")
                }
                Err(e) => tracing::debug!(error = %e, endpoint = %ep.target, "retrying"),
            }
            // The failed response's body is dropped unread: its connection is not reused.
            drop(result);
            failed_uid = Some(ep.workload.uid.clone());
            let base = if policy.backoff.is_zero() {
                DEFAULT_BACKOFF
            } else {
                policy.backoff
            };
            tokio::time::sleep(backoff(base, log.attempts)).await;
        }
    }

    fn pick_endpoint(&self, avoid: Option<&str>) -> Result<Endpoint, ProxyError> {
        let all = endpoints::endpoints(&self.inputs.state.read(), self.service.vip, self.port);
        let healthy: Vec<&Endpoint> = all
            .iter()
            .filter(|e| !self.circuit.is_ejected(&e.workload.uid))
            .collect();
        if healthy.is_empty() {
            return Err(ProxyError::NoHealthyUpstream(format!(
                "{}:{}",
                self.service.hostname, self.port
            )));
        }
        let preferred: Vec<&Endpoint> = healthy
            .iter()
            .copied()
            .filter(|e| Some(e.workload.uid.as_str()) != avoid)
            .collect();
        let pool = if preferred.is_empty() {
            &healthy
        } else {
            &preferred
        };
        Ok(pool[rand::random_range(0..pool.len())].clone())
    }

    fn request(&self) -> Request<super::retry::AttemptBody> {
        let mut req = Request::new(self.body.attempt());
        *req.method_mut() = self.head.method.clone();
        *req.uri_mut() = self.head.uri.clone();
        *req.version_mut() = self.head.version;
        *req.headers_mut() = self.head.headers.clone();
        req
    }
}

/// Base retry delay when the route gives none (Envoy's default).
const DEFAULT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(25);

/// `:authority` (HTTP/2) or `Host` (HTTP/1.1).
fn request_authority(uri: &Uri, headers: &HeaderMap) -> String {
    uri.authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default()
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// gRPC status for an HTTP status of a local reply (as gRPC clients map them).
pub(super) fn grpc_status_for(status: StatusCode) -> u16 {
    match status.as_u16() {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502..=504 => 14,
        _ => 2,
    }
}

/// Removes `.` and `..` segments (RFC 3986, section 5.2.4), so `/a/../admin` is matched and
/// authorized as `/admin`. Percent-encoding is left as it is.
pub fn normalize_path(path: &str) -> String {
    if path.is_empty() {
        return "/".to_string();
    }
    if !path.split('/').any(|s| s == "." || s == "..") {
        return path.to_string();
    }
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    for (i, s) in segments.iter().enumerate() {
        match *s {
            "." => {
                if i == last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

/// Hop-by-hop headers, which a proxy must not forward (RFC 9110, section 7.6.1). `te:
/// trailers` is kept: gRPC needs it end to end.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().to_ascii_lowercase().as_bytes()).ok())
        .collect();
    for name in listed {
        if name != header::TE {
            headers.remove(name);
        }
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    let te_trailers = headers
        .get(header::TE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    headers.remove(header::TE);
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

fn redirect_location(
    r: &Redirect,
    authority: &str,
    path: &str,
    query: Option<&str>,
    matched_prefix: Option<&str>,
) -> String {
    let (req_host, req_port) = split_host_port(authority);
    let scheme = r.scheme.as_deref().unwrap_or("http");
    let host = r.hostname.as_deref().unwrap_or(req_host);
    let port = r.port.or(if r.scheme.is_some() { None } else { req_port });
    let port = port.filter(|p| !matches!((scheme, *p), ("http", 80) | ("https", 443)));
    let path = match &r.path {
        Some(p) => p.apply(path, matched_prefix),
        None => path.to_string(),
    };
    let mut out = format!("{scheme}://{host}");
    if let Some(p) = port {
        out.push_str(&format!(":{p}"));
    }
    out.push_str(&path);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

fn split_host_port(authority: &str) -> (&str, Option<u16>) {
    if let Some(rest) = authority.strip_prefix('[') {
        if let Some((h, p)) = rest.split_once("]:") {
            return (&authority[..h.len() + 2], p.parse().ok());
        }
        return (authority, None);
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, p.parse().ok()),
        _ => (authority, None),
    }
}

fn uuid_v4() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests;
