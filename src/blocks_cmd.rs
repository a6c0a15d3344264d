//! `flamepipe blocks ls|dump|verify`: look into the blocks of an object store from the command
//! line.
//!
//! Reads the store directly with the block reader, with no running flamepipe needed.
//! `ls` prints one line per block; `dump` prints JSON lines: one per block (its footer) and
//! one per stored profile (series, type, time, sample count, total, heaviest functions);
//! `verify` reads every block in full and names the damaged ones, optionally moving them
//! under `quarantine/`.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use flamepipe_core::block::manifest::{Manifest, read_latest};
use flamepipe_core::block::{BlockReader, BlockRef, list_blocks, quarantine_path, verify_block};
use flamepipe_core::store::{StoreLocation, StoreRegistry};
use futures::StreamExt;
use object_store::{ObjectStore, ObjectStoreExt};

/// How many functions `dump` lists per profile.
const TOP_FUNCTIONS: usize = 5;

/// A store that cannot be opened is a usage problem (exit 2), not a runtime failure.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadStore(pub String);

fn open(url: &str) -> anyhow::Result<Arc<dyn ObjectStore>> {
    let location = StoreLocation::parse(url).map_err(|e| BadStore(e.to_string()))?;
    // Opening a local store creates its directory; an inspection command must not.
    if let StoreLocation::Local(path) = &location
        && !path.is_dir()
    {
        return Err(BadStore(format!("store {url:?}: {} is not a directory", path.display())).into());
    }
    Ok(StoreRegistry::default()
        .open_url(url)
        .map_err(|e| BadStore(e.to_string()))?)
}

