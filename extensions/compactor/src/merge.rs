//! Merging blocks into one: every input read whole (checksums and all), every distinct
//! profile kept, exact copies kept once, the result encoded as a block of the next level.
//!
//! Two profiles are copies when tenant, series, profile type, timestamp, duration, period and
//! content (the dedup processor's fingerprint: samples by frame names, values and sample
//! labels, blind to symbol ids and order) are equal: a retry stored twice across a restart of
//! the dedup processor, or the same profile forwarded by two agents. Anything else that shares
//! a series and timestamp is a different profile and stays.

use std::collections::HashSet;

use flamepipe_core::Profile;
use flamepipe_core::block::{BlockBuilder, BlockError, BlockRef, EncodedBlock, decode_block};
use flamepipe_core::fingerprint::{Fingerprint, Hashers, TableHashes};
use ulid::Ulid;

/// What a merge made.
pub struct Merged {
    pub block: EncodedBlock,
    pub input_profiles: u64,
    /// Exact copies dropped.
    pub copies: u64,
    /// The profiles written, when asked for (`keep`).
    pub profiles: Vec<Profile>,
}

/// Merges the blocks `inputs` (their bytes, in the order of `refs`) into one block `id` of
/// `level`, returning the profiles written too when `keep`. CPU-bound: run it on the
/// blocking pool.
pub fn merge_blocks(
    tenant: &str,
    level: u32,
    id: Ulid,
    refs: &[BlockRef],
    inputs: &[bytes::Bytes],
    keep: bool,
) -> Result<Merged, BlockError> {
    let hashers = Hashers::default();
    let mut seen: HashSet<(Fingerprint, i64, Fingerprint)> = HashSet::new();
    let mut builder = BlockBuilder::new(tenant, level);
    let (mut input_profiles, mut copies) = (0u64, 0u64);
    let mut kept = Vec::new();
    for (block, bytes) in refs.iter().zip(inputs) {
        let (_, datasets) = decode_block(block.path.as_ref(), bytes)?;
        for profiles in datasets {
            // One symbol table per dataset: its hashes are computed once.
            let mut tables: Vec<TableHashes> = Vec::new();
            for p in profiles {
                input_profiles += 1;
                let table = match tables.iter().position(|t| t.is_of(&p.symbols)) {
                    Some(i) => &mut tables[i],
                    None => {
                        tables.push(TableHashes::new(&p.symbols));
                        tables.last_mut().expect("just pushed")
                    }
                };
                let key = (hashers.series(tenant, &p), p.timestamp_ns, hashers.content(&p, table));
                if seen.insert(key) {
                    builder.add(&p);
                    if keep {
                        kept.push(p);
                    }
                } else {
                    copies += 1;
                }
            }
        }
    }
    Ok(Merged {
        block: builder.finish(id)?,
        input_profiles,
        copies,
        profiles: kept,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use flamepipe_core::block::block_path;
    use flamepipe_core::symbols::{Function, Line, Location};
    use flamepipe_core::{Labels, Profile, ProfileType, Sample, SymbolsBuilder};

    use super::*;

    /// One CPU profile of `service` at `at_ns`, one frame per stack.
    pub(crate) fn profile(service: &str, at_ns: i64, stacks: &[(&str, i64)]) -> Profile {
        let mut b = SymbolsBuilder::new();
        let samples = stacks
            .iter()
            .map(|(name, value)| {
                let name = b.string(name);
                let function = b.function(Function {
                    name,
                    ..Default::default()
                });
                let location = b.location(Location {
                    lines: vec![Line { function, line: 1 }],
                    ..Default::default()
                });
                Sample {
                    stack: b.stack(&[location]),
                    value: *value,
                    labels: 0,
                }
            })
            .collect();
        Profile {
            series: Labels::from_iter([("service_name", service)]),
            profile_type: ProfileType::new("process_cpu", "cpu", "nanoseconds", "cpu", "nanoseconds"),
            timestamp_ns: at_ns,
            duration_ns: 10,
            period: 1,
            samples,
            symbols: Arc::new(b.finish()),
        }
    }

    fn block(profiles: &[Profile]) -> (BlockRef, bytes::Bytes) {
        let mut builder = BlockBuilder::new("t", 0);
        for p in profiles {
            builder.add(p);
        }
        let id = Ulid::new();
        let bytes = builder.finish(id).unwrap().bytes;
        let r = BlockRef {
            tenant: "t".into(),
            level: 0,
            id,
            path: block_path("t", id),
            size: bytes.len() as u64,
            modified_ms: 0,
        };
        (r, bytes.into())
    }

    #[test]
    fn copies_are_kept_once_and_colliding_profiles_all_stay() {
        let a = profile("api", 100, &[("main", 5)]);
        let b = profile("api", 100, &[("other", 7)]); // same series and time, other content
        let c = profile("db", 100, &[("main", 5)]); // same content, other series
        let (r1, b1) = block(&[a.clone(), b.clone()]);
        let (r2, b2) = block(&[a.clone(), c.clone()]);
        let merged = merge_blocks("t", 1, Ulid::new(), &[r1, r2], &[b1, b2], false).unwrap();
        assert_eq!((merged.input_profiles, merged.copies), (4, 1));
        assert_eq!(merged.block.meta.level, 1);
        let (_, datasets) = decode_block("out", &merged.block.bytes).unwrap();
        let out: Vec<Profile> = datasets.into_iter().flatten().collect();
        assert_eq!(out.len(), 3);
        assert_eq!(out.iter().map(Profile::total).sum::<i64>(), 5 + 7 + 5);
    }
}
