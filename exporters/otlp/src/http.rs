//! The `otlphttp` exporter: the same requests as the `otlp` exporter, over OTLP/HTTP
//! (protobuf bodies, `POST {endpoint}/v1development/profiles` and `/v1/metrics`), as the
//! Collector's `otlphttp` exporter sends them.
//!
//! ```yaml
//! exporters:
//!   otlphttp:
//!     endpoint: http://collector.internal:4318   # the signal's path is appended
//!     compression: gzip                          # or none
//!     headers: { X-Scope-OrgID: team-a }
//! ```
//!
//! Answers, as the OTLP/HTTP specification says: 2xx delivered (a `partial_success` in the
//! body counts the refused items); 429, 502, 503 and 504 retried, after `Retry-After` when
//! given; any other status final.

use std::collections::BTreeMap;
use std::io::Write;

use flamepipe_core::component::{Batch, BoxFuture, BuildContext, BuildError, Exporter, ExporterConfig, Signal};
use flamepipe_core::config::{ConfigIssue, Duration, Validate};
use flamepipe_core::exporter_helper::{
    self, Deliver, Delivered, ExportError, QueueConfig, RetryConfig, Settings, retry_after,
};
use flamepipe_core::metric::MetricsBatch;
use flamepipe_core::tenant::with_tenant;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceResponse;
use prost::Message;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::config::{Compression, settings};
use crate::encode::encode;
use crate::metrics::encode_metrics;

/// The path OTLP/HTTP receivers take profiles on.
pub const PROFILES_PATH: &str = "/v1development/profiles";
/// The path OTLP/HTTP receivers take metrics on.
pub const METRICS_PATH: &str = "/v1/metrics";

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// The receiver's base URL; each signal's path is appended. Default
    /// `http://127.0.0.1:4318`.
    pub endpoint: String,
    /// `gzip` (default) or `none`.
    pub compression: Compression,
    /// Extra request headers. The batch's tenant goes as `X-Scope-OrgID` unless set here.
    pub headers: BTreeMap<String, String>,
    /// Per request. Default `10s`.
    pub timeout: Duration,
    /// Default 64 waiting, 4 sent at once, `block` when full.
    pub sending_queue: QueueConfig,
    /// Default: first wait `100ms`, at most `5s` apart, give up after `60s`.
    pub retry_on_failure: RetryConfig,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            endpoint: "http://127.0.0.1:4318".to_string(),
            compression: Compression::Gzip,
            headers: BTreeMap::new(),
            timeout: Duration::from_secs(10),
            sending_queue: QueueConfig::default(),
            retry_on_failure: RetryConfig::default(),
        }
    }
}

impl HttpConfig {
    fn helper_settings(&self) -> Settings {
        settings(self.timeout, &self.sending_queue, &self.retry_on_failure)
    }

    fn post(&self, ctx: &BuildContext, path: &str) -> Result<Post, BuildError> {
        let client = reqwest::Client::builder()
            .timeout(self.timeout.0)
            .user_agent(concat!("flamepipe/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ctx.error(format!("HTTP client: {e}")))?;
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/x-protobuf"));
        if self.compression == Compression::Gzip {
            headers.insert("content-encoding", HeaderValue::from_static("gzip"));
        }
        for (name, value) in &self.headers {
            let name =
                HeaderName::from_bytes(name.as_bytes()).map_err(|e| ctx.error(format!("header {name:?}: {e}")))?;
            let value = HeaderValue::from_str(value).map_err(|e| ctx.error(format!("header {name:?}: {e}")))?;
            headers.insert(name, value);
        }
        Ok(Post {
            url: format!("{}{path}", self.endpoint.trim_end_matches('/')),
            client,
            headers,
            gzip: self.compression == Compression::Gzip,
        })
    }
}

impl Validate for HttpConfig {
    fn validate(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        match reqwest::Url::parse(&self.endpoint) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
            _ => issues.push(ConfigIssue::new(
                "endpoint",
                format!("invalid endpoint {:?}: expected http(s)://host:port", self.endpoint),
            )),
        }
        for (name, value) in &self.headers {
            if HeaderName::from_bytes(name.as_bytes()).is_err() {
                issues.push(ConfigIssue::new(format!("headers.{name}"), "not a valid header name"));
            } else if HeaderValue::from_str(value).is_err() {
                issues.push(ConfigIssue::new(format!("headers.{name}"), "not a valid header value"));
            }
        }
        issues.extend(self.helper_settings().validate());
        issues
    }
}

impl ExporterConfig for HttpConfig {
    fn signals(&self) -> Vec<Signal> {
        Signal::ALL.to_vec()
    }

