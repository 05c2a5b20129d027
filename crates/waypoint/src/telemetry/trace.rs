//! W3C trace context and OpenTelemetry spans.
//!
//! Every request gets a span: its trace id comes from the request's `traceparent` (a new one
//! when absent or malformed), its span id is new, and the backend receives a `traceparent`
//! naming that span as parent (with the caller's `tracestate` passed on unchanged). When an
//! OTLP endpoint is configured the span is also exported, over OTLP/gRPC in batches.

use std::fmt;
use std::time::SystemTime;

use http::{HeaderMap, HeaderValue};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState, Tracer as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("OTLP exporter for {endpoint}: {source}")]
    Exporter {
        endpoint: String,
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

/// The trace position of one request at the waypoint.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    /// This request's span at the waypoint.
    pub span_id: [u8; 8],
    /// The caller's span, from its `traceparent`.
    pub parent_span_id: Option<[u8; 8]>,
    pub flags: u8,
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.traceparent())
    }
}

/// A parsed `traceparent`: trace id, parent span id, flags.
pub fn parse_traceparent(v: &str) -> Option<([u8; 16], [u8; 8], u8)> {
    let mut parts = v.trim().split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let span = parts.next()?;
    let flags = parts.next()?;
    // Version 00 has exactly four fields; later versions may append more.
    if version.len() != 2 || version == "ff" || (version == "00" && parts.next().is_some()) {
        return None;
    }
    hex_to::<1>(version)?;
    let trace_id = hex_to::<16>(trace)?;
    let span_id = hex_to::<8>(span)?;
    let [flags] = hex_to::<1>(flags)?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some((trace_id, span_id, flags))
}

fn hex_to<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl TraceContext {
    /// Continues the caller's trace from `headers`, or starts a new sampled one.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let parent = headers
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_traceparent);
        let span_id = random_nonzero::<8>();
        match parent {
            Some((trace_id, parent, flags)) => TraceContext {
                trace_id,
                span_id,
                parent_span_id: Some(parent),
                flags,
            },
            None => TraceContext {
                trace_id: random_nonzero::<16>(),
                span_id,
                parent_span_id: None,
                flags: 1,
            },
        }
    }

    /// The `traceparent` to send to the backend.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            hex(&self.trace_id),
            hex(&self.span_id),
            self.flags
        )
    }

    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    pub fn span_id_hex(&self) -> String {
        hex(&self.span_id)
    }

    /// Sets `traceparent` on the upstream request; `tracestate` is left as the caller sent it.
    pub fn inject(&self, headers: &mut HeaderMap) {
        if let Ok(v) = HeaderValue::try_from(self.traceparent()) {
            headers.insert(TRACEPARENT, v);
        }
    }
}

fn random_nonzero<const N: usize>() -> [u8; N] {
    loop {
        let b: [u8; N] = rand::random();
        if b != [0; N] {
            return b;
        }
    }
}

/// Starts request spans and, when configured, exports them.
#[derive(Clone, Default)]
pub struct Tracer {
    otel: Option<(SdkTracerProvider, SdkTracer)>,
}

impl fmt::Debug for Tracer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracer")
            .field("exporting", &self.otel.is_some())
            .finish()
    }
}

/// What a finished span records.
#[derive(Debug, Default)]
pub struct SpanEnd<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub authority: &'a str,
    pub status: u16,
    pub response_flags: &'a str,
    pub upstream: Option<String>,
    pub route: Option<&'a str>,
    pub source_principal: &'a str,
    pub error: Option<String>,
}

/// The span of one request.
#[derive(Debug)]
pub struct RequestSpan {
    pub ctx: TraceContext,
    otel: Option<opentelemetry_sdk::trace::Span>,
}

