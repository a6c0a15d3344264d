//! Log setup: `tracing` to stderr as text or JSON, at `service.telemetry.logs.level`, which
//! `RUST_LOG` overrides when set (so one module can be turned up without editing the config).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogLevel};

pub fn init(level: LogLevel, format: LogFormat) {
    let from_env = std::env::var_os("RUST_LOG")
        .is_some()
        .then(EnvFilter::try_from_default_env);
    let (filter, bad_env) = match from_env {
        Some(Ok(filter)) => (filter, None),
        Some(Err(e)) => (EnvFilter::new(level.as_str()), Some(e)),
        None => (EnvFilter::new(level.as_str()), None),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // A second init (tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    if let Some(e) = bad_env {
        tracing::warn!(error = %e, level = %level, "ignoring invalid RUST_LOG; using the configured level");
    }
}
