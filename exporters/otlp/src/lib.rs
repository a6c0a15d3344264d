//! The `otlp` exporter: forwards profiles as OTLP (`ProfilesService/Export` over gRPC) to an
//! OpenTelemetry Collector, another flamepipe, or any OTLP profiles endpoint; in a metrics
//! pipeline, metric points as OTLP metrics (`MetricsService/Export`).
//!
//! It sits at the end of a pipeline. Each batch becomes one request ([`encode`]); retryable
//! failures are retried with backoff, and a batch's senders are answered only once the
//! receiving end accepted it, so an agent -> central chain keeps the durable-ack promise.
//!
//! # Layout
//!
//! - [`config`]: the YAML config (the Collector's `otlp` exporter shape).
//! - [`encode`]: the core model -> `ExportProfilesServiceRequest`.
//! - [`metrics`]: metric points -> `ExportMetricsServiceRequest` (monotonic cumulative sums).
//! - `forward`: the exporter task: send, retry, acknowledge.
//! - [`http`]: the `otlphttp` exporter: the same requests over OTLP/HTTP.
//! - [`telemetry`]: flamepipe's own metrics pushed over OTLP (`service.telemetry.metrics.readers`).

pub mod config;
pub mod encode;
mod forward;
pub mod http;
pub mod metrics;
pub mod telemetry;

pub use config::Config;
pub use http::HttpConfig;
