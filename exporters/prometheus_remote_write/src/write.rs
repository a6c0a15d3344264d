//! The exporter task: gathers points into requests (`max_samples_per_send`,
//! `batch_send_deadline`), encodes each as a snappy-compressed `WriteRequest`, and hands
//! them to the shared exporter helper (queue, retries, timeout) for delivery.
//!
//! Which answers mean what (docs/metrics.md has the table):
//!
//! - 2xx: stored.
//! - 5xx, 429 and connection failures: retried, after `Retry-After` when given.
//! - an error saying a sample is out of order, out of bounds, too old or a duplicate, with
//!   whatever status (Prometheus 2.42 uses 500 for a sample outside its out-of-order window,
//!   400 for one out of order; Mimir 400): Prometheus rejects (and rolls back) the whole
//!   request for one such sample, so the request is split in halves until the refused series
//!   are found; they are dropped and counted, the rest is stored. Sending again what was
//!   stored is harmless: a sample repeated with the same value is accepted.
//! - any other 4xx: permanent, the request is dropped and counted as failed.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use flamepipe_core::component::{BoxFuture, BuildContext, Exporter, Payload};
use flamepipe_core::exporter_helper::{self, Deliver, Delivered, ExportError};
use flamepipe_core::metric::{MetricPoint, MetricsBatch};
use flamepipe_core::tenant::TENANT_HEADER;
use prost::Message;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::{Auth, Config};
use crate::proto::{Label, Sample, TimeSeries, WriteRequest};

pub struct RemoteWriter {
    config: Config,
    ctx: BuildContext,
    client: reqwest::Client,
    headers: HeaderMap,
}

impl RemoteWriter {
    pub fn new(config: Config, ctx: &BuildContext) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout.0)
            .user_agent(concat!("flamepipe/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        let mut headers = HeaderMap::new();
        headers.insert("content-encoding", HeaderValue::from_static("snappy"));
        headers.insert("content-type", HeaderValue::from_static("application/x-protobuf"));
        headers.insert("x-prometheus-remote-write-version", HeaderValue::from_static("0.1.0"));
        for (name, value) in &config.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| format!("header {name:?}: {e}"))?;
            let value = HeaderValue::from_str(value).map_err(|e| format!("header {name:?}: {e}"))?;
            headers.insert(name, value);
        }
        Ok(RemoteWriter {
            config,
            ctx: ctx.clone(),
            client,
            headers,
        })
    }
}

impl Exporter<MetricsBatch> for RemoteWriter {
    fn run(self: Box<Self>, input: mpsc::Receiver<MetricsBatch>) -> BoxFuture {
        Box::pin(async move {
            let (tx, batched) = mpsc::channel(1);
            let gather = tokio::spawn(gather(
                input,
                tx,
                self.config.max_samples_per_send,
                self.config.batch_send_deadline.0,
            ));
            let settings = self.config.helper_settings();
            let post = Post {
                endpoint: self.config.endpoint.clone(),
                client: self.client,
                headers: self.headers,
                auth: self.config.auth.clone(),
            };
            exporter_helper::run(&self.ctx, settings, post, batched, std::convert::identity).await;
            let _ = gather.await;
        })
    }
}