impl Tracer {
    /// Propagation only, nothing exported.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Exports spans over OTLP/gRPC to `endpoint` (for example `http://collector:4317`). Must
    /// be called inside the Tokio runtime that will carry the export traffic.
    pub fn otlp(endpoint: &str, service_name: String) -> Result<Self, TraceError> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
            .map_err(|source| TraceError::Exporter {
                endpoint: endpoint.to_string(),
                source,
            })?;
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(service_name)
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, "waypoint");
        Ok(Tracer {
            otel: Some((provider, tracer)),
        })
    }

    pub fn is_exporting(&self) -> bool {
        self.otel.is_some()
    }

    /// Starts the span of a request that began at `start`, named `name`.
    pub fn start(&self, headers: &HeaderMap, name: String, start: SystemTime) -> RequestSpan {
        let mut ctx = TraceContext::from_headers(headers);
        let Some((_, tracer)) = &self.otel else {
            return RequestSpan { ctx, otel: None };
        };
        let parent = match ctx.parent_span_id {
            Some(parent) => {
                let state = headers
                    .get(TRACESTATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|s| s.parse::<TraceState>().ok())
                    .unwrap_or_default();
                Context::new().with_remote_span_context(SpanContext::new(
                    TraceId::from_bytes(ctx.trace_id),
                    SpanId::from_bytes(parent),
                    TraceFlags::new(ctx.flags),
                    true,
                    state,
                ))
            }
            None => Context::new(),
        };
        let span = tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_start_time(start)
            .start_with_context(tracer, &parent);
        let sc = span.span_context();
        ctx.trace_id = sc.trace_id().to_bytes();
        ctx.span_id = sc.span_id().to_bytes();
        ctx.flags = sc.trace_flags().to_u8();
        RequestSpan {
            ctx,
            otel: Some(span),
        }
    }

    /// Exports the spans ended so far; blocks until done (call off the async threads).
    pub fn flush(&self) {
        if let Some((provider, _)) = &self.otel
            && let Err(e) = provider.force_flush()
        {
            tracing::debug!(error = %e, "trace exporter flush");
        }
    }

    /// Flushes and stops the exporter.
    pub fn shutdown(&self) {
        if let Some((provider, _)) = &self.otel
            && let Err(e) = provider.shutdown()
        {
            tracing::debug!(error = %e, "trace exporter shutdown");
        }
    }
}

impl RequestSpan {
    pub fn finish(self, end: SpanEnd<'_>) {
        let Some(mut span) = self.otel else {
            return;
        };
        let mut attrs = vec![
            KeyValue::new("http.request.method", end.method.to_string()),
            KeyValue::new("url.path", end.path.to_string()),
            KeyValue::new("server.address", end.authority.to_string()),
            KeyValue::new("http.response.status_code", i64::from(end.status)),
            KeyValue::new("response_flags", end.response_flags.to_string()),
            KeyValue::new("peer.principal", end.source_principal.to_string()),
            KeyValue::new("component", "proxy"),
        ];
        if let Some(u) = end.upstream {
            attrs.push(KeyValue::new("upstream.address", u));
        }
        if let Some(r) = end.route {
            attrs.push(KeyValue::new("route.name", r.to_string()));
        }
        span.set_attributes(attrs);
        if end.status >= 500 || end.error.is_some() {
            span.set_status(Status::error(
                end.error
                    .unwrap_or_else(|| format!("status {}", end.status)),
            ));
        }
        span.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_parsing_follows_w3c() {
        let (t, s, f) =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
                .expect("valid");
        assert_eq!(hex(&t), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex(&s), "00f067aa0ba902b7");
        assert_eq!(f, 1);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
        // A later version may carry more fields.
        assert!(
            parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz")
                .is_some()
        );
    }

    #[test]
    fn continues_the_trace_with_a_new_span() {
        let mut h = HeaderMap::new();
        h.insert(
            TRACEPARENT,
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),
        );
        let span = Tracer::disabled().start(&h, "x".into(), SystemTime::now());
        let out = span.ctx.traceparent();
        assert!(
            out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{out}"
        );
        assert!(out.ends_with("-00"), "sampling decision kept: {out}");
        assert_ne!(span.ctx.span_id_hex(), "00f067aa0ba902b7");
        assert_eq!(parse_traceparent(&out).map(|p| p.1), Some(span.ctx.span_id));

        let fresh = Tracer::disabled().start(&HeaderMap::new(), "x".into(), SystemTime::now());
        assert_eq!(fresh.ctx.parent_span_id, None);
        assert!(parse_traceparent(&fresh.ctx.traceparent()).is_some());
    }
}
