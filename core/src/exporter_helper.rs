//! The delivery machinery every exporter shares, after the OpenTelemetry Collector's
//! exporterhelper: a bounded `sending_queue` drained by `num_consumers` workers, a `timeout`
//! per attempt, and `retry_on_failure` with exponential backoff, jitter, a maximum elapsed
//! time and the receiving end's `Retry-After`.
//!
//! An exporter supplies only a [`Deliver`]: one attempt at sending one batch, and which of
//! its failures are permanent ([`ExportError`]). [`run`] does the rest and answers each
//! batch's acknowledgements: done once delivered, failed when it gave up. The queue holds
//! [`Request`]s: the batches themselves, or what an exporter makes of them on the way in
//! (the blocks exporter's keeps the encoded block, so a retry does not encode again).
//!
//! ```yaml
//! timeout: 5s
//! sending_queue: { queue_size: 1000, num_consumers: 4, when_full: drop_oldest }
//! retry_on_failure: { initial_interval: 5s, max_interval: 30s, max_elapsed_time: 5m }
//! ```
//!
//! What a full queue does is the exporter's choice ([`WhenFull`]): exporters whose batches
//! carry acknowledgements (profiles to blocks or OTLP) `block`, so back-pressure reaches the
//! senders, who get 429 and retry; the metrics exporters `drop_oldest`, counted, because a
//! cumulative counter's newer points carry everything the dropped ones did.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration as StdDuration, Instant};

use prometheus_client::metrics::gauge::Gauge;
use serde::Deserialize;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::component::{BuildContext, Payload, Signal};
use crate::config::{ConfigIssue, Duration};
use crate::telemetry::{CounterFamily, GaugeFamily, LabelPairs};

/// What one delivery attempt learned.
#[derive(Debug, Clone, PartialEq)]
pub enum ExportError {
    /// Worth another attempt (a 5xx, 429, a connection error, a timeout); `retry_after` is
    /// the wait the receiving end asked for, if it did.
    Retryable {
        message: String,
        retry_after: Option<StdDuration>,
    },
    /// Another attempt would fail the same way (a 4xx, a malformed request): give up now.
    Permanent(String),
}

impl ExportError {
    pub fn retryable(message: impl Into<String>) -> Self {
        ExportError::Retryable {
            message: message.into(),
            retry_after: None,
        }
    }
}

/// The wait an HTTP answer's `Retry-After` asks for, when it gives seconds.
pub fn retry_after(headers: &axum::http::HeaderMap) -> Option<StdDuration> {
    headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(StdDuration::from_secs)
}

/// How a delivered batch fared: the items the receiving end refused as data (too old, out of
/// order) are dropped and counted, not retried; the rest were stored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Delivered {
    pub refused: usize,
    /// Why they were refused, as the receiving end said.
    pub reason: String,
}

/// A batch as the sending queue holds it.
pub trait Request: Send + Sync + 'static {
    /// The signal it carries, for the metrics' `signal` label.
    const SIGNAL: Signal;
    /// Profiles or metric points held.
    fn items(&self) -> usize;
    /// Delivered: acknowledge its requests.
    fn done(self);
    /// Given up on: fail its requests.
    fn fail(&self, error: &str);
}

impl<B: Payload + Sync> Request for B {
    const SIGNAL: Signal = B::SIGNAL;
    fn items(&self) -> usize {
        Payload::items(self)
    }
    fn done(self) {
        Payload::done(self)
    }
    fn fail(&self, error: &str) {
        Payload::fail(self, error)
    }
}

/// One attempt at sending one request: what an exporter implements.
pub trait Deliver<R: Request>: Send + Sync + 'static {
    fn deliver(&self, request: &R) -> impl Future<Output = Result<Delivered, ExportError>> + Send;
}

/// What a full sending queue does with the next batch.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Wait for room: back-pressure reaches the pipeline, then the senders.
    #[default]
    Block,
    /// Drop the oldest queued batch (failing its acknowledgements) and count it.
    DropOldest,
}

/// `sending_queue` as written: what is left out takes the exporter's default
/// ([`QueueConfig::or`]).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    pub queue_size: Option<usize>,
    pub num_consumers: Option<usize>,
    pub when_full: Option<WhenFull>,
}

impl QueueConfig {
    /// The settings, with the exporter's `defaults` for what the config leaves out.
    pub fn or(&self, defaults: QueueSettings) -> QueueSettings {
        QueueSettings {
            queue_size: self.queue_size.unwrap_or(defaults.queue_size),
            num_consumers: self.num_consumers.unwrap_or(defaults.num_consumers),
            when_full: self.when_full.unwrap_or(defaults.when_full),
        }
    }
}

