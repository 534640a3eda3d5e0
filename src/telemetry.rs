//! Logging: one event per line on standard error (standard output is for reports), as text or
//! JSON, filtered by `log.level` (or `RUST_LOG`, which wins when set).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(with_quiet_servers(&settings.level)))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in a log file or journal.
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    // A second initialisation (tests) keeps the first subscriber.
    let _ = if settings.format == LogFormat::Json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

/// actix's HTTP servers log every start and stop of their workers at `info`: noise for an
/// operator, so they speak only of problems unless the level names them. rustls's platform
/// verifier logs every refused certificate as an error of its own, which the service's error
/// (naming `registry.ca_file`) already says: it speaks only when the level names it.
fn with_quiet_servers(level: &str) -> String {
    let mut filter = level.to_string();
    if !level.contains("actix") {
        filter.push_str(",actix_server=warn,actix_web=warn");
    }
    if !level.contains("rustls") {
        filter.push_str(",rustls_platform_verifier=off");
    }
    filter
}
