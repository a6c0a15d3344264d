//! The `service` section: pipelines, flamepipe's own telemetry and the shutdown bound.
//!
//! Component sections are open-ended (the registry decides their types); this one is fixed,
//! so its parts are plain serde structs that reject unknown keys. Each part is parsed on its
//! own so that one mistake does not hide the others.

use std::fmt;
use std::net::SocketAddr;

use flamepipe_core::config::{ConfigIssue, Duration, Validate};
use serde::{Deserialize, Deserializer};

/// The default of `service.telemetry.metrics_address` (the Collector's port).
pub const DEFAULT_METRICS_ADDRESS: &str = "127.0.0.1:8888";
/// The default of `service.queue_size`: batches each channel between components holds.
pub const DEFAULT_QUEUE_SIZE: usize = 64;
/// The default of `service.shutdown_timeout`.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct Service {
    /// The extensions to run, in start order.
    pub extensions: Vec<String>,
    /// In file order, keyed `profiles` or `profiles/NAME`.
    pub pipelines: Vec<(String, Pipeline)>,
    pub telemetry: TelemetrySettings,
    pub shutdown_timeout: Duration,
    /// Batches each channel between components holds (see `topology`).
    pub queue_size: usize,
}

impl Default for Service {
    fn default() -> Self {
        Service {
            extensions: Vec::new(),
            pipelines: Vec::new(),
            telemetry: TelemetrySettings::default(),
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            queue_size: DEFAULT_QUEUE_SIZE,
        }
    }
}

/// `service.extensions`: extension ids, in start order.
#[derive(Debug, Default, Deserialize)]
#[serde(transparent)]
pub struct Extensions(pub Vec<String>);

impl Validate for Extensions {
    fn validate(&self) -> Vec<ConfigIssue> {
        Vec::new()
    }
}

/// One pipeline: component ids, in order for processors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pipeline {
    pub receivers: Vec<String>,
    pub processors: Vec<String>,
    pub exporters: Vec<String>,
}

impl Validate for Pipeline {
    fn validate(&self) -> Vec<ConfigIssue> {
        Vec::new()
    }
}

/// `service.telemetry`; its keys are parsed one by one (see the loader).
#[derive(Debug, Default)]
pub struct TelemetrySettings {
    pub metrics_address: ListenAddress,
    pub logs: LogSettings,
    pub metrics: MetricsTelemetry,
    pub traces: TracesTelemetry,
}

/// `service.telemetry.metrics`: where flamepipe pushes its own metrics besides serving them
/// on `/metrics`, in the Collector's shape (`readers: [{ periodic: { exporter: { otlp } } }]`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsTelemetry {
    pub readers: Vec<MetricReader>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricReader {
    pub periodic: PeriodicReader,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeriodicReader {
    /// How often the metrics are pushed. Default `60s`, as the Collector's.
    #[serde(default = "default_push_interval")]
    pub interval: Duration,
    pub exporter: PushExporter,
}

fn default_push_interval() -> Duration {
    Duration::from_secs(60)
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushExporter {
    pub otlp: OtlpPush,
}

/// An OTLP endpoint for flamepipe's own metrics.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpPush {
    /// `http://host:port` of an OTLP gRPC receiver.
    pub endpoint: String,
    /// `grpc`, the only one supported.
    #[serde(default = "default_protocol")]
    pub protocol: String,
    /// Default `10s`.
    #[serde(default = "default_push_timeout")]
    pub timeout: Duration,
}

fn default_protocol() -> String {
    "grpc".to_string()
}

fn default_push_timeout() -> Duration {
    Duration::from_secs(10)
}

impl OtlpPush {
    /// Problems of this endpoint's settings, under the YAML path `at`.
    fn issues(&self, at: &str) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        let host = self
            .endpoint
            .strip_prefix("http://")
            .or_else(|| self.endpoint.strip_prefix("https://"));
        if host.is_none_or(|h| h.is_empty() || h.contains(char::is_whitespace)) {
            issues.push(ConfigIssue::new(
                format!("{at}.endpoint"),
                format!("invalid endpoint {:?}: expected http://host:port", self.endpoint),
            ));
        }
        if self.protocol != "grpc" {
            issues.push(ConfigIssue::new(
                format!("{at}.protocol"),
                format!("unsupported protocol {:?}: only grpc", self.protocol),
            ));
        }
        if self.timeout.is_zero() {
            issues.push(ConfigIssue::new(format!("{at}.timeout"), "must be greater than 0s"));
        }
        issues
    }
}