/// `retry_on_failure` as written: what is left out takes the exporter's default
/// ([`RetryConfig::or`]).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    pub enabled: Option<bool>,
    pub initial_interval: Option<Duration>,
    pub randomization_factor: Option<f64>,
    pub multiplier: Option<f64>,
    pub max_interval: Option<Duration>,
    pub max_elapsed_time: Option<Duration>,
}

impl RetryConfig {
    /// The settings, with the exporter's `defaults` for what the config leaves out.
    pub fn or(&self, defaults: RetrySettings) -> RetrySettings {
        RetrySettings {
            enabled: self.enabled.unwrap_or(defaults.enabled),
            initial_interval: self.initial_interval.unwrap_or(defaults.initial_interval),
            randomization_factor: self.randomization_factor.unwrap_or(defaults.randomization_factor),
            multiplier: self.multiplier.unwrap_or(defaults.multiplier),
            max_interval: self.max_interval.unwrap_or(defaults.max_interval),
            max_elapsed_time: self.max_elapsed_time.unwrap_or(defaults.max_elapsed_time),
        }
    }
}

/// The sending queue's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct QueueSettings {
    /// Batches held waiting for a worker. Default 1000.
    pub queue_size: usize,
    /// Workers sending at once. Default 4.
    pub num_consumers: usize,
    /// `block` or `drop_oldest`; each exporter documents its default.
    pub when_full: WhenFull,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            queue_size: 1000,
            num_consumers: 4,
            when_full: WhenFull::Block,
        }
    }
}

impl QueueSettings {
    pub fn validate(&self, at: &str) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if self.queue_size == 0 {
            issues.push(ConfigIssue::new(format!("{at}.queue_size"), "must be at least 1"));
        }
        if self.num_consumers == 0 {
            issues.push(ConfigIssue::new(format!("{at}.num_consumers"), "must be at least 1"));
        }
        issues
    }
}

/// The retry settings; the default is the Collector's.
#[derive(Clone, Debug, PartialEq)]
pub struct RetrySettings {
    pub enabled: bool,
    /// The first wait. Default `5s`.
    pub initial_interval: Duration,
    /// Each wait is the nominal one times a random factor in `1 ± randomization_factor`.
    /// Default 0.5.
    pub randomization_factor: f64,
    /// The nominal wait grows by this factor after each attempt. Default 1.5.
    pub multiplier: f64,
    /// The longest nominal wait. Default `30s`.
    pub max_interval: Duration,
    /// Give up once this long has passed since the first attempt. Default `5m`.
    pub max_elapsed_time: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            enabled: true,
            initial_interval: Duration::from_secs(5),
            randomization_factor: 0.5,
            multiplier: 1.5,
            max_interval: Duration::from_secs(30),
            max_elapsed_time: Duration::from_secs(300),
        }
    }
}

impl RetrySettings {
    pub fn validate(&self, at: &str) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if !(0.0..1.0).contains(&self.randomization_factor) {
            issues.push(ConfigIssue::new(
                format!("{at}.randomization_factor"),
                "must be at least 0 and below 1",
            ));
        }
        if self.multiplier.is_nan() || self.multiplier < 1.0 {
            issues.push(ConfigIssue::new(format!("{at}.multiplier"), "must be at least 1"));
        }
        if self.initial_interval.is_zero() {
            issues.push(ConfigIssue::new(
                format!("{at}.initial_interval"),
                "must be greater than 0s",
            ));
        }
        if self.max_interval < self.initial_interval {
            issues.push(ConfigIssue::new(
                format!("{at}.max_interval"),
                "must be at least initial_interval",
            ));
        }
        issues
    }

    /// The wait before attempt `n + 1`, `nominal` being the un-jittered one.
    fn jittered(&self, nominal: StdDuration) -> StdDuration {
        let spread = self.randomization_factor * (2.0 * fastrand::f64() - 1.0);
        nominal.mul_f64(1.0 + spread)
    }
}

/// The three settings together, resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub timeout: Duration,
    pub queue: QueueSettings,
    pub retry: RetrySettings,
}

impl Settings {
    /// Checks of the resolved settings, with the YAML paths of their keys.
    pub fn validate(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if self.timeout.is_zero() {
            issues.push(ConfigIssue::new("timeout", "must be greater than 0s"));
        }
        issues.extend(self.queue.validate("sending_queue"));
        issues.extend(self.retry.validate("retry_on_failure"));
        issues
    }
}

