//! The life of a compaction job in the manifest: claim, merge while renewing the lease,
//! commit (docs/storage.md, "Compaction").
//!
//! Every change is a new manifest version written on top of the version it was decided on
//! ([`write_version`] fails if another process wrote that version first), so deciding and
//! writing are one step: a compactor can only commit what is still true when its version
//! lands.

use std::time::Instant;

use flamepipe_core::Profile;
use flamepipe_core::block::manifest::{CompactedBlock, Job, Manifest, Retired, read_latest, write_version};
use flamepipe_core::block::{BlockRef, ManifestError, live_blocks_of};
use flamepipe_core::component::Batch;
use flamepipe_core::store::put_object;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use tracing::{debug, warn};

use crate::merge::merge_blocks;
use crate::plan::{Planned, plan};
use crate::{CompactError, Compactor, Report};

/// Rounds of claim-then-run per tenant per call: later levels become due as earlier ones
/// commit, and another compactor's writes may force a re-plan.
const MAX_PASSES: usize = 8;

/// Why a job ended without a commit.
#[derive(Debug)]
enum Ended {
    /// Another compactor took the job or its inputs, or the lease ran out: its output is
    /// left for garbage collection.
    Fenced(String),
    /// The store failed, or an input could not be read.
    Failed(String),
}

impl Compactor {
    /// Plans, claims, merges and commits the jobs due for `tenant`, until none are due.
    pub(crate) async fn compact_tenant(&self, tenant: &str) -> Result<Report, CompactError> {
        let mut report = Report::default();
        for _ in 0..MAX_PASSES {
            let Some((claimed, token)) = self.claim(tenant).await? else {
                break;
            };
            for job in claimed {
                let started = Instant::now();
                match self.run_job(tenant, &job, token).await {
                    Ok((copies, output_bytes, profiles)) => {
                        // Committed: the profiles it merged from level 0 are counted now, once.
                        if let Some(feed) = &self.feed
                            && !profiles.is_empty()
                        {
                            feed.send(Batch::new(tenant, profiles)).await;
                        }
                        report.committed += 1;
                        report.inputs += job.inputs.len();
                        report.copies += copies;
                        self.metrics.job("committed");
                        let input_bytes: u64 = job.inputs.iter().map(|b| b.size).sum();
                        self.metrics.committed(
                            (job.inputs.len() as u64, 1),
                            (input_bytes, output_bytes),
                            copies,
                            started.elapsed().as_secs_f64(),
                        );
                        let now = self.now_ms();
                        for input in job.inputs.iter().filter(|b| b.level == 0) {
                            let waited = now.saturating_sub(input.id.timestamp_ms() as i64);
                            self.metrics.first_compaction(waited as f64 / 1000.0);
                        }
                        debug!(component = %self.id, tenant, output = %job.output, inputs = job.inputs.len(),
                            seconds = started.elapsed().as_secs_f64(), "compaction job committed");
                    }
                    Err(Ended::Fenced(why)) => {
                        report.fenced += 1;
                        self.metrics.job("fenced");
                        warn!(component = %self.id, tenant, output = %job.output, why, "compaction job given up");
                    }
                    Err(Ended::Failed(why)) => {
                        report.failed += 1;
                        self.metrics.job("failed");
                        warn!(component = %self.id, tenant, output = %job.output, error = why, "compaction job failed");
                    }
                }
            }
        }
        Ok(report)
    }

