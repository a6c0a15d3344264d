//! The `compactor` extension: merges a store's level-0 segments into larger blocks, level by
//! level, deletes what compaction and retention retired once nothing may still read it, and
//! coordinates with every other compactor, writer and query on the store through the store
//! alone (the protocol and its failure cases: docs/storage.md).
//!
//! Runs in-process (listed in `service.extensions`) or alone (`flamepipe compact`). Each
//! round, for every tenant: plan the jobs that are due, claim them in the manifest, merge each
//! (renewing its lease meanwhile), commit it, then collect garbage.
//!
//! # Layout
//!
//! - [`config`]: the YAML config and its checks.
//! - [`plan`]: which blocks to merge (a pure function of the live blocks, the manifest and the
//!   time).
//! - [`merge`]: merging blocks into one, exact copies kept once.
//! - `jobs`: claiming, renewing and committing jobs in the manifest.
//! - `gc`: retention, deleting retired blocks, unreferenced outputs and old manifest versions.
//! - `metrics`: the compactor's own metrics.

pub mod config;
mod gc;
mod jobs;
pub mod merge;
mod metrics;
pub mod plan;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use flamepipe_core::block::ManifestError;
use flamepipe_core::clock::{self, Clock};
use flamepipe_core::component::{BuildContext, Output};
use object_store::ObjectStore;
use object_store::path::Path;

use crate::metrics::CompactorMetrics;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::Config;

#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("store: {0}")]
    Store(object_store::Error),
}

/// What one round did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Jobs committed.
    pub committed: usize,
    /// Jobs given up because another compactor took them or their inputs, or the lease ran
    /// out.
    pub fenced: usize,
    /// Jobs that failed (a store error, an unreadable input).
    pub failed: usize,
    /// Blocks merged by committed jobs.
    pub inputs: usize,
    /// Exact copies dropped.
    pub copies: u64,
    /// Block objects deleted (retired past the grace period, past retention, unreferenced).
    pub deleted: usize,
}

impl Report {
    fn add(&mut self, other: &Report) {
        self.committed += other.committed;
        self.fenced += other.fenced;
        self.failed += other.failed;
        self.inputs += other.inputs;
        self.copies += other.copies;
        self.deleted += other.deleted;
    }
}

pub struct Compactor {
    config: Config,
    store: Arc<dyn ObjectStore>,
    clock: Arc<dyn Clock>,
    /// This process's id in job leases.
    owner: String,
    id: Arc<str>,
    metrics: CompactorMetrics,
    /// The connector counting what level-0 compaction merges (`profile_metrics`), if any.
    feed: Option<Output>,
}

impl Compactor {
    pub fn new(config: Config, store: Arc<dyn ObjectStore>, ctx: &BuildContext) -> Self {
        Compactor {
            config,
            store,
            clock: clock::system(),
            owner: ulid::Ulid::new().to_string(),
            id: Arc::clone(&ctx.id),
            metrics: CompactorMetrics::new(ctx),
            feed: None,
        }
    }

    /// Hands the profiles of every committed level-0 job (each profile once, exact copies
    /// dropped) to `feed`: a connector's input.
    pub fn with_feed(mut self, feed: Output) -> Self {
        self.feed = Some(feed);
        self
    }

    /// Reads time from `clock` (tests move it by hand).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Names this compactor `owner` in the leases it takes.
    pub fn with_owner(mut self, owner: &str) -> Self {
        self.owner = owner.to_string();
        self
    }

    /// Rounds every `interval` until `shutdown`; a round that fails is logged and retried at
    /// the next one. A job in progress when shutdown comes is dropped unfinished: its lease
    /// runs out and it is done again, by this process or another.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                report = self.run_once() => match report {
                    Ok(r) if r != Report::default() => info!(component = %self.id, ?r, "compaction round"),
                    Ok(_) => {}
                    Err(e) => warn!(component = %self.id, error = %e, "compaction round failed"),
                },
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.config.interval.0) => {}
            }
        }
    }

    /// One round over every tenant of the store.
    pub async fn run_once(&self) -> Result<Report, CompactError> {
        let mut report = Report::default();
        let mut per_level: Vec<usize> = Vec::new();
        for tenant in self.tenants().await? {
            self.retire_expired(&tenant).await?;
            let r = self.compact_tenant(&tenant).await?;
            report.add(&r);
            report.add(&self.collect(&tenant).await?);
            let live = flamepipe_core::block::live_blocks(self.store.as_ref(), &tenant).await?;
            for b in live {
                let level = b.level as usize;
                if per_level.len() <= level {
                    per_level.resize(level + 1, 0);
                }
                per_level[level] += 1;
            }
        }
        for (level, n) in per_level.iter().enumerate() {
            self.metrics.live_blocks(level as u32, *n);
        }
        Ok(report)
    }

    /// The tenants with blocks in the store.
    async fn tenants(&self) -> Result<Vec<String>, CompactError> {
        let listed = self
            .store
            .list_with_delimiter(Some(&Path::from(flamepipe_core::block::paths::BLOCKS_PREFIX)))
            .await
            .map_err(CompactError::Store)?;
        let mut tenants: Vec<String> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect();
        tenants.sort();
        Ok(tenants)
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    fn lease_ms(&self) -> i64 {
        duration_ms(self.config.lease_duration.0)
    }

    fn grace_ms(&self) -> i64 {
        duration_ms(self.config.grace_period.0)
    }
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Deletes `paths`; one already gone counts as deleted.
async fn delete_all(store: &dyn ObjectStore, paths: &[Path]) -> Result<(), object_store::Error> {
    use object_store::ObjectStoreExt;
    for path in paths {
        match store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