/// The metrics every exporter reports, labelled `exporter` and `signal`.
#[derive(Clone)]
struct Metrics {
    labels: LabelPairs,
    sent: CounterFamily,
    failed: CounterFamily,
    retries: CounterFamily,
    dropped: CounterFamily,
    queue_size: GaugeFamily,
    queue_capacity: GaugeFamily,
}

impl Metrics {
    fn new<R: Request>(ctx: &BuildContext) -> Self {
        let t = &ctx.telemetry;
        Metrics {
            labels: vec![
                ("exporter".to_string(), ctx.id.to_string()),
                ("signal".to_string(), R::SIGNAL.name().to_string()),
            ],
            sent: t.metric(
                "exporter_sent_items",
                "Items (profiles, metric points) an exporter delivered",
            ),
            failed: t.metric(
                "exporter_send_failed_items",
                "Items an exporter gave up on: a permanent error, or retries past max_elapsed_time",
            ),
            retries: t.metric("exporter_retries", "Delivery attempts repeated after a retryable failure"),
            dropped: t.metric(
                "exporter_dropped_items",
                "Items dropped without delivery, by reason: queue_full (drop_oldest), refused (the receiving end refused them as data: too old, out of order)",
            ),
            queue_size: t.metric("exporter_queue_size", "Batches waiting in an exporter's sending queue"),
            queue_capacity: t.metric("exporter_queue_capacity", "The size of an exporter's sending queue, in batches"),
        }
    }

    fn with(&self, name: &str, value: &str) -> LabelPairs {
        let mut labels = self.labels.clone();
        labels.push((name.to_string(), value.to_string()));
        labels
    }

    fn queue(&self) -> Gauge {
        self.queue_size.get_or_create(&self.labels).clone()
    }
}

/// A bounded FIFO shared by the feeder and the workers.
struct Queue<B> {
    items: std::sync::Mutex<std::collections::VecDeque<B>>,
    capacity: usize,
    has_items: Notify,
    has_room: Notify,
    closed: AtomicBool,
}

