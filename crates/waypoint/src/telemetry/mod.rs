//! Request telemetry: Istio-compatible metrics, access logs and traces.

pub mod access_log;
pub mod metrics;
pub mod trace;

pub use access_log::AccessEntry;
pub use metrics::{Metrics, Observation, RequestLabels, SourceLabels};
pub use trace::{RequestSpan, SpanEnd, TraceContext, Tracer};
