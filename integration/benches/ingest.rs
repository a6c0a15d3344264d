//! Ingest benchmark over the bench corpus (integration/testdata/bench-corpus) (run: `cargo bench --bench ingest`).
//!
//! Prints, for the cpu/ and m10/ corpora, in one run:
//! (a) the decode floor: gunzip + protobuf decode into the pprof structs, one thread,
//!     thread CPU time;
//! (b) full ingest: the release `flamepipe` binary (pyroscope receiver -> segment 1s ->
//!     blocks on local disk, fsync, `ack: durable`), fed over HTTP by concurrent clients; CPU
//!     time of the flamepipe process only; and the same with the `dedup` processor before
//!     `segment` (the shipped pipeline's shape), whose cost is the last column;
//! as MB/s of gzip input per core, the ratio b/a, ack latency, peak RSS and the size of the
//! stored blocks against the gzip input; and (c) the cost of the checks every profile passes
//! before it enters a pipeline (`validate::check_batch`), one thread, as a share of (a).
//! Figures are recorded in docs/benchmarks.md.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use flamepipe_core::formats::pprof::{ConvertOptions, Limits, decode_profiles, proto};
use flamepipe_core::{Labels, Profile, validate};
use flamepipe_integration::load::send_corpus;
use flamepipe_integration::measure::{best_cpu, dir_size, peak_rss_mib};
use flamepipe_integration::{Flamepipe, Options, bench_corpus, bench_corpus_files};
use prost::Message;

const BIN: &str = env!("CARGO_BIN_EXE_flamepipe");
const CLIENTS: usize = 64;
/// Rounds per corpus; the median ratio is the figure to quote (this machine is noisy).
const ROUNDS: usize = 3;
/// Times each round sends the corpus: enough server CPU that /proc's 10 ms ticks are <1%.
const PASSES: usize = 5;

struct Floor {
    gunzip_mb_s: f64,
    mb_s: f64,
    profiles_s: f64,
}

fn decode_floor(files: &[Vec<u8>]) -> Floor {
    let bytes: usize = files.iter().map(Vec::len).sum();
    let mut buf = Vec::new();
    let gunzip = best_cpu(files, |f: &Vec<u8>| {
        buf.clear();
        flate2::read::GzDecoder::new(f.as_slice())
            .read_to_end(&mut buf)
            .unwrap();
        std::hint::black_box(&buf);
    });
    let decode = best_cpu(files, |f: &Vec<u8>| {
        buf.clear();
        flate2::read::GzDecoder::new(f.as_slice())
            .read_to_end(&mut buf)
            .unwrap();
        std::hint::black_box(proto::Profile::decode(buf.as_slice()).unwrap());
    });
    Floor {
        gunzip_mb_s: bytes as f64 / 1e6 / gunzip.as_secs_f64(),
        mb_s: bytes as f64 / 1e6 / decode.as_secs_f64(),
        profiles_s: files.len() as f64 / decode.as_secs_f64(),
    }
}

/// (c): thread CPU time of `validate::check_batch` over every request's decoded profiles, as
/// a share of the decode floor's time for the same files.
fn check_share(files: &[Vec<u8>], floor: &Floor) -> f64 {
    let series: Labels = [("service_name", "bench")].into_iter().collect();
    let opts = ConvertOptions {
        series: &series,
        name: None,
        timestamp_ns: None,
        duration_ns: None,
        default_timestamp_ns: 1_700_000_000_000_000_000,
        display_names: None,
    };
    let decoded: Vec<Vec<Profile>> = files
        .iter()
        .map(|f| decode_profiles(f, &Limits::default(), &opts).expect("corpus file decodes"))
        .collect();
    let checks = best_cpu(&decoded, |profiles| {
        std::hint::black_box(validate::check_batch(profiles)).expect("corpus profiles are valid");
    });
    let bytes: usize = files.iter().map(Vec::len).sum();
    let floor_time = bytes as f64 / 1e6 / floor.mb_s;
    checks.as_secs_f64() / floor_time
}

struct Ingest {
    /// Distinct series stored (sample labels split profiles into series).
    series: usize,
    mb_s_per_core: f64,
    profiles_s_per_core: f64,
    wall_mb_s: f64,
    ack_p50: Duration,
    ack_p99: Duration,
    peak_rss: f64,
    stored_ratio: f64,
}

