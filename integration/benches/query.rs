//! Query benchmark over the bench corpus (integration/testdata/bench-corpus)/m10 (run: `cargo bench --bench query`).
//!
//! The 200 m10 files (gzipped pprof, merges of ten CPU profiles each) are decoded with the
//! ingest path's decoder (`pprof::decode_profiles`): two profiles per file (cpu nanoseconds and
//! sample counts, sharing one symbol table), service `bench`, timestamps 10 s apart. They are
//! written in file order as level-0 blocks of [`PER_BLOCK`] (10) files each, both profiles of
//! a file in the same block as the segment processor would put them, to a local file store in
//! a temporary directory (`QUERY_BENCH_PER_BLOCK` changes the grouping).
//!
//! An entry is one (profile, stack) pair: a stack id with a non-zero summed value in one of the
//! 200 cpu profiles after summing that profile's samples by stack id. Per round it measures:
//!
//! - floors, from the decoded profiles in memory, one thread, thread CPU time, best of three
//!   passes, each ending in one `FlameTree` of every entry:
//!   - A (the goal's wording): per profile, sum by stack id and `add_stacks` with the
//!     profile's own symbols;
//!   - B (one table): the profiles' symbols imported beforehand (not timed) into one table;
//!     sum all entries by its stack ids, then `add_stacks` once;
//!   - C (the engine's shape): as B, but one table and one tree per block, trees merged;
//! - the query: `QueryEngine::stream` with `FlameGraphMerge::new(8192)` and 250 ms snapshots
//!   for `process_cpu:cpu:nanoseconds:cpu:nanoseconds{service_name="bench"}` over the whole
//!   range, on a tokio runtime with one worker per core: wall time to the first snapshot and to
//!   the result, and the process's CPU time (every thread, getrusage) during the query. "cold"
//!   is a fresh engine (no footers cached), "warm" the same query again on that engine; the
//!   block files are in the OS page cache in both;
//! - `go tool pprof -top` over the same 200 files, if `go` is on PATH (wall, and child CPU).
//!
//! After the rounds, the store is compacted in-process (the compactor's default levels: the 20
//! level-0 blocks become one level-1 block) and the cold and warm queries run again, three
//! times each, against the median floor B.
//!
//! The query's flame graph must equal every floor tree's rendering (so its total too), or the
//! bench panics. Figures are recorded in docs/benchmarks.md.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flamepipe_core::block::{BlockBuilder, block_path};
use flamepipe_core::formats::pprof::{self, ConvertOptions, Limits};
use flamepipe_core::labels::Labels;
use flamepipe_core::model::Profile;
use flamepipe_core::selector::Selector;
use flamepipe_core::symbols::{Symbols, SymbolsBuilder};
use flamepipe_core::telemetry::Telemetry;
use flamepipe_extension_query::engine::merge::FlameGraphMerge;
use flamepipe_extension_query::engine::{EngineOptions, Event, FlameGraph, FlameTree, Query, QueryEngine};
use flamepipe_integration::measure::{median, rusage_cpu, thread_cpu};
use flamepipe_integration::{bench_corpus, files_in};
use object_store::local::LocalFileSystem;
use object_store::{ObjectStore, ObjectStoreExt};
use tokio_util::sync::CancellationToken;

const ROUNDS: usize = 3;
/// m10 files per block: 20 blocks for the 200 files. `QUERY_BENCH_PER_BLOCK` overrides it
/// (e.g. 200: one block, as after compaction).
const PER_BLOCK: usize = 10;
const CPU_TYPE: &str = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";
const SERVICE: &str = "bench";
const TENANT: &str = flamepipe_core::DEFAULT_TENANT;
const BASE_NS: i64 = 1_700_000_000_000_000_000;
const SPACING_NS: i64 = 10_000_000_000;
const MAX_NODES: usize = 8192;
const SNAPSHOT_INTERVAL: Duration = Duration::from_millis(250);