    fn build(&self, ctx: &BuildContext) -> Result<Box<dyn Exporter>, BuildError> {
        Ok(Box::new(HttpExporter {
            post: self.post(ctx, PROFILES_PATH)?,
            settings: self.helper_settings(),
            ctx: ctx.clone(),
        }))
    }

    fn build_metrics(&self, ctx: &BuildContext) -> Result<Box<dyn Exporter<MetricsBatch>>, BuildError> {
        Ok(Box::new(HttpExporter {
            post: self.post(ctx, METRICS_PATH)?,
            settings: self.helper_settings(),
            ctx: ctx.clone(),
        }))
    }
}

struct HttpExporter {
    post: Post,
    settings: Settings,
    ctx: BuildContext,
}

impl Exporter for HttpExporter {
    fn run(self: Box<Self>, input: mpsc::Receiver<Batch>) -> BoxFuture {
        Box::pin(async move {
            exporter_helper::run(&self.ctx, self.settings, self.post, input, std::convert::identity).await;
        })
    }
}

impl Exporter<MetricsBatch> for HttpExporter {
    fn run(self: Box<Self>, input: mpsc::Receiver<MetricsBatch>) -> BoxFuture {
        Box::pin(async move {
            exporter_helper::run(&self.ctx, self.settings, self.post, input, std::convert::identity).await;
        })
    }
}

/// One request to one signal's URL.
struct Post {
    url: String,
    client: reqwest::Client,
    headers: HeaderMap,
    gzip: bool,
}

impl Post {
    /// Sends `body`; on a 2xx returns the response body (a partial success, perhaps).
    async fn send(&self, tenant: &str, body: Vec<u8>) -> Result<bytes::Bytes, ExportError> {
        let body = if self.gzip {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&body)
                .and_then(|()| gz.finish())
                .map_err(|e| ExportError::Permanent(format!("gzip: {e}")))?
        } else {
            body
        };
        let response = self
            .client
            .post(&self.url)
            .headers(with_tenant(&self.headers, tenant))
            .body(body)
            .send()
            .await
            .map_err(|e| ExportError::retryable(format!("{}: {e}", self.url)))?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let body = response.bytes().await.unwrap_or_default();
        if status.is_success() {
            return Ok(body);
        }
        let message = format!(
            "{} answered {status}: {}",
            self.url,
            String::from_utf8_lossy(&body).trim()
        );
        Err(match status.as_u16() {
            429 | 502 | 503 | 504 => ExportError::Retryable { message, retry_after },
            _ => ExportError::Permanent(message),
        })
    }
}

impl Deliver<Batch> for Post {
    async fn deliver(&self, batch: &Batch) -> Result<Delivered, ExportError> {
        if batch.profiles.is_empty() {
            return Ok(Delivered::default());
        }
        let body = self
            .send(&batch.tenant, encode(&batch.profiles).encode_to_vec())
            .await?;
        Ok(
            match ExportProfilesServiceResponse::decode(body)
                .ok()
                .and_then(|r| r.partial_success)
            {
                Some(partial) if partial.rejected_profiles > 0 => Delivered {
                    refused: usize::try_from(partial.rejected_profiles).unwrap_or(usize::MAX),
                    reason: partial.error_message,
                },
                _ => Delivered::default(),
            },
        )
    }
}

impl Deliver<MetricsBatch> for Post {
    async fn deliver(&self, batch: &MetricsBatch) -> Result<Delivered, ExportError> {
        if batch.points.is_empty() {
            return Ok(Delivered::default());
        }
        let body = self
            .send(&batch.tenant, encode_metrics(&batch.points).encode_to_vec())
            .await?;
        Ok(
            match ExportMetricsServiceResponse::decode(body)
                .ok()
                .and_then(|r| r.partial_success)
            {
                Some(partial) if partial.rejected_data_points > 0 => Delivered {
                    refused: usize::try_from(partial.rejected_data_points).unwrap_or(usize::MAX),
                    reason: partial.error_message,
                },
                _ => Delivered::default(),
            },
        )
    }
}
