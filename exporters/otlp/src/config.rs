//! The `otlp` exporter's config, shaped like the OpenTelemetry Collector's `otlp` exporter.
//!
//! ```yaml
//! exporters:
//!   otlp/central:
//!     endpoint: http://central.internal:4317
//!     compression: gzip          # or none
//!     headers: { X-Scope-OrgID: team-a }
//!     timeout: 10s
//!     sending_queue: { queue_size: 64, num_consumers: 4 }
//!     retry_on_failure: { initial_interval: 100ms, max_interval: 5s, max_elapsed_time: 60s }
//! ```
//!
//! Queueing, retries and the timeout are the shared exporter helper's. Retried: the codes
//! the OTLP specification calls retryable (UNAVAILABLE, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED,
//! ABORTED, CANCELLED) and transport errors; any other code fails the batch at once.

use std::collections::BTreeMap;

use flamepipe_core::component::{BuildContext, BuildError, Exporter, ExporterConfig, Signal};
use flamepipe_core::config::{ConfigIssue, Duration, Validate};
use flamepipe_core::exporter_helper::{QueueConfig, QueueSettings, RetryConfig, RetrySettings, Settings, WhenFull};
use flamepipe_core::metric::MetricsBatch;
use serde::Deserialize;

use crate::forward::Forwarder;

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    #[default]
    Gzip,
    None,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The receiving gRPC endpoint, `http://host:port`. Default `http://127.0.0.1:4317`.
    pub endpoint: String,
    /// `gzip` (default) or `none`.
    pub compression: Compression,
    /// Extra request metadata, e.g. `X-Scope-OrgID`. The batch's tenant is sent as
    /// `X-Scope-OrgID` unless set here.
    pub headers: BTreeMap<String, String>,
    /// Per attempt. Default `10s`.
    pub timeout: Duration,
    /// Batches waiting to be sent (default 64) and sent at once (default 4); when full, the
    /// pipeline waits (`block`), so senders get 429.
    pub sending_queue: QueueConfig,
    /// Default: first wait `100ms`, at most `5s` apart, give up after `60s`.
    pub retry_on_failure: RetryConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            endpoint: "http://127.0.0.1:4317".to_string(),
            compression: Compression::Gzip,
            headers: BTreeMap::new(),
            timeout: Duration::from_secs(10),
            sending_queue: QueueConfig::default(),
            retry_on_failure: RetryConfig::default(),
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if tonic::transport::Endpoint::from_shared(self.endpoint.clone()).is_err()
            || !(self.endpoint.starts_with("http://") || self.endpoint.starts_with("https://"))
        {
            issues.push(ConfigIssue::new(
                "endpoint",
                format!("invalid endpoint {:?}: expected http://host:port", self.endpoint),
            ));
        }
        if self.endpoint.starts_with("https://") {
            issues.push(ConfigIssue::new("endpoint", "TLS is not supported yet: use http://"));
        }
        for name in self.headers.keys() {
            if tonic::metadata::MetadataKey::<tonic::metadata::Ascii>::from_bytes(name.to_ascii_lowercase().as_bytes())
                .is_err()
            {
                issues.push(ConfigIssue::new(format!("headers.{name}"), "not a valid header name"));
            }
        }

        issues.extend(self.helper_settings().validate());
        issues
    }
}

impl Config {
    /// The exporter helper's settings: what the config says, else this exporter's defaults.
    pub fn helper_settings(&self) -> Settings {
        settings(self.timeout, &self.sending_queue, &self.retry_on_failure)
    }
}

/// The helper settings of both OTLP exporters (`otlp`, `otlphttp`): what the config says,
/// else their shared defaults (64 batches waiting, 4 sent at once, block when full; retries
/// from 100ms, at most 5s apart, for 60s).
pub(crate) fn settings(timeout: Duration, queue: &QueueConfig, retry: &RetryConfig) -> Settings {
    Settings {
        timeout,
        queue: queue.or(QueueSettings {
            queue_size: 64,
            num_consumers: 4,
            when_full: WhenFull::Block,
        }),
        retry: retry.or(RetrySettings {
            initial_interval: Duration::from_millis(100),
            max_interval: Duration::from_secs(5),
            max_elapsed_time: Duration::from_secs(60),
            ..RetrySettings::default()
        }),
    }
}

impl ExporterConfig for Config {
    fn signals(&self) -> Vec<Signal> {
        Signal::ALL.to_vec()
    }

    fn build(&self, ctx: &BuildContext) -> Result<Box<dyn Exporter>, BuildError> {
        let forwarder = Forwarder::new(self.clone(), ctx).map_err(|message| ctx.error(message))?;
        Ok(Box::new(forwarder))
    }

    fn build_metrics(&self, ctx: &BuildContext) -> Result<Box<dyn Exporter<MetricsBatch>>, BuildError> {
        let forwarder = Forwarder::new(self.clone(), ctx).map_err(|message| ctx.error(message))?;
        Ok(Box::new(forwarder))
    }
}
