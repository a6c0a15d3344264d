//! Golden blocks: one block per supported format version, checked in under
//! `core/testdata/blocks/v<N>.block`, written from the same inputs ([`golden_input`]).
//!
//! - Every supported version's golden block must still read, with the inputs' totals: stores
//!   written by older versions stay readable.
//! - The writer must still write the golden block of the current version, byte for byte
//!   (but for the `created_by` string, which names the crate version). A change to what the
//!   writer puts in a block fails here. If the format changed, bump `FORMAT_VERSION`, keep
//!   the old golden file and add the new one; if only the bytes changed with no change of
//!   meaning (a compressor upgrade), rewrite the current one: run the tests with
//!   `FLAMEPIPE_BLESS_GOLDEN=1`, then review and commit the file.

use std::path::PathBuf;

use prost::Message;
use ulid::Ulid;

use super::format::{self, BlockMeta, FORMAT_VERSION, SUPPORTED_VERSIONS};
use super::{BlockBuilder, decode_block};
use crate::formats::pprof::{self, ConvertOptions, Limits};
use crate::labels::Labels;
use crate::model::Profile;

/// Two real profiles of two services, one with sample labels: every part of a block.
fn golden_input() -> Vec<Profile> {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../integration/testdata/fixtures/pprof");
    let mut profiles = Vec::new();
    for (service, file, at_s) in [
        ("checkout", "go-cpu-labels-mixed.pb.gz", 1_700_000_000i64),
        ("cart", "go-heap-mixed.pb.gz", 1_700_000_010),
    ] {
        let bytes = std::fs::read(fixtures.join(file)).unwrap();
        let series: Labels = [("service_name", service), ("env", "golden")].into_iter().collect();
        let opts = ConvertOptions {
            series: &series,
            name: None,
            timestamp_ns: Some(at_s * 1_000_000_000),
            duration_ns: Some(10_000_000_000),
            default_timestamp_ns: 0,
            display_names: None,
        };
        profiles.extend(pprof::decode_profiles(&bytes, &Limits::default(), &opts).unwrap());
    }
    profiles
}

fn golden_path(version: u32) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("testdata/blocks/v{version}.block"))
}

fn write_golden() -> Vec<u8> {
    let mut builder = BlockBuilder::new("golden", 0);
    for p in &golden_input() {
        builder.add(p);
    }
    builder
        .finish(Ulid::from_parts(1_700_000_000_000, 0x00ff_00ff_00ff_00ff_00ff))
        .unwrap()
        .bytes
}

/// A block's sections and its footer with `created_by` cleared.
fn normalized(bytes: &[u8]) -> (&[u8], BlockMeta) {
    let trailer = bytes.len() - format::TRAILER_LEN;
    let footer_len = u32::from_le_bytes(bytes[trailer..trailer + 4].try_into().unwrap()) as usize;
    let footer_at = trailer - footer_len;
    let mut meta = BlockMeta::decode(&bytes[footer_at..trailer]).unwrap();
    meta.created_by.clear();
    (&bytes[..footer_at], meta)
}

#[test]
fn every_supported_version_reads_its_golden_block() {
    let input = golden_input();
    let input_total: i64 = input.iter().map(Profile::total).sum();
    for &version in SUPPORTED_VERSIONS {
        let path = golden_path(version);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (meta, datasets) = decode_block("golden", &bytes).unwrap_or_else(|e| panic!("v{version}: {e}"));
        let output: Vec<Profile> = datasets.into_iter().flatten().collect();
        assert_eq!(meta.tenant, "golden");
        assert_eq!(meta.datasets.len(), 2, "v{version}");
        assert_eq!(
            output.iter().map(Profile::total).sum::<i64>(),
            input_total,
            "v{version}"
        );
        let mut functions = std::collections::BTreeMap::new();
        for p in &input {
            for (name, t) in p.function_totals() {
                *functions.entry((p.profile_type.id(), name)).or_insert(0) += t.flat;
            }
        }
        for p in &output {
            for (name, t) in p.function_totals() {
                *functions.entry((p.profile_type.id(), name)).or_insert(0) -= t.flat;
            }
        }
        assert!(
            functions.values().all(|&d| d == 0),
            "v{version}: per-function totals differ"
        );
    }
}

#[test]
fn the_writer_still_writes_the_golden_block_of_its_version() {
    let written = write_golden();
    let path = golden_path(FORMAT_VERSION);
    if std::env::var_os("FLAMEPIPE_BLESS_GOLDEN").is_some() {
        std::fs::write(&path, &written).unwrap();
    }
    let golden = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; write it with FLAMEPIPE_BLESS_GOLDEN=1 cargo test -p flamepipe-core golden",
            path.display()
        )
    });
    let (sections, meta) = normalized(&written);
    let (golden_sections, golden_meta) = normalized(&golden);
    assert!(
        meta == golden_meta && sections == golden_sections,
        "the writer's output changed while FORMAT_VERSION is still {FORMAT_VERSION}: bump the \
         version and add a golden block for it, or, if the bytes changed with no change of \
         meaning, rewrite {} with FLAMEPIPE_BLESS_GOLDEN=1 (see core/src/block/golden.rs)",
        path.display()
    );
}
