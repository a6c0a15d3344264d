//! The query engine: plans which block datasets a query needs, reads them in parallel with a
//! bounded number in flight, merges what each yields, and reports progress and snapshots.
//!
//! A query runs in two phases. **Planning** lists the tenant's blocks and reads their footers
//! (cached: blocks never change) to find the datasets whose service, profile types and time
//! range can match. **Reading** fetches each candidate dataset's series index, picks the
//! matching profiles without touching their samples, and only then fetches the symbol and
//! sample sections, if the [`Accumulator`] needs them. Workers turn a dataset into a part
//! (a small flame tree, stack sums, series points); the driver merges parts one at a time, so
//! a snapshot is always the exact sum of the datasets merged so far (never a delta).
//!
//! Streams ([`QueryEngine::stream`]) report [`Event`]s through a channel of one slot:
//! snapshots are rendered only when the slot is free, so a slow client gets fewer snapshots,
//! never a growing queue. When the client goes away the channel closes, the driver returns
//! and dropping its task set aborts every read in flight.
//!
//! A damaged block (bad checksum, truncated, refused by the reader, gone) does not fail the
//! query: by default ([`UnreadableBlocks::Skip`]) the query answers from what it can read and
//! lists what it skipped in [`Diagnostics::skipped`]: a whole block when its footer cannot be
//! read, else the datasets whose sections cannot (a block's other datasets are checked on
//! their own and still count). Store errors (the store not answering) still fail the query,
//! since skipping would hide data that is there.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flamepipe_core::block::format::{BlockMeta, Dataset, SampleColumns};
use flamepipe_core::block::{BlockError, BlockReader, BlockRef, DatasetIndex, ManifestError, SectionKind, live_blocks};
use flamepipe_core::labels::{Labels, SERVICE_NAME, UNKNOWN_SERVICE};
use flamepipe_core::profile_type::ProfileType;
use flamepipe_core::selector::Selector;
use flamepipe_core::symbols::Symbols;
use flamepipe_core::telemetry::Telemetry;

use crate::metrics::QueryMetrics;
use futures::StreamExt;
use object_store::ObjectStore;
use object_store::path::Path;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// What to read: a tenant's series matching any of `selectors` (all series when empty) with
/// profiles timestamped in `start_ns..=end_ns`.
#[derive(Clone, Debug)]
pub struct Query {
    pub tenant: String,
    pub selectors: Vec<Selector>,
    pub start_ns: i64,
    pub end_ns: i64,
}

impl Query {
    fn overlaps(&self, min_ns: i64, max_ns: i64) -> bool {
        min_ns <= self.end_ns && max_ns >= self.start_ns
    }

    /// Whether a dataset may hold matching profiles, judged from the footer alone.
    fn may_match(&self, ds: &Dataset) -> bool {
        if !self.overlaps(ds.min_time_ns, ds.max_time_ns) {
            return false;
        }
        self.selectors.is_empty()
            || self.selectors.iter().any(|s| {
                let type_ok = s
                    .profile_type
                    .as_ref()
                    .is_none_or(|t| ds.profile_types.iter().any(|id| *id == t.id()));
                let service_ok = s
                    .matchers
                    .iter()
                    .filter(|m| m.name == SERVICE_NAME)
                    // Profiles without the label are stored under `unknown_service`, where a
                    // matcher sees the label as absent.
                    .all(|m| {
                        m.matches(Some(&ds.service_name)) || (ds.service_name == UNKNOWN_SERVICE && m.matches(None))
                    });
                type_ok && service_ok
            })
    }

    fn matches(&self, labels: &Labels, profile_type: &ProfileType) -> bool {
        self.selectors.is_empty() || self.selectors.iter().any(|s| s.matches(labels, profile_type))
    }

    /// The profiles of a dataset this query selects, by position in its index.
    pub fn select(&self, index: &DatasetIndex) -> Vec<usize> {
        let series: Vec<bool> = index.series.iter().map(|(l, t)| self.matches(l, t)).collect();
        let cols = &index.columns;
        (0..index.profile_count())
            .filter(|&i| {
                let ts = cols.profile_timestamp_ns[i];
                series[cols.profile_series[i] as usize] && ts >= self.start_ns && ts <= self.end_ns
            })
            .collect()
    }
}

