//! Which blocks to merge: the planner, a pure function of a tenant's live blocks, its manifest
//! and the time.
//!
//! Level by level, oldest first (by ULID), blocks not held by a running job are grouped: a
//! group closes at `max_inputs`, or when the next block would take the job past the memory
//! budget, and runs once it is closed or its oldest block has waited `max_age`. A group of
//! one runs only at level 0 (moving a lone segment up a level is how it stops being read as a
//! segment); one block of a higher level has nothing to be merged with. The last configured
//! level is never compacted.

use flamepipe_core::block::manifest::Manifest;
use flamepipe_core::block::{BlockRef, level_path};
use ulid::Ulid;

use crate::config::Level;

/// How much memory merging takes per byte of input block, as measured on the bench corpus
/// (decoded profiles, the output's tables and its encoding buffer against the compressed
/// inputs).
pub const MEMORY_PER_INPUT_BYTE: u64 = 12;

/// A job to run: merge `inputs` (all of one level, oldest first) into `output` at `level`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    pub level: u32,
    pub inputs: Vec<BlockRef>,
    pub output: String,
}

/// The jobs due for `tenant` at `now_ms`.
pub fn plan(
    tenant: &str,
    live: &[BlockRef],
    manifest: &Manifest,
    levels: &[Level],
    memory_budget: u64,
    now_ms: i64,
) -> Vec<Planned> {
    let held = |path: &str| {
        manifest
            .jobs
            .iter()
            .any(|j| j.expires_at_ms > now_ms && j.inputs.iter().any(|i| i == path))
    };
    let mut jobs = Vec::new();
    for (level, rule) in levels.iter().enumerate() {
        let level = level as u32;
        let mut waiting: Vec<&BlockRef> = live
            .iter()
            .filter(|b| b.level == level && !held(b.path.as_ref()))
            .collect();
        waiting.sort_by_key(|b| b.id);
        let mut rest = waiting.as_slice();
        while let Some(oldest) = rest.first() {
            let mut take = 0;
            let mut bytes = 0u64;
            for b in rest.iter().take(rule.max_inputs) {
                let more = bytes.saturating_add(b.size);
                if take > 0 && more.saturating_mul(MEMORY_PER_INPUT_BYTE) > memory_budget {
                    break;
                }
                bytes = more;
                take += 1;
            }
            let closed = take < rest.len() || take == rule.max_inputs;
            let waited = now_ms.saturating_sub(oldest.id.timestamp_ms() as i64) >= rule.max_age.0.as_millis() as i64;
            if !closed && !waited {
                break;
            }
            let (group, more) = rest.split_at(take);
            rest = more;
            if group.len() == 1 && level > 0 {
                continue;
            }
            let inputs: Vec<BlockRef> = group.iter().map(|b| (*b).clone()).collect();
            let output = level_path(tenant, level + 1, output_id(&inputs, level + 1)).to_string();
            jobs.push(Planned {
                level: level + 1,
                inputs,
                output,
            });
        }
    }
    jobs
}

/// The output id of merging `inputs` into `level`: the ULID time of the oldest input, and 80
/// bits of a hash of the input paths and the level, so that a retried job writes the same
/// object.
pub fn output_id(inputs: &[BlockRef], level: u32) -> Ulid {
    let oldest = inputs.iter().map(|b| b.id.timestamp_ms()).min().unwrap_or(0);
    let mut paths: Vec<&str> = inputs.iter().map(|b| b.path.as_ref()).collect();
    paths.sort_unstable();
    let mut hash = Fnv128::new();
    for p in paths {
        hash.write(p.as_bytes());
        hash.write(&[0]);
    }
    hash.write(&level.to_le_bytes());
    Ulid::from_parts(oldest, hash.finish() & ((1u128 << 80) - 1))
}

/// FNV-1a, 128 bits: a hash that is the same on every machine and in every version.
struct Fnv128(u128);

impl Fnv128 {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;

