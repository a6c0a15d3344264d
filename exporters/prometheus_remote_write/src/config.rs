//! The `prometheus_remote_write` exporter's config, shaped like the OpenTelemetry
//! Collector's exporter of the same name.
//!
//! ```yaml
//! exporters:
//!   prometheus_remote_write/prom:
//!     endpoint: http://127.0.0.1:9090/api/v1/write
//!     protobuf_message: prometheus.WriteRequest   # or io.prometheus.write.v2.Request
//!     headers: { X-Scope-OrgID: team-a }
//!     auth: { basic: { username: flamepipe, password: "${env:PROM_PASSWORD}" } }   # or bearer_token
//!     max_samples_per_send: 2000
//!     batch_send_deadline: 5s
//!     timeout: 30s
//!     sending_queue: { queue_size: 1000, num_consumers: 1, when_full: drop_oldest }
//!     retry_on_failure: { initial_interval: 1s, max_interval: 30s, max_elapsed_time: 5m }
//! ```

use std::collections::BTreeMap;

use flamepipe_core::component::{BuildContext, BuildError, Exporter, ExporterConfig, Signal};
use flamepipe_core::config::{ConfigIssue, Duration, Validate};
use flamepipe_core::exporter_helper::{QueueConfig, QueueSettings, RetryConfig, RetrySettings, Settings, WhenFull};
use flamepipe_core::metric::MetricsBatch;
use serde::Deserialize;

use crate::encode::ProtobufMessage;
use crate::write::RemoteWriter;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The receiver's remote write URL. Default `http://127.0.0.1:9090/api/v1/write`.
    pub endpoint: String,
    /// `prometheus.WriteRequest` (remote write 1.0, the default) or
    /// `io.prometheus.write.v2.Request` (2.0), as Prometheus' own setting names them.
    pub protobuf_message: ProtobufMessage,
    /// Extra request headers. The batch's tenant goes in `X-Scope-OrgID` unless set here.
    pub headers: BTreeMap<String, String>,
    pub auth: Option<Auth>,
    /// Samples in one request at most. Default 2000 (Prometheus' own default).
    pub max_samples_per_send: usize,
    /// The longest a point waits for a request to fill. Default `5s`.
    pub batch_send_deadline: Duration,
    /// One request. Default `30s`.
    pub timeout: Duration,
    /// Default 1000 requests, one sender (requests of one series stay in order), and
    /// `drop_oldest` when full: a counter's newer points carry what the dropped ones did.
    pub sending_queue: QueueConfig,
    /// Retried: 5xx, 429 (after its `Retry-After`) and connection failures. Default: first
    /// wait `1s`, at most `30s` apart, give up after `5m`.
    pub retry_on_failure: RetryConfig,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Auth {
    Basic { username: String, password: String },
    BearerToken(String),
}

impl Default for Config {
    fn default() -> Self {
        Config {
            endpoint: "http://127.0.0.1:9090/api/v1/write".to_string(),
            protobuf_message: ProtobufMessage::V1,
            headers: BTreeMap::new(),
            auth: None,
            max_samples_per_send: 2000,
            batch_send_deadline: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            sending_queue: QueueConfig::default(),
            retry_on_failure: RetryConfig::default(),
        }
    }
}

impl Config {
    /// The exporter helper's settings: what the config says, else this exporter's defaults.
    pub fn helper_settings(&self) -> Settings {
        Settings {
            timeout: self.timeout,
            queue: self.sending_queue.or(QueueSettings {
                queue_size: 1000,
                num_consumers: 1,
                when_full: WhenFull::DropOldest,
            }),
            retry: self.retry_on_failure.or(RetrySettings {
                initial_interval: Duration::from_secs(1),
                ..RetrySettings::default()
            }),
        }
    }
}

/// A header name as HTTP allows it (a token).
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl Validate for Config {
    fn validate(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        match reqwest::Url::parse(&self.endpoint) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
            _ => issues.push(ConfigIssue::new(
                "endpoint",
                format!(
                    "invalid endpoint {:?}: expected http(s)://host:port/path",
                    self.endpoint
                ),
            )),
        }
        for (name, value) in &self.headers {
            if !is_header_name(name) {
                issues.push(ConfigIssue::new(format!("headers.{name}"), "not a valid header name"));
            } else if reqwest::header::HeaderValue::from_str(value).is_err() {
                issues.push(ConfigIssue::new(format!("headers.{name}"), "not a valid header value"));
            }
        }
        if self.max_samples_per_send == 0 {
            issues.push(ConfigIssue::new("max_samples_per_send", "must be at least 1"));
        }
        if self.batch_send_deadline.is_zero() {
            issues.push(ConfigIssue::new("batch_send_deadline", "must be greater than 0s"));
        }
        issues.extend(self.helper_settings().validate());
        issues
    }
}

impl ExporterConfig for Config {
    fn signals(&self) -> Vec<Signal> {
        vec![Signal::Metrics]
    }

    fn build_metrics(&self, ctx: &BuildContext) -> Result<Box<dyn Exporter<MetricsBatch>>, BuildError> {
        let writer = RemoteWriter::new(self.clone(), ctx).map_err(|e| ctx.error(e))?;
        Ok(Box::new(writer))
    }
}
