//! The record of one request from its arrival to the last byte of its response, and phase 7
//! (log and metrics), run when the response body ends or the client goes away.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};

use super::circuit::RequestPermit;
use super::endpoints::{Endpoint, ServiceRef};
use super::phases::{Downstream, grpc_status_for};
use super::retry::ReplayBody;
use super::{BoxError, ProxyError, ResponseBody};
use crate::telemetry::{AccessEntry, Observation, RequestLabels, RequestSpan, SpanEnd};

/// The per-request record kept until the response is done (phase 7).
pub(super) struct Exchange {
    pub(super) ds: Arc<Downstream>,
    pub(super) start: Instant,
    pub(super) method: Method,
    pub(super) path: String,
    pub(super) authority: String,
    pub(super) protocol: &'static str,
    pub(super) grpc: bool,
    pub(super) service: Option<ServiceRef>,
    pub(super) route: Option<String>,
    pub(super) endpoint: Option<Endpoint>,
    pub(super) attempts: u32,
    pub(super) flags: &'static str,
    pub(super) span: RequestSpan,
    pub(super) body: Option<ReplayBody>,
    pub(super) error: Option<String>,
    pub(super) permit: Option<RequestPermit>,
}

impl Exchange {
    /// Answers with a locally generated error.
    pub(super) fn fail(mut self, e: ProxyError) -> Response<ResponseBody> {
        if self.flags == "-" {
            self.flags = e.response_flag();
        }
        if matches!(e, ProxyError::NotBound(_) | ProxyError::NotConfigured) {
            tracing::warn!(target = %self.ds.target, peer = %self.ds.peer_identity, error = %e, "request refused");
        }
        let status = e.status();
        let text = match &e {
            ProxyError::NoHealthyUpstream(_) => "no healthy upstream".to_string(),
            ProxyError::Overflow(_) => {
                "upstream connect error or disconnect/reset before headers. reset reason: overflow"
                    .to_string()
            }
            ProxyError::Timeout(_) | ProxyError::AttemptTimeout(_) => {
                "upstream request timeout".to_string()
            }
            other => other.to_string(),
        };
        self.error = Some(e.to_string());
        self.local(status, &text)
    }

    /// A local reply; for gRPC requests a trailers-only gRPC error.
    pub(super) fn local(self, status: StatusCode, text: &str) -> Response<ResponseBody> {
        let mut resp = Response::new(Full::new(Bytes::new()));
        if self.grpc {
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            h.insert("grpc-status", HeaderValue::from(grpc_status_for(status)));
            if let Ok(v) = HeaderValue::try_from(text) {
                h.insert("grpc-message", v);
            }
        } else {
            *resp.status_mut() = status;
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            *resp.body_mut() = Full::new(Bytes::copy_from_slice(text.as_bytes()));
        }
        self.wrap_local(resp)
    }

    pub(super) fn redirect(self, status: StatusCode, location: String) -> Response<ResponseBody> {
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = status;
        if let Ok(v) = HeaderValue::try_from(location) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        self.wrap_local(resp)
    }

    fn wrap_local(self, resp: Response<Full<Bytes>>) -> Response<ResponseBody> {
        let (parts, body) = resp.into_parts();
        let status = parts.status;
        let body = ObservedBody::new(
            body.map_err(|never| match never {}),
            self,
            status,
            &parts.headers,
        );
        Response::from_parts(parts, body.boxed_unsync())
    }

    /// Phase 7.
    fn finish(
        self,
        status: u16,
        grpc_status: Option<String>,
        response_bytes: u64,
        late: Option<(&'static str, String)>,
    ) {
        let mut flags = self.flags;
        let mut error = self.error;
        if let Some((flag, e)) = late {
            if flags == "-" {
                flags = flag;
            }
            error.get_or_insert(e);
        }
        let ds = &self.ds;
        let (hostname, namespace, name) = self
            .service
            .as_ref()
            .map(|s| (s.hostname.as_str(), s.namespace.as_str(), s.name.as_str()))
            .unwrap_or(("", "", ""));
        let dst = self.endpoint.as_ref().map(|e| e.workload.as_ref());
        let grpc_label = if self.grpc {
            grpc_status.as_deref()
        } else {
            None
        };
        let labels = RequestLabels::new(
            &ds.source,
            (hostname, namespace, name),
            dst,
            self.protocol,
            status,
            grpc_label,
            flags,
        );
        let duration = self.start.elapsed();
        let request_bytes = self.body.as_ref().map_or(0, |b| b.bytes_received());
        ds.inputs.metrics.record(
            &labels,
            Observation {
                duration_ms: duration.as_secs_f64() * 1000.0,
                request_bytes,
                response_bytes,
            },
        );
        let principal = ds.peer_identity.to_string();
        let upstream = self.endpoint.as_ref().map(|e| e.target.to_string());
        AccessEntry {
            protocol: self.protocol,
            method: self.method.as_str(),
            path: &self.path,
            authority: &self.authority,
            status,
            grpc_status: grpc_status.as_deref(),
            response_flags: flags,
            route: self.route.as_deref(),
            service: hostname,
            src_addr: ds.peer_addr.to_string(),
            src_identity: &principal,
            upstream: upstream.clone(),
            upstream_identity: self
                .endpoint
                .as_ref()
                .map(|e| e.workload.identity.to_string()),
            attempts: self.attempts,
            request_bytes,
            response_bytes,
            duration_ms: duration.as_millis() as u64,
            trace_id: self.span.ctx.trace_id_hex(),
            error: error.clone(),
        }
        .emit();
        self.span.finish(SpanEnd {
            method: self.method.as_str(),
            path: &self.path,
            authority: &self.authority,
            status,
            response_flags: flags,
            upstream,
            route: self.route.as_deref(),
            source_principal: &principal,
            error,
        });
        drop(self.permit);
    }
}

/// The response body sent downstream: counts bytes, reads `grpc-status` from trailers, and
/// completes the exchange (phase 7) when it ends or is dropped.
pub(super) struct ObservedBody {
    inner: http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>,
    exchange: Option<Exchange>,
    status: u16,
    bytes: u64,
    grpc_status: Option<String>,
}

impl ObservedBody {
    pub(super) fn new<B>(
        inner: B,
        exchange: Exchange,
        status: StatusCode,
        headers: &HeaderMap,
    ) -> Self
    where
        B: Body<Data = Bytes, Error = BoxError> + Send + 'static,
    {
        let grpc_status = headers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut body = ObservedBody {
            inner: inner.boxed_unsync(),
            exchange: Some(exchange),
            status: status.as_u16(),
            bytes: 0,
            grpc_status,
        };
        if body.inner.is_end_stream() {
            body.complete(None);
        }
        body
    }

    fn complete(&mut self, late: Option<(&'static str, String)>) {
        if let Some(ex) = self.exchange.take() {
            ex.finish(self.status, self.grpc_status.take(), self.bytes, late);
        }
    }
}

impl Body for ObservedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.bytes += d.len() as u64;
                }
                if let Some(t) = frame.trailers_ref()
                    && let Some(s) = t.get("grpc-status").and_then(|v| v.to_str().ok())
                {
                    this.grpc_status = Some(s.to_string());
                }
                if this.inner.is_end_stream() {
                    this.complete(None);
                }
            }
            Poll::Ready(Some(Err(e))) => {
                let e = e.to_string();
                this.complete(Some(("UR", format!("upstream response body: {e}"))));
            }
            Poll::Ready(None) => this.complete(None),
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        if self.exchange.is_some() {
            self.complete(Some((
                "DC",
                "downstream went away before the response ended".into(),
            )));
        }
    }
}