/// Every file's profiles (one per sample type), in file order.
fn decode_all(files: &[PathBuf]) -> Vec<Vec<Profile>> {
    let series: Labels = [("service_name", SERVICE)].into_iter().collect();
    files
        .iter()
        .enumerate()
        .map(|(i, path)| {
            let bytes = std::fs::read(path).unwrap();
            let opts = ConvertOptions {
                series: &series,
                name: None,
                timestamp_ns: Some(BASE_NS + i as i64 * SPACING_NS),
                duration_ns: None,
                default_timestamp_ns: BASE_NS,
                display_names: None,
            };
            pprof::decode_profiles(&bytes, &Limits::default(), &opts)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .collect()
}

fn per_block() -> usize {
    std::env::var("QUERY_BENCH_PER_BLOCK")
        .ok()
        .map(|v| v.parse().expect("QUERY_BENCH_PER_BLOCK: a number of files"))
        .unwrap_or(PER_BLOCK)
        .max(1)
}

/// Writes the profiles as blocks of `per_block()` files each; returns (blocks, bytes).
async fn write_blocks(store: &dyn ObjectStore, files: &[Vec<Profile>]) -> (usize, u64) {
    let mut bytes = 0u64;
    let mut blocks = 0;
    for group in files.chunks(per_block()) {
        let mut builder = BlockBuilder::new(TENANT, 0);
        for p in group.iter().flatten() {
            builder.add(p);
        }
        let id = ulid::Ulid::new();
        let block = builder.finish(id).expect("encode block");
        bytes += block.bytes.len() as u64;
        store
            .put(&block_path(TENANT, id), block.bytes.into())
            .await
            .expect("put block");
        blocks += 1;
    }
    (blocks, bytes)
}

/// Per cpu profile, its (stack, summed value) entries with non-zero sums, by stack id.
fn sum_by_stack(p: &Profile, sums: &mut Vec<i64>) -> Vec<(u32, i64)> {
    sums.clear();
    sums.resize(p.symbols.stack_count(), 0);
    for s in &p.samples {
        let sum = &mut sums[s.stack as usize];
        *sum = sum.saturating_add(s.value);
    }
    sums.iter()
        .enumerate()
        .filter(|&(_, &v)| v != 0)
        .map(|(s, &v)| (s as u32, v))
        .collect()
}

/// Floor A, as the goal states it: sum each profile's values by stack id, then add every
/// (stack, value) to one tree with that profile's own symbols. Best of three passes in thread
/// CPU time; returns it with the tree of the last pass.
fn floor_per_profile(cpu: &[&Profile]) -> (Duration, FlameTree) {
    best_of_three(|| {
        let mut sums = Vec::new();
        let mut tree = FlameTree::default();
        for p in cpu {
            let entries = sum_by_stack(p, &mut sums);
            tree.add_stacks(&p.symbols, entries);
        }
        tree
    })
}

/// The profiles' symbols imported into one table (not timed), and each profile's entries
/// (after per-profile summing) with stack ids of that table.
struct Interned {
    symbols: Symbols,
    entries: Vec<Vec<(u32, i64)>>,
}

fn intern(cpu: &[&Profile]) -> Interned {
    let mut builder = SymbolsBuilder::new();
    let mut sums = Vec::new();
    let entries = cpu
        .iter()
        .map(|p| {
            let remap = builder.import(&p.symbols);
            sum_by_stack(p, &mut sums)
                .into_iter()
                .map(|(s, v)| (remap.stacks[s as usize], v))
                .collect()
        })
        .collect();
    Interned {
        symbols: builder.finish(),
        entries,
    }
}

/// Floor B: the same entries summed by stack id of one shared table (as a block's dataset
/// holds them), then the non-zero sums added to one tree.
fn floor_one_table(interned: &Interned) -> (Duration, FlameTree) {
    best_of_three(|| sum_into_tree(interned).1)
}

/// Floor C, the engine's shape from memory: per block's files, the entries summed by stack id
/// of that block's table into a tree of its own, and the block trees merged into one.
fn floor_per_block(blocks: &[Interned]) -> (Duration, FlameTree) {
    best_of_three(|| {
        let mut tree = FlameTree::default();
        for block in blocks {
            let (_, part) = sum_into_tree(block);
            tree.merge(&part);
        }
        tree
    })
}

/// The entries of `interned` summed by stack id, then into a new tree; with the stack count.
fn sum_into_tree(interned: &Interned) -> (usize, FlameTree) {
    let mut sums = vec![0i64; interned.symbols.stack_count()];
    for profile in &interned.entries {
        for &(s, v) in profile {
            let sum = &mut sums[s as usize];
            *sum = sum.saturating_add(v);
        }
    }
    let stacks: Vec<(u32, i64)> = sums
        .iter()
        .enumerate()
        .filter(|&(_, &v)| v != 0)
        .map(|(s, &v)| (s as u32, v))
        .collect();
    let mut tree = FlameTree::default();
    tree.add_stacks(&interned.symbols, stacks.iter().copied());
    (stacks.len(), tree)
}

fn best_of_three(mut f: impl FnMut() -> FlameTree) -> (Duration, FlameTree) {
    let mut best = Duration::MAX;
    let mut tree = FlameTree::default();
    for _ in 0..3 {
        let started = thread_cpu();
        let t = std::hint::black_box(f());
        best = best.min(thread_cpu() - started);
        tree = t;
    }
    (best, tree)
}

struct QueryRun {
    first_snapshot: Option<Duration>,
    snapshots: usize,
    total: Duration,
    cpu: Duration,
    result: FlameGraph,
    stages: Vec<(&'static str, Duration)>,
}

fn run_query(rt: &tokio::runtime::Runtime, engine: &Arc<QueryEngine>, query: &Query) -> QueryRun {
    rt.block_on(async {
        let cpu_before = rusage_cpu(libc::RUSAGE_SELF);
        let started = Instant::now();
        let mut rx = engine.stream(query.clone(), FlameGraphMerge::new(MAX_NODES), SNAPSHOT_INTERVAL);
        let mut first_snapshot = None;
        let mut snapshots = 0;
        while let Some(event) = rx.recv().await {
            match event.expect("query") {
                Event::Plan(_) => {}
                Event::Snapshot(_, _) => {
                    first_snapshot.get_or_insert_with(|| started.elapsed());
                    snapshots += 1;
                }
                Event::Result(result, diagnostics) => {
                    let total = started.elapsed();
                    let cpu = rusage_cpu(libc::RUSAGE_SELF) - cpu_before;
                    return QueryRun {
                        first_snapshot,
                        snapshots,
                        total,
                        cpu,
                        result,
                        stages: diagnostics.stages,
                    };
                }
            }
        }
        panic!("the query stream ended without a result");
    })
}

struct GoRun {
    wall: Duration,
    cpu: Duration,
    header: String,
    total_ns: Option<i64>,
}

/// `go tool pprof -top` merging the files (cpu sample type, no symbolization).
fn go_pprof_top(go: &Path, files: &[PathBuf]) -> GoRun {
    let cpu_before = rusage_cpu(libc::RUSAGE_CHILDREN);
    let started = Instant::now();
    let out = Command::new(go)
        .args([
            "tool",
            "pprof",
            "-top",
            "-symbolize=none",
            "-sample_index=cpu",
            "-unit=ns",
        ])
        .args(files)
        .output()
        .expect("run go tool pprof");
    let wall = started.elapsed();
    let cpu = rusage_cpu(libc::RUSAGE_CHILDREN) - cpu_before;
    assert!(
        out.status.success(),
        "go tool pprof: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let header = stdout
        .lines()
        .find(|l| l.starts_with("Showing nodes accounting for"))
        .unwrap_or("")
        .to_string();
    // "Showing nodes accounting for 123ns, 45.6% of 789ns total"
    let total_ns = header
        .rsplit_once(" of ")
        .and_then(|(_, t)| t.strip_suffix("ns total"))
        .and_then(|t| t.parse().ok());
    GoRun {
        wall,
        cpu,
        header,
        total_ns,
    }
}

/// Compacts the store with the compactor's defaults; returns what is left, described.
fn compact(rt: &tokio::runtime::Runtime, store: &Arc<dyn ObjectStore>) -> String {
    let ctx = flamepipe_core::component::BuildContext {
        id: Arc::from("compactor"),
        telemetry: Arc::new(Telemetry::new()),
        stores: flamepipe_core::store::StoreRegistry::default(),
        shutdown: CancellationToken::new(),
    };
    let compactor = flamepipe_extension_compactor::Compactor::new(
        flamepipe_extension_compactor::Config::default(),
        Arc::clone(store),
        &ctx,
    );
    let report = rt.block_on(compactor.run_once()).expect("compaction");
    let live = rt
        .block_on(flamepipe_core::block::live_blocks(store.as_ref(), TENANT))
        .expect("live blocks");
    let levels: Vec<String> = live.iter().map(|b| format!("L{}", b.level)).collect();
    format!("{} jobs; live blocks {}", report.committed, levels.join(" "))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would pass nothing: run only for bench.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let dir = bench_corpus().join("m10");
    let files = files_in(&dir);
    println!(
        "flamepipe query benchmark; corpus {} ({} files)",
        dir.display(),
        files.len()
    );

    let decoded = decode_all(&files);
    let mut types: Vec<String> = decoded[0].iter().map(|p| p.profile_type.id()).collect();
    types.sort();
    println!("profile types per file: {types:?}");
    let cpu: Vec<&Profile> = decoded
        .iter()
        .flatten()
        .filter(|p| p.profile_type.id() == CPU_TYPE)
        .collect();
    assert_eq!(cpu.len(), files.len(), "one {CPU_TYPE} profile per file");
    let mut scratch = Vec::new();
    let entries: usize = cpu.iter().map(|p| sum_by_stack(p, &mut scratch).len()).sum();
    let samples: usize = cpu.iter().map(|p| p.samples.len()).sum();
    println!(
        "entries: {entries} (profile, stack) pairs with a non-zero sum over {} cpu profiles ({samples} decoded samples before summing by stack id)",
        cpu.len()
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let tmp = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(tmp.path()).expect("local store"));
    let (blocks, block_bytes) = rt.block_on(write_blocks(store.as_ref(), &decoded));
    let profiles: usize = decoded.iter().map(Vec::len).sum();
    println!(
        "store: {blocks} level-0 blocks of {} files ({} profiles each, both sample types), one dataset each; {:.1} MiB in {}",
        per_block(),
        profiles / files.len() * per_block(),
        block_bytes as f64 / (1 << 20) as f64,
        tmp.path().display()
    );

    let query = Query {
        tenant: TENANT.to_string(),
        selectors: vec![Selector::parse(&format!("{CPU_TYPE}{{service_name=\"{SERVICE}\"}}")).expect("selector")],
        start_ns: BASE_NS - SPACING_NS,
        end_ns: BASE_NS + (files.len() as i64 + 1) * SPACING_NS,
    };
    let go = if std::env::var_os("QUERY_BENCH_NO_GO").is_some() {
        println!("go tool pprof: skipped (QUERY_BENCH_NO_GO is set)");
        None
    } else {
        let found = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("go"))
                .find(|p| p.is_file())
        });
        if found.is_none() {
            println!("go tool pprof: skipped (no `go` on PATH)");
        }
        found
    };

    let interned = intern(&cpu);
    let frames: usize = interned
        .entries
        .iter()
        .flatten()
        .map(|&(stack, _)| interned.symbols.stack(stack).len())
        .sum();
    let unique = interned
        .entries
        .iter()
        .flatten()
        .map(|&(s, _)| s)
        .collect::<HashSet<_>>()
        .len();
    let block_tables: Vec<Interned> = cpu.chunks(per_block()).map(intern).collect();
    let block_stacks: usize = block_tables.iter().map(|b| sum_into_tree(b).0).sum();
    println!(
        "stacks: {:.1} locations per entry on average; {unique} distinct stacks across the 200 profiles, \
         {block_stacks} summed over the blocks (distinct per block)",
        frames as f64 / entries as f64
    );

    // Per round: the floors, then a cold and a warm query, then go tool pprof.
    let mut floor_a = Vec::new();
    let mut floor_b = Vec::new();
    let mut floor_c = Vec::new();
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    let mut go_runs = Vec::new();
    let mut stage_lines = Vec::new();
    for _ in 0..ROUNDS {
        let (a_cpu, a_tree) = floor_per_profile(&cpu);
        let (b_cpu, b_tree) = floor_one_table(&interned);
        let (c_cpu, c_tree) = floor_per_block(&block_tables);
        let expected = a_tree.render(MAX_NODES);
        for tree in [&b_tree, &c_tree] {
            assert_eq!(tree.total(), a_tree.total());
            assert!(tree.render(MAX_NODES) == expected, "the floors disagree");
        }
        floor_a.push(a_cpu);
        floor_b.push(b_cpu);
        floor_c.push(c_cpu);
        let engine = Arc::new(QueryEngine::new(
            Arc::clone(&store),
            Arc::new(Telemetry::new()),
            EngineOptions::default(),
            CancellationToken::new(),
        ));
        for (name, runs) in [("cold", &mut cold), ("warm", &mut warm)] {
            let run = run_query(&rt, &engine, &query);
            assert_eq!(
                run.result.total,
                a_tree.total(),
                "{name} query total != floor tree total"
            );
            assert!(
                run.result == expected,
                "{name} query flame graph != the floor tree's rendering"
            );
            let stages: Vec<String> = run.stages.iter().map(|(s, d)| format!("{s} {:.1}", ms(*d))).collect();
            stage_lines.push(format!("{name}#{}: {}", runs.len() + 1, stages.join(", ")));
            runs.push(run);
        }
        if let Some(go) = &go {
            go_runs.push(go_pprof_top(go, &files));
        }
    }

    let per_entry = |d: Duration| d.as_nanos() as f64 / entries as f64;
    println!();
    println!("floors (one thread, thread CPU, best of 3 passes):");
    println!(
        "{:<8} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "round", "A ms", "A ns/e", "B ms", "B ns/e", "C ms", "C ns/e"
    );
    for round in 0..ROUNDS {
        let (a, b, c) = (floor_a[round], floor_b[round], floor_c[round]);
        println!(
            "{:<8} {:>10.2} {:>10.1} {:>10.2} {:>10.1} {:>10.2} {:>10.1}",
            format!("floor#{}", round + 1),
            ms(a),
            per_entry(a),
            ms(b),
            per_entry(b),
            ms(c),
            per_entry(c)
        );
    }
    println!();
    println!(
        "{:<8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>5}",
        "query",
        "1st snap",
        "total ms",
        "CPU ms",
        "wall ns/e",
        "CPU ns/e",
        "wall/A",
        "CPU/A",
        "wall/B",
        "CPU/B",
        "snaps"
    );
    for (name, runs) in [("cold", &cold), ("warm", &warm)] {
        for (round, run) in runs.iter().enumerate() {
            let (a, b) = (floor_a[round].as_secs_f64(), floor_b[round].as_secs_f64());
            println!(
                "{:<8} {:>9} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>8.2} {:>8.2} {:>8.1} {:>8.1} {:>5}",
                format!("{name}#{}", round + 1),
                run.first_snapshot
                    .map_or("none".to_string(), |d| format!("{:.1}", ms(d))),
                ms(run.total),
                ms(run.cpu),
                per_entry(run.total),
                per_entry(run.cpu),
                run.total.as_secs_f64() / a,
                run.cpu.as_secs_f64() / a,
                run.total.as_secs_f64() / b,
                run.cpu.as_secs_f64() / b,
                run.snapshots,
            );
        }
    }
    println!("engine stage times (ms; index/fetch/decode add up every worker's time, waits for a core included):");
    for line in &stage_lines {
        println!("  {line}");
    }

    println!();
    println!("medians over {ROUNDS} rounds (ratios taken within each round):");
    println!(
        "  floor A (per-profile trees) {:.1} ns/entry, B (one table) {:.1} ns/entry, C (tree per block, merged) {:.1} ns/entry",
        median(floor_a.iter().map(|&d| per_entry(d)).collect()),
        median(floor_b.iter().map(|&d| per_entry(d)).collect()),
        median(floor_c.iter().map(|&d| per_entry(d)).collect()),
    );
    for (name, runs) in [("cold", &cold), ("warm", &warm)] {
        let ratio = |f: &dyn Fn(&QueryRun) -> Duration, floors: &[Duration]| {
            median(
                runs.iter()
                    .zip(floors)
                    .map(|(r, fl)| f(r).as_secs_f64() / fl.as_secs_f64())
                    .collect(),
            )
        };
        let wall = |r: &QueryRun| r.total;
        let cpu_time = |r: &QueryRun| r.cpu;
        println!(
            "  {name}: first snapshot {:.1} ms, total {:.1} ms wall / {:.1} ms CPU ({:.0} / {:.0} ns/entry); total/A {:.2} wall {:.2} CPU; total/B {:.1} wall {:.1} CPU; total/C {:.1} wall {:.1} CPU",
            median(runs.iter().map(|r| r.first_snapshot.map_or(f64::NAN, ms)).collect()),
            median(runs.iter().map(|r| ms(r.total)).collect()),
            median(runs.iter().map(|r| ms(r.cpu)).collect()),
            median(runs.iter().map(|r| per_entry(r.total)).collect()),
            median(runs.iter().map(|r| per_entry(r.cpu)).collect()),
            ratio(&wall, &floor_a),
            ratio(&cpu_time, &floor_a),
            ratio(&wall, &floor_b),
            ratio(&cpu_time, &floor_b),
            ratio(&wall, &floor_c),
            ratio(&cpu_time, &floor_c),
        );
    }

    // The same query after compaction.
    let compacted = compact(&rt, &store);
    let expected = floor_one_table(&interned).1.render(MAX_NODES);
    let floor_b_median = median(floor_b.iter().map(|d| d.as_secs_f64()).collect());
    let mut after: Vec<(&str, QueryRun)> = Vec::new();
    for _ in 0..ROUNDS {
        let engine = Arc::new(QueryEngine::new(
            Arc::clone(&store),
            Arc::new(Telemetry::new()),
            EngineOptions::default(),
            CancellationToken::new(),
        ));
        for name in ["cold", "warm"] {
            let run = run_query(&rt, &engine, &query);
            assert!(
                run.result == expected,
                "{name} query after compaction != the floor tree"
            );
            after.push((name, run));
        }
    }
    println!(
        "after compaction ({compacted}): {}",
        ["cold", "warm"]
            .iter()
            .map(|name| {
                let runs: Vec<&QueryRun> = after.iter().filter(|(n, _)| n == name).map(|(_, r)| r).collect();
                format!(
                    "{name} first snapshot {:.1} ms, total {:.1} ms wall / {:.1} ms CPU, total/B {:.1} wall {:.1} CPU",
                    median(runs.iter().map(|r| r.first_snapshot.map_or(f64::NAN, ms)).collect()),
                    median(runs.iter().map(|r| ms(r.total)).collect()),
                    median(runs.iter().map(|r| ms(r.cpu)).collect()),
                    median(runs.iter().map(|r| r.total.as_secs_f64() / floor_b_median).collect()),
                    median(runs.iter().map(|r| r.cpu.as_secs_f64() / floor_b_median).collect()),
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    );
    if !go_runs.is_empty() {
        let result_total = cold[0].result.total;
        for (i, g) in go_runs.iter().enumerate() {
            println!(
                "go tool pprof -top #{}: wall {:.0} ms, child CPU {:.0} ms; {}",
                i + 1,
                ms(g.wall),
                ms(g.cpu),
                g.header.trim()
            );
        }
        println!(
            "go tool pprof -top: median wall {:.0} ms, median child CPU {:.0} ms; its total {} flamepipe's ({result_total} ns)",
            median(go_runs.iter().map(|g| ms(g.wall)).collect()),
            median(go_runs.iter().map(|g| ms(g.cpu)).collect()),
            match go_runs[0].total_ns.map(|t| t == result_total) {
                Some(true) => "equals",
                Some(false) => "DIFFERS FROM",
                None => "(unparsed) vs",
            }
        );
    }
}
