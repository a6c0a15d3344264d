//! The dedup processor's own costs (run: `cargo bench --bench dedup`):
//! - CPU per profile, one thread, thread CPU time: every profile of the bench corpus (cpu/ and
//!   m10/, decoded as ingest decodes them) through `Dedup::process` once as new profiles and
//!   once more as retries, against the decode floor (gunzip + prost) of the same files;
//! - memory per window entry: heap bytes held by the window after 200,000 distinct profiles,
//!   counted by this binary's allocator.
//!
//! The ingest bench (`cargo bench --bench ingest`) measures the whole pipeline with and without
//! the processor in one run. Figures are recorded in docs/benchmarks.md.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};

use flamepipe_core::Profile;
use flamepipe_core::component::{Ack, Batch, BatchProcessor, BuildContext};
use flamepipe_core::formats::pprof::proto;
use flamepipe_core::store::StoreRegistry;
use flamepipe_core::telemetry::Telemetry;
use flamepipe_integration::measure::{best_cpu, thread_cpu};
use flamepipe_integration::{bench_corpus, bench_corpus_files, bench_requests};
use flamepipe_processor_dedup::{Config, Dedup};
use prost::Message;
use tokio_util::sync::CancellationToken;

/// Counts live heap bytes, to measure what the window holds.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn dedup(config: Config) -> Dedup {
    let ctx = BuildContext {
        id: "dedup".into(),
        telemetry: Arc::new(Telemetry::new()),
        stores: StoreRegistry::default(),
        shutdown: CancellationToken::new(),
    };
    Dedup::new(config, &ctx)
}

fn batch(profiles: &[Profile]) -> Batch {
    let (ack, _) = Ack::new();
    let mut batch = Batch::new("bench", profiles.to_vec());
    batch.acks.push(ack);
    batch
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = runtime.enter();
    println!("flamepipe dedup benchmark; corpus {}", bench_corpus().display());
    println!(
        "{:<6} {:>6} {:>9} {:>14} {:>12} {:>12} {:>10}",
        "corpus", "files", "profiles", "floor ns/file", "new ns/prof", "retry ns/pr", "new/floor"
    );
    for name in ["cpu", "m10"] {
        let files = bench_corpus_files(name);
        let decoded = bench_requests(&files);
        let profiles: usize = decoded.iter().map(Vec::len).sum();
        let floor = best_cpu(&files, |f: &Vec<u8>| {
            let mut raw = Vec::new();
            flate2::read::GzDecoder::new(f.as_slice())
                .read_to_end(&mut raw)
                .unwrap();
            std::hint::black_box(proto::Profile::decode(raw.as_slice()).unwrap());
        });
        // Batches are built outside the timed part; each round gets a fresh processor, so the
        // first pass times new profiles and the second retries of them. Best of three rounds.
        let mut new_time = std::time::Duration::MAX;
        let mut retry_time = std::time::Duration::MAX;
        for _ in 0..3 {
            let mut d = dedup(Config::default());
            for pass in 0..2 {
                let batches: Vec<Batch> = decoded.iter().map(|r| batch(r)).collect();
                // Batches passed on are written (acknowledged) and dropped after the timed
                // part: that is the exporter's work, not the processor's.
                let mut passed = Vec::with_capacity(batches.len());
                let started = thread_cpu();
                for b in batches {
                    passed.extend(d.process(b));
                }
                let t = thread_cpu() - started;
                passed.into_iter().for_each(Batch::done);
                // Let the outcome tasks the processor spawned finish (not timed).
                runtime.block_on(tokio::task::yield_now());
                if pass == 0 {
                    new_time = new_time.min(t);
                } else {
                    retry_time = retry_time.min(t);
                }
            }
        }
        let per = |t: std::time::Duration| t.as_nanos() as f64 / profiles as f64;
        println!(
            "{:<6} {:>6} {:>9} {:>14.0} {:>12.0} {:>12.0} {:>9.1}%",
            name,
            files.len(),
            profiles,
            floor.as_nanos() as f64 / files.len() as f64,
            per(new_time),
            per(retry_time),
            new_time.as_secs_f64() / floor.as_secs_f64() * 100.0
        );
    }

    // Memory per window entry: distinct one-sample profiles, each its own entry.
    const ENTRIES: usize = 200_000;
    let template = bench_requests(&bench_corpus_files("cpu")[..1]).remove(0).remove(0);
    let mut d = dedup(Config {
        max_entries: ENTRIES,
        ..Config::default()
    });
    let before = LIVE.load(Ordering::Relaxed);
    for i in 0..ENTRIES {
        let mut p = template.clone();
        p.samples.truncate(1);
        p.timestamp_ns += i as i64 * 1_000_000_000;
        for out in d.process(batch(std::slice::from_ref(&p))) {
            out.done();
        }
        runtime.block_on(tokio::task::yield_now());
    }
    let held = LIVE.load(Ordering::Relaxed) - before;
    println!(
        "window: {} entries hold {:.1} MiB, {:.0} bytes per entry",
        d.window_len(),
        held as f64 / (1 << 20) as f64,
        held as f64 / d.window_len() as f64
    );
}
