//! Block round trips over the real pprof fixtures, and refusal of corrupt blocks.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt};
use ulid::Ulid;

use super::*;
use crate::formats::pprof::{self, ConvertOptions, Limits};
use crate::labels::Labels;
use crate::model::{Profile, Totals};

fn fixtures(dir: &str) -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../integration/testdata/fixtures")
        .join(dir);
    let mut files: Vec<_> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

fn convert(path: &PathBuf) -> Vec<Profile> {
    let bytes = std::fs::read(path).unwrap();
    let series: Labels = [("service_name", "fixture")].into_iter().collect();
    let opts = ConvertOptions {
        series: &series,
        name: None,
        timestamp_ns: None,
        duration_ns: None,
        default_timestamp_ns: 1_700_000_000_000_000_000,
        display_names: None,
    };
    // As stored: one profile per series its sample labels make (the block builder splits them
    // again, which changes nothing), so stored profiles compare with these one to one.
    let decoded =
        pprof::decode_profiles(&bytes, &Limits::default(), &opts).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    crate::split::split_by_sample_labels(decoded)
}

/// Total, per-function totals, sample labels (as text) and series labels of one profile.
type Fingerprint = (i64, HashMap<String, Totals>, Vec<String>, Labels);

/// What must survive a round trip, keyed by profile type.
fn fingerprint(profiles: &[Profile]) -> HashMap<String, Fingerprint> {
    profiles
        .iter()
        .map(|p| {
            let mut labels: Vec<String> = p
                .samples
                .iter()
                .flat_map(|s| p.symbols.label_set(s.labels).iter().map(move |l| (s.value, l)))
                .map(|(v, l)| {
                    format!(
                        "{v}:{}={}/{}{}",
                        p.symbols.str(l.key),
                        p.symbols.str(l.str),
                        l.num,
                        p.symbols.str(l.num_unit)
                    )
                })
                .collect();
            labels.sort();
            (
                p.profile_type.id(),
                (p.total(), p.function_totals(), labels, p.series.clone()),
            )
        })
        .collect()
}

#[test]
fn every_pprof_fixture_round_trips() {
    let mut checked = 0;
    for path in fixtures("pprof") {
        let input = convert(&path);
        let mut builder = BlockBuilder::new("t1", 0);
        for p in &input {
            builder.add(p);
        }
        let block = builder.finish(Ulid::new()).unwrap();
        let (meta, datasets) = decode_block("test", &block.bytes).unwrap();
        assert_eq!(meta.profile_count as usize, input.len(), "{}", path.display());
        let output: Vec<Profile> = datasets.into_iter().flatten().collect();
        assert_eq!(fingerprint(&input), fingerprint(&output), "{}", path.display());
        for (a, b) in input.iter().zip(&output) {
            assert_eq!(
                (a.timestamp_ns, a.duration_ns, a.period),
                (b.timestamp_ns, b.duration_ns, b.period)
            );
        }
        checked += 1;
    }
    assert!(checked >= 50, "only {checked} fixtures");
}

#[tokio::test]
async fn reader_fetches_sections_from_a_store() {
    let mut builder = BlockBuilder::new("t1", 0);
    let mut inputs = Vec::new();
    for path in fixtures("pprof").iter().take(5) {
        for p in convert(path) {
            let mut p = p;
            p.series
                .set("service_name", path.file_name().unwrap().to_string_lossy().to_string());
            builder.add(&p);
            inputs.push(p);
        }
    }
    let id = Ulid::new();
    let block = builder.finish(id).unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    store.put(&block_path("t1", id), block.bytes.into()).await.unwrap();

    let listed = list_blocks(store.as_ref(), None).await.unwrap();
    assert_eq!(listed.len(), 1);
    let reader = BlockReader::open(Arc::clone(&store), listed[0].path.clone())
        .await
        .unwrap();
    assert_eq!(reader.meta().datasets.len(), 5);
    let mut output = Vec::new();
    for ds in &reader.meta().datasets {
        output.extend(reader.profiles(ds).await.unwrap());
    }
    let total = |ps: &[Profile]| ps.iter().map(Profile::total).sum::<i64>();
    assert_eq!(total(&inputs), total(&output));
    assert_eq!(inputs.len(), output.len());
}