    fn new() -> Self {
        Fnv128(Self::OFFSET)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u128::from(b);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
    }

    fn finish(&self) -> u128 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use flamepipe_core::block::manifest::Job;
    use flamepipe_core::block::{block_path, level_path};
    use flamepipe_core::config::Duration;

    use super::*;

    const MIN: i64 = 60_000;

    fn block(level: u32, at_ms: i64, n: u128, size: u64) -> BlockRef {
        let id = Ulid::from_parts(at_ms as u64, n);
        BlockRef {
            tenant: "t".into(),
            level,
            id,
            path: if level == 0 {
                block_path("t", id)
            } else {
                level_path("t", level, id)
            },
            size,
            modified_ms: at_ms,
        }
    }

    fn levels() -> Vec<Level> {
        vec![
            Level {
                max_inputs: 3,
                max_age: Duration::from_secs(60),
            },
            Level {
                max_inputs: 2,
                max_age: Duration::from_secs(600),
            },
        ]
    }

    #[test]
    fn groups_close_when_full_or_old() {
        let live: Vec<BlockRef> = (0..7).map(|i| block(0, i * 1000, i as u128, 10)).collect();
        let m = Manifest::default();
        // At 10 s: two full groups of three; the seventh waits (younger than a minute).
        let jobs = plan("t", &live, &m, &levels(), 1 << 30, 10_000);
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].inputs, live[0..3].to_vec());
        assert_eq!(jobs[1].inputs, live[3..6].to_vec());
        assert!(jobs.iter().all(|j| j.level == 1));
        // A minute after the seventh was written it goes alone.
        let jobs = plan("t", &live[6..], &m, &levels(), 1 << 30, 6000 + MIN);
        assert_eq!(jobs.len(), 1);
        // A lone level-1 block waits for a partner.
        let l1 = vec![block(1, 0, 1, 10)];
        assert!(plan("t", &l1, &m, &levels(), 1 << 30, 100 * MIN).is_empty());
        // The last level is never compacted.
        let l2 = vec![block(2, 0, 1, 10), block(2, 0, 2, 10)];
        assert!(plan("t", &l2, &m, &levels(), 1 << 30, 100 * MIN).is_empty());
    }

    #[test]
    fn the_memory_budget_splits_groups_and_held_blocks_wait() {
        let live: Vec<BlockRef> = (0..3).map(|i| block(0, 0, i as u128, 100)).collect();
        let m = Manifest::default();
        // Room for two inputs per job.
        let jobs = plan("t", &live, &m, &levels(), 2 * 100 * MEMORY_PER_INPUT_BYTE, MIN);
        assert_eq!(jobs.iter().map(|j| j.inputs.len()).collect::<Vec<_>>(), [2, 1]);
        // A block in a job whose lease runs is not planned again; an expired lease frees it.
        let mut m = Manifest::default();
        m.jobs.push(Job {
            output: "x".into(),
            level: 1,
            inputs: vec![live[0].path.to_string()],
            owner: "other".into(),
            token: 1,
            expires_at_ms: MIN + 1,
        });
        let jobs = plan("t", &live, &m, &levels(), 1 << 30, MIN);
        assert_eq!(jobs[0].inputs, live[1..].to_vec());
        let jobs = plan("t", &live, &m, &levels(), 1 << 30, MIN + 1);
        assert_eq!(jobs[0].inputs, live);
    }

    #[test]
    fn output_ids_depend_on_the_inputs_only() {
        let a = vec![block(0, 5000, 1, 1), block(0, 7000, 2, 1)];
        let mut b = a.clone();
        b.reverse();
        assert_eq!(output_id(&a, 1), output_id(&b, 1));
        assert_eq!(output_id(&a, 1).timestamp_ms(), 5000);
        assert_ne!(output_id(&a, 1), output_id(&a, 2));
        assert_ne!(output_id(&a, 1), output_id(&a[..1], 1));
    }
}