impl<B> Queue<B> {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<B>> {
        self.items.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The oldest batch, waiting for one; `None` once the input closed and all were taken.
    async fn pop(&self) -> Option<B> {
        loop {
            let mut notified = pin!(self.has_items.notified());
            notified.as_mut().enable();
            if let Some(batch) = self.lock().pop_front() {
                self.has_room.notify_one();
                return Some(batch);
            }
            if self.closed.load(Ordering::Acquire) {
                return None;
            }
            notified.await;
        }
    }
}

/// Runs an exporter's delivery until its input closes and every queued batch is delivered or
/// given up on; `prepare` turns each batch into the request queued for it.
pub async fn run<B, R: Request, D: Deliver<R>>(
    ctx: &BuildContext,
    settings: Settings,
    deliver: D,
    mut input: mpsc::Receiver<B>,
    prepare: impl Fn(B) -> R,
) {
    let metrics = Metrics::new::<R>(ctx);
    metrics
        .queue_capacity
        .get_or_create(&metrics.labels)
        .set(settings.queue.queue_size as i64);
    let queue = Arc::new(Queue {
        items: std::sync::Mutex::new(std::collections::VecDeque::new()),
        capacity: settings.queue.queue_size,
        has_items: Notify::new(),
        has_room: Notify::new(),
        closed: AtomicBool::new(false),
    });
    let worker = Arc::new(Worker {
        id: Arc::clone(&ctx.id),
        settings: settings.clone(),
        deliver,
        metrics: metrics.clone(),
    });
    let mut workers = JoinSet::new();
    for _ in 0..settings.queue.num_consumers {
        let (queue, worker) = (Arc::clone(&queue), Arc::clone(&worker));
        workers.spawn(async move {
            while let Some(batch) = queue.pop().await {
                metrics_queue_len(&worker.metrics, &queue);
                worker.send(batch).await;
            }
        });
    }
    while let Some(batch) = input.recv().await {
        enqueue(&queue, prepare(batch), settings.queue.when_full, &worker.metrics).await;
        metrics_queue_len(&worker.metrics, &queue);
    }
    queue.closed.store(true, Ordering::Release);
    queue.has_items.notify_waiters();
    while workers.join_next().await.is_some() {}
    debug!(component = %ctx.id, "exporter drained");
}

fn metrics_queue_len<B>(metrics: &Metrics, queue: &Queue<B>) {
    metrics.queue().set(queue.lock().len() as i64);
}

async fn enqueue<R: Request>(queue: &Queue<R>, batch: R, when_full: WhenFull, metrics: &Metrics) {
    loop {
        let mut room = pin!(queue.has_room.notified());
        room.as_mut().enable();
        {
            let mut items = queue.lock();
            if items.len() < queue.capacity {
                items.push_back(batch);
                drop(items);
                queue.has_items.notify_one();
                return;
            }
            if when_full == WhenFull::DropOldest
                && let Some(oldest) = items.pop_front()
            {
                items.push_back(batch);
                drop(items);
                queue.has_items.notify_one();
                metrics
                    .dropped
                    .get_or_create(&metrics.with("reason", "queue_full"))
                    .inc_by(oldest.items() as u64);
                oldest.fail("dropped: the exporter's sending queue was full");
                return;
            }
        }
        room.await;
    }
}

struct Worker<D> {
    id: Arc<str>,
    settings: Settings,
    deliver: D,
    metrics: Metrics,
}

impl<D> Worker<D> {
    /// Delivers one batch with retries, then answers its acknowledgements.
    async fn send<R: Request>(&self, batch: R)
    where
        D: Deliver<R>,
    {
        let items = batch.items();
        let retry = &self.settings.retry;
        let started = Instant::now();
        let mut nominal = retry.initial_interval.0;
        loop {
            let attempt = match tokio::time::timeout(self.settings.timeout.0, self.deliver.deliver(&batch)).await {
                Ok(result) => result,
                Err(_) => Err(ExportError::retryable(format!(
                    "no answer within {} (timeout)",
                    self.settings.timeout
                ))),
            };
            let (message, retry_after) = match attempt {
                Ok(delivered) => {
                    if delivered.refused > 0 {
                        self.metrics
                            .dropped
                            .get_or_create(&self.metrics.with("reason", "refused"))
                            .inc_by(delivered.refused as u64);
                        warn!(component = %self.id, refused = delivered.refused, reason = %delivered.reason,
                            "the receiving end refused some items; they are dropped");
                    }
                    let stored = items.saturating_sub(delivered.refused) as u64;
                    self.metrics.sent.get_or_create(&self.metrics.labels).inc_by(stored);
                    return batch.done();
                }
                Err(ExportError::Permanent(message)) => return self.give_up(batch, &message),
                Err(ExportError::Retryable { message, retry_after }) => (message, retry_after),
            };
            let wait = retry_after.unwrap_or_else(|| retry.jittered(nominal));
            if !retry.enabled || started.elapsed() + wait > retry.max_elapsed_time.0 {
                let why = if retry.enabled {
                    format!("{message} (gave up after {:.1?})", started.elapsed())
                } else {
                    message
                };
                return self.give_up(batch, &why);
            }
            self.metrics.retries.get_or_create(&self.metrics.labels).inc();
            debug!(component = %self.id, error = %message, ?wait, "delivery failed; retrying");
            tokio::time::sleep(wait).await;
            nominal = nominal.mul_f64(retry.multiplier).min(retry.max_interval.0);
        }
    }

    fn give_up<R: Request>(&self, batch: R, error: &str) {
        self.metrics
            .failed
            .get_or_create(&self.metrics.labels)
            .inc_by(batch.items() as u64);
        warn!(component = %self.id, error, "delivery failed; giving up on the batch");
        batch.fail(error);
    }
}

#[cfg(test)]
mod tests {
    use std::convert::identity;
    use std::sync::Mutex;

    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::component::Ack;
    use crate::metric::MetricsBatch;
    use crate::store::StoreRegistry;
    use crate::telemetry::Telemetry;

    /// Answers each attempt from a script, then succeeds; records the batches it saw.
    struct Scripted {
        answers: Mutex<Vec<Result<Delivered, ExportError>>>,
        seen: Mutex<Vec<String>>,
        gate: Option<Arc<Notify>>,
    }

    impl Scripted {
        fn new(answers: Vec<Result<Delivered, ExportError>>) -> Self {
            Scripted {
                answers: Mutex::new(answers),
                seen: Mutex::new(Vec::new()),
                gate: None,
            }
        }
    }