#[test]
fn corrupt_blocks_are_refused() {
    let mut builder = BlockBuilder::new("t1", 0);
    for p in convert(&fixtures("pprof")[0]) {
        builder.add(&p);
    }
    let good = builder.finish(Ulid::new()).unwrap().bytes;
    let mut bad_magic = good.clone();
    bad_magic[0] ^= 1;
    assert!(matches!(
        decode_block("b", &bad_magic),
        Err(BlockError::BadMagic { .. })
    ));
    let mut bad_version = good.clone();
    let at = bad_version.len() - 8;
    bad_version[at] = 9;
    assert!(matches!(
        decode_block("b", &bad_version),
        Err(BlockError::UnsupportedVersion { version: 9, .. })
    ));
    let mut bad_section = good.clone();
    bad_section[20] ^= 0xff;
    assert!(matches!(
        decode_block("b", &bad_section),
        Err(BlockError::Checksum { .. })
    ));
    let mut bad_footer = good.clone();
    let at = bad_footer.len() - 20;
    bad_footer[at] ^= 0xff;
    assert!(matches!(
        decode_block("b", &bad_footer),
        Err(BlockError::Checksum { what: "footer", .. })
    ));
    assert!(decode_block("b", &good[..good.len() / 2]).is_err());
}

/// A real block to corrupt.
fn sample_block() -> &'static [u8] {
    static BLOCK: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BLOCK.get_or_init(|| {
        let mut builder = BlockBuilder::new("t1", 0);
        for p in convert(&fixtures("pprof")[0]) {
            builder.add(&p);
        }
        builder.finish(Ulid::new()).unwrap().bytes
    })
}

proptest::proptest! {
    /// Flipped bytes anywhere (header, sections, footer, trailer) and truncation give an
    /// error or a block, never a panic or a runaway allocation.
    #[test]
    fn corrupted_blocks_never_panic(
        flips in proptest::collection::vec((proptest::num::usize::ANY, 1u8..=255), 1..8),
        keep in 0.5f64..=1.0,
    ) {
        let mut bytes = sample_block().to_vec();
        let len = bytes.len();
        for (at, xor) in flips {
            bytes[at % len] ^= xor;
        }
        bytes.truncate((len as f64 * keep) as usize);
        let _ = decode_block("fuzz", &bytes);
    }
}

/// A block of two datasets (two services) built from real fixtures, with its id.
fn two_dataset_block() -> (Ulid, Vec<u8>) {
    let mut builder = BlockBuilder::new("t1", 0);
    for (service, path) in ["api", "db"].into_iter().zip(fixtures("pprof").iter().take(2)) {
        for mut p in convert(path) {
            p.series.set("service_name", service);
            builder.add(&p);
        }
    }
    let id = Ulid::new();
    (id, builder.finish(id).unwrap().bytes)
}

async fn verify_bytes(id: Ulid, bytes: Vec<u8>) -> Result<Verified> {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let path = block_path("t1", id);
    store.put(&path, bytes.into()).await.unwrap();
    let block = list_blocks(store.as_ref(), None).await.unwrap().remove(0);
    verify_block(store, &block).await
}

#[tokio::test]
async fn verify_reads_a_good_block_whole() {
    let (id, bytes) = two_dataset_block();
    let verified = verify_bytes(id, bytes.clone()).await.unwrap();
    let (meta, datasets) = decode_block("b", &bytes).unwrap();
    assert_eq!(verified.datasets, 2);
    assert_eq!(verified.profiles, meta.profile_count);
    assert_eq!(verified.samples, meta.sample_count);
    assert_eq!(verified.profiles, datasets.iter().map(Vec::len).sum::<usize>() as u64);
    // A block stored under another id than its footer's is not what it claims to be.
    let e = verify_bytes(Ulid::new(), bytes).await.unwrap_err();
    assert_eq!(e.reason(), "corrupt", "{e}");
}

#[tokio::test]
async fn verify_finds_every_flipped_byte_and_every_cut() {
    // Every byte of a block is covered by a magic, a checksum or the trailer's fields, so a
    // flip anywhere is found; a query reading only some sections would miss most of these.
    let (id, good) = two_dataset_block();
    let step = (good.len() / 600).max(1);
    for at in (0..good.len()).step_by(step).chain([good.len() - 1]) {
        let mut bytes = good.clone();
        bytes[at] ^= 0x5a;
        let e = verify_bytes(id, bytes)
            .await
            .expect_err(&format!("a flip at byte {at} went unnoticed"));
        assert!(e.is_damaged_block(), "{e}");
    }
    for keep in [0, 10, good.len() / 2, good.len() - 1] {
        let e = verify_bytes(id, good[..keep].to_vec())
            .await
            .expect_err("a cut block passed");
        assert!(e.is_damaged_block(), "{e}");
    }
}
