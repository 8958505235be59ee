//! Logging set-up: `tracing` events as text or JSON lines on stderr, level from `RUST_LOG`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The log line format (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    /// One JSON object per line, the event's fields flattened to the top level.
    Json,
}

/// The default filter: every crate at info (the README's default). actix-server is in the
/// tree only because actix-web depends on it; its server is never started
/// (src/http/server.rs accepts and serves), so there is no start-up chatter to quiet.
const DEFAULT_FILTER: &str = "info";

/// Installs the global subscriber. `RUST_LOG` overrides the default filter.
pub(crate) fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests in one process) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}