    impl Deliver<MetricsBatch> for Arc<Scripted> {
        async fn deliver(&self, batch: &MetricsBatch) -> Result<Delivered, ExportError> {
            if let Some(gate) = &self.gate {
                gate.notified().await;
            }
            self.seen.lock().unwrap().push(batch.tenant.to_string());
            let mut answers = self.answers.lock().unwrap();
            if answers.is_empty() {
                Ok(Delivered::default())
            } else {
                answers.remove(0)
            }
        }
    }

    fn ctx() -> BuildContext {
        BuildContext {
            id: "test/exporter".into(),
            telemetry: Arc::new(Telemetry::new()),
            stores: StoreRegistry::new(Default::default()),
            shutdown: CancellationToken::new(),
        }
    }

    fn settings(when_full: WhenFull) -> Settings {
        Settings {
            timeout: Duration::from_secs(1),
            queue: QueueSettings {
                queue_size: 2,
                num_consumers: 1,
                when_full,
            },
            retry: RetrySettings {
                initial_interval: Duration::from_millis(1),
                max_interval: Duration::from_millis(5),
                max_elapsed_time: Duration::from_millis(500),
                ..RetrySettings::default()
            },
        }
    }

    fn batch(tenant: &str) -> (MetricsBatch, crate::component::AckWaiter) {
        let (ack, waiter) = Ack::new();
        let point = crate::metric::MetricPoint {
            name: "things_total".into(),
            labels: crate::Labels::new(),
            start_ms: 0,
            timestamp_ms: 1,
            value: 1.0,
        };
        let mut batch = MetricsBatch::new(tenant, vec![point]);
        batch.acks.push(ack);
        (batch, waiter)
    }

    #[test]
    fn settings_left_out_take_the_exporters_defaults() {
        let written = QueueConfig {
            queue_size: Some(3),
            ..QueueConfig::default()
        };
        let defaults = QueueSettings {
            queue_size: 1000,
            num_consumers: 1,
            when_full: WhenFull::DropOldest,
        };
        assert_eq!(
            written.or(defaults),
            QueueSettings {
                queue_size: 3,
                num_consumers: 1,
                when_full: WhenFull::DropOldest,
            }
        );
        let retry = RetryConfig {
            max_elapsed_time: Some(Duration::from_secs(1)),
            ..RetryConfig::default()
        }
        .or(RetrySettings::default());
        assert_eq!(retry.max_elapsed_time, Duration::from_secs(1));
        assert_eq!(retry.initial_interval, RetrySettings::default().initial_interval);
    }