/// The selected profiles' values summed per stack id of one dataset's symbols.
#[derive(Clone, Debug)]
pub struct StackSums {
    pub symbols: Arc<Symbols>,
    /// (stack id, summed value), non-zero sums only, by stack id. When the accumulator
    /// [keeps sample labels](Accumulator::keeps_sample_labels), only samples without labels.
    pub values: Vec<(u32, i64)>,
    /// (stack id, label set id, summed value) of samples with labels, when the accumulator
    /// keeps them; non-zero sums only, sorted. Empty otherwise.
    pub labelled: Vec<(u32, u32, i64)>,
    /// The largest sampling period among the selected profiles.
    pub period: i64,
}

/// What a worker hands an [`Accumulator`] for one dataset.
pub struct Selected<'a> {
    pub index: &'a DatasetIndex,
    /// Positions in `index` of the profiles the query selects (never empty).
    pub profiles: &'a [usize],
    /// Present when the accumulator [needs samples](Accumulator::needs_samples).
    pub stacks: Option<StackSums>,
}

/// One kind of query result, built up dataset by dataset.
pub trait Accumulator: Send + 'static {
    /// What a worker extracts from one dataset.
    type Part: Send + 'static;
    /// What workers need to extract parts (shared by all of them).
    type Spec: Send + Sync + 'static;
    /// A rendered (partial or final) result.
    type Output: Send + 'static;

    /// Whether parts need symbols and samples, or the series index is enough.
    fn needs_samples(&self) -> bool;
    /// Whether sample values are summed per (stack, sample labels) rather than per stack
    /// ([`StackSums::labelled`]): a pprof merge keeps labels, a flame graph does not need them.
    fn keeps_sample_labels(&self) -> bool {
        false
    }
    fn spec(&self) -> Self::Spec;
    /// Runs on a worker (a blocking thread when samples were decoded).
    fn extract(spec: &Self::Spec, selected: Selected<'_>) -> Self::Part;
    fn merge(&mut self, part: Self::Part);
    fn render(&self) -> Self::Output;
}

/// The query's reach, as the footers tell it. Plans are sent while footers are being read
/// (`complete: false`) and once more when planning is done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub blocks_total: u64,
    pub datasets_total: u64,
    /// Compressed bytes of every section the candidate datasets may need: an upper bound
    /// that [`Progress::bytes_total`] refines as index lookups rule datasets out.
    pub bytes_total: u64,
    pub complete: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub blocks_done: u64,
    pub blocks_total: u64,
    pub datasets_done: u64,
    pub datasets_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub profiles_merged: u64,
}

/// How a query went. Stage times other than `plan` and `render` add up the time every worker
/// spent in that stage, so with reads in parallel they can exceed `duration`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Diagnostics {
    pub blocks_read: u64,
    pub datasets_read: u64,
    pub bytes_read: u64,
    pub profiles_merged: u64,
    pub duration: Duration,
    pub stages: Vec<(&'static str, Duration)>,
    /// Blocks the query could not read (all or some of their datasets), once each.
    pub skipped: Vec<SkippedBlock>,
    /// The ids of the blocks whose profiles the answer holds, in plan order.
    pub blocks: Vec<String>,
}

/// A block a query skipped, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedBlock {
    /// The block's id (its ULID).
    pub id: String,
    /// Its object key.
    pub path: String,
    /// [`BlockError::reason`]: `checksum`, `corrupt`, `bad_magic`, `unsupported_version`, `missing`.
    pub reason: &'static str,
    pub message: String,
}

/// What a query does with a block it cannot read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UnreadableBlocks {
    /// Answer from the other blocks and report the skipped ones (the default).
    #[default]
    Skip,
    /// Fail the query, naming the block.
    Fail,
}

