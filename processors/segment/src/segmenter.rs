//! The segmenter task: open segments per tenant, flushed on deadline, size or shutdown.

use std::collections::HashMap;
use std::sync::Arc;

use flamepipe_core::component::{Ack, Batch, BoxFuture, BuildContext, Output, Processor};
use flamepipe_core::telemetry::{CounterFamily, HistogramFamily, LabelPairs, component, short_seconds};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::debug;

use crate::config::Config;

pub struct Segmenter {
    config: Config,
    id: Arc<str>,
    metrics: Arc<SegmentMetrics>,
}

/// The processor's own metrics: how long a flush takes to be durable, and what it carried.
struct SegmentMetrics {
    labels: LabelPairs,
    flush_seconds: HistogramFamily,
    flushed_profiles: CounterFamily,
}

impl SegmentMetrics {
    fn new(ctx: &BuildContext) -> Self {
        SegmentMetrics {
            labels: component("processor", &ctx.id),
            flush_seconds: ctx.telemetry.metric_with(
                "processor_segment_flush_duration_seconds",
                "Time from a segment flush starting to its objects being durably written",
                short_seconds,
            ),
            flushed_profiles: ctx.telemetry.metric(
                "processor_segment_flushed_profiles",
                "Profiles handed on by segment flushes",
            ),
        }
    }

    fn flushed(&self, seconds: f64, profiles: u64) {
        self.flush_seconds.get_or_create(&self.labels).observe(seconds);
        self.flushed_profiles.get_or_create(&self.labels).inc_by(profiles);
    }
}

struct OpenSegment {
    batch: Batch,
    bytes: usize,
    deadline: Instant,
}

impl Segmenter {
    pub fn new(config: Config, ctx: &BuildContext) -> Self {
        Segmenter {
            config,
            id: Arc::clone(&ctx.id),
            metrics: Arc::new(SegmentMetrics::new(ctx)),
        }
    }

    async fn run_loop(self, mut input: mpsc::Receiver<Batch>, output: Output) {
        let mut open: HashMap<Arc<str>, OpenSegment> = HashMap::new();
        loop {
            let next_deadline = open.values().map(|s| s.deadline).min();
            tokio::select! {
                received = input.recv() => {
                    let Some(batch) = received else { break };
                    let tenant = Arc::clone(&batch.tenant);
                    let segment = open.entry(Arc::clone(&tenant)).or_insert_with(|| OpenSegment {
                        batch: Batch::new(Arc::clone(&tenant), Vec::new()),
                        bytes: 0,
                        deadline: Instant::now() + self.config.flush_interval.0,
                    });
                    segment.bytes += batch.approx_bytes();
                    segment.batch.profiles.extend(batch.profiles);
                    segment.batch.acks.extend(batch.acks);
                    if segment.bytes >= self.config.max_bytes.as_usize()
                        && let Some(segment) = open.remove(&tenant)
                    {
                        self.flush(segment, &output).await;
                    }
                }
                () = sleep_until(next_deadline) => {
                    let now = Instant::now();
                    let due: Vec<Arc<str>> =
                        open.iter().filter(|(_, s)| s.deadline <= now).map(|(t, _)| Arc::clone(t)).collect();
                    for tenant in due {
                        if let Some(segment) = open.remove(&tenant) {
                            self.flush(segment, &output).await;
                        }
                    }
                }
            }
        }
        for (_, segment) in open.drain() {
            self.flush(segment, &output).await;
        }
        debug!(component = %self.id, "segment processor drained");
    }

    async fn flush(&self, segment: OpenSegment, output: &Output) {
        let mut batch = segment.batch;
        let profiles = batch.profiles.len() as u64;
        // An ack share of our own tells us when the exporter made the segment durable.
        let (ack, waiter) = Ack::new();
        batch.acks.push(ack);
        let started = std::time::Instant::now();
        let metrics = Arc::clone(&self.metrics);
        tokio::spawn(async move {
            if let Ok(Ok(())) = waiter.await {
                metrics.flushed(started.elapsed().as_secs_f64(), profiles);
            }
        });
        output.send(batch).await;
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

impl Processor for Segmenter {
    fn run(self: Box<Self>, input: mpsc::Receiver<Batch>, output: Output) -> BoxFuture {
        Box::pin(self.run_loop(input, output))
    }
}