    #[tokio::test]
    async fn retryable_failures_are_retried_then_delivered() {
        let ctx = ctx();
        let deliver = Arc::new(Scripted::new(vec![
            Err(ExportError::retryable("503")),
            Err(ExportError::retryable("connection refused")),
        ]));
        let (tx, rx) = mpsc::channel(4);
        let task = tokio::spawn({
            let (ctx, deliver) = (ctx.clone(), Arc::clone(&deliver));
            async move { run(&ctx, settings(WhenFull::Block), deliver, rx, identity).await }
        });
        let (b, waiter) = batch("a");
        tx.send(b).await.unwrap();
        assert_eq!(waiter.await.unwrap(), Ok(()));
        drop(tx);
        task.await.unwrap();
        assert_eq!(deliver.seen.lock().unwrap().len(), 3);
        let text = ctx.telemetry.encode();
        assert!(
            text.contains("flamepipe_exporter_retries_total{exporter=\"test/exporter\",signal=\"metrics\"} 2"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn permanent_failures_fail_the_batch_at_once() {
        let ctx = ctx();
        let deliver = Arc::new(Scripted::new(vec![Err(ExportError::Permanent("400 bad".into()))]));
        let (tx, rx) = mpsc::channel(4);
        let task = tokio::spawn({
            let (ctx, deliver) = (ctx.clone(), Arc::clone(&deliver));
            async move { run(&ctx, settings(WhenFull::Block), deliver, rx, identity).await }
        });
        let (b, waiter) = batch("a");
        tx.send(b).await.unwrap();
        assert_eq!(waiter.await.unwrap(), Err("400 bad".to_string()));
        drop(tx);
        task.await.unwrap();
        assert_eq!(
            deliver.seen.lock().unwrap().len(),
            1,
            "a permanent error is not retried"
        );
    }

    #[tokio::test]
    async fn retries_stop_after_max_elapsed_time() {
        let ctx = ctx();
        let deliver = Arc::new(Scripted::new(
            (0..10_000).map(|_| Err(ExportError::retryable("503"))).collect(),
        ));
        let (tx, rx) = mpsc::channel(4);
        let mut s = settings(WhenFull::Block);
        s.retry.max_elapsed_time = Duration::from_millis(50);
        let task = tokio::spawn({
            let (ctx, deliver) = (ctx.clone(), Arc::clone(&deliver));
            async move { run(&ctx, s, deliver, rx, identity).await }
        });
        let (b, waiter) = batch("a");
        tx.send(b).await.unwrap();
        let error = waiter.await.unwrap().unwrap_err();
        assert!(error.contains("gave up after"), "{error}");
        drop(tx);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn retry_after_is_the_wait_asked_for() {
        let ctx = ctx();
        let deliver = Arc::new(Scripted::new(vec![Err(ExportError::Retryable {
            message: "429".into(),
            retry_after: Some(StdDuration::from_millis(200)),
        })]));
        let (tx, rx) = mpsc::channel(4);
        let task = tokio::spawn({
            let (ctx, deliver) = (ctx.clone(), Arc::clone(&deliver));
            async move { run(&ctx, settings(WhenFull::Block), deliver, rx, identity).await }
        });
        let started = Instant::now();
        let (b, waiter) = batch("a");
        tx.send(b).await.unwrap();
        assert_eq!(waiter.await.unwrap(), Ok(()));
        assert!(started.elapsed() >= StdDuration::from_millis(200));
        drop(tx);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_full_drop_oldest_queue_drops_the_oldest_and_counts_it() {
        let ctx = ctx();
        let gate = Arc::new(Notify::new());
        let deliver = Arc::new(Scripted {
            gate: Some(Arc::clone(&gate)),
            ..Scripted::new(Vec::new())
        });
        let (tx, rx) = mpsc::channel(16);
        let task = tokio::spawn({
            let (ctx, deliver) = (ctx.clone(), Arc::clone(&deliver));
            async move { run(&ctx, settings(WhenFull::DropOldest), deliver, rx, identity).await }
        });
        // The one worker takes the first batch and waits at the gate; two fit the queue; the
        // fourth and fifth push out the oldest queued ones.
        let mut waiters = Vec::new();
        for name in ["first", "second", "third", "fourth", "fifth"] {
            let (b, waiter) = batch(name);
            tx.send(b).await.unwrap();
            waiters.push(waiter);
            tokio::time::sleep(StdDuration::from_millis(20)).await;
        }
        for _ in 0..3 {
            gate.notify_one();
            tokio::time::sleep(StdDuration::from_millis(20)).await;
        }
        let outcomes: Vec<bool> = futures::future::join_all(waiters)
            .await
            .into_iter()
            .map(|r| r.unwrap().is_ok())
            .collect();
        assert_eq!(outcomes, [true, false, false, true, true]);
        assert_eq!(*deliver.seen.lock().unwrap(), ["first", "fourth", "fifth"]);
        drop(tx);
        task.await.unwrap();
        let text = ctx.telemetry.encode();
        assert!(
            text.contains(
                "flamepipe_exporter_dropped_items_total{exporter=\"test/exporter\",signal=\"metrics\",reason=\"queue_full\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains("flamepipe_exporter_sent_items_total{exporter=\"test/exporter\",signal=\"metrics\"} 3"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_full_blocking_queue_holds_the_input_back() {
        let ctx = ctx();
        let gate = Arc::new(Notify::new());
        let deliver = Arc::new(Scripted {
            gate: Some(Arc::clone(&gate)),
            ..Scripted::new(Vec::new())
        });
        let (tx, rx) = mpsc::channel(1);
        let task = tokio::spawn({
            let (ctx, deliver) = (ctx.clone(), Arc::clone(&deliver));
            async move { run(&ctx, settings(WhenFull::Block), deliver, rx, identity).await }
        });
        let mut waiters = Vec::new();
        // One in the worker, two queued, one waiting for room in the feeder, one in the
        // channel: the sixth cannot be sent.
        for name in ["1", "2", "3", "4", "5"] {
            let (b, waiter) = batch(name);
            tx.send(b).await.unwrap();
            waiters.push(waiter);
            tokio::time::sleep(StdDuration::from_millis(20)).await;
        }
        let (b, waiter) = batch("6");
        assert!(tx.try_send(b).is_err(), "the input should be full");
        drop(waiter);
        for _ in 0..5 {
            gate.notify_one();
            tokio::time::sleep(StdDuration::from_millis(20)).await;
        }
        for w in waiters {
            assert_eq!(w.await.unwrap(), Ok(()));
        }
        drop(tx);
        task.await.unwrap();
    }
}
