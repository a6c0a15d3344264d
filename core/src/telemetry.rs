//! flamepipe's own metrics, exposed on `/metrics` (OpenMetrics text) at
//! `service.telemetry.metrics_address`.
//!
//! Families are labelled by component id and named after the OpenTelemetry Collector's
//! (`otelcol_receiver_accepted_spans` -> our `flamepipe_receiver_accepted_profiles_total`)
//! so Collector dashboards translate directly. The families below are shared by the
//! components built before components registered their own; a component adds its own with
//! [`Telemetry::metric`] when it is built (the exporter helper, the `profile_metrics`
//! connector, the remote-write exporter).

use std::any::Any;
use std::collections::HashMap;
use std::sync::Mutex;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The label pairs of one series of a family.
pub type LabelPairs = Vec<(String, String)>;

/// A counter family labelled by [`LabelPairs`].
pub type CounterFamily = Family<LabelPairs, Counter>;
/// A gauge family labelled by [`LabelPairs`].
pub type GaugeFamily = Family<LabelPairs, Gauge>;

/// The label pairs naming one component: `{kind="id"}`.
pub fn component(kind: &str, id: &str) -> LabelPairs {
    vec![(kind.to_string(), id.to_string())]
}

pub struct Telemetry {
    registry: Mutex<Registry>,
    /// The metrics components registered, by name: a second instance of a component gets
    /// the family the first registered.
    owned: Mutex<HashMap<String, Box<dyn Any + Send + Sync>>>,
    accepted_profiles: Family<LabelPairs, Counter>,
    accepted_bytes: Family<LabelPairs, Counter>,
    refused_requests: Family<LabelPairs, Counter>,
    flush_seconds: Family<LabelPairs, Histogram>,
    flushed_profiles: Family<LabelPairs, Counter>,
    written_bytes: Family<LabelPairs, Counter>,
    written_blocks: Family<LabelPairs, Counter>,
    failed_writes: Family<LabelPairs, Counter>,
    query_block_reads: Counter,
    query_read_bytes: Counter,
    queries: Family<LabelPairs, Counter>,
    query_skipped_blocks: Family<LabelPairs, Counter>,
    dedup_profiles: Family<LabelPairs, Counter>,
    dedup_forgotten: Family<LabelPairs, Counter>,
    dedup_window: Family<LabelPairs, Gauge>,
    store_requests: Family<LabelPairs, Counter>,
    store_retries: Family<LabelPairs, Counter>,
    store_bytes: Family<LabelPairs, Counter>,
    compactor_jobs: Family<LabelPairs, Counter>,
    compactor_blocks: Family<LabelPairs, Counter>,
    compactor_bytes: Family<LabelPairs, Counter>,
    compactor_copies: Family<LabelPairs, Counter>,
    compactor_job_seconds: Family<LabelPairs, Histogram>,
    compactor_first_compaction_seconds: Family<LabelPairs, Histogram>,
    compactor_deleted: Family<LabelPairs, Counter>,
    compactor_live_blocks: Family<LabelPairs, Gauge>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Telemetry")
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("flamepipe");
        let accepted_profiles = Family::<LabelPairs, Counter>::default();
        let accepted_bytes = Family::<LabelPairs, Counter>::default();
        let refused_requests = Family::<LabelPairs, Counter>::default();
        let flush_seconds = Family::<LabelPairs, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.001, 2.0, 16))) as fn() -> Histogram,
        );
        let flushed_profiles = Family::<LabelPairs, Counter>::default();
        let written_bytes = Family::<LabelPairs, Counter>::default();
        let written_blocks = Family::<LabelPairs, Counter>::default();
        let failed_writes = Family::<LabelPairs, Counter>::default();
        let query_block_reads = Counter::default();
        let query_read_bytes = Counter::default();
        let queries = Family::<LabelPairs, Counter>::default();
        let query_skipped_blocks = Family::<LabelPairs, Counter>::default();
        let dedup_profiles = Family::<LabelPairs, Counter>::default();
        let dedup_forgotten = Family::<LabelPairs, Counter>::default();
        let dedup_window = Family::<LabelPairs, Gauge>::default();
        let store_requests = Family::<LabelPairs, Counter>::default();
        let store_retries = Family::<LabelPairs, Counter>::default();
        let store_bytes = Family::<LabelPairs, Counter>::default();
        let seconds = || {
            Family::<LabelPairs, Histogram>::new_with_constructor(
                (|| Histogram::new(exponential_buckets(0.01, 2.0, 20))) as fn() -> Histogram,
            )
        };
        let compactor_jobs = Family::<LabelPairs, Counter>::default();
        let compactor_blocks = Family::<LabelPairs, Counter>::default();
        let compactor_bytes = Family::<LabelPairs, Counter>::default();
        let compactor_copies = Family::<LabelPairs, Counter>::default();
        let compactor_job_seconds = seconds();
        let compactor_first_compaction_seconds = seconds();
        let compactor_deleted = Family::<LabelPairs, Counter>::default();
        let compactor_live_blocks = Family::<LabelPairs, Gauge>::default();
        registry.register(
            "compactor_jobs",
            "Compaction jobs by outcome: committed, fenced (another compactor took the job or its inputs, or the lease ran out), failed",
            compactor_jobs.clone(),
        );
        registry.register(
            "compactor_blocks",
            "Blocks merged by committed jobs (direction input) and written by them (output)",
            compactor_blocks.clone(),
        );
        registry.register(
            "compactor_bytes",
            "Bytes of the blocks merged (input) and written (output) by committed jobs",
            compactor_bytes.clone(),
        );
        registry.register(
            "compactor_copies",
            "Profiles dropped by compaction as exact copies of another (same series, time and content)",
            compactor_copies.clone(),
        );
        registry.register(
            "compactor_job_seconds",
            "Time from a job's claim to its commit",
            compactor_job_seconds.clone(),
        );
        registry.register(
            "compactor_first_compaction_seconds",
            "Time from a segment's write to the commit of the job that first compacted it",
            compactor_first_compaction_seconds.clone(),
        );
        registry.register(
            "compactor_deleted_blocks",
            "Block objects deleted, by why: compacted (retired inputs past the grace period), retention, orphan (outputs no manifest lists)",
            compactor_deleted.clone(),
        );
        registry.register(
            "compactor_live_blocks",
            "Live blocks of the store by level, after the compactor's last round",
            compactor_live_blocks.clone(),
        );
        registry.register(
            "store_requests",
            "Object store requests by store, operation (get, head, put, list, delete, copy) and outcome (ok, not_found, already_exists, precondition, timeout, error); retries count as requests",
            store_requests.clone(),
        );
        registry.register(
            "store_retries",
            "Object store requests retried after a transient failure, by store and operation",
            store_retries.clone(),
        );
        registry.register(
            "store_bytes",
            "Bytes read from and written to object stores, by store and direction (read, written)",
            store_bytes.clone(),
        );
        registry.register(
            "receiver_accepted_profiles",
            "Profiles accepted by a receiver (one per sample type)",
            accepted_profiles.clone(),
        );
        registry.register(
            "receiver_accepted_bytes",
            "Request body bytes accepted by a receiver, as sent",
            accepted_bytes.clone(),
        );
        registry.register(
            "receiver_refused_requests",
            "Requests a receiver refused, by reason",
            refused_requests.clone(),
        );
        registry.register(
            "processor_segment_flush_duration_seconds",
            "Time from a segment flush starting to its objects being durably written",
            flush_seconds.clone(),
        );
        registry.register(
            "processor_segment_flushed_profiles",
            "Profiles handed on by segment flushes",
            flushed_profiles.clone(),
        );
        registry.register(
            "exporter_written_bytes",
            "Bytes written to object storage",
            written_bytes.clone(),
        );
        registry.register(
            "exporter_written_blocks",
            "Block objects written",
            written_blocks.clone(),
        );
        registry.register(
            "exporter_failed_writes",
            "Block writes that failed",
            failed_writes.clone(),
        );
        registry.register(
            "query_block_reads",
            "Ranged reads of block sections (footers, indexes, symbols, samples) made by queries",
            query_block_reads.clone(),
        );
        registry.register(
            "query_read_bytes",
            "Bytes of block sections read by queries",
            query_read_bytes.clone(),
        );
        registry.register(
            "query_requests",
            "Queries answered, by API method and outcome (ok, invalid, canceled, error)",
            queries.clone(),
        );
        registry.register(
            "query_skipped_blocks",
            "Blocks (or some of their datasets) a query skipped because they cannot be read, by reason (checksum, corrupt, bad_magic, unsupported_version, missing)",
            query_skipped_blocks.clone(),
        );
        registry.register(
            "processor_dedup_profiles",
            "Profiles the dedup processor saw, by outcome: passed (new), duplicate (dropped: it repeats one already passed), shifted (passed with its timestamp moved to stay apart from a distinct profile; also counted as passed), crowded (passed unshifted, too many collisions)",
            dedup_profiles.clone(),
        );
        registry.register(
            "processor_dedup_forgotten",
            "Profiles the dedup window forgot: expired (older than the window) or evicted (the window was full)",
            dedup_forgotten.clone(),
        );
        registry.register(
            "processor_dedup_window_entries",
            "Profiles the dedup window remembers now",
            dedup_window.clone(),
        );
        Telemetry {
            registry: Mutex::new(registry),
            owned: Mutex::new(HashMap::new()),
            accepted_profiles,
            accepted_bytes,
            refused_requests,
            flush_seconds,
            flushed_profiles,
            written_bytes,
            written_blocks,
            failed_writes,
            query_block_reads,
            query_read_bytes,
            queries,
            query_skipped_blocks,
            dedup_profiles,
            dedup_forgotten,
            dedup_window,
            store_requests,
            store_retries,
            store_bytes,
            compactor_jobs,
            compactor_blocks,
            compactor_bytes,
            compactor_copies,
            compactor_job_seconds,
            compactor_first_compaction_seconds,
            compactor_deleted,
            compactor_live_blocks,
        }
    }

    pub fn compactor_job(&self, compactor: &str, outcome: &str) {
        let mut labels = component("compactor", compactor);
        labels.push(("outcome".to_string(), outcome.to_string()));
        self.compactor_jobs.get_or_create(&labels).inc();
    }

    /// A committed job: blocks and bytes in and out, copies dropped, and how long it took.
    pub fn compactor_committed(
        &self,
        compactor: &str,
        blocks: (u64, u64),
        bytes: (u64, u64),
        copies: u64,
        seconds: f64,
    ) {
        for (direction, n, b) in [("input", blocks.0, bytes.0), ("output", blocks.1, bytes.1)] {
            let mut labels = component("compactor", compactor);
            labels.push(("direction".to_string(), direction.to_string()));
            self.compactor_blocks.get_or_create(&labels).inc_by(n);
            self.compactor_bytes.get_or_create(&labels).inc_by(b);
        }
        self.compactor_copies
            .get_or_create(&component("compactor", compactor))
            .inc_by(copies);
        self.compactor_job_seconds
            .get_or_create(&component("compactor", compactor))
            .observe(seconds);
    }

    pub fn compactor_first_compaction(&self, compactor: &str, seconds: f64) {
        self.compactor_first_compaction_seconds
            .get_or_create(&component("compactor", compactor))
            .observe(seconds);
    }

    pub fn compactor_deleted(&self, compactor: &str, why: &str, n: u64) {
        let mut labels = component("compactor", compactor);
        labels.push(("why".to_string(), why.to_string()));
        self.compactor_deleted.get_or_create(&labels).inc_by(n);
    }

    pub fn compactor_live_blocks(&self, compactor: &str, level: u32, n: usize) {
        let mut labels = component("compactor", compactor);
        labels.push(("level".to_string(), level.to_string()));
        self.compactor_live_blocks
            .get_or_create(&labels)
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn store_request(&self, store: &str, operation: &str, outcome: &str) {
        self.store_requests
            .get_or_create(&vec![
                ("store".to_string(), store.to_string()),
                ("operation".to_string(), operation.to_string()),
                ("outcome".to_string(), outcome.to_string()),
            ])
            .inc();
    }

    pub fn store_retry(&self, store: &str, operation: &str) {
        self.store_retries
            .get_or_create(&vec![
                ("store".to_string(), store.to_string()),
                ("operation".to_string(), operation.to_string()),
            ])
            .inc();
    }

    pub fn store_bytes(&self, store: &str, direction: &str, bytes: u64) {
        self.store_bytes
            .get_or_create(&vec![
                ("store".to_string(), store.to_string()),
                ("direction".to_string(), direction.to_string()),
            ])
            .inc_by(bytes);
    }

    pub fn dedup_profiles(&self, processor: &str, outcome: &str, n: u64) {
        let mut labels = component("processor", processor);
        labels.push(("outcome".to_string(), outcome.to_string()));
        self.dedup_profiles.get_or_create(&labels).inc_by(n);
    }

    pub fn dedup_forgotten(&self, processor: &str, why: &str, n: u64) {
        let mut labels = component("processor", processor);
        labels.push(("why".to_string(), why.to_string()));
        self.dedup_forgotten.get_or_create(&labels).inc_by(n);
    }

    pub fn dedup_window(&self, processor: &str, entries: usize) {
        self.dedup_window
            .get_or_create(&component("processor", processor))
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
    }

    /// A query skipped a block it cannot read.
    pub fn query_block_skipped(&self, reason: &str) {
        self.query_skipped_blocks
            .get_or_create(&vec![("reason".to_string(), reason.to_string())])
            .inc();
    }

    /// One ranged read of a block made by a query.
    pub fn query_block_read(&self, bytes: u64) {
        self.query_block_reads.inc();
        self.query_read_bytes.inc_by(bytes);
    }

    pub fn query_answered(&self, method: &str, outcome: &str) {
        self.queries
            .get_or_create(&vec![
                ("method".to_string(), method.to_string()),
                ("outcome".to_string(), outcome.to_string()),
            ])
            .inc();
    }

    pub fn accepted(&self, receiver: &str, profiles: u64, bytes: u64) {
        self.accepted_profiles
            .get_or_create(&component("receiver", receiver))
            .inc_by(profiles);
        self.accepted_bytes
            .get_or_create(&component("receiver", receiver))
            .inc_by(bytes);
    }

    pub fn refused(&self, receiver: &str, reason: &str) {
        let mut labels = component("receiver", receiver);
        labels.push(("reason".to_string(), reason.to_string()));
        self.refused_requests.get_or_create(&labels).inc();
    }

    pub fn segment_flushed(&self, processor: &str, seconds: f64, profiles: u64) {
        self.flush_seconds
            .get_or_create(&component("processor", processor))
            .observe(seconds);
        self.flushed_profiles
            .get_or_create(&component("processor", processor))
            .inc_by(profiles);
    }

    pub fn block_written(&self, exporter: &str, bytes: u64) {
        self.written_bytes
            .get_or_create(&component("exporter", exporter))
            .inc_by(bytes);
        self.written_blocks
            .get_or_create(&component("exporter", exporter))
            .inc();
    }

    pub fn write_failed(&self, exporter: &str) {
        self.failed_writes.get_or_create(&component("exporter", exporter)).inc();
    }

    /// A metric a component owns, registered under `flamepipe_<name>` the first time and
    /// shared by every later caller (several instances of one component type). Counters get
    /// `_total` appended in the exposition.
    ///
    /// Panics if `name` was registered before with another metric type: two components
    /// disagreeing on one name is a programming error.
    pub fn metric<M>(&self, name: &str, help: &str) -> M
    where
        M: prometheus_client::registry::Metric + Clone + Default,
    {
        self.metric_with(name, help, M::default)
    }

    /// [`Telemetry::metric`] for metrics without a default (histograms with buckets).
    pub fn metric_with<M>(&self, name: &str, help: &str, make: impl FnOnce() -> M) -> M
    where
        M: prometheus_client::registry::Metric + Clone,
    {
        let mut owned = self.owned.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = owned.get(name) {
            return existing
                .downcast_ref::<M>()
                .unwrap_or_else(|| panic!("metric {name} registered twice with different types"))
                .clone();
        }
        let metric = make();
        self.registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .register(name, help, metric.clone());
        owned.insert(name.to_string(), Box::new(metric.clone()));
        metric
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_counters_by_component() {
        let t = Telemetry::new();
        t.accepted("pyroscope", 2, 100);
        t.refused("pyroscope", "bad_gzip");
        let text = t.encode();
        assert!(
            text.contains("flamepipe_receiver_accepted_profiles_total{receiver=\"pyroscope\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("flamepipe_receiver_refused_requests_total{receiver=\"pyroscope\",reason=\"bad_gzip\"} 1")
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn a_metric_registered_twice_is_one_family() {
        let t = Telemetry::new();
        let a: CounterFamily = t.metric("widget_things", "Things");
        let b: CounterFamily = t.metric("widget_things", "Things");
        a.get_or_create(&component("widget", "w/1")).inc();
        b.get_or_create(&component("widget", "w/1")).inc();
        let text = t.encode();
        assert!(
            text.contains("flamepipe_widget_things_total{widget=\"w/1\"} 2"),
            "{text}"
        );
        assert_eq!(text.matches("# TYPE flamepipe_widget_things counter").count(), 1);
    }
}
