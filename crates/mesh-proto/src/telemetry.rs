//! Process-wide logging set-up shared by every binary.

use tracing_subscriber::{EnvFilter, fmt, prelude::*, reload};

/// Handle to change the log filter at run time (served by admin endpoints).
pub type LogHandle = reload::Handle<EnvFilter, tracing_subscriber::Registry>;

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid log filter {filter:?}: {source}")]
    Filter {
        filter: String,
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("unknown log format {0:?} (expected plain or json)")]
    Format(String),
    #[error("logging is already initialised")]
    AlreadyInit,
}

/// Installs the global subscriber: `format` is `plain` or `json`, `filter` an env-filter string.
pub fn init_logging(format: &str, filter: &str) -> Result<LogHandle, TelemetryError> {
    let env = parse_filter(filter)?;
    let (layer, handle) = reload::Layer::new(env);
    let registry = tracing_subscriber::registry().with(layer);
    let res = match format {
        "plain" => registry
            .with(
                fmt::layer()
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        "json" => registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .try_init(),
        other => return Err(TelemetryError::Format(other.to_string())),
    };
    res.map_err(|_| TelemetryError::AlreadyInit)?;
    Ok(handle)
}

/// Parses an env-filter string with a clear error.
pub fn parse_filter(filter: &str) -> Result<EnvFilter, TelemetryError> {
    EnvFilter::try_new(filter).map_err(|source| TelemetryError::Filter {
        filter: filter.to_string(),
        source,
    })
}