impl Validate for MetricsTelemetry {
    fn validate(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        for (i, reader) in self.readers.iter().enumerate() {
            let at = format!("readers[{i}].periodic");
            if reader.periodic.interval.0 < std::time::Duration::from_secs(1) {
                issues.push(ConfigIssue::new(format!("{at}.interval"), "must be at least 1s"));
            }
            issues.extend(reader.periodic.exporter.otlp.issues(&format!("{at}.exporter.otlp")));
        }
        issues
    }
}

/// `service.telemetry.traces`: where spans of flamepipe's own work go, in the Collector's
/// shape (`processors: [{ batch: { exporter: { otlp } } }]`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracesTelemetry {
    pub processors: Vec<SpanProcessor>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpanProcessor {
    pub batch: BatchSpanProcessor,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSpanProcessor {
    pub exporter: PushExporter,
}

impl Validate for TracesTelemetry {
    fn validate(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if self.processors.len() > 1 {
            issues.push(ConfigIssue::new("processors", "at most one span processor"));
        }
        for (i, processor) in self.processors.iter().enumerate() {
            let at = format!("processors[{i}].batch.exporter.otlp");
            issues.extend(processor.batch.exporter.otlp.issues(&at));
        }
        issues
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    pub level: LogLevel,
    pub format: LogFormat,
}

impl Validate for LogSettings {
    fn validate(&self) -> Vec<ConfigIssue> {
        Vec::new()
    }
}

/// An `IP:PORT` to listen on; port 0 picks a free port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenAddress(pub SocketAddr);

impl Default for ListenAddress {
    fn default() -> Self {
        // The constant is a valid socket address.
        ListenAddress(
            DEFAULT_METRICS_ADDRESS
                .parse()
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8888))),
        )
    }
}

impl Validate for ListenAddress {
    fn validate(&self) -> Vec<ConfigIssue> {
        Vec::new()
    }
}

impl<'de> Deserialize<'de> for ListenAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map(ListenAddress).map_err(|_| {
            serde::de::Error::custom(format!(
                "invalid address {s:?}; expected IP:PORT, e.g. \"{DEFAULT_METRICS_ADDRESS}\""
            ))
        })
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogLevel {
    Trace,
    Debug,
    #[default]
    Info,
    Warn,
    Error,
}

impl LogLevel {
    const ALL: [LogLevel; 5] = [
        LogLevel::Trace,
        LogLevel::Debug,
        LogLevel::Info,
        LogLevel::Warn,
        LogLevel::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for LogLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        LogLevel::ALL
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(&s))
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "invalid log level {s:?}; expected one of trace, debug, info, warn, error"
                ))
            })
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `shutdown_timeout` on its own, so that it parses like any other part.
pub struct ShutdownTimeout(pub Duration);

impl<'de> Deserialize<'de> for ShutdownTimeout {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Duration::deserialize(d).map(ShutdownTimeout)
    }
}

impl Validate for ShutdownTimeout {
    fn validate(&self) -> Vec<ConfigIssue> {
        if self.0.is_zero() {
            return vec![ConfigIssue::new(
                "",
                format!("must be greater than 0s, got \"{}\"", self.0),
            )];
        }
        Vec::new()
    }
}

/// `queue_size` on its own: at least one batch.
pub struct QueueSize(pub usize);

impl<'de> Deserialize<'de> for QueueSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        usize::deserialize(d).map(QueueSize)
    }
}

impl Validate for QueueSize {
    fn validate(&self) -> Vec<ConfigIssue> {
        if self.0 == 0 {
            return vec![ConfigIssue::new("", "must be at least 1")];
        }
        Vec::new()
    }
}