    /// Claims every job due for `tenant` in one new manifest version; `None` when nothing is
    /// due. The jobs carry that version as their token.
    async fn claim(&self, tenant: &str) -> Result<Option<(Vec<Planned>, u64)>, CompactError> {
        loop {
            let latest = read_latest(self.store.as_ref(), tenant).await?;
            let live = live_blocks_of(self.store.as_ref(), tenant, &latest).await?;
            let now = self.now_ms();
            let due = plan(
                tenant,
                &live,
                &latest,
                &self.config.levels,
                self.config.memory_budget.0,
                now,
            );
            if due.is_empty() {
                return Ok(None);
            }
            let mut next = latest.next();
            // Expired leases are dropped: their jobs are planned again (possibly here).
            next.jobs.retain(|j| j.expires_at_ms > now);
            for job in &due {
                next.jobs.push(Job {
                    output: job.output.clone(),
                    level: job.level,
                    inputs: job.inputs.iter().map(|b| b.path.to_string()).collect(),
                    owner: self.owner.clone(),
                    token: next.version,
                    expires_at_ms: now.saturating_add(self.lease_ms()),
                });
            }
            match write_version(self.store.as_ref(), tenant, &next).await {
                Ok(()) => return Ok(Some((due, next.version))),
                // Another process wrote first: decide again on what it wrote.
                Err(ManifestError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Merges one claimed job, renewing its lease meanwhile, and commits it. Returns the exact
    /// copies it dropped and the output's size.
    async fn run_job(&self, tenant: &str, job: &Planned, token: u64) -> Result<(u64, u64, Vec<Profile>), Ended> {
        let merge = self.merge_job(tenant, job);
        tokio::pin!(merge);
        let renew_every = std::time::Duration::from_millis((self.lease_ms() / 2).max(1) as u64);
        let merged = loop {
            tokio::select! {
                merged = &mut merge => break merged?,
                () = tokio::time::sleep(renew_every) => self.renew(tenant, &job.output, token).await?,
            }
        };
        let (output, size, copies, profiles) = merged;
        self.commit(tenant, job, token, output).await?;
        Ok((copies, size, profiles))
    }

    /// Reads the inputs, merges them off the runtime and writes the output. Returns the
    /// output's entry for the manifest, its size, the copies dropped, and (for a feed, when
    /// every input is level 0) the profiles written.
    async fn merge_job(&self, tenant: &str, job: &Planned) -> Result<(CompactedBlock, u64, u64, Vec<Profile>), Ended> {
        let mut inputs = Vec::with_capacity(job.inputs.len());
        for block in &job.inputs {
            match self.store.get(&block.path).await {
                Ok(got) => inputs.push(got.bytes().await.map_err(|e| Ended::Failed(e.to_string()))?),
                // Deleted: another compactor committed it long enough ago for garbage
                // collection to remove it.
                Err(object_store::Error::NotFound { .. }) => {
                    return Err(Ended::Fenced(format!("input {} is gone", block.path)));
                }
                Err(e) => return Err(Ended::Failed(format!("reading {}: {e}", block.path))),
            }
        }
        let output = Path::from(job.output.as_str());
        let key = flamepipe_core::block::parse_block_path(&output)
            .ok_or_else(|| Ended::Failed(format!("bad output key {output}")))?;
        let (tenant_owned, refs, level) = (tenant.to_string(), job.inputs.clone(), job.level);
        let keep = self.feed.is_some() && job.inputs.iter().all(|b| b.level == 0);
        let merged =
            tokio::task::spawn_blocking(move || merge_blocks(&tenant_owned, level, key.id, &refs, &inputs, keep))
                .await
                .map_err(|e| Ended::Failed(format!("merge task: {e}")))?
                .map_err(|e| Ended::Failed(e.to_string()))?;
        let size = merged.block.bytes.len() as u64;
        let entry = CompactedBlock {
            path: job.output.clone(),
            level: job.level,
            min_time_ns: merged.block.meta.min_time_ns,
            max_time_ns: merged.block.meta.max_time_ns,
            size,
            profiles: merged.block.meta.profile_count,
        };
        put_object(self.store.as_ref(), &output, merged.block.bytes.into())
            .await
            .map_err(|e| Ended::Failed(format!("writing {output}: {e}")))?;
        Ok((entry, size, merged.copies, merged.profiles))
    }

    /// Checks that the job is still this compactor's: in `latest` under `token`, owned by it,
    /// and not expired by its clock.
    fn check_lease<'m>(&self, latest: &'m Manifest, output: &str, token: u64) -> Result<&'m Job, Ended> {
        let job = latest
            .job(output)
            .ok_or_else(|| Ended::Fenced("the job is no longer in the manifest".into()))?;
        if job.token != token || job.owner != self.owner {
            return Err(Ended::Fenced(format!(
                "the job was claimed again (token {}, owner {})",
                job.token, job.owner
            )));
        }
        if self.now_ms() >= job.expires_at_ms {
            return Err(Ended::Fenced("the lease expired".into()));
        }
        Ok(job)
    }

    /// Extends the job's lease by a full lease from now.
    async fn renew(&self, tenant: &str, output: &str, token: u64) -> Result<(), Ended> {
        loop {
            let latest = self.latest(tenant).await?;
            self.check_lease(&latest, output, token)?;
            let mut next = latest.next();
            let expires = self.now_ms().saturating_add(self.lease_ms());
            if let Some(job) = next.jobs.iter_mut().find(|j| j.output == output) {
                job.expires_at_ms = expires;
            }
            match write_version(self.store.as_ref(), tenant, &next).await {
                Ok(()) => return Ok(()),
                Err(ManifestError::Conflict { .. }) => continue,
                Err(e) => return Err(Ended::Failed(e.to_string())),
            }
        }
    }

    /// Makes the output live and retires the inputs, if the job is still this compactor's
    /// and every input is still live.
    async fn commit(&self, tenant: &str, job: &Planned, token: u64, output: CompactedBlock) -> Result<(), Ended> {
        loop {
            let latest = self.latest(tenant).await?;
            self.check_lease(&latest, &job.output, token)?;
            if let Some(gone) = job.inputs.iter().find(|b| !is_live(&latest, b)) {
                return Err(Ended::Fenced(format!("input {} is no longer live", gone.path)));
            }
            let now = self.now_ms();
            let inputs: Vec<String> = job.inputs.iter().map(|b| b.path.to_string()).collect();
            let mut next = latest.next();
            next.compacted.retain(|c| !inputs.contains(&c.path));
            next.compacted.push(output.clone());
            next.retired.extend(inputs.iter().map(|path| Retired {
                path: path.clone(),
                at_ms: now,
                why: "compacted".into(),
            }));
            next.jobs.retain(|j| j.output != job.output);
            match write_version(self.store.as_ref(), tenant, &next).await {
                Ok(()) => return Ok(()),
                Err(ManifestError::Conflict { .. }) => continue,
                Err(e) => return Err(Ended::Failed(e.to_string())),
            }
        }
    }

    async fn latest(&self, tenant: &str) -> Result<Manifest, Ended> {
        read_latest(self.store.as_ref(), tenant)
            .await
            .map_err(|e| Ended::Failed(e.to_string()))
    }
}

/// Whether `block` is live by `manifest` (level 0: not retired; above: listed).
fn is_live(manifest: &Manifest, block: &BlockRef) -> bool {
    let path = block.path.as_ref();
    if block.level == 0 {
        !manifest.is_retired(path)
    } else {
        manifest.is_compacted(path)
    }
}
