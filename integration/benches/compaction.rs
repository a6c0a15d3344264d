//! Compaction benchmark over the bench corpus (run: `cargo bench --bench compaction`).
//!
//! For `cpu/` and `m10/` (200 gzipped Go pprof files each): every file is decoded as ingest
//! decodes it and written as one level-0 block (one request per segment, the worst case for
//! compaction), under 8 services (`bench-svc-N`), to a local store in a temporary directory.
//! Then, in one run:
//!
//! - **floor**: `go tool pprof -proto` merging the same 200 files into one profile (child CPU
//!   time, getrusage), the reference merger;
//! - **compaction**: the release `flamepipe compact` process with the shipped level defaults
//!   (20 inputs, then 10), until one block of level 2 is left, and its inputs are retired: CPU
//!   time of the process (/proc) and its peak RSS (VmHWM);
//! - the ratio floor CPU / compaction CPU (the goal: at least 20), the stored bytes after
//!   compaction against the gzip input (goal: at most 0.15), and the level-0 blocks' ratio;
//! - the totals: the compacted block's per-type total must equal the level-0 blocks', or the
//!   bench panics.
//!
//! Figures are recorded in docs/benchmarks.md.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flamepipe_core::block::{BlockBuilder, BlockReader, block_path, list_blocks, live_blocks};
use flamepipe_core::formats::pprof::{self, ConvertOptions, Limits};
use flamepipe_core::labels::Labels;
use flamepipe_integration::Flamepipe;
use flamepipe_integration::measure::{peak_rss_mib, process_cpu, rusage_cpu};
use flamepipe_integration::{bench_corpus, files_in};
use object_store::local::LocalFileSystem;
use object_store::{ObjectStore, ObjectStoreExt};

const BIN: &str = env!("CARGO_BIN_EXE_flamepipe");
const TENANT: &str = flamepipe_core::DEFAULT_TENANT;

/// Writes every file as one level-0 block; returns the gzip input's and the blocks' bytes.
async fn write_segments(store: &dyn ObjectStore, files: &[PathBuf]) -> (u64, u64) {
    let (mut input, mut written) = (0u64, 0u64);
    for (i, path) in files.iter().enumerate() {
        let bytes = std::fs::read(path).unwrap();
        input += bytes.len() as u64;
        let series: Labels = [("service_name", format!("bench-svc-{}", i % 8))].into_iter().collect();
        let opts = ConvertOptions {
            series: &series,
            name: None,
            timestamp_ns: Some(1_700_000_000_000_000_000 + i as i64 * 10_000_000_000),
            duration_ns: None,
            default_timestamp_ns: 0,
            display_names: None,
        };
        let profiles = pprof::decode_profiles(&bytes, &Limits::default(), &opts).unwrap();
        let mut builder = BlockBuilder::new(TENANT, 0);
        for p in &profiles {
            builder.add(p);
        }
        let id = ulid::Ulid::new();
        let block = builder.finish(id).unwrap();
        written += block.bytes.len() as u64;
        store.put(&block_path(TENANT, id), block.bytes.into()).await.unwrap();
    }
    (input, written)
}

/// Per profile type, the total of every live block.
async fn totals(store: &Arc<dyn ObjectStore>) -> std::collections::BTreeMap<String, i64> {
    let mut out = std::collections::BTreeMap::new();
    for block in live_blocks(store.as_ref(), TENANT).await.unwrap() {
        let reader = BlockReader::open(Arc::clone(store), block.path.clone()).await.unwrap();
        for ds in &reader.meta().datasets {
            for p in reader.profiles(ds).await.unwrap() {
                *out.entry(p.profile_type.id()).or_insert(0) += p.total();
            }
        }
    }
    out
}

fn go_merge(go: &Path, files: &[PathBuf], out: &Path) -> Duration {
    let before = rusage_cpu(libc::RUSAGE_CHILDREN);
    let status = Command::new(go)
        .args(["tool", "pprof", "-proto", "-symbolize=none", "-output"])
        .arg(out)
        .args(files)
        .output()
        .expect("go tool pprof -proto");
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    rusage_cpu(libc::RUSAGE_CHILDREN) - before
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let go = std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("go"))
                .find(|p| p.is_file())
        })
        .expect("go on PATH (Debian's golang-go, /usr/lib/go/bin): the floor is go tool pprof");
    println!("flamepipe compaction benchmark; corpus {}", bench_corpus().display());
    println!(
        "{:<6} {:>6} {:>10} {:>11} {:>11} {:>8} {:>9} {:>8} {:>9} {:>9} {:>8}",
        "corpus",
        "files",
        "gz MiB",
        "go cpu s",
        "fp cpu s",
        "go/fp",
        "fp wall s",
        "RSS MiB",
        "L0/gz",
        "out/gz",
        "blocks"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    for name in ["cpu", "m10"] {
        let files = files_in(&bench_corpus().join(name));
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(&data).unwrap());
        let (input, segments) = runtime.block_on(write_segments(store.as_ref(), &files));
        let before = runtime.block_on(totals(&store));

        let go_cpu = go_merge(&go, &files, &tmp.path().join("merged.pb.gz"));

        let started = Instant::now();
        let compactor = Flamepipe::start_compactor(BIN, |_| {
            format!(
                "extensions:\n  compactor:\n    store: local\n    interval: 100ms\n\
                 storage:\n  local:\n    url: file://{}\n\
                 service:\n  extensions: [compactor]\n  telemetry:\n    metrics_address: 127.0.0.1:0\n    logs:\n      level: info\n      format: json\n",
                data.display()
            )
        });
        let deadline = Instant::now() + Duration::from_secs(600);
        let (blocks, output) = loop {
            let live = runtime.block_on(live_blocks(store.as_ref(), TENANT)).unwrap();
            if live.len() == 1 && live[0].level == 2 {
                break (live.len(), live[0].size);
            }
            assert!(
                Instant::now() < deadline,
                "compaction did not finish: {} live blocks",
                live.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let wall = started.elapsed();
        let fp_cpu = process_cpu(compactor.pid());
        let rss = peak_rss_mib(compactor.pid());
        drop(compactor);
        let after = runtime.block_on(totals(&store));
        assert_eq!(before, after, "compaction changed the totals");
        let physical = runtime.block_on(list_blocks(store.as_ref(), None)).unwrap().len();
        assert_eq!(physical, files.len() + 10 + 1, "the inputs stay for the grace period");
        println!(
            "{:<6} {:>6} {:>10.1} {:>11.2} {:>11.2} {:>8.1} {:>9.2} {:>8.0} {:>9.3} {:>9.3} {:>8}",
            name,
            files.len(),
            input as f64 / (1 << 20) as f64,
            go_cpu.as_secs_f64(),
            fp_cpu.as_secs_f64(),
            go_cpu.as_secs_f64() / fp_cpu.as_secs_f64(),
            wall.as_secs_f64(),
            rss,
            segments as f64 / input as f64,
            output as f64 / input as f64,
            blocks
        );
    }
}