fn rfc3339(ns: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_nanos(u64::try_from(ns).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

async fn blocks(url: &str) -> anyhow::Result<(Arc<dyn ObjectStore>, Vec<BlockRef>)> {
    let store = open(url)?;
    let blocks = list_blocks(store.as_ref(), None).await?;
    Ok((store, blocks))
}

/// Whether a block is read by queries, by its tenant's manifest: `live`, `retired (why)`
/// (replaced by compaction or past retention, deleted after the grace period) or
/// `unreferenced` (a compaction output that was never committed).
fn state(manifest: &Manifest, block: &BlockRef) -> String {
    let path = block.path.as_ref();
    if let Some(r) = manifest.retired.iter().find(|r| r.path == path) {
        return format!("retired ({})", r.why);
    }
    if block.level == 0 || manifest.is_compacted(path) {
        "live".to_string()
    } else {
        "unreferenced".to_string()
    }
}

/// Prints one line per block: id, tenant, level, state, time range, profiles, samples, size,
/// services.
pub async fn ls(url: &str, out: &mut dyn Write) -> anyhow::Result<()> {
    let (store, blocks) = blocks(url).await?;
    writeln!(
        out,
        "BLOCK\tTENANT\tLEVEL\tSTATE\tMIN TIME\tMAX TIME\tPROFILES\tSAMPLES\tBYTES\tSERVICES"
    )?;
    let mut manifests: std::collections::HashMap<String, Manifest> = std::collections::HashMap::new();
    for block in blocks {
        if !manifests.contains_key(&block.tenant) {
            let m = read_latest(store.as_ref(), &block.tenant).await?;
            manifests.insert(block.tenant.clone(), m);
        }
        let state = state(&manifests[&block.tenant], &block);
        let reader = match BlockReader::open(Arc::clone(&store), block.path.clone()).await {
            Ok(reader) => reader,
            Err(e) => {
                let unreadable = format!("unreadable ({}): run blocks verify", e.reason());
                writeln!(
                    out,
                    "{}\t{}\t{}\t{state}\t-\t-\t-\t-\t{}\t{unreadable}",
                    block.id, block.tenant, block.level, block.size
                )?;
                continue;
            }
        };
        let meta = reader.meta();
        let services: Vec<&str> = meta.datasets.iter().map(|d| d.service_name.as_str()).collect();
        writeln!(
            out,
            "{}\t{}\t{}\t{state}\t{}\t{}\t{}\t{}\t{}\t{}",
            meta.id,
            meta.tenant,
            meta.level,
            rfc3339(meta.min_time_ns),
            rfc3339(meta.max_time_ns),
            meta.profile_count,
            meta.sample_count,
            block.size,
            services.join(",")
        )?;
    }
    Ok(())
}

/// Prints the block `id` (every block when `None`) and its profiles as JSON lines.
pub async fn dump(url: &str, id: Option<&str>, out: &mut dyn Write) -> anyhow::Result<()> {
    let (store, blocks) = blocks(url).await?;
    let selected: Vec<BlockRef> = blocks
        .into_iter()
        .filter(|b| id.is_none_or(|id| b.id.to_string() == id))
        .collect();
    if let (Some(id), true) = (id, selected.is_empty()) {
        anyhow::bail!("no block {id:?} in {url}");
    }
    for block in selected {
        let reader = BlockReader::open(Arc::clone(&store), block.path.clone()).await?;
        let meta = reader.meta();
        let datasets: Vec<serde_json::Value> = meta
            .datasets
            .iter()
            .map(|d| {
                serde_json::json!({
                    "service_name": d.service_name,
                    "profile_types": d.profile_types,
                    "profiles": d.profile_count,
                    "samples": d.sample_count,
                    "min_time": rfc3339(d.min_time_ns),
                    "max_time": rfc3339(d.max_time_ns),
                })
            })
            .collect();
        let line = serde_json::json!({
            "block": meta.id,
            "key": block.path.as_ref(),
            "bytes": block.size,
            "tenant": meta.tenant,
            "level": meta.level,
            "min_time": rfc3339(meta.min_time_ns),
            "max_time": rfc3339(meta.max_time_ns),
            "created_by": meta.created_by,
            "datasets": datasets,
        });
        writeln!(out, "{line}")?;
        for ds in &meta.datasets {
            for p in reader.profiles(ds).await? {
                let mut functions: Vec<(String, i64)> = p
                    .function_totals()
                    .into_iter()
                    .map(|(name, t)| (name, t.flat))
                    .collect();
                functions.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                functions.truncate(TOP_FUNCTIONS);
                let labels: serde_json::Map<String, serde_json::Value> =
                    p.series.iter().map(|(k, v)| (k.to_string(), v.into())).collect();
                let line = serde_json::json!({
                    "block": meta.id,
                    "profile_type": p.profile_type.id(),
                    "labels": labels,
                    "time": rfc3339(p.timestamp_ns),
                    "duration_ns": p.duration_ns,
                    "samples": p.samples.len(),
                    "total": p.total(),
                    "top_flat": functions,
                });
                writeln!(out, "{line}")?;
            }
        }
    }
    Ok(())
}

/// Blocks verified at once: each is read whole, so this bounds memory as well as requests.
const VERIFY_CONCURRENCY: usize = 4;

/// Some blocks are damaged: the command fails (exit 1) after naming each of them.
#[derive(Debug, thiserror::Error)]
#[error("{bad} of {total} blocks cannot be read")]
pub struct DamagedBlocks {
    pub bad: usize,
    pub total: usize,
}

/// Reads every block in full ([`verify_block`]) and prints one line per damaged block,
/// `BAD <key> <reason>: <error>` (and `QUARANTINED <key> -> <new key>` when asked to move
/// it), then a summary on `err`. Fails with [`DamagedBlocks`] if any block is damaged.
pub async fn verify(url: &str, quarantine: bool, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<()> {
    let (store, blocks) = blocks(url).await?;
    let total = blocks.len();
    let mut checks = futures::stream::iter(blocks.into_iter().map(|block| {
        let store = Arc::clone(&store);
        async move {
            let result = verify_block(store, &block).await;
            (block, result)
        }
    }))
    .buffered(VERIFY_CONCURRENCY);
    let (mut bad, mut profiles) = (0, 0);
    while let Some((block, result)) = checks.next().await {
        let error = match result {
            Ok(verified) => {
                profiles += verified.profiles;
                continue;
            }
            // A store that does not answer says nothing about the block: stop, don't guess.
            Err(e) if !e.is_damaged_block() => return Err(e.into()),
            Err(e) => e,
        };
        bad += 1;
        writeln!(out, "BAD {} {}: {error}", block.path, error.reason())?;
        // A block gone since the listing has nothing left to move.
        if quarantine && error.reason() != "missing" {
            let to = quarantine_path(&block);
            store.rename(&block.path, &to).await?;
            writeln!(out, "QUARANTINED {} -> {to}", block.path)?;
        }
    }
    writeln!(
        err,
        "verified {total} blocks ({profiles} profiles in the good ones): {bad} damaged{}",
        if quarantine && bad > 0 {
            ", moved under quarantine/"
        } else {
            ""
        }
    )?;
    if bad > 0 {
        return Err(DamagedBlocks { bad, total }.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use flamepipe_core::block::{BlockBuilder, block_path};
    use flamepipe_core::{Labels, Profile, ProfileType, Sample, SymbolsBuilder};
    use object_store::ObjectStoreExt;
    use ulid::Ulid;

    use super::*;

    fn profile() -> Profile {
        let mut b = SymbolsBuilder::new();
        let name = b.string("main.work");
        let function = b.function(flamepipe_core::symbols::Function {
            name,
            ..Default::default()
        });
        let location = b.location(flamepipe_core::symbols::Location {
            lines: vec![flamepipe_core::symbols::Line { function, line: 1 }],
            ..Default::default()
        });
        let stack = b.stack(&[location]);
        Profile {
            series: [("service_name", "checkout")].into_iter().collect::<Labels>(),
            profile_type: ProfileType::parse("process_cpu:cpu:nanoseconds:cpu:nanoseconds").unwrap(),
            timestamp_ns: 1_700_000_000_000_000_000,
            duration_ns: 10,
            period: 1,
            samples: vec![Sample {
                stack,
                value: 42,
                labels: 0,
            }],
            symbols: Arc::new(b.finish()),
        }
    }

    #[tokio::test]
    async fn lists_and_dumps_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().to_str().unwrap();
        let store = StoreRegistry::default().open_url(url).unwrap();
        let mut builder = BlockBuilder::new("anonymous", 0);
        builder.add(&profile());
        let id = Ulid::new();
        let block = builder.finish(id).unwrap();
        store
            .put(&block_path("anonymous", id), block.bytes.into())
            .await
            .unwrap();

        let mut out = Vec::new();
        ls(url, &mut out).await.unwrap();
        let text = String::from_utf8(out).unwrap();
        let row: Vec<&str> = text.lines().nth(1).unwrap().split('\t').collect();
        assert_eq!(row[0], id.to_string());
        assert_eq!(&row[1..4], ["anonymous", "0", "live"]);
        assert_eq!(row[4], "2023-11-14T22:13:20.000Z");
        assert_eq!(&row[6..8], ["1", "1"]);
        assert_eq!(row[9], "checkout");

        let mut out = Vec::new();
        dump(url, Some(&id.to_string()), &mut out).await.unwrap();
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["datasets"][0]["service_name"], "checkout");
        assert_eq!(lines[1]["total"], 42);
        assert_eq!(lines[1]["labels"]["service_name"], "checkout");
        assert_eq!(lines[1]["top_flat"][0], serde_json::json!(["main.work", 42]));
        assert!(dump(url, Some("01CCC"), &mut Vec::new()).await.is_err());
    }

    /// Writes a block of [`profile`] to `store`; `damage` may change its bytes first.
    async fn put_block(store: &Arc<dyn ObjectStore>, damage: impl FnOnce(&mut Vec<u8>)) -> Ulid {
        let mut builder = BlockBuilder::new("anonymous", 0);
        builder.add(&profile());
        let id = Ulid::new();
        let mut bytes = builder.finish(id).unwrap().bytes;
        damage(&mut bytes);
        store.put(&block_path("anonymous", id), bytes.into()).await.unwrap();
        id
    }

    #[tokio::test]
    async fn verify_names_damaged_blocks_and_quarantines_them() {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().to_str().unwrap();
        let store = StoreRegistry::default().open_url(url).unwrap();
        let good = put_block(&store, |_| {}).await;
        let cut = put_block(&store, |b| b.truncate(b.len() - 10)).await;
        let flipped = put_block(&store, |b| b[20] ^= 0xff).await;

        let (mut out, mut err) = (Vec::new(), Vec::new());
        let e = verify(url, false, &mut out, &mut err).await.unwrap_err();
        let damaged = e.downcast_ref::<DamagedBlocks>().expect("a DamagedBlocks error");
        assert_eq!((damaged.bad, damaged.total), (2, 3));
        let out = String::from_utf8(out).unwrap();
        let mut bad: Vec<&str> = out.lines().collect();
        bad.sort();
        assert_eq!(bad.len(), 2, "{out}");
        assert!(
            bad.iter()
                .any(|l| l.starts_with(&format!("BAD blocks/anonymous/L0/{cut}.block bad_magic: "))),
            "{out}"
        );
        assert!(
            bad.iter()
                .any(|l| l.starts_with(&format!("BAD blocks/anonymous/L0/{flipped}.block checksum: "))),
            "{out}"
        );
        assert!(!out.contains(&good.to_string()), "{out}");
        assert!(String::from_utf8(err).unwrap().contains("verified 3 blocks"));

        // ls still lists every block, marking the unreadable one.
        let mut listing = Vec::new();
        ls(url, &mut listing).await.unwrap();
        let listing = String::from_utf8(listing).unwrap();
        assert!(
            listing
                .lines()
                .any(|l| l.starts_with(&cut.to_string()) && l.contains("unreadable (bad_magic)")),
            "{listing}"
        );

        let mut out = Vec::new();
        assert!(verify(url, true, &mut out, &mut Vec::new()).await.is_err());
        assert_eq!(String::from_utf8(out).unwrap().matches("QUARANTINED").count(), 2);
        verify(url, false, &mut Vec::new(), &mut Vec::new()).await.unwrap();
        let left = list_blocks(store.as_ref(), None).await.unwrap();
        assert_eq!(left.iter().map(|b| b.id).collect::<Vec<_>>(), vec![good]);
        for id in [cut, flipped] {
            let moved = dir.path().join(format!("quarantine/blocks/anonymous/L0/{id}.block"));
            assert!(moved.is_file(), "{} missing", moved.display());
        }
    }

    #[tokio::test]
    async fn a_missing_directory_is_a_bad_store() {
        let e = ls("/nonexistent/flamepipe-store", &mut Vec::new()).await.unwrap_err();
        assert!(e.downcast_ref::<BadStore>().is_some(), "{e}");
    }
}
