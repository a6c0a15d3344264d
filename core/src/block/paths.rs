//! Object keys of blocks: the one place that knows them.
//!
//! `blocks/<tenant>/<ULID>.block`. Listing a tenant is one prefix listing; the ULID sorts
//! blocks by creation time. Damaged blocks moved aside live under `quarantine/`, which no
//! listing of blocks sees.

use futures::TryStreamExt;
use object_store::ObjectStore;
use object_store::path::Path;
use ulid::Ulid;

use super::{BlockError, Result};

pub const BLOCKS_PREFIX: &str = "blocks";
/// Where `flamepipe blocks verify --quarantine` moves damaged blocks: out of every listing,
/// kept for inspection.
pub const QUARANTINE_PREFIX: &str = "quarantine";
const SUFFIX: &str = ".block";

pub fn block_path(tenant: &str, id: Ulid) -> Path {
    Path::from(format!("{BLOCKS_PREFIX}/{tenant}/{id}{SUFFIX}"))
}

/// Where a damaged block is moved: `quarantine/blocks/<tenant>/<ULID>.block`.
pub fn quarantine_path(block: &BlockRef) -> Path {
    Path::from(format!("{QUARANTINE_PREFIX}/{}", block.path))
}

/// A block found in a store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockRef {
    pub tenant: String,
    pub id: Ulid,
    pub path: Path,
    pub size: u64,
}

/// Parses a block key back into (tenant, id); other keys give `None`.
pub fn parse_block_path(path: &Path) -> Option<(String, Ulid)> {
    let mut parts = path.parts();
    if parts.next()?.as_ref() != BLOCKS_PREFIX {
        return None;
    }
    let tenant = parts.next()?.as_ref().to_string();
    let file = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    let id = file.as_ref().strip_suffix(SUFFIX)?.parse().ok()?;
    Some((tenant, id))
}

/// Every block in `store`, or every block of `tenant`, oldest first.
pub async fn list_blocks(store: &dyn ObjectStore, tenant: Option<&str>) -> Result<Vec<BlockRef>> {
    let prefix = match tenant {
        Some(t) => Path::from(format!("{BLOCKS_PREFIX}/{t}")),
        None => Path::from(BLOCKS_PREFIX),
    };
    let objects: Vec<_> = store
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|source| BlockError::Store {
            block: prefix.to_string(),
            source,
        })?;
    let mut blocks: Vec<BlockRef> = objects
        .into_iter()
        .filter_map(|o| {
            let (tenant, id) = parse_block_path(&o.location)?;
            Some(BlockRef {
                tenant,
                id,
                path: o.location,
                size: o.size,
            })
        })
        .collect();
    blocks.sort_by(|a, b| (a.id, &a.tenant).cmp(&(b.id, &b.tenant)));
    Ok(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip() {
        let id = Ulid::new();
        let p = block_path("acme", id);
        assert_eq!(parse_block_path(&p), Some(("acme".to_string(), id)));
        assert_eq!(parse_block_path(&Path::from("blocks/acme/x.tmp")), None);
        assert_eq!(parse_block_path(&Path::from("other/acme/x.block")), None);
        let block = BlockRef {
            tenant: "acme".into(),
            id,
            path: p.clone(),
            size: 0,
        };
        let moved = quarantine_path(&block);
        assert_eq!(moved.to_string(), format!("quarantine/{p}"));
        assert_eq!(parse_block_path(&moved), None);
    }
}