/// (b) over `passes` sends of the corpus; with `dedup`, the shipped pipeline's `dedup`
/// processor before `segment`.
fn full_ingest(files: &[Vec<u8>], passes: usize, dedup: bool) -> Ingest {
    let opts = Options {
        flush_interval: "1s",
        dedup: dedup.then(|| "    window: 10m\n".to_string()),
        ..Options::default()
    };
    let fp = Flamepipe::start(BIN, &opts);
    let load = send_corpus(&fp, files, passes, CLIENTS);
    let stored = dir_size(&fp.data);
    let series = stored_series(&fp.data);
    Ingest {
        series,
        mb_s_per_core: load.mb_s_per_core(),
        profiles_s_per_core: load.requests as f64 / load.server_cpu.as_secs_f64(),
        wall_mb_s: load.bytes as f64 / 1e6 / load.wall.as_secs_f64(),
        ack_p50: load.percentile(50),
        ack_p99: load.percentile(99),
        peak_rss: peak_rss_mib(fp.pid()),
        stored_ratio: stored as f64 / load.bytes as f64,
    }
}

/// The distinct (series labels, profile type) in the blocks under `data`, from their indexes.
fn stored_series(data: &Path) -> usize {
    use flamepipe_core::block::{BlockReader, list_blocks};
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    runtime.block_on(async {
        let store = flamepipe_core::store::StoreRegistry::default()
            .open(data.to_str().expect("utf-8 path"))
            .expect("store");
        let mut series = std::collections::HashSet::new();
        for block in list_blocks(store.as_ref(), None).await.expect("list") {
            let reader = BlockReader::open(std::sync::Arc::clone(&store), block.path)
                .await
                .expect("block");
            for ds in &reader.meta().datasets {
                let index = reader.dataset_index(ds).await.expect("index");
                series.extend(index.series.into_iter().map(|(labels, t)| (labels.to_string(), t.id())));
            }
        }
        series.len()
    })
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would pass nothing: run only for bench.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let corpus = bench_corpus();
    println!("flamepipe ingest benchmark; corpus {}", corpus.display());
    println!(
        "{:<6} {:>11} {:>10} {:>12} {:>13} {:>6} {:>13} {:>9} {:>8} {:>8} {:>8} {:>9} {:>7} {:>7} {:>7}",
        "corpus",
        "gunzip MB/s",
        "floor MB/s",
        "floor prof/s",
        "ingest MB/s/c",
        "b/a",
        "ingest prof/s",
        "wall MB/s",
        "ack p50",
        "ack p99",
        "RSS MiB",
        "stored/gz",
        "checks",
        "series",
        "dedup"
    );
    for name in ["cpu", "m10"] {
        let files = bench_corpus_files(name);
        let mut ratios = Vec::new();
        let mut dedup_costs = Vec::new();
        for round in 1..=ROUNDS {
            // The floor before and after the ingest run, best of both: this machine's speed
            // drifts, and a slow floor would flatter the ratio.
            let before = decode_floor(&files);
            // Which of the two runs goes first alternates, so drift within a round does not
            // always favour the same one.
            let (ingest, with_dedup) = if round % 2 == 1 {
                let ingest = full_ingest(&files, PASSES, false);
                (ingest, full_ingest(&files, PASSES, true))
            } else {
                let with_dedup = full_ingest(&files, PASSES, true);
                (full_ingest(&files, PASSES, false), with_dedup)
            };
            let after = decode_floor(&files);
            let floor = if after.mb_s > before.mb_s { after } else { before };
            let ratio = ingest.mb_s_per_core / floor.mb_s;
            ratios.push(ratio);
            let checks = check_share(&files, &floor);
            let dedup_cost = ingest.mb_s_per_core / with_dedup.mb_s_per_core - 1.0;
            dedup_costs.push(dedup_cost);
            println!(
                "{:<6} {:>11.1} {:>10.1} {:>12.0} {:>13.1} {:>6.2} {:>13.0} {:>9.1} {:>8.0?} {:>8.0?} {:>8.0} {:>9.3} {:>6.1}% {:>7} {:>+6.1}%",
                format!("{name}#{round}"),
                floor.gunzip_mb_s,
                floor.mb_s,
                floor.profiles_s,
                ingest.mb_s_per_core,
                ratio,
                ingest.profiles_s_per_core,
                ingest.wall_mb_s,
                ingest.ack_p50,
                ingest.ack_p99,
                ingest.peak_rss,
                ingest.stored_ratio,
                checks * 100.0,
                ingest.series,
                dedup_cost * 100.0,
            );
        }
        ratios.sort_by(f64::total_cmp);
        dedup_costs.sort_by(f64::total_cmp);
        println!(
            "{name}: median b/a over {ROUNDS} rounds = {:.2}; median dedup cost {:+.1}%",
            ratios[ratios.len() / 2],
            dedup_costs[dedup_costs.len() / 2] * 100.0
        );
    }
}
