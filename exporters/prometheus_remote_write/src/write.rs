//! The exporter task: gathers points into requests (`max_samples_per_send`,
//! `batch_send_deadline`), encodes each (`encode`), and hands them to the shared exporter
//! helper (queue, retries, timeout) for delivery.
//!
//! Which answers mean what (docs/metrics.md has the table):
//!
//! - 2xx: stored. For remote write 2.0, as many samples as `X-Prometheus-Remote-Write-
//!   Samples-Written` says (the rest are counted as refused); a 2xx without that header
//!   comes from a receiver that does not speak 2.0 and stored nothing: a permanent error.
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
use flamepipe_core::exporter_helper::{self, Deliver, Delivered, ExportError, retry_after};
use flamepipe_core::metric::MetricsBatch;
use flamepipe_core::tenant::with_tenant;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::{Auth, Config};
use crate::encode::{ProtobufMessage, Series, encode, sample_count, series};

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
        let message = config.protobuf_message;
        headers.insert("content-encoding", HeaderValue::from_static("snappy"));
        headers.insert("content-type", HeaderValue::from_static(message.content_type()));
        headers.insert(
            "x-prometheus-remote-write-version",
            HeaderValue::from_static(message.version_header()),
        );
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
                message: self.config.protobuf_message,
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

struct Post {
    endpoint: String,
    client: reqwest::Client,
    headers: HeaderMap,
    auth: Option<Auth>,
    message: ProtobufMessage,
}

/// What one HTTP request came to.
enum Answer {
    /// Stored: all of it, or (remote write 2.0) as many samples as the receiver says.
    Stored {
        samples: Option<usize>,
    },
    /// The receiving end refused samples as data (out of order, too old).
    Refused(String),
    Failed(ExportError),
}

impl Post {
    async fn post(&self, tenant: &str, series: &[Series]) -> Answer {
        let request = self
            .client
            .post(&self.endpoint)
            .headers(with_tenant(&self.headers, tenant))
            .body(encode(series, self.message));
        let request = match &self.auth {
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
            return match self.message {
                ProtobufMessage::V1 => Answer::Stored { samples: None },
                ProtobufMessage::V2 => written(response.headers(), &self.endpoint),
            };
        }
        let retry_after = retry_after(response.headers());
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
        series: &'a [Series],
    ) -> Pin<Box<dyn Future<Output = Result<Delivered, ExportError>> + Send + 'a>> {
        Box::pin(async move {
            match self.post(tenant, series).await {
                Answer::Stored { samples: None } => Ok(Delivered::default()),
                Answer::Stored { samples: Some(written) } => {
                    let refused = sample_count(series).saturating_sub(written);
                    Ok(Delivered {
                        refused,
                        reason: if refused > 0 {
                            format!("{} stored {written} of {} samples", self.endpoint, sample_count(series))
                        } else {
                            String::new()
                        },
                    })
                }
                Answer::Failed(e) => Err(e),
                Answer::Refused(reason) if series.len() <= 1 => Ok(Delivered {
                    refused: sample_count(series),
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

/// A 2xx to a remote write 2.0 request: how many samples the receiver says it stored. A
/// receiver that does not speak 2.0 answers 2xx without the header and stores nothing, so
/// that is an error, and a permanent one: the receiver will not learn 2.0 on a retry.
fn written(headers: &HeaderMap, endpoint: &str) -> Answer {
    match headers
        .get("x-prometheus-remote-write-samples-written")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        Some(samples) => Answer::Stored { samples: Some(samples) },
        None => Answer::Failed(ExportError::Permanent(format!(
            "{endpoint} answered 2xx to a remote write 2.0 request without \
             X-Prometheus-Remote-Write-Samples-Written: it does not speak remote write 2.0 and \
             stored nothing; set protobuf_message: prometheus.WriteRequest"
        ))),
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
        let series = series(&batch.points);
        self.send(&batch.tenant, &series).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use flamepipe_core::Labels;
    use flamepipe_core::component::BuildContext;
    use flamepipe_core::metric::MetricPoint;

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

    /// A receiver on 127.0.0.1 that answers every write with `status` and `headers`, and
    /// records the content types it was sent.
    async fn receiver(
        status: u16,
        headers: Vec<(&'static str, &'static str)>,
    ) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        let app = axum::Router::new().route(
            "/api/v1/write",
            axum::routing::post(move |request_headers: axum::http::HeaderMap| {
                let record = Arc::clone(&record);
                let headers = headers.clone();
                async move {
                    let content_type = request_headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    record.lock().unwrap().push(content_type);
                    let mut response = axum::http::Response::builder().status(status);
                    for (k, v) in headers {
                        response = response.header(k, v);
                    }
                    response.body(axum::body::Body::empty()).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{address}/api/v1/write"), seen)
    }

    fn post(endpoint: &str, message: ProtobufMessage) -> Post {
        let config = Config {
            endpoint: endpoint.to_string(),
            protobuf_message: message,
            ..Config::default()
        };
        let ctx = BuildContext {
            id: "prometheus_remote_write".into(),
            telemetry: Arc::new(flamepipe_core::telemetry::Telemetry::new()),
            stores: flamepipe_core::store::StoreRegistry::default(),
            shutdown: tokio_util::sync::CancellationToken::new(),
        };
        let writer = RemoteWriter::new(config, &ctx).unwrap();
        Post {
            endpoint: endpoint.to_string(),
            client: writer.client,
            headers: writer.headers,
            auth: None,
            message,
        }
    }

    #[tokio::test]
    async fn remote_write_2_counts_what_the_receiver_says_it_stored() {
        let (endpoint, seen) = receiver(204, vec![("x-prometheus-remote-write-samples-written", "1")]).await;
        let batch = MetricsBatch::new("t", vec![point("x_total", "a", 1, 1.0), point("x_total", "b", 1, 1.0)]);
        let delivered = post(&endpoint, ProtobufMessage::V2).deliver(&batch).await.unwrap();
        assert_eq!(delivered.refused, 1, "two sent, one written");
        assert_eq!(
            seen.lock().unwrap().as_slice(),
            ["application/x-protobuf;proto=io.prometheus.write.v2.Request"]
        );
    }

    #[tokio::test]
    async fn a_2xx_without_the_written_header_is_a_receiver_that_does_not_speak_2() {
        let (endpoint, _) = receiver(204, Vec::new()).await;
        let batch = MetricsBatch::new("t", vec![point("x_total", "a", 1, 1.0)]);
        let error = post(&endpoint, ProtobufMessage::V2).deliver(&batch).await.unwrap_err();
        assert!(
            matches!(&error, ExportError::Permanent(m) if m.contains("does not speak remote write 2.0")),
            "{error:?}"
        );
        // Remote write 1.0 needs no such header.
        let delivered = post(&endpoint, ProtobufMessage::V1).deliver(&batch).await.unwrap();
        assert_eq!(delivered.refused, 0);
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
