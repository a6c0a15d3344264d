//! The compactor's metrics, registered when it is built: jobs by outcome, blocks and bytes
//! merged, copies dropped, how long jobs and first compactions take, deletions, live blocks.

use flamepipe_core::component::BuildContext;
use flamepipe_core::telemetry::{
    CounterFamily, GaugeFamily, HistogramFamily, LabelPairs, component, long_seconds, with,
};

pub struct CompactorMetrics {
    labels: LabelPairs,
    jobs: CounterFamily,
    blocks: CounterFamily,
    bytes: CounterFamily,
    copies: CounterFamily,
    job_seconds: HistogramFamily,
    first_compaction_seconds: HistogramFamily,
    deleted: CounterFamily,
    live_blocks: GaugeFamily,
}

impl CompactorMetrics {
    pub fn new(ctx: &BuildContext) -> Self {
        let t = &ctx.telemetry;
        CompactorMetrics {
            labels: component("compactor", &ctx.id),
            jobs: t.metric(
                "compactor_jobs",
                "Compaction jobs by outcome: committed, fenced (another compactor took the job or its inputs, or the lease ran out), failed",
            ),
            blocks: t.metric(
                "compactor_blocks",
                "Blocks merged by committed jobs (direction input) and written by them (output)",
            ),
            bytes: t.metric(
                "compactor_bytes",
                "Bytes of the blocks merged (input) and written (output) by committed jobs",
            ),
            copies: t.metric(
                "compactor_copies",
                "Profiles dropped by compaction as exact copies of another (same series, time and content)",
            ),
            job_seconds: t.metric_with("compactor_job_seconds", "Time from a job's claim to its commit", long_seconds),
            first_compaction_seconds: t.metric_with(
                "compactor_first_compaction_seconds",
                "Time from a segment's write to the commit of the job that first compacted it",
                long_seconds,
            ),
            deleted: t.metric(
                "compactor_deleted_blocks",
                "Block objects deleted, by why: compacted (retired inputs past the grace period), retention, orphan (outputs no manifest lists)",
            ),
            live_blocks: t.metric(
                "compactor_live_blocks",
                "Live blocks of the store by level, after the compactor's last round",
            ),
        }
    }

    pub fn job(&self, outcome: &str) {
        self.jobs.get_or_create(&with(&self.labels, "outcome", outcome)).inc();
    }

    /// A committed job: blocks and bytes in and out, copies dropped, and how long it took.
    pub fn committed(&self, blocks: (u64, u64), bytes: (u64, u64), copies: u64, seconds: f64) {
        for (direction, n, b) in [("input", blocks.0, bytes.0), ("output", blocks.1, bytes.1)] {
            let labels = with(&self.labels, "direction", direction);
            self.blocks.get_or_create(&labels).inc_by(n);
            self.bytes.get_or_create(&labels).inc_by(b);
        }
        self.copies.get_or_create(&self.labels).inc_by(copies);
        self.job_seconds.get_or_create(&self.labels).observe(seconds);
    }

    pub fn first_compaction(&self, seconds: f64) {
        self.first_compaction_seconds
            .get_or_create(&self.labels)
            .observe(seconds);
    }

    pub fn deleted(&self, why: &str, n: u64) {
        self.deleted.get_or_create(&with(&self.labels, "why", why)).inc_by(n);
    }

    pub fn live_blocks(&self, level: u32, n: usize) {
        self.live_blocks
            .get_or_create(&with(&self.labels, "level", &level.to_string()))
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
}
