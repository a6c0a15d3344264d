//! The `otlp` exporter's config, shaped like the OpenTelemetry Collector's `otlp` exporter.
//!
//! ```yaml
//! exporters:
//!   otlp/central:
//!     endpoint: http://central.internal:4317
//!     compression: gzip          # or none
//!     headers: { X-Scope-OrgID: team-a }
//!     timeout: 10s
//!     retry_on_failure: { initial_interval: 100ms, max_interval: 5s, max_elapsed_time: 60s }
//!     max_concurrent_requests: 4
//! ```

use std::collections::BTreeMap;

use flamepipe_core::component::{BuildContext, BuildError, Exporter, ExporterConfig};
use flamepipe_core::config::{ConfigIssue, Duration, Validate};
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
pub struct Retry {
    /// First wait after a retryable failure (UNAVAILABLE, RESOURCE_EXHAUSTED, a transport error).
    pub initial_interval: Duration,
    /// Longest wait between attempts; waits double up to it.
    pub max_interval: Duration,
    /// After this long in retries the batch fails (and its senders get an error).
    pub max_elapsed_time: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            initial_interval: Duration::from_millis(100),
            max_interval: Duration::from_secs(5),
            max_elapsed_time: Duration::from_secs(60),
        }
    }
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
    pub retry_on_failure: Retry,
    /// Batches in flight at once. Default 4.
    pub max_concurrent_requests: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            endpoint: "http://127.0.0.1:4317".to_string(),
            compression: Compression::Gzip,
            headers: BTreeMap::new(),
            timeout: Duration::from_secs(10),
            retry_on_failure: Retry::default(),
            max_concurrent_requests: 4,
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
        if self.timeout.is_zero() {
            issues.push(ConfigIssue::new("timeout", "must be greater than 0s"));
        }
        if self.max_concurrent_requests == 0 {
            issues.push(ConfigIssue::new("max_concurrent_requests", "must be at least 1"));
        }
        issues
    }
}

impl ExporterConfig for Config {
    fn build(self: Box<Self>, ctx: &BuildContext) -> Result<Box<dyn Exporter>, BuildError> {
        let forwarder = Forwarder::new(*self, ctx).map_err(|message| BuildError {
            component: ctx.id.to_string(),
            message,
        })?;
        Ok(Box::new(forwarder))
    }
}
