//! One access log line per request (and per passthrough connection), on the tracing target
//! `access`, so it can be filtered and formatted (plain or JSON) apart from diagnostics.

/// Everything an access log line carries.
#[derive(Debug, Default)]
pub struct AccessEntry<'a> {
    pub protocol: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub authority: &'a str,
    pub status: u16,
    pub grpc_status: Option<&'a str>,
    pub response_flags: &'a str,
    pub route: Option<&'a str>,
    pub service: &'a str,
    pub src_addr: String,
    pub src_identity: &'a str,
    pub upstream: Option<String>,
    pub upstream_identity: Option<String>,
    pub attempts: u32,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub duration_ms: u64,
    pub trace_id: String,
    pub error: Option<String>,
}

impl AccessEntry<'_> {
    pub fn emit(&self) {
        let error = self.error.as_deref().unwrap_or("");
        let upstream = self.upstream.as_deref().unwrap_or("-");
        let upstream_identity = self.upstream_identity.as_deref().unwrap_or("-");
        let route = self.route.unwrap_or("-");
        let grpc_status = self.grpc_status.unwrap_or("-");
        if self.status >= 500 || !error.is_empty() {
            tracing::warn!(
                target: "access",
                protocol = self.protocol,
                method = self.method,
                path = self.path,
                authority = self.authority,
                status = self.status,
                grpc_status,
                response_flags = self.response_flags,
                route,
                service = self.service,
                src.addr = %self.src_addr,
                src.identity = self.src_identity,
                upstream,
                upstream.identity = upstream_identity,
                attempts = self.attempts,
                bytes_received = self.request_bytes,
                bytes_sent = self.response_bytes,
                duration_ms = self.duration_ms,
                trace_id = %self.trace_id,
                error,
                "request"
            );
        } else {
            tracing::info!(
                target: "access",
                protocol = self.protocol,
                method = self.method,
                path = self.path,
                authority = self.authority,
                status = self.status,
                grpc_status,
                response_flags = self.response_flags,
                route,
                service = self.service,
                src.addr = %self.src_addr,
                src.identity = self.src_identity,
                upstream,
                upstream.identity = upstream_identity,
                attempts = self.attempts,
                bytes_received = self.request_bytes,
                bytes_sent = self.response_bytes,
                duration_ms = self.duration_ms,
                trace_id = %self.trace_id,
                "request"
            );
        }
    }
}
