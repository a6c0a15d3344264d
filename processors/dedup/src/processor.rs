//! The processor itself, in the simple shape ([`BatchProcessor`]): each batch's profiles are
//! placed in the window; duplicates are dropped, colliding distinct profiles shifted, and the
//! rest sent on. What it does with acknowledgements (the component contract's third way):
//!
//! - the batch sent on carries the request's shares, plus one share of the processor's own,
//!   whose completion records how the write went (the batch's *outcome*) for later duplicates;
//! - a duplicate's request gets a share that completes once the profile it repeats is durably
//!   written, or fails with that write; when the write is already known done (a client retry
//!   after the answer), at once.

use flamepipe_core::component::{Ack, Batch, BatchProcessor, BuildContext};
use tokio::time::Instant;

use crate::config::Config;
use crate::metrics::DedupMetrics;
use crate::window::{Outcome, Placement, Window};
use flamepipe_core::fingerprint::{Hashers, TableHashes};

pub struct Dedup {
    metrics: DedupMetrics,
    hashers: Hashers,
    window: Window,
    step_ns: i64,
}

/// What one batch did, for telemetry.
#[derive(Default)]
struct Counts {
    passed: u64,
    duplicates: u64,
    shifted: u64,
    crowded: u64,
    expired: u64,
    evicted: u64,
}

impl Dedup {
    pub fn new(config: Config, ctx: &BuildContext) -> Self {
        Dedup {
            metrics: DedupMetrics::new(ctx),
            hashers: Hashers::default(),
            window: Window::new(config.window.0, config.max_entries),
            step_ns: i64::try_from(config.timestamp_shift.0.as_nanos()).unwrap_or(1).max(1),
        }
    }

    /// Profiles remembered now.
    pub fn window_len(&self) -> usize {
        self.window.len()
    }

    fn record(&self, c: &Counts) {
        let m = &self.metrics;
        for (outcome, n) in [
            ("passed", c.passed),
            ("duplicate", c.duplicates),
            ("shifted", c.shifted),
            ("crowded", c.crowded),
        ] {
            if n > 0 {
                m.profiles(outcome, n);
            }
        }
        for (why, n) in [("expired", c.expired), ("evicted", c.evicted)] {
            if n > 0 {
                m.forgotten(why, n);
            }
        }
        m.window(self.window.len());
    }
}

impl BatchProcessor for Dedup {
    fn process(&mut self, mut batch: Batch) -> Vec<Batch> {
        let now = Instant::now();
        let outcome = Outcome::new();
        let mut counts = Counts::default();
        let mut tables: Vec<TableHashes> = Vec::new();
        let mut originals: Vec<Outcome> = Vec::new();
        let mut kept = Vec::with_capacity(batch.profiles.len());
        for mut p in std::mem::take(&mut batch.profiles) {
            let series = self.hashers.series(&batch.tenant, &p);
            let table = match tables.iter().position(|t| t.is_of(&p.symbols)) {
                Some(i) => &mut tables[i],
                None => {
                    tables.push(TableHashes::new(&p.symbols));
                    tables.last_mut().expect("just pushed")
                }
            };
            let content = self.hashers.content(&p, table);
            let (placement, forgotten) =
                self.window
                    .place(series, p.timestamp_ns, content, self.step_ns, &outcome, now);
            counts.expired += forgotten.expired;
            counts.evicted += forgotten.evicted;
            match placement {
                Placement::Duplicate(original) => {
                    counts.duplicates += 1;
                    if !originals.iter().any(|o| o.same(&original)) {
                        originals.push(original);
                    }
                }
                Placement::New { timestamp_ns } => {
                    counts.passed += 1;
                    if timestamp_ns != p.timestamp_ns {
                        counts.shifted += 1;
                        p.timestamp_ns = timestamp_ns;
                    }
                    kept.push(p);
                }
                Placement::Crowded => {
                    counts.passed += 1;
                    counts.crowded += 1;
                    kept.push(p);
                }
            }
        }
        self.record(&counts);

        if kept.is_empty() {
            // Every profile repeats one passed before: the request's shares wait for those.
            for share in std::mem::take(&mut batch.acks) {
                settle_after(share, originals.clone());
            }
            return Vec::new();
        }
        if !originals.is_empty() {
            // Some profiles were dropped: the request also waits for what they repeat.
            for share in &batch.acks {
                settle_after(share.clone(), originals.clone());
            }
        }
        let (share, written) = Ack::new();
        tokio::spawn(async move {
            let result = written
                .await
                .unwrap_or_else(|_| Err("the acknowledgement was lost".to_string()));
            outcome.settle(result);
        });
        batch.acks.push(share);
        batch.profiles = kept;
        vec![batch]
    }
}

/// Completes `share` once every write in `originals` is known: done if all were durable,
/// failed with the first failure otherwise.
fn settle_after(share: Ack, originals: Vec<Outcome>) {
    let known: Option<Result<(), String>> = originals.iter().try_fold(Ok(()), |acc, o| o.get().map(|r| acc.and(r)));
    match known {
        Some(Ok(())) => share.done(),
        Some(Err(e)) => share.fail(&format!("the profile this request repeats was not stored: {e}")),
        None => {
            tokio::spawn(async move {
                for original in originals {
                    if let Err(e) = original.wait().await {
                        share.fail(&format!("the profile this request repeats was not stored: {e}"));
                        return;
                    }
                }
                share.done();
            });
        }
    }
}