pub enum Event<O> {
    Plan(Plan),
    Snapshot(Progress, O),
    Result(O, Diagnostics),
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Block(#[from] BlockError),
    /// The tenant's manifest could not be read: which blocks are live is unknown.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("the query was canceled")]
    Canceled,
    #[error("flamepipe is shutting down")]
    ShuttingDown,
    #[error("query worker failed: {0}")]
    Worker(String),
}

#[derive(Clone, Copy, Debug)]
pub struct EngineOptions {
    /// Block reads (footers, or datasets) in flight per query.
    pub max_concurrent_reads: usize,
    /// Footers kept in memory.
    pub footer_cache_entries: usize,
    pub unreadable_blocks: UnreadableBlocks,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            max_concurrent_reads: 16,
            footer_cache_entries: 100_000,
            unreadable_blocks: UnreadableBlocks::Skip,
        }
    }
}

/// Damaged blocks remembered so that each is logged once, not once per query.
const WARNED_BLOCKS_MAX: usize = 10_000;

/// Runs queries over the blocks of one object store.
pub struct QueryEngine {
    store: Arc<dyn ObjectStore>,
    metrics: QueryMetrics,
    limits: EngineOptions,
    footers: Mutex<HashMap<Path, Arc<BlockMeta>>>,
    /// Damaged blocks already logged.
    warned: Mutex<HashSet<Path>>,
    /// Decodes at once (CPU-bound, so one per core): with more, every dataset of a query
    /// would finish at about the same time and the first snapshot would come late.
    decode_slots: Arc<Semaphore>,
    shutdown: CancellationToken,
}

/// One dataset to read.
struct Task {
    /// Position of its block in the query's plan.
    block: usize,
    reader: Arc<BlockReader>,
    dataset: usize,
    bytes: u64,
}

/// What a worker did besides its part.
#[derive(Default)]
struct TaskStats {
    reads: u64,
    bytes_read: u64,
    /// Planned bytes that turned out not to be needed.
    bytes_skipped: u64,
    profiles: u64,
    index: Duration,
    fetch: Duration,
    decode: Duration,
    extract: Duration,
}

/// A finished read: the block it belonged to, the bytes planned for it, and the part (none
/// when no profile matched) with stats, or why the dataset could not be read.
struct TaskDone<P> {
    block: usize,
    planned_bytes: u64,
    result: Result<(Option<P>, TaskStats), QueryError>,
}

struct Sink<'a, O> {
    tx: &'a mpsc::Sender<Result<Event<O>, QueryError>>,
    interval: Duration,
}

