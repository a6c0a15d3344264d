//! Log setup: `tracing` to stderr as text or JSON, at `service.telemetry.logs.level`, which
//! `RUST_LOG` overrides when set (so one module can be turned up without editing the config).
//!
//! With `service.telemetry.traces.processors`, the spans of flamepipe's own work (an ingest
//! request, a block write, a query) also go to an OTLP endpoint, through
//! `tracing-opentelemetry` and the OpenTelemetry SDK's batch span processor. Only spans at
//! `info` and above of flamepipe's own crates are exported, whatever the log level.

use std::io::IsTerminal;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, LogLevel, TracesTelemetry};

/// Keeps the span exporter alive; on drop, what is still buffered is sent.
pub struct Guard(Option<SdkTracerProvider>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take()
            && let Err(e) = provider.shutdown()
        {
            tracing::warn!(error = %e, "flushing the last spans failed");
        }
    }
}

/// Sets up logging (and span export). Call inside the tokio runtime: the OTLP exporter's
/// channel runs its connection on it.
pub fn init(level: LogLevel, format: LogFormat, traces: &TracesTelemetry) -> Guard {
    let from_env = std::env::var_os("RUST_LOG")
        .is_some()
        .then(EnvFilter::try_from_default_env);
    let (filter, bad_env) = match from_env {
        Some(Ok(filter)) => (filter, None),
        Some(Err(e)) => (EnvFilter::new(level.as_str()), Some(e)),
        None => (EnvFilter::new(level.as_str()), None),
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    let (provider, exporter_error) = match traces.processors.first() {
        None => (None, None),
        Some(processor) => {
            let otlp = &processor.batch.exporter.otlp;
            match opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(otlp.endpoint.clone())
                .with_timeout(otlp.timeout.0)
                .build()
            {
                Ok(exporter) => (
                    Some(
                        SdkTracerProvider::builder()
                            .with_batch_exporter(exporter)
                            .with_resource(Resource::builder().with_service_name("flamepipe").build())
                            .build(),
                    ),
                    None,
                ),
                Err(e) => (None, Some(e)),
            }
        }
    };
    let spans = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("flamepipe"))
            .with_filter(Targets::new().with_target("flamepipe", LevelFilter::INFO))
    });
    // A second init (tests) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(spans)
        .try_init();
    if let Some(e) = bad_env {
        tracing::warn!(error = %e, level = %level, "ignoring invalid RUST_LOG; using the configured level");
    }
    if let Some(e) = exporter_error {
        tracing::error!(error = %e, "cannot export spans; continuing without");
    }
    Guard(provider)
}