/// Gathers points per tenant into requests of at most `max` points, each sent once full or
/// `deadline` after its first point arrived; what is left goes when the input closes.
async fn gather(
    mut input: mpsc::Receiver<MetricsBatch>,
    out: mpsc::Sender<MetricsBatch>,
    max: usize,
    deadline: Duration,
) {
    let mut open: Vec<(MetricsBatch, Instant)> = Vec::new();
    loop {
        let due = open.iter().map(|(_, since)| *since + deadline).min();
        tokio::select! {
            batch = input.recv() => {
                let Some(mut batch) = batch else { break };
                let at = match open.iter().position(|(b, _)| b.tenant == batch.tenant) {
                    Some(i) => i,
                    None => {
                        open.push((MetricsBatch::new(batch.tenant.clone(), Vec::new()), Instant::now()));
                        open.len() - 1
                    }
                };
                let gathering = &mut open[at].0;
                gathering.points.append(&mut batch.points);
                gathering.acks.append(&mut batch.acks);
                while gathering.points.len() >= max {
                    let rest = gathering.points.split_off(max);
                    let full = std::mem::replace(&mut gathering.points, rest);
                    // Every part carries a share of the requests' acknowledgements.
                    let mut part = MetricsBatch::new(gathering.tenant.clone(), full);
                    part.acks = gathering.acks.clone();
                    if out.send(part).await.is_err() {
                        return;
                    }
                }
                if gathering.points.is_empty() {
                    let (done, _) = open.remove(at);
                    done.done();
                }
            }
            () = sleep_until(due), if due.is_some() => {
                let now = Instant::now();
                let (ready, waiting): (Vec<_>, Vec<_>) =
                    open.drain(..).partition(|(_, since)| *since + deadline <= now);
                open = waiting;
                for (batch, _) in ready {
                    if out.send(batch).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
    for (batch, _) in open {
        if out.send(batch).await.is_err() {
            return;
        }
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// The series of a batch's points, labels sorted (`__name__` among them), samples in the
/// order the points came, which is time order per series.
pub fn timeseries(points: &[MetricPoint]) -> Vec<TimeSeries> {
    let mut series: Vec<TimeSeries> = Vec::new();
    let mut index: std::collections::HashMap<(&str, &flamepipe_core::Labels), usize> = std::collections::HashMap::new();
    for point in points {
        let at = *index.entry((&point.name, &point.labels)).or_insert_with(|| {
            let mut labels: Vec<Label> = point
                .labels
                .iter()
                .map(|(name, value)| Label {
                    name: name.to_string(),
                    value: value.to_string(),
                })
                .collect();
            labels.push(Label {
                name: "__name__".to_string(),
                value: point.name.to_string(),
            });
            labels.sort_by(|a, b| a.name.cmp(&b.name));
            series.push(TimeSeries {
                labels,
                samples: Vec::new(),
            });
            series.len() - 1
        });
        series[at].samples.push(Sample {
            value: point.value,
            timestamp: point.timestamp_ms,
        });
    }
    series
}

/// The body of a request: the protobuf `WriteRequest`, snappy block format.
pub fn encode(series: &[TimeSeries]) -> Vec<u8> {
    let request = WriteRequest {
        timeseries: series.to_vec(),
    };
    snap::raw::Encoder::new()
        .compress_vec(&request.encode_to_vec())
        .unwrap_or_default()
}

struct Post {
    endpoint: String,
    client: reqwest::Client,
    headers: HeaderMap,
    auth: Option<Auth>,
}

/// What one HTTP request came to.
enum Answer {
    Stored,
    /// The receiving end refused samples as data (out of order, too old).
    Refused(String),
    Failed(ExportError),
}

impl Post {
    async fn post(&self, tenant: &str, series: &[TimeSeries]) -> Answer {
        let mut request = self
            .client
            .post(&self.endpoint)
            .headers(self.headers.clone())
            .body(encode(series));
        if !self.headers.contains_key(TENANT_HEADER)
            && let Ok(value) = HeaderValue::from_str(tenant)
        {
            request = request.header(TENANT_HEADER, value);
        }
        request = match &self.auth {
            Some(Auth::Basic { username, password }) => request.basic_auth(username, Some(password)),
            Some(Auth::BearerToken(token)) => request.bearer_auth(token),
            None => request,
        };
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return Answer::Failed(ExportError::retryable(format!("{}: {e}", self.endpoint))),
        };
        let status = response.status();
        if status.is_success() {
            return Answer::Stored;
        }
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response.text().await.unwrap_or_default();
        let message = format!("{} answered {status}: {}", self.endpoint, body.trim());
        // Receivers differ in the status of a refused sample: Prometheus 2.42 answers 500 for
        // a sample outside its out-of-order window (400 for one out of order within a
        // series), Mimir 400. The body decides, whatever the status.
        if is_refused_sample(&body) {
            Answer::Refused(body.trim().to_string())
        } else if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            Answer::Failed(ExportError::Retryable { message, retry_after })
        } else {
            Answer::Failed(ExportError::Permanent(message))
        }
    }

    /// Sends `series`; when the receiving end refuses samples, halves the request until the
    /// refused series are alone, and counts their samples as refused.
    fn send<'a>(
        &'a self,
        tenant: &'a str,
        series: &'a [TimeSeries],
    ) -> Pin<Box<dyn Future<Output = Result<Delivered, ExportError>> + Send + 'a>> {
        Box::pin(async move {
            match self.post(tenant, series).await {
                Answer::Stored => Ok(Delivered::default()),
                Answer::Failed(e) => Err(e),
                Answer::Refused(reason) if series.len() <= 1 => Ok(Delivered {
                    refused: series.iter().map(|s| s.samples.len()).sum(),
                    reason,
                }),
                Answer::Refused(_) => {
                    let (a, b) = series.split_at(series.len() / 2);
                    let first = self.send(tenant, a).await?;
                    let second = self.send(tenant, b).await?;
                    Ok(Delivered {
                        refused: first.refused + second.refused,
                        reason: if first.reason.is_empty() {
                            second.reason
                        } else {
                            first.reason
                        },
                    })
                }
            }
        })
    }
}

/// Whether an error's body says samples were refused as data rather than the request being
/// malformed or the receiver failing: Prometheus' and Mimir's wordings.
fn is_refused_sample(body: &str) -> bool {
    let body = body.to_ascii_lowercase();
    [
        "out of order",
        "out-of-order",
        "out of bounds",
        "too old",
        "too-old",
        "duplicate sample",
    ]
    .iter()
    .any(|needle| body.contains(needle))
}

impl Deliver<MetricsBatch> for Post {
    async fn deliver(&self, batch: &MetricsBatch) -> Result<Delivered, ExportError> {
        if batch.points.is_empty() {
            return Ok(Delivered::default());
        }
        let series = timeseries(&batch.points);
        self.send(&batch.tenant, &series).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use flamepipe_core::Labels;

    use super::*;

    fn point(name: &str, service: &str, t: i64, v: f64) -> MetricPoint {
        MetricPoint {
            name: Arc::from(name),
            labels: Labels::from_iter([("service_name", service), ("Zone", "a")]),
            start_ms: 0,
            timestamp_ms: t,
            value: v,
        }
    }

    #[test]
    fn series_have_sorted_labels_and_samples_in_order() {
        let series = timeseries(&[
            point("x_total", "a", 1, 1.0),
            point("x_total", "b", 1, 5.0),
            point("x_total", "a", 2, 3.0),
        ]);
        assert_eq!(series.len(), 2);
        let names: Vec<_> = series[0].labels.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(
            names,
            ["Zone", "__name__", "service_name"],
            "sorted by bytes, as Prometheus wants"
        );
        assert_eq!(
            series[0].samples,
            [
                Sample {
                    value: 1.0,
                    timestamp: 1
                },
                Sample {
                    value: 3.0,
                    timestamp: 2
                }
            ]
        );
        let body = encode(&series);
        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        assert_eq!(WriteRequest::decode(raw.as_slice()).unwrap().timeseries, series);
    }

    #[test]
    fn refusals_are_told_from_malformed_requests() {
        assert!(is_refused_sample("out of order sample"));
        assert!(is_refused_sample("too old sample"));
        assert!(is_refused_sample("duplicate sample for timestamp"));
        assert!(is_refused_sample("err-mimir-sample-out-of-order"));
        assert!(!is_refused_sample("snappy: corrupt input"));
    }

    #[tokio::test]
    async fn gathering_cuts_requests_at_max_samples_and_sends_the_rest_after_the_deadline() {
        let (tx, input) = mpsc::channel(8);
        let (out, mut batched) = mpsc::channel(8);
        let task = tokio::spawn(gather(input, out, 2, Duration::from_millis(50)));
        let points = (0..5).map(|i| point("x_total", "a", i, i as f64)).collect();
        tx.send(MetricsBatch::new("t", points)).await.unwrap();
        let sizes: Vec<usize> = [batched.recv().await.unwrap(), batched.recv().await.unwrap()]
            .iter()
            .map(|b| b.points.len())
            .collect();
        assert_eq!(sizes, [2, 2]);
        let started = Instant::now();
        let last = batched.recv().await.unwrap();
        assert_eq!(last.points.len(), 1);
        assert!(
            started.elapsed() >= Duration::from_millis(30),
            "the rest waits for the deadline"
        );
        drop(tx);
        task.await.unwrap();
    }
}