impl QueryEngine {
    pub fn new(
        store: Arc<dyn ObjectStore>,
        telemetry: Arc<Telemetry>,
        limits: EngineOptions,
        shutdown: CancellationToken,
    ) -> Self {
        QueryEngine {
            store,
            metrics: QueryMetrics::new(&telemetry),
            limits,
            footers: Mutex::new(HashMap::new()),
            warned: Mutex::new(HashSet::new()),
            decode_slots: Arc::new(Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            )),
            shutdown,
        }
    }

    /// The earliest and latest profile times (ns) in a tenant's blocks, from their footers
    /// (`None` when the tenant has no readable blocks), and the blocks skipped.
    pub async fn time_bounds(&self, tenant: &str) -> Result<(Option<(i64, i64)>, Vec<SkippedBlock>), QueryError> {
        let blocks = live_blocks(self.store.as_ref(), tenant).await?;
        let mut footers = futures::stream::iter(blocks.into_iter().map(|b| async move {
            let footer = self.footer(&b.path).await;
            (b, footer)
        }))
        .buffer_unordered(self.limits.max_concurrent_reads.max(1));
        let mut bounds: Option<(i64, i64)> = None;
        let mut skipped = Vec::new();
        while let Some((block, reader)) = footers.next().await {
            let reader = match reader {
                Ok(reader) => reader,
                Err(e) => {
                    self.skip(&block.id.to_string(), &block.path, e, &mut skipped)?;
                    continue;
                }
            };
            let meta = reader.meta().clone();
            for ds in &meta.datasets {
                let (min, max) = bounds.unwrap_or((ds.min_time_ns, ds.max_time_ns));
                bounds = Some((min.min(ds.min_time_ns), max.max(ds.max_time_ns)));
            }
        }
        Ok((bounds, skipped))
    }

    /// Handles a block that could not be read: fails the query when the options say so or
    /// the store (not the block) failed; otherwise records it once in `skipped`, counts it and
    /// logs it (once per block for the life of the process).
    fn skip(
        &self,
        id: &str,
        path: &Path,
        error: BlockError,
        skipped: &mut Vec<SkippedBlock>,
    ) -> Result<(), QueryError> {
        if self.limits.unreadable_blocks == UnreadableBlocks::Fail || !error.is_damaged_block() {
            return Err(error.into());
        }
        let reason = error.reason();
        self.metrics.block_skipped(reason);
        let first_time = {
            let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
            if warned.len() >= WARNED_BLOCKS_MAX {
                warned.clear();
            }
            warned.insert(path.clone())
        };
        if first_time {
            tracing::warn!(component = "query", block = %path, reason, error = %error, "skipping a block that cannot be read");
        }
        let path = path.to_string();
        if !skipped.iter().any(|s| s.path == path) {
            skipped.push(SkippedBlock {
                id: id.to_string(),
                path,
                reason,
                message: error.to_string(),
            });
        }
        Ok(())
    }

    /// Runs a query to the end.
    pub async fn execute<A: Accumulator>(
        &self,
        query: Query,
        mut acc: A,
    ) -> Result<(A::Output, Diagnostics), QueryError> {
        let diagnostics = self.drive(Arc::new(query), &mut acc, None).await?;
        let started = Instant::now();
        let output = acc.render();
        Ok((output, with_render_time(diagnostics, started)))
    }

    /// Runs a query on its own task, reporting plan, snapshot and result events. The stream
    /// ends after the result or an error; dropping the receiver cancels the query.
    pub fn stream<A: Accumulator>(
        self: &Arc<Self>,
        query: Query,
        mut acc: A,
        snapshot_interval: Duration,
    ) -> mpsc::Receiver<Result<Event<A::Output>, QueryError>> {
        let (tx, rx) = mpsc::channel(1);
        let engine = Arc::clone(self);
        tokio::spawn(async move {
            let sink = Sink {
                tx: &tx,
                interval: snapshot_interval,
            };
            let event = match engine.drive(Arc::new(query), &mut acc, Some(sink)).await {
                Ok(diagnostics) => {
                    let started = Instant::now();
                    let output = acc.render();
                    Ok(Event::Result(output, with_render_time(diagnostics, started)))
                }
                Err(QueryError::Canceled) => return,
                Err(e) => Err(e),
            };
            let _ = tx.send(event).await;
        });
        rx
    }

    async fn footer(&self, path: &Path) -> Result<Arc<BlockReader>, BlockError> {
        let cached = self.lock_footers().get(path).cloned();
        if let Some(meta) = cached {
            return Ok(Arc::new(BlockReader::with_meta(
                Arc::clone(&self.store),
                path.clone(),
                meta,
            )));
        }
        let reader = BlockReader::open(Arc::clone(&self.store), path.clone()).await?;
        self.metrics.block_read(0);
        let mut cache = self.lock_footers();
        if cache.len() >= self.limits.footer_cache_entries {
            cache.clear();
        }
        cache.insert(path.clone(), Arc::clone(reader.meta()));
        Ok(Arc::new(reader))
    }

    fn lock_footers(&self) -> std::sync::MutexGuard<'_, HashMap<Path, Arc<BlockMeta>>> {
        self.footers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Resolves when the query should stop: the client left or the process is stopping.
    async fn stopped<O>(&self, sink: &Option<Sink<'_, O>>) -> QueryError {
        match sink {
            Some(sink) => tokio::select! {
                _ = sink.tx.closed() => QueryError::Canceled,
                _ = self.shutdown.cancelled() => QueryError::ShuttingDown,
            },
            None => {
                self.shutdown.cancelled().await;
                QueryError::ShuttingDown
            }
        }
    }

    async fn send<O>(&self, sink: &Option<Sink<'_, O>>, event: Event<O>) -> Result<(), QueryError> {
        if let Some(sink) = sink {
            tokio::select! {
                sent = sink.tx.send(Ok(event)) => sent.map_err(|_| QueryError::Canceled)?,
                _ = self.shutdown.cancelled() => return Err(QueryError::ShuttingDown),
            }
        }
        Ok(())
    }

    async fn drive<A: Accumulator>(
        &self,
        query: Arc<Query>,
        acc: &mut A,
        sink: Option<Sink<'_, A::Output>>,
    ) -> Result<Diagnostics, QueryError> {
        let started = Instant::now();
        let needs_samples = acc.needs_samples();
        let keeps_labels = acc.keeps_sample_labels();

        // Planning: the tenant's live blocks (its manifest and a listing), then their footers.
        let blocks = tokio::select! {
            listed = live_blocks(self.store.as_ref(), &query.tenant) => listed?,
            e = self.stopped(&sink) => return Err(e),
        };
        let mut footers = futures::stream::iter(blocks.into_iter().map(|b| async move {
            let footer = self.footer(&b.path).await;
            (b, footer)
        }))
        .buffer_unordered(self.limits.max_concurrent_reads.max(1));
        let mut plan = Plan::default();
        let mut tasks: Vec<Task> = Vec::new();
        // Per planned block: its id and key, and how many of its datasets are still to read.
        let mut planned: Vec<(BlockRef, u64)> = Vec::new();
        let mut skipped: Vec<SkippedBlock> = Vec::new();
        let mut last_plan = Instant::now();
        loop {
            let (block_ref, reader) = tokio::select! {
                next = footers.next() => match next {
                    Some(next) => next,
                    None => break,
                },
                e = self.stopped(&sink) => return Err(e),
            };
            let reader = match reader {
                Ok(reader) => reader,
                Err(e) => {
                    self.skip(&block_ref.id.to_string(), &block_ref.path, e, &mut skipped)?;
                    continue;
                }
            };
            let meta = reader.meta();
            if !query.overlaps(meta.min_time_ns, meta.max_time_ns) {
                continue;
            }
            let block = planned.len();
            let mut datasets = 0;
            for (i, ds) in meta.datasets.iter().enumerate() {
                if !query.may_match(ds) {
                    continue;
                }
                let len = |s: &Option<flamepipe_core::block::format::SectionRef>| s.map_or(0, |s| s.length);
                let bytes = len(&ds.index)
                    + if needs_samples {
                        len(&ds.symbols) + len(&ds.samples)
                    } else {
                        0
                    };
                tasks.push(Task {
                    block,
                    reader: Arc::clone(&reader),
                    dataset: i,
                    bytes,
                });
                datasets += 1;
                plan.bytes_total += bytes;
            }
            if datasets > 0 {
                planned.push((block_ref, datasets));
                plan.blocks_total += 1;
                plan.datasets_total += datasets;
            }
            // Progress while planning is coalesced like snapshots; only the complete plan waits.
            if let Some(s) = &sink
                && last_plan.elapsed() >= s.interval
                && s.tx.try_send(Ok(Event::Plan(plan))).is_ok()
            {
                last_plan = Instant::now();
            }
        }
        drop(footers);
        plan.complete = true;
        self.send(&sink, Event::Plan(plan)).await?;
        let plan_time = started.elapsed();

        // Reading: datasets in parallel, merged one at a time.
        let spec = Arc::new(acc.spec());
        let mut progress = Progress {
            blocks_total: plan.blocks_total,
            datasets_total: plan.datasets_total,
            bytes_total: plan.bytes_total,
            ..Progress::default()
        };
        let mut diagnostics = Diagnostics::default();
        let (mut index_time, mut fetch_time, mut decode_time, mut extract_time, mut merge_time) = Default::default();
        // Planned blocks whose profiles were merged (a sorted set keeps plan order).
        let mut merged_blocks: std::collections::BTreeSet<usize> = std::collections::BTreeSet::new();
        let mut pending = tasks.into_iter();
        let mut running: JoinSet<TaskDone<A::Part>> = JoinSet::new();
        let mut last_snapshot: Option<Instant> = None;
        loop {
            while running.len() < self.limits.max_concurrent_reads.max(1) {
                let Some(task) = pending.next() else { break };
                let context = ReadContext {
                    query: Arc::clone(&query),
                    spec: Arc::clone(&spec),
                    needs_samples,
                    keeps_labels,
                    metrics: self.metrics.clone(),
                    decode_slots: Arc::clone(&self.decode_slots),
                };
                running.spawn(read_dataset::<A>(task, context));
            }
            let joined = tokio::select! {
                joined = running.join_next() => joined,
                e = self.stopped(&sink) => return Err(e),
            };
            let Some(joined) = joined else { break };
            let TaskDone {
                block,
                planned_bytes,
                result,
            } = joined.map_err(|e| QueryError::Worker(e.to_string()))?;
            let (block_ref, remaining) = &mut planned[block];
            *remaining -= 1;
            if *remaining == 0 {
                progress.blocks_done += 1;
            }
            progress.datasets_done += 1;
            let (part, stats) = match result {
                Ok(done) => done,
                Err(QueryError::Block(e)) => {
                    self.skip(&block_ref.id.to_string(), &block_ref.path, e, &mut skipped)?;
                    progress.bytes_total = progress.bytes_total.saturating_sub(planned_bytes);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let merge_started = Instant::now();
            if let Some(part) = part {
                acc.merge(part);
            }
            merge_time += merge_started.elapsed();
            index_time += stats.index;
            fetch_time += stats.fetch;
            decode_time += stats.decode;
            extract_time += stats.extract;
            if stats.profiles > 0 {
                merged_blocks.insert(block);
            }
            diagnostics.blocks_read += stats.reads;
            diagnostics.bytes_read += stats.bytes_read;
            progress.profiles_merged += stats.profiles;
            progress.bytes_done += stats.bytes_read;
            progress.bytes_total -= stats.bytes_skipped;
            if let Some(s) = &sink
                && stats.profiles > 0
                && last_snapshot.is_none_or(|t| t.elapsed() >= s.interval)
                && s.tx.capacity() > 0
            {
                let event = Event::Snapshot(progress, acc.render());
                if s.tx.try_send(Ok(event)).is_ok() {
                    last_snapshot = Some(Instant::now());
                }
            }
        }
        diagnostics.datasets_read = progress.datasets_done;
        diagnostics.blocks = merged_blocks.into_iter().map(|i| planned[i].0.id.to_string()).collect();
        diagnostics.skipped = skipped;
        diagnostics.profiles_merged = progress.profiles_merged;
        diagnostics.duration = started.elapsed();
        diagnostics.stages = vec![
            ("plan", plan_time),
            ("index", index_time),
            ("fetch", fetch_time),
            ("decode", decode_time),
            ("extract", extract_time),
            ("merge", merge_time),
        ];
        Ok(diagnostics)
    }
}

fn with_render_time(mut diagnostics: Diagnostics, started: Instant) -> Diagnostics {
    let render = started.elapsed();
    diagnostics.stages.push(("render", render));
    diagnostics.duration += render;
    diagnostics
}

/// What every read of one query shares.
struct ReadContext<S> {
    query: Arc<Query>,
    spec: Arc<S>,
    needs_samples: bool,
    keeps_labels: bool,
    metrics: QueryMetrics,
    decode_slots: Arc<Semaphore>,
}

/// Reads one dataset (see [`read_dataset_part`]), saying which block and bytes it was.
async fn read_dataset<A: Accumulator>(task: Task, context: ReadContext<A::Spec>) -> TaskDone<A::Part> {
    let (block, planned_bytes) = (task.block, task.bytes);
    TaskDone {
        block,
        planned_bytes,
        result: read_dataset_part::<A>(task, context).await,
    }
}

/// Reads one dataset: its index, then (if profiles match and the accumulator needs them) its
/// symbols and samples, and extracts the accumulator's part.
async fn read_dataset_part<A: Accumulator>(
    task: Task,
    context: ReadContext<A::Spec>,
) -> Result<(Option<A::Part>, TaskStats), QueryError> {
    let ReadContext {
        query,
        spec,
        needs_samples,
        keeps_labels,
        metrics,
        decode_slots,
    } = context;
    let mut stats = TaskStats::default();
    let ds = &task.reader.meta().datasets[task.dataset];
    let started = Instant::now();
    let raw = task.reader.raw_section(ds, SectionKind::Index).await?;
    metrics.block_read(raw.len());
    stats.reads += 1;
    stats.bytes_read += raw.len();
    let index = DatasetIndex::new(task.reader.name(), raw.decode()?)?;
    let profiles = query.select(&index);
    stats.index = started.elapsed();
    if profiles.is_empty() {
        stats.bytes_skipped = task.bytes - stats.bytes_read;
        return Ok((None, stats));
    }
    stats.profiles = profiles.len() as u64;
    if !needs_samples {
        let part = A::extract(
            &spec,
            Selected {
                index: &index,
                profiles: &profiles,
                stacks: None,
            },
        );
        return Ok((Some(part), stats));
    }
    let started = Instant::now();
    let (symbols, samples) = tokio::try_join!(
        task.reader.raw_section(ds, SectionKind::Symbols),
        task.reader.raw_section(ds, SectionKind::Samples),
    )?;
    for raw in [&symbols, &samples] {
        metrics.block_read(raw.len());
        stats.reads += 1;
        stats.bytes_read += raw.len();
    }
    stats.fetch = started.elapsed();
    let name = task.reader.name().to_string();
    let slot = decode_slots
        .acquire_owned()
        .await
        .map_err(|e| QueryError::Worker(e.to_string()))?;
    let decoded = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let started = Instant::now();
        let symbols = Arc::new(symbols.decode_symbols()?);
        let cols: SampleColumns = samples.decode()?;
        index.check_samples(&name, &cols)?;
        let stacks = sum_stacks(&name, &index, &profiles, &symbols, &cols, keeps_labels)?;
        let decoded = Instant::now();
        let part = A::extract(
            &spec,
            Selected {
                index: &index,
                profiles: &profiles,
                stacks: Some(stacks),
            },
        );
        Ok::<_, QueryError>((part, decoded - started, decoded.elapsed()))
    })
    .await
    .map_err(|e| QueryError::Worker(e.to_string()))?;
    let (part, decode, extract) = decoded?;
    stats.decode = decode;
    stats.extract = extract;
    Ok((Some(part), stats))
}

