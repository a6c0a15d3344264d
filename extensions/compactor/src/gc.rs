//! Garbage collection and retention for one tenant (docs/storage.md, "Garbage
//! collection"): what is deleted is never what a query may still read.
//!
//! 1. Retention: live blocks whose data ended before `now - retention` are retired (before
//!    the round's compaction).
//! 2. Retired blocks older than `grace_period` are deleted, then dropped from the manifest.
//! 3. Level 1+ blocks that the latest manifest neither lists nor names as a running job's
//!    output (a job that never committed) are deleted once older than `grace_period`.
//! 4. Manifest versions older than `grace_period` are deleted, but the latest ten.
//!
//! A manifest version that loses a race is not retried: the next round does it again.

use flamepipe_core::block::manifest::{Manifest, Retired, list_versions, read_latest, write_version};
use flamepipe_core::block::{BlockReader, ManifestError, list_blocks, live_blocks_of};
use object_store::path::Path;
use tracing::debug;

use crate::{CompactError, Compactor, Report, delete_all};

/// Manifest versions always kept.
const KEEP_VERSIONS: u64 = 10;

impl Compactor {
    /// Deletes what may go (steps 2 to 4; retention runs before compaction, see
    /// [`Compactor::retire_expired`]).
    pub(crate) async fn collect(&self, tenant: &str) -> Result<Report, CompactError> {
        let mut report = Report::default();
        report.deleted += self.delete_retired(tenant).await?;
        report.deleted += self.delete_orphans(tenant).await?;
        self.delete_old_versions(tenant).await?;
        Ok(report)
    }

    /// Retires the live blocks whose data expired. Runs before a round's compaction, so
    /// expired data is not merged into a block with newer data that would keep it alive.
    pub(crate) async fn retire_expired(&self, tenant: &str) -> Result<(), CompactError> {
        let Some(retention) = self.config.retention_of(tenant) else {
            return Ok(());
        };
        let now = self.now_ms();
        let cutoff_ms = now.saturating_sub(crate::duration_ms(retention));
        let cutoff_ns = cutoff_ms.saturating_mul(1_000_000);
        let latest = read_latest(self.store.as_ref(), tenant).await?;
        let mut expired: Vec<String> = latest
            .compacted
            .iter()
            .filter(|c| c.max_time_ns < cutoff_ns)
            .map(|c| c.path.clone())
            .collect();
        // Segments are written after their data, so only those written before the cutoff
        // can hold nothing but older data; their footers say.
        for block in live_blocks_of(self.store.as_ref(), tenant, &latest).await? {
            if block.level > 0 || (block.id.timestamp_ms() as i64) >= cutoff_ms {
                continue;
            }
            if let Ok(reader) = BlockReader::open(std::sync::Arc::clone(&self.store), block.path.clone()).await
                && reader.meta().max_time_ns < cutoff_ns
            {
                expired.push(block.path.to_string());
            }
        }
        if expired.is_empty() {
            return Ok(());
        }
        let mut next = latest.next();
        next.compacted.retain(|c| !expired.contains(&c.path));
        next.retired.extend(expired.iter().map(|path| Retired {
            path: path.clone(),
            at_ms: now,
            why: "retention".into(),
        }));
        write_ignoring_conflict(self, tenant, &next).await
    }

    async fn delete_retired(&self, tenant: &str) -> Result<usize, CompactError> {
        let now = self.now_ms();
        let latest = read_latest(self.store.as_ref(), tenant).await?;
        let due: Vec<&Retired> = latest
            .retired
            .iter()
            .filter(|r| r.at_ms.saturating_add(self.grace_ms()) <= now)
            .collect();
        if due.is_empty() {
            return Ok(0);
        }
        let paths: Vec<Path> = due.iter().map(|r| Path::from(r.path.as_str())).collect();
        delete_all(self.store.as_ref(), &paths)
            .await
            .map_err(CompactError::Store)?;
        for why in ["compacted", "retention"] {
            let n = due.iter().filter(|r| r.why == why).count() as u64;
            if n > 0 {
                self.metrics.deleted(why, n);
            }
        }
        let mut next = latest.next();
        next.retired.retain(|r| r.at_ms.saturating_add(self.grace_ms()) > now);
        // Leases that ran out have no one to clean them up otherwise.
        next.jobs.retain(|j| j.expires_at_ms > now);
        write_ignoring_conflict(self, tenant, &next).await?;
        Ok(paths.len())
    }

    async fn delete_orphans(&self, tenant: &str) -> Result<usize, CompactError> {
        let now = self.now_ms();
        let latest = read_latest(self.store.as_ref(), tenant).await?;
        let orphans: Vec<Path> = list_blocks(self.store.as_ref(), Some(tenant))
            .await
            .map_err(ManifestError::from)?
            .into_iter()
            .filter(|b| {
                let path = b.path.as_ref();
                b.level > 0
                    && !latest.is_compacted(path)
                    && !latest.is_retired(path)
                    && latest.job(path).is_none()
                    && b.modified_ms.saturating_add(self.grace_ms()) <= now
            })
            .map(|b| b.path)
            .collect();
        if !orphans.is_empty() {
            debug!(component = %self.id, tenant, orphans = orphans.len(), "deleting outputs no manifest lists");
            delete_all(self.store.as_ref(), &orphans)
                .await
                .map_err(CompactError::Store)?;
            self.metrics.deleted("orphan", orphans.len() as u64);
        }
        Ok(orphans.len())
    }

    async fn delete_old_versions(&self, tenant: &str) -> Result<(), CompactError> {
        let now = self.now_ms();
        let versions = list_versions(self.store.as_ref(), tenant).await?;
        let Some(&(latest, _, _)) = versions.last() else {
            return Ok(());
        };
        let old: Vec<Path> = versions
            .into_iter()
            .filter(|(v, _, modified)| *v + KEEP_VERSIONS <= latest && modified.saturating_add(self.grace_ms()) <= now)
            .map(|(_, path, _)| path)
            .collect();
        delete_all(self.store.as_ref(), &old).await.map_err(CompactError::Store)
    }
}

async fn write_ignoring_conflict(c: &Compactor, tenant: &str, next: &Manifest) -> Result<(), CompactError> {
    match write_version(c.store.as_ref(), tenant, next).await {
        Ok(()) | Err(ManifestError::Conflict { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
