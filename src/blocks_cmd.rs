//! `flamepipe blocks ls|dump`: look into the blocks of an object store from the command line.
//!
//! Reads the store directly, with no running flamepipe needed. Objects are listed under the
//! `blocks/` prefix; a block's objects are those whose key contains its id.

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use flamepipe_core::store::{StoreLocation, StoreRegistry};
use futures::TryStreamExt;
use object_store::ObjectStore;
use object_store::path::Path;

/// The prefix under which block objects live.
const BLOCKS_PREFIX: &str = "blocks";

/// A store that cannot be opened is a usage problem (exit 2), not a runtime failure.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadStore(pub String);

fn open(url: &str) -> anyhow::Result<Arc<dyn ObjectStore>> {
    let location = StoreLocation::parse(url).map_err(|e| BadStore(e.to_string()))?;
    // Opening a local store creates its directory; an inspection command must not.
    if let StoreLocation::Local(path) = &location {
        if !path.is_dir() {
            return Err(BadStore(format!("store {url:?}: {} is not a directory", path.display())).into());
        }
    }
    Ok(StoreRegistry::default()
        .open(url)
        .map_err(|e| BadStore(e.to_string()))?)
}

async fn list(store: &dyn ObjectStore) -> anyhow::Result<Vec<object_store::ObjectMeta>> {
    let prefix = Path::from(BLOCKS_PREFIX);
    let mut objects: Vec<_> = store
        .list(Some(&prefix))
        .try_collect()
        .await
        .context("listing blocks")?;
    objects.sort_by(|a, b| a.location.cmp(&b.location));
    Ok(objects)
}

/// Prints one line per object under `blocks/`: key, size in bytes, last modified.
pub async fn ls(url: &str, out: &mut dyn Write) -> anyhow::Result<()> {
    let store = open(url)?;
    for meta in list(store.as_ref()).await? {
        writeln!(
            out,
            "{}\t{}\t{}",
            meta.location,
            meta.size,
            meta.last_modified.to_rfc3339()
        )?;
    }
    Ok(())
}

/// Prints the objects of the block `id` (every block when `None`) as JSON lines.
pub async fn dump(url: &str, id: Option<&str>, out: &mut dyn Write) -> anyhow::Result<()> {
    let store = open(url)?;
    let objects = list(store.as_ref()).await?;
    let selected: Vec<_> = objects
        .iter()
        .filter(|m| id.is_none_or(|id| m.location.as_ref().contains(id)))
        .collect();
    if let (Some(id), true) = (id, selected.is_empty()) {
        anyhow::bail!("no block {id:?} in {url}");
    }
    for meta in selected {
        let line = serde_json::json!({
            "key": meta.location.as_ref(),
            "size": meta.size,
            "last_modified": meta.last_modified.to_rfc3339(),
            "e_tag": meta.e_tag,
        });
        writeln!(out, "{line}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;

    #[tokio::test]
    async fn lists_and_dumps_objects_under_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().to_str().unwrap();
        let store = StoreRegistry::default().open(url).unwrap();
        for key in [
            "blocks/anonymous/01AAA/block.bin",
            "blocks/anonymous/01BBB/block.bin",
            "other/x",
        ] {
            store
                .put(&Path::from(key), bytes::Bytes::from_static(b"abc").into())
                .await
                .unwrap();
        }
        let mut out = Vec::new();
        ls(url, &mut out).await.unwrap();
        let text = String::from_utf8(out).unwrap();
        let keys: Vec<_> = text.lines().map(|l| l.split('\t').next().unwrap()).collect();
        assert_eq!(
            keys,
            ["blocks/anonymous/01AAA/block.bin", "blocks/anonymous/01BBB/block.bin"]
        );

        let mut out = Vec::new();
        dump(url, Some("01BBB"), &mut out).await.unwrap();
        let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(line["key"], "blocks/anonymous/01BBB/block.bin");
        assert_eq!(line["size"], 3);
        assert!(dump(url, Some("01CCC"), &mut Vec::new()).await.is_err());
    }

    #[tokio::test]
    async fn a_missing_directory_is_a_bad_store() {
        let e = ls("/nonexistent/flamepipe-store", &mut Vec::new()).await.unwrap_err();
        assert!(e.downcast_ref::<BadStore>().is_some(), "{e}");
    }
}