/// Sums the selected profiles' values per stack id (and per (stack, label set) for labelled
/// samples when `keep_labels`).
fn sum_stacks(
    name: &str,
    index: &DatasetIndex,
    profiles: &[usize],
    symbols: &Arc<Symbols>,
    cols: &SampleColumns,
    keep_labels: bool,
) -> Result<StackSums, BlockError> {
    let mut sums = vec![0i64; symbols.stack_count()];
    let mut labelled: HashMap<(u32, u32), i64> = HashMap::new();
    let mut period = 0;
    for &p in profiles {
        period = period.max(index.columns.profile_period[p]);
        for sample in index.samples(name, cols, symbols, p) {
            let sample = sample?;
            let sum = if keep_labels && sample.labels != 0 {
                labelled.entry((sample.stack, sample.labels)).or_default()
            } else {
                &mut sums[sample.stack as usize]
            };
            *sum = sum.saturating_add(sample.value);
        }
    }
    let mut labelled: Vec<(u32, u32, i64)> = labelled
        .into_iter()
        .filter(|&(_, v)| v != 0)
        .map(|((stack, labels), v)| (stack, labels, v))
        .collect();
    labelled.sort_unstable();
    let values = sums
        .into_iter()
        .enumerate()
        .filter(|&(_, v)| v != 0)
        .map(|(s, v)| (s as u32, v))
        .collect();
    Ok(StackSums {
        symbols: Arc::clone(symbols),
        values,
        labelled,
        period,
    })
}
