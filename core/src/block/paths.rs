//! Object keys of blocks: the one place that knows them.
//!
//! `blocks/<tenant>/L<level>/<ULID>.block`: level 0 for segments as the blocks exporter writes
//! them, 1 and up for compaction outputs (docs/storage.md). Listing a tenant is one prefix
//! listing; the ULID sorts blocks by creation time. Keys written before levels were in paths
//! (`blocks/<tenant>/<ULID>.block`) are read as level 0. Damaged blocks moved aside live under
//! `quarantine/`, which no listing of blocks sees.

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

/// Where a new segment (a level-0 block) of `tenant` goes.
pub fn block_path(tenant: &str, id: Ulid) -> Path {
    level_path(tenant, 0, id)
}

/// Where a block of `level` goes.
pub fn level_path(tenant: &str, level: u32, id: Ulid) -> Path {
    Path::from(format!("{BLOCKS_PREFIX}/{tenant}/L{level}/{id}{SUFFIX}"))
}

/// Where a damaged block is moved: `quarantine/blocks/<tenant>/...`.
pub fn quarantine_path(block: &BlockRef) -> Path {
    Path::from(format!("{QUARANTINE_PREFIX}/{}", block.path))
}

/// A block found in a store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockRef {
    pub tenant: String,
    pub level: u32,
    pub id: Ulid,
    pub path: Path,
    pub size: u64,
    /// When the object was written (milliseconds since the epoch), as the store says.
    pub modified_ms: i64,
}

/// A block key's parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockKey {
    pub tenant: String,
    pub level: u32,
    pub id: Ulid,
}

/// Parses a block key; other keys give `None`.
pub fn parse_block_path(path: &Path) -> Option<BlockKey> {
    let parts: Vec<_> = path.parts().collect();
    let (tenant, level, file) = match parts.as_slice() {
        [prefix, tenant, file] if prefix.as_ref() == BLOCKS_PREFIX => (tenant, 0, file),
        [prefix, tenant, level, file] if prefix.as_ref() == BLOCKS_PREFIX => {
            let level = level.as_ref().strip_prefix('L')?;
            // `L0`, `L12`: digits only, no sign or leading zeros.
            if level.is_empty()
                || !level.bytes().all(|b| b.is_ascii_digit())
                || (level.len() > 1 && level.starts_with('0'))
            {
                return None;
            }
            (tenant, level.parse().ok()?, file)
        }
        _ => return None,
    };
    let id = file.as_ref().strip_suffix(SUFFIX)?.parse().ok()?;
    Some(BlockKey {
        tenant: tenant.as_ref().to_string(),
        level,
        id,
    })
}

/// Every block object in `store`, or every block object of `tenant`, oldest first: live or
/// not (the manifest says which are live, see [`super::live_blocks`]).
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
            let key = parse_block_path(&o.location)?;
            Some(BlockRef {
                tenant: key.tenant,
                level: key.level,
                id: key.id,
                path: o.location,
                size: o.size,
                modified_ms: o.last_modified.timestamp_millis(),
            })
        })
        .collect();
    blocks.sort_by(|a, b| (a.id, &a.tenant, a.level).cmp(&(b.id, &b.tenant, b.level)));
    Ok(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip() {
        let id = Ulid::new();
        let p = block_path("acme", id);
        assert_eq!(p.to_string(), format!("blocks/acme/L0/{id}.block"));
        let key = |tenant: &str, level| {
            Some(BlockKey {
                tenant: tenant.to_string(),
                level,
                id,
            })
        };
        assert_eq!(parse_block_path(&p), key("acme", 0));
        assert_eq!(parse_block_path(&level_path("acme", 2, id)), key("acme", 2));
        // Written before levels were in paths: level 0.
        assert_eq!(
            parse_block_path(&Path::from(format!("blocks/acme/{id}.block"))),
            key("acme", 0)
        );
        for other in [
            "blocks/acme/x.tmp".to_string(),
            "other/acme/x.block".to_string(),
            format!("blocks/acme/L/{id}.block"),
            format!("blocks/acme/L01/{id}.block"),
            format!("blocks/acme/Lx/{id}.block"),
            format!("blocks/acme/L1/extra/{id}.block"),
        ] {
            assert_eq!(parse_block_path(&Path::from(other.as_str())), None, "{other}");
        }
        let block = BlockRef {
            tenant: "acme".into(),
            level: 0,
            id,
            path: p.clone(),
            size: 0,
            modified_ms: 0,
        };
        let moved = quarantine_path(&block);
        assert_eq!(moved.to_string(), format!("quarantine/{p}"));
        assert_eq!(parse_block_path(&moved), None);
    }
}
