//! Whole-block verification, for `flamepipe blocks verify`: everything a query could trip on.
//!
//! A query reads a footer, then only the sections it needs; a damaged section may go unnoticed
//! until someone asks for it. [`verify_block`] reads every byte of a block instead: both magics,
//! the footer, every section of every dataset (checksums, lengths, decoding), every id reference
//! (through the same checks the reader and ingest apply, [`crate::validate`]), and the footer's
//! claims against the sections (counts, time ranges, profile types, services, totals).

use std::collections::BTreeSet;
use std::sync::Arc;

use object_store::{ObjectStore, ObjectStoreExt};

use super::format::{self, BlockMeta};
use super::{BlockError, BlockReader, BlockRef, Result};
use crate::labels::{SERVICE_NAME, UNKNOWN_SERVICE};
use crate::validate;

/// What a verified block holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Verified {
    pub datasets: u64,
    pub profiles: u64,
    pub samples: u64,
}

/// Reads and checks all of one block; the error names the first problem found.
pub async fn verify_block(store: Arc<dyn ObjectStore>, block: &BlockRef) -> Result<Verified> {
    let name = block.path.to_string();
    let corrupt = |what: &'static str, detail: String| BlockError::corrupt(&name, what, detail);
    // Opening checks the size, the trailer and the footer; the header magic only this reads.
    let reader = BlockReader::open(Arc::clone(&store), block.path.clone()).await?;
    let head = store
        .get_range(&block.path, 0..format::HEADER_MAGIC.len() as u64)
        .await
        .map_err(|source| BlockError::Store {
            block: name.clone(),
            source,
        })?;
    if head.as_ref() != format::HEADER_MAGIC {
        return Err(BlockError::BadMagic { block: name });
    }
    let meta: &BlockMeta = reader.meta();
    if meta.id != block.id.to_string() || meta.tenant != block.tenant {
        return Err(corrupt(
            "footer",
            format!(
                "footer names block {} of tenant {:?}, but the object is {}",
                meta.id, meta.tenant, block.path
            ),
        ));
    }
    let mut verified = Verified::default();
    for ds in &meta.datasets {
        let (index, profiles) = reader.indexed_profiles(ds).await?;
        let mut types = BTreeSet::new();
        for (i, p) in profiles.iter().enumerate() {
            let what =
                |detail: String| corrupt("index", format!("dataset {:?}, profile {i}: {detail}", ds.service_name));
            validate::check_profile(p).map_err(|e| what(e.to_string()))?;
            if p.series.get(SERVICE_NAME).unwrap_or(UNKNOWN_SERVICE) != ds.service_name {
                return Err(what(format!("series {} is not of this dataset's service", p.series)));
            }
            let end = p.timestamp_ns.saturating_add(p.duration_ns);
            if p.timestamp_ns < ds.min_time_ns || end > ds.max_time_ns {
                return Err(what("time outside the range the footer gives".into()));
            }
            if index.columns.profile_total[i] != p.total() {
                return Err(what("the total the index gives differs from the samples".into()));
            }
            types.insert(p.profile_type.id());
            verified.samples += p.samples.len() as u64;
        }
        if profiles.len() as u64 != ds.profile_count {
            return Err(corrupt(
                "footer",
                format!(
                    "dataset {:?} claims {} profiles, its index has {}",
                    ds.service_name,
                    ds.profile_count,
                    profiles.len()
                ),
            ));
        }
        let listed: BTreeSet<String> = ds.profile_types.iter().cloned().collect();
        if listed != types {
            return Err(corrupt(
                "footer",
                format!(
                    "dataset {:?} lists profile types {listed:?}, its index has {types:?}",
                    ds.service_name
                ),
            ));
        }
        verified.datasets += 1;
        verified.profiles += profiles.len() as u64;
    }
    if verified.profiles != meta.profile_count || verified.samples != meta.sample_count {
        return Err(corrupt(
            "footer",
            format!(
                "the footer claims {} profiles and {} samples, the datasets hold {} and {}",
                meta.profile_count, meta.sample_count, verified.profiles, verified.samples
            ),
        ));
    }
    Ok(verified)
}
