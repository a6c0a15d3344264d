//! Engine tests over blocks built from the real pprof fixtures: every query method agrees with
//! the input profiles, streams keep their ordering and progress invariants, a client that goes
//! away stops the reads, and damaged blocks are skipped and named (or fail the query when
//! configured so) instead of panicking.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use flamepipe_core::block::{BlockBuilder, block_path};
use flamepipe_core::formats::pprof::{self, ConvertOptions, Limits, proto};
use flamepipe_core::labels::{Labels, PROFILE_TYPE, SERVICE_NAME};
use flamepipe_core::model::Profile;
use flamepipe_core::profile_type::ProfileType;
use flamepipe_core::selector::Selector;
use flamepipe_core::telemetry::Telemetry;
use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt};
use prost::Message;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use ulid::Ulid;

use super::merge::{Aggregation, FlameGraphMerge, ProfileMerge, Series, SeriesLabels, SeriesMerge, SeriesSpec};
use super::*;

/// The timestamp of the first fixture; fixture `i` is stamped `BASE_NS + i * SPACING_NS`.
const BASE_NS: i64 = 1_700_000_000_000_000_000;
const SPACING_NS: i64 = 10_000_000_000;
/// A range that holds every profile of the corpus.
const ALL: (i64, i64) = (BASE_NS - 1_000 * SPACING_NS, BASE_NS + 1_000 * SPACING_NS);
const SERVICES: [&str; 3] = ["api", "worker", "db"];
const BLOCKS: usize = 4;
const TENANT: &str = "acme";

fn fixtures() -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../integration/testdata/fixtures/pprof");
    let mut files: Vec<_> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

fn convert(path: &PathBuf, series: &Labels, timestamp_ns: i64) -> Vec<Profile> {
    let bytes = std::fs::read(path).unwrap();
    let opts = ConvertOptions {
        series,
        name: None,
        timestamp_ns: Some(timestamp_ns),
        duration_ns: None,
        default_timestamp_ns: timestamp_ns,
        display_names: None,
    };
    // As stored: one profile per series its sample labels make (the block builder splits them
    // again, which changes nothing), so stored profiles compare with these one to one.
    let decoded =
        pprof::decode_profiles(&bytes, &Limits::default(), &opts).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    flamepipe_core::split::split_by_sample_labels(decoded)
}

/// Every fixture, spread over [`BLOCKS`] blocks and three services (so that each service has
/// datasets in several blocks), with an `env` label alternating between `prod` and `dev`.
struct Corpus {
    /// (block number, profile) for every input profile.
    profiles: Vec<(usize, Profile)>,
    blocks: Vec<(Ulid, Vec<u8>)>,
}

fn corpus() -> &'static Corpus {
    static CORPUS: OnceLock<Corpus> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let mut builders: Vec<BlockBuilder> = (0..BLOCKS).map(|_| BlockBuilder::new(TENANT, 0)).collect();
        let mut profiles = Vec::new();
        for (i, path) in fixtures().iter().enumerate() {
            let series: Labels = [
                (SERVICE_NAME, SERVICES[i % SERVICES.len()]),
                ("env", if i % 2 == 0 { "prod" } else { "dev" }),
            ]
            .into_iter()
            .collect();
            let block = i % BLOCKS;
            for p in convert(path, &series, BASE_NS + i as i64 * SPACING_NS) {
                builders[block].add(&p);
                profiles.push((block, p));
            }
        }
        let blocks = builders
            .into_iter()
            .map(|b| {
                let id = Ulid::new();
                (id, b.finish(id).unwrap().bytes)
            })
            .collect();
        Corpus { profiles, blocks }
    })
}

/// A store holding the corpus's blocks for `tenant`.
async fn corpus_store(tenant: &str) -> Arc<dyn ObjectStore> {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    for (id, bytes) in &corpus().blocks {
        store.put(&block_path(tenant, *id), bytes.clone().into()).await.unwrap();
    }
    store
}

fn engine(store: Arc<dyn ObjectStore>, limits: EngineOptions) -> (Arc<QueryEngine>, Arc<Telemetry>) {
    let telemetry = Arc::new(Telemetry::new());
    let engine = QueryEngine::new(store, Arc::clone(&telemetry), limits, CancellationToken::new());
    (Arc::new(engine), telemetry)
}

fn query(tenant: &str, selectors: &[&str], (start_ns, end_ns): (i64, i64)) -> Query {
    Query {
        tenant: tenant.to_string(),
        selectors: selectors
            .iter()
            .map(|s| Selector::parse(s).unwrap_or_else(|e| panic!("{s}: {e}")))
            .collect(),
        start_ns,
        end_ns,
    }
}

fn service(p: &Profile) -> &str {
    p.series.get(SERVICE_NAME).unwrap()
}

/// The input profiles `keep` selects.
fn inputs(keep: impl Fn(&Profile) -> bool) -> Vec<&'static Profile> {
    corpus().profiles.iter().map(|(_, p)| p).filter(|p| keep(p)).collect()
}

fn total(profiles: &[&Profile]) -> i64 {
    profiles.iter().map(|p| p.total()).sum()
}

/// The (profile type, service) with the most profiles: the subject of most tests.
fn target() -> (String, &'static str) {
    let mut counts: BTreeMap<(String, &'static str), (usize, BTreeSet<usize>)> = BTreeMap::new();
    for (block, p) in &corpus().profiles {
        let service = SERVICES.iter().find(|s| **s == service(p)).unwrap();
        let entry = counts.entry((p.profile_type.id(), service)).or_default();
        entry.0 += 1;
        entry.1.insert(*block);
    }
    let ((ty, service), (count, blocks)) = counts
        .into_iter()
        .max_by(|a, b| a.1.0.cmp(&b.1.0).then_with(|| b.0.cmp(&a.0)))
        .unwrap();
    assert!(count >= 3, "{ty} {service}: only {count} profiles");
    assert!(blocks.len() >= 2, "{ty} {service}: in one block only");
    (ty, service)
}

/// Per-function flat totals of the inputs (zeros dropped).
fn flat_totals(profiles: &[&Profile]) -> HashMap<String, i64> {
    let mut out: HashMap<String, i64> = HashMap::new();
    for p in profiles {
        for (name, t) in p.function_totals() {
            *out.entry(name).or_default() += t.flat;
        }
    }
    out.retain(|_, v| *v != 0);
    out
}

/// Per-name self totals summed over the rendered levels below the root (zeros dropped).
fn self_totals(fg: &FlameGraph) -> HashMap<String, i64> {
    let mut out: HashMap<String, i64> = HashMap::new();
    for level in fg.levels.iter().skip(1) {
        for node in level.chunks(4) {
            *out.entry(fg.names[node[3] as usize].clone()).or_default() += node[2];
        }
    }
    out.retain(|_, v| *v != 0);
    out
}

/// The layout is a tree: level 0 is the root, each level's totals add up to the previous
/// level's totals minus their self parts, and `max_self` is the largest self.
fn check_layout(fg: &FlameGraph) {
    if fg.total == 0 {
        return;
    }
    assert_eq!(fg.names[0], "total");
    assert_eq!(fg.levels[0].len(), 4);
    assert_eq!(fg.levels[0][1], fg.total);
    let mut max_self = 0;
    for d in 0..fg.levels.len() {
        assert_eq!(fg.levels[d].len() % 4, 0);
        max_self = fg.levels[d].chunks(4).map(|n| n[2]).fold(max_self, i64::max);
        if d > 0 {
            let below: i64 = fg.levels[d - 1].chunks(4).map(|n| n[1] - n[2]).sum();
            let here: i64 = fg.levels[d].chunks(4).map(|n| n[1]).sum();
            assert_eq!(here, below, "level {d}");
        }
    }
    assert_eq!(fg.max_self, max_self);
}

async fn flame_graph(engine: &QueryEngine, q: Query) -> (FlameGraph, Diagnostics) {
    engine.execute(q, FlameGraphMerge::new(0)).await.unwrap()
}

/// Checks a flame graph against the input profiles it should merge.
fn check_flame_graph(what: &str, fg: &FlameGraph, diagnostics: &Diagnostics, expected: &[&Profile]) {
    assert_eq!(fg.total, total(expected), "{what}: total");
    assert_eq!(
        diagnostics.profiles_merged,
        expected.len() as u64,
        "{what}: profiles merged"
    );
    check_layout(fg);
    let (got, want) = (self_totals(fg), flat_totals(expected));
    if got != want {
        let mut diff: Vec<_> = got
            .keys()
            .chain(want.keys())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter(|n| got.get(*n) != want.get(*n))
            .map(|n| (n, got.get(n), want.get(n)))
            .collect();
        diff.truncate(10);
        panic!("{what}: self totals differ from flat totals (name, flame graph, input): {diff:?}");
    }
}

#[tokio::test]
async fn flame_graph_totals_match_the_input_profiles() {
    let (ty, svc) = target();
    let (engine, _) = engine(corpus_store(TENANT).await, EngineOptions::default());

    // One profile type of one service, over every block.
    let selector = format!("{ty}{{service_name=\"{svc}\"}}");
    let expected = inputs(|p| p.profile_type.id() == ty && service(p) == svc);
    let (fg, diag) = flame_graph(&engine, query(TENANT, &[&selector], ALL)).await;
    check_flame_graph(&selector, &fg, &diag, &expected);
    assert!(fg.total > 0);

    // `max_nodes` keeps the nodes whose total reaches the `max_nodes`-th largest (ties
    // included) and gathers the rest into `other` nodes, keeping the total and the layout.
    let max_nodes = 64;
    let mut totals: Vec<i64> = fg.levels[1..].iter().flat_map(|l| l.chunks(4).map(|n| n[1])).collect();
    totals.sort_unstable_by(|a, b| b.cmp(a));
    assert!(totals.len() > max_nodes);
    let kept = totals.iter().filter(|&&t| t >= totals[max_nodes - 1]).count();
    let (pruned, _) = engine
        .execute(query(TENANT, &[&selector], ALL), FlameGraphMerge::new(max_nodes))
        .await
        .unwrap();
    assert_eq!(pruned.total, fg.total);
    check_layout(&pruned);
    let drawn = pruned.levels[1..]
        .iter()
        .flat_map(|l| l.chunks(4))
        .filter(|n| pruned.names[n[3] as usize] != super::tree::OTHER)
        .count();
    assert_eq!(drawn, kept);

    // A time range that leaves out the first and the last profile (bounds are inclusive).
    let mut times: Vec<i64> = expected.iter().map(|p| p.timestamp_ns).collect();
    times.sort();
    times.dedup();
    assert!(times.len() >= 3, "{times:?}");
    let range = (times[1], times[times.len() - 2]);
    let in_range = inputs(|p| {
        p.profile_type.id() == ty && service(p) == svc && p.timestamp_ns >= range.0 && p.timestamp_ns <= range.1
    });
    assert!(!in_range.is_empty() && in_range.len() < expected.len());
    let (fg, diag) = flame_graph(&engine, query(TENANT, &[&selector], range)).await;
    check_flame_graph("time range", &fg, &diag, &in_range);
    // A range between two profiles holds nothing.
    let (fg, diag) = flame_graph(&engine, query(TENANT, &[&selector], (times[0] + 1, times[1] - 1))).await;
    check_flame_graph("empty range", &fg, &diag, &[]);

    // Regex, negative and combined matchers.
    let other = *SERVICES.iter().find(|s| **s != svc).unwrap();
    type Keep = Box<dyn Fn(&Profile) -> bool>;
    let cases: Vec<(String, Keep)> = vec![
        (
            format!("{ty}{{service_name=~\"{svc}|{other}\"}}"),
            Box::new(move |p: &Profile| service(p) == svc || service(p) == other),
        ),
        (
            format!("{ty}{{service_name!=\"{svc}\"}}"),
            Box::new(move |p: &Profile| service(p) != svc),
        ),
        // Regexes match whole values.
        (
            format!("{ty}{{service_name=~\"{}\"}}", &svc[..svc.len() - 1]),
            Box::new(|_: &Profile| false),
        ),
        (
            format!("{ty}{{service_name=~\"{svc}\", env!=\"prod\"}}"),
            Box::new(move |p: &Profile| service(p) == svc && p.series.get("env") != Some("prod")),
        ),
        (
            format!("{ty}{{env=~\"pr.d\"}}"),
            Box::new(|p: &Profile| p.series.get("env") == Some("prod")),
        ),
    ];
    for (selector, keep) in &cases {
        let expected = inputs(|p| p.profile_type.id() == ty && keep(p));
        let (fg, diag) = flame_graph(&engine, query(TENANT, &[selector], ALL)).await;
        check_flame_graph(selector, &fg, &diag, &expected);
    }

    // Several selectors select the union of what each does.
    let selectors = [
        format!("{ty}{{service_name=\"{svc}\"}}"),
        format!("{ty}{{service_name=\"{other}\"}}"),
    ];
    let expected = inputs(|p| p.profile_type.id() == ty && (service(p) == svc || service(p) == other));
    let (fg, diag) = flame_graph(&engine, query(TENANT, &[&selectors[0], &selectors[1]], ALL)).await;
    check_flame_graph("two selectors", &fg, &diag, &expected);
}

/// Per-function flat totals of a pprof: the leaf location's first line's function, or the
/// address of a location without lines.
fn pprof_flat_totals(p: &proto::Profile) -> HashMap<String, i64> {
    let mut out: HashMap<String, i64> = HashMap::new();
    for s in &p.sample {
        let Some(&leaf) = s.location_id.first() else { continue };
        let loc = &p.location[leaf as usize - 1];
        assert_eq!(loc.id, leaf);
        let name = match loc.line.first() {
            Some(line) => {
                let f = &p.function[line.function_id as usize - 1];
                assert_eq!(f.id, line.function_id);
                p.string_table[f.name as usize].clone()
            }
            None => format!("{:#x}", loc.address),
        };
        *out.entry(name).or_default() += s.value[0];
    }
    out.retain(|_, v| *v != 0);
    out
}

#[tokio::test]
async fn merged_pprof_matches_the_input_profiles() {
    let (ty, svc) = target();
    let profile_type = ProfileType::parse(&ty).unwrap();
    let (engine, _) = engine(corpus_store(TENANT).await, EngineOptions::default());
    let cases = [
        (format!("{ty}{{service_name=\"{svc}\"}}"), Some(svc)),
        // Every service: symbols of many datasets imported into one table.
        (ty.clone(), None),
    ];
    for (selector, only) in &cases {
        let expected = inputs(|p| p.profile_type.id() == ty && only.is_none_or(|s| service(p) == s));
        let merge = ProfileMerge::new(profile_type.clone(), ALL.0, ALL.1);
        let (pprof, diag) = engine.execute(query(TENANT, &[selector], ALL), merge).await.unwrap();
        assert_eq!(diag.profiles_merged, expected.len() as u64);

        assert_eq!(pprof.string_table[0], "");
        assert_eq!(pprof.sample_type.len(), 1);
        let st = pprof.sample_type[0];
        assert_eq!(pprof.string_table[st.r#type as usize], profile_type.sample_type);
        assert_eq!(pprof.string_table[st.unit as usize], profile_type.sample_unit);
        assert_eq!(pprof.time_nanos, ALL.0);
        assert_eq!(pprof.duration_nanos, ALL.1 - ALL.0);
        assert!(pprof.sample.iter().all(|s| s.value.len() == 1 && s.value[0] != 0));
        let sum: i64 = pprof.sample.iter().map(|s| s.value[0]).sum();
        assert_eq!(sum, total(&expected), "{selector}: total");
        assert_eq!(
            pprof_flat_totals(&pprof),
            flat_totals(&expected),
            "{selector}: flat totals"
        );

        // It is a valid pprof that decodes back to the same profile.
        let bytes = pprof.encode_to_vec();
        let series: Labels = [(SERVICE_NAME, "merged")].into_iter().collect();
        let opts = ConvertOptions {
            series: &series,
            name: Some(&profile_type.name),
            timestamp_ns: None,
            duration_ns: None,
            default_timestamp_ns: 0,
            display_names: None,
        };
        let decoded = pprof::decode_profiles(&bytes, &Limits::default(), &opts).unwrap();
        assert_eq!(decoded.len(), 1);
        assert_eq!(decoded[0].profile_type, profile_type);
        assert_eq!(decoded[0].total(), total(&expected));
        assert_eq!(
            flat_totals(&[&decoded[0]]),
            flat_totals(&expected),
            "{selector}: decoded"
        );
    }
}

/// Every event of a stream, checking as it goes that plans come first (the last one complete),
/// then snapshots, then exactly one result.
async fn collect<O>(
    mut rx: mpsc::Receiver<Result<Event<O>, QueryError>>,
) -> Result<(Vec<Plan>, Vec<(Progress, O)>, O, Diagnostics), QueryError> {
    let (mut plans, mut snapshots, mut result) = (Vec::new(), Vec::new(), None);
    while let Some(event) = rx.recv().await {
        assert!(result.is_none(), "an event after the result");
        match event? {
            Event::Plan(plan) => {
                assert!(snapshots.is_empty(), "a plan after a snapshot");
                assert!(
                    plans.last().is_none_or(|p: &Plan| !p.complete),
                    "a plan after the complete one"
                );
                plans.push(plan);
            }
            Event::Snapshot(progress, output) => {
                assert!(
                    plans.last().is_some_and(|p| p.complete),
                    "a snapshot before the complete plan"
                );
                snapshots.push((progress, output));
            }
            Event::Result(output, diagnostics) => {
                assert!(
                    plans.last().is_some_and(|p| p.complete),
                    "a result before the complete plan"
                );
                result = Some((output, diagnostics));
            }
        }
    }
    let (output, diagnostics) = result.expect("the stream ended without a result");
    Ok((plans, snapshots, output, diagnostics))
}

/// Streams a flame graph query of profile type `ty` and checks every event against the input
/// profiles `keep` selects. Candidate datasets are those holding `ty` (the selector must not
/// rule out services); datasets without matches count as read but merge nothing.
async fn check_flame_graph_stream(engine: &Arc<QueryEngine>, q: Query, ty: &str, keep: impl Fn(&Profile) -> bool) {
    // (block, service) -> (total, profiles) of the selected profiles, per candidate dataset.
    let mut datasets: BTreeMap<(usize, &str), (i64, u64)> = BTreeMap::new();
    for (block, p) in &corpus().profiles {
        if p.profile_type.id() == ty {
            let ds = datasets.entry((*block, service(p))).or_default();
            if keep(p) {
                ds.0 += p.total();
                ds.1 += 1;
            }
        }
    }
    let blocks: BTreeSet<usize> = datasets.keys().map(|k| k.0).collect();
    let matched = datasets.values().filter(|d| d.1 > 0).count() as u64;
    assert!(matched >= 3);

    let rx = engine.stream(q.clone(), FlameGraphMerge::new(0), Duration::ZERO);
    let (plans, snapshots, result, diagnostics) = collect(rx).await.unwrap();

    for pair in plans.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        assert!(a.blocks_total <= b.blocks_total && a.datasets_total <= b.datasets_total);
        assert!(a.bytes_total <= b.bytes_total);
    }
    let plan = *plans.last().unwrap();
    assert_eq!(plan.datasets_total, datasets.len() as u64);
    assert_eq!(plan.blocks_total, blocks.len() as u64);

    assert!(!snapshots.is_empty(), "no snapshot");
    let mut last = Progress {
        bytes_total: plan.bytes_total,
        ..Progress::default()
    };
    let mut last_total = 0;
    let parts: Vec<(i64, u64)> = datasets.values().copied().collect();
    for (progress, fg) in &snapshots {
        let p = *progress;
        assert_eq!(
            (p.blocks_total, p.datasets_total),
            (plan.blocks_total, plan.datasets_total)
        );
        assert!(
            p.blocks_done >= last.blocks_done && p.blocks_done <= p.blocks_total,
            "{p:?}"
        );
        assert!(
            p.datasets_done > last.datasets_done && p.datasets_done <= p.datasets_total,
            "{p:?}"
        );
        assert!(
            p.bytes_done >= last.bytes_done && p.bytes_total <= last.bytes_total,
            "{p:?}"
        );
        assert!(p.bytes_done <= p.bytes_total, "{p:?}");
        assert!(p.profiles_merged > last.profiles_merged, "{p:?}");
        assert!(
            fg.total > last_total && fg.total <= result.total,
            "{} then {}",
            last_total,
            fg.total
        );
        check_layout(fg);
        // A snapshot is the exact merge of `datasets_done` whole datasets.
        let exact = (0u32..1 << parts.len()).any(|set| {
            let chosen = parts.iter().enumerate().filter(|(i, _)| set & (1 << i) != 0);
            let (n, t, c) = chosen.fold((0u64, 0i64, 0u64), |(n, t, c), (_, d)| (n + 1, t + d.0, c + d.1));
            n == p.datasets_done && t == fg.total && c == p.profiles_merged
        });
        assert!(
            exact,
            "snapshot {p:?} with total {} is no sum of whole datasets",
            fg.total
        );
        (last, last_total) = (p, fg.total);
    }

    let (unary, unary_diagnostics) = flame_graph(engine, q).await;
    assert_eq!(result, unary);
    check_flame_graph("stream", &result, &diagnostics, &inputs(keep));
    assert_eq!(diagnostics.datasets_read, plan.datasets_total);
    // An index per dataset; symbols and samples only where profiles matched.
    assert_eq!(diagnostics.blocks_read, plan.datasets_total + 2 * matched);
    assert!(diagnostics.bytes_read <= plan.bytes_total && diagnostics.bytes_read >= last.bytes_done);
    let stages: Vec<&str> = diagnostics.stages.iter().map(|s| s.0).collect();
    assert_eq!(
        stages,
        ["plan", "index", "fetch", "decode", "extract", "merge", "render"]
    );
    assert_eq!(
        (unary_diagnostics.datasets_read, unary_diagnostics.bytes_read),
        (diagnostics.datasets_read, diagnostics.bytes_read)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_keep_their_invariants() {
    let (ty, _) = target();
    let (engine, _) = engine(corpus_store(TENANT).await, EngineOptions::default());
    // Every service: one dataset per (block, service) that holds the type.
    check_flame_graph_stream(&engine, query(TENANT, &[&ty], ALL), &ty, |p| p.profile_type.id() == ty).await;
    // `env` is decided per block, so half the candidate datasets are ruled out by their index
    // only: progress must shrink `bytes_total` rather than fall behind.
    let selector = format!("{ty}{{env=\"dev\"}}");
    check_flame_graph_stream(&engine, query(TENANT, &[&selector], ALL), &ty, |p| {
        p.profile_type.id() == ty && p.series.get("env") == Some("dev")
    })
    .await;

    // Series streams too, and end with the unary answer.
    let spec = SeriesSpec {
        start_ns: ALL.0,
        step_ns: 60_000_000_000,
        group_by: vec![SERVICE_NAME.to_string()],
    };
    let merge = || SeriesMerge::new(spec.clone(), Aggregation::Sum, None);
    let rx = engine.stream(query(TENANT, &[&ty], ALL), merge(), Duration::ZERO);
    let (_, snapshots, series, diagnostics) = collect(rx).await.unwrap();
    let (unary, _) = engine.execute(query(TENANT, &[&ty], ALL), merge()).await.unwrap();
    assert_eq!(series, unary);
    assert!(snapshots.iter().all(|(p, _)| p.datasets_done <= p.datasets_total));
    // Series need the index alone: one read per dataset.
    assert_eq!(diagnostics.blocks_read, diagnostics.datasets_read);
}

#[tokio::test]
async fn missing_data_gives_an_empty_result_and_tenants_are_isolated() {
    let (ty, _) = target();
    let store = corpus_store(TENANT).await;
    let (engine, _) = engine(Arc::clone(&store), EngineOptions::default());
    let empty_plan = Plan {
        complete: true,
        ..Plan::default()
    };

    // Tenants whose names share a prefix with the one that has data see nothing; nor does a
    // range without data.
    for (tenant, range) in [("acme2", ALL), ("acm", ALL), ("nobody", ALL), (TENANT, (0, 1_000))] {
        let rx = engine.stream(query(tenant, &[&ty], range), FlameGraphMerge::new(0), Duration::ZERO);
        let (plans, snapshots, fg, diagnostics) = collect(rx).await.unwrap();
        assert_eq!(plans, [empty_plan], "{tenant}");
        assert!(snapshots.is_empty(), "{tenant}");
        assert_eq!(fg, empty_flame_graph(), "{tenant}");
        assert_eq!((diagnostics.datasets_read, diagnostics.profiles_merged), (0, 0));
        let (fg, _) = flame_graph(&engine, query(tenant, &[], range)).await;
        assert_eq!(fg.total, 0, "{tenant}");
        let (series, _) = engine
            .execute(query(tenant, &[], range), SeriesLabels::default())
            .await
            .unwrap();
        assert!(series.is_empty(), "{tenant}");
    }

    // An empty store.
    let (engine, _) = engine_for_empty_store();
    let rx = engine.stream(query(TENANT, &[], ALL), FlameGraphMerge::new(0), Duration::ZERO);
    let (plans, snapshots, fg, _) = collect(rx).await.unwrap();
    assert_eq!((plans.as_slice(), snapshots.len(), fg.total), (&[empty_plan][..], 0, 0));

    // Data written for another tenant stays invisible, and the original tenant sees only its own.
    let mut builder = BlockBuilder::new("other", 0);
    let only = &corpus().profiles[0].1;
    builder.add(only);
    let id = Ulid::new();
    store
        .put(&block_path("other", id), builder.finish(id).unwrap().bytes.into())
        .await
        .unwrap();
    let (fg, _) = flame_graph(&engine_on(&store), query("other", &[], ALL)).await;
    assert_eq!(fg.total, only.total());
    let everything = inputs(|_| true);
    let (fg, diag) = flame_graph(&engine_on(&store), query(TENANT, &[], ALL)).await;
    check_flame_graph("whole tenant", &fg, &diag, &everything);
}

/// What a query that selects nothing renders: the root alone.
fn empty_flame_graph() -> FlameGraph {
    FlameGraph {
        names: vec!["total".to_string()],
        levels: vec![vec![0, 0, 0, 0]],
        total: 0,
        max_self: 0,
    }
}

fn engine_for_empty_store() -> (Arc<QueryEngine>, Arc<Telemetry>) {
    engine(Arc::new(InMemory::new()), EngineOptions::default())
}

fn engine_on(store: &Arc<dyn ObjectStore>) -> Arc<QueryEngine> {
    engine(Arc::clone(store), EngineOptions::default()).0
}

fn block_reads(telemetry: &Telemetry) -> u64 {
    let text = telemetry.encode();
    let line = text
        .lines()
        .find(|l| l.starts_with("flamepipe_query_block_reads_total "))
        .unwrap_or_else(|| panic!("no block read counter in {text}"));
    line.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64
}

/// `count` one-dataset blocks of tenant `many`, each holding the tiny Go CPU fixture.
async fn many_blocks(count: usize) -> Arc<dyn ObjectStore> {
    let path = fixtures()
        .into_iter()
        .find(|p| p.file_name().unwrap() == "pyroscope-go-cpu-tiny.pb.gz")
        .unwrap();
    let series: Labels = [(SERVICE_NAME, "tiny")].into_iter().collect();
    let profiles = convert(&path, &series, BASE_NS);
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    for i in 0..count {
        let mut builder = BlockBuilder::new("many", 0);
        for p in &profiles {
            let mut p = p.clone();
            p.timestamp_ns = BASE_NS + i as i64 * SPACING_NS;
            builder.add(&p);
        }
        let id = Ulid::new();
        let bytes = builder.finish(id).unwrap().bytes;
        store.put(&block_path("many", id), bytes.into()).await.unwrap();
    }
    store
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_gets_fewer_snapshots_not_a_queue() {
    const COUNT: usize = 100;
    let (engine, _) = engine(many_blocks(COUNT).await, EngineOptions::default());
    let (expected, _) = flame_graph(&engine, query("many", &[], ALL)).await;
    // Snapshots are due after every dataset (interval 0), but the client takes 50 ms over
    // each event: the engine must skip snapshots rather than queue one per dataset.
    let mut rx = engine.stream(query("many", &[], ALL), FlameGraphMerge::new(0), Duration::ZERO);
    let (mut snapshots, mut last_done) = (0, 0);
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        match rx.recv().await.expect("the stream ended without a result").unwrap() {
            Event::Plan(_) => {}
            Event::Snapshot(progress, _) => {
                snapshots += 1;
                assert!(progress.datasets_done > last_done);
                last_done = progress.datasets_done;
            }
            Event::Result(fg, diagnostics) => {
                assert_eq!(fg, expected);
                assert_eq!(diagnostics.datasets_read, COUNT as u64);
                break;
            }
        }
    }
    assert!(
        snapshots < COUNT / 2,
        "{snapshots} snapshots for {COUNT} datasets: snapshots were queued, not coalesced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_stream_stops_its_reads() {
    const COUNT: usize = 300;
    let store = many_blocks(COUNT).await;
    let limits = EngineOptions {
        max_concurrent_reads: 1,
        ..EngineOptions::default()
    };
    let (engine, telemetry) = engine(store, limits);
    // Every footer, then an index, symbols and samples per dataset (one per block).
    let full_query_reads = (COUNT + 3 * COUNT) as u64;

    let mut rx = engine.stream(query("many", &[], ALL), FlameGraphMerge::new(0), Duration::ZERO);
    loop {
        match rx.recv().await.expect("the stream ended before a snapshot").unwrap() {
            Event::Plan(_) => {}
            Event::Snapshot(progress, fg) => {
                assert!(progress.datasets_done >= 1 && fg.total > 0);
                break;
            }
            Event::Result(..) => panic!("a result before any snapshot"),
        }
    }
    drop(rx);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let after_drop = block_reads(&telemetry);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let later = block_reads(&telemetry);
    assert_eq!(after_drop, later, "reads went on after the client left");
    assert!(after_drop >= COUNT as u64 + 3, "{after_drop} reads");
    assert!(
        after_drop < full_query_reads / 2,
        "{after_drop} reads of the {full_query_reads} a whole query makes"
    );
}

type GroupLabels = Vec<(String, String)>;

#[tokio::test]
async fn series_and_labels_match_the_input_profiles() {
    let (ty, _) = target();
    let (engine, _) = engine(corpus_store(TENANT).await, EngineOptions::default());
    // Steps of one minute from a start that is not aligned with the profiles.
    let start = BASE_NS - 5_000_000_000;
    let range = (start, BASE_NS + 1_000 * SPACING_NS);
    let step = 60_000_000_000;
    let matching = inputs(|p| p.profile_type.id() == ty && p.timestamp_ns >= start);

    for group_by in [vec![SERVICE_NAME], vec!["env", SERVICE_NAME], vec!["absent"]] {
        // Group label values -> point time (ms) -> (sum, profiles).
        let mut expected: BTreeMap<GroupLabels, BTreeMap<i64, (i64, u64)>> = BTreeMap::new();
        for p in &matching {
            let labels = group_by
                .iter()
                .filter_map(|n| Some((n.to_string(), p.series.get(n)?.to_string())))
                .collect();
            let k = (p.timestamp_ns - start) / step;
            let point = expected
                .entry(labels)
                .or_default()
                .entry((start + k * step) / 1_000_000)
                .or_default();
            point.0 += p.total();
            point.1 += 1;
        }
        for aggregation in [Aggregation::Sum, Aggregation::Average] {
            let spec = SeriesSpec {
                start_ns: start,
                step_ns: step,
                group_by: group_by.iter().map(|s| s.to_string()).collect(),
            };
            let merge = SeriesMerge::new(spec, aggregation, None);
            let (series, diag) = engine.execute(query(TENANT, &[&ty], range), merge).await.unwrap();
            assert_eq!(diag.profiles_merged, matching.len() as u64);
            let want: Vec<Series> = expected
                .iter()
                .map(|(labels, points)| Series {
                    labels: labels.clone(),
                    points: points
                        .iter()
                        .map(|(&ms, &(sum, n))| {
                            let value = match aggregation {
                                Aggregation::Sum => sum as f64,
                                Aggregation::Average => sum as f64 / n as f64,
                            };
                            (ms, value)
                        })
                        .collect(),
                })
                .collect();
            assert_eq!(series, want, "group by {group_by:?}, {aggregation:?}");
            if aggregation == Aggregation::Sum {
                let sum: f64 = series.iter().flat_map(|s| &s.points).map(|p| p.1).sum();
                assert_eq!(sum as i64, total(&matching));
            }
        }
    }

    // Series labels: the distinct (labels, type) of the selected profiles.
    let late = BASE_NS + 20 * SPACING_NS;
    for (selector, range) in [
        ("{service_name=~\"api|db\"}", ALL),
        ("{env=\"dev\"}", (late, ALL.1)),
        (ty.as_str(), ALL),
    ] {
        let q = query(TENANT, &[selector], range);
        let selected = inputs(|p| {
            q.selectors[0].matches(&p.series, &p.profile_type) && p.timestamp_ns >= range.0 && p.timestamp_ns <= range.1
        });
        assert!(!selected.is_empty(), "{selector}");
        let want: Vec<(Labels, ProfileType)> = selected
            .iter()
            .map(|p| (p.series.clone(), p.profile_type.clone()))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let (got, _) = engine.execute(q, SeriesLabels::default()).await.unwrap();
        assert_eq!(got, want, "{selector}");
        for (labels, profile_type) in &got {
            assert!(labels.get(SERVICE_NAME).is_some(), "{labels}");
            assert_eq!(labels.get(PROFILE_TYPE), Some(profile_type.id().as_str()), "{labels}");
        }
    }
}

/// A store for tenant `mixed` holding one good block and two damaged ones (samples with
/// flipped bytes, and a block cut short); returns the store, the good block's profiles and the
/// damaged blocks' ids.
async fn store_with_damaged_blocks() -> (Arc<dyn ObjectStore>, Vec<Profile>, Ulid, Ulid) {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let block_of = |service: &str, fixture: usize| {
        let mut builder = BlockBuilder::new("mixed", 0);
        let series: Labels = [(SERVICE_NAME, service)].into_iter().collect();
        let profiles = convert(&fixtures()[fixture], &series, BASE_NS);
        for p in &profiles {
            builder.add(p);
        }
        (profiles, builder.finish(Ulid::new()).unwrap())
    };
    let (good, block) = block_of("good", 0);
    store
        .put(&block_path("mixed", block.meta.id.parse().unwrap()), block.bytes.into())
        .await
        .unwrap();
    let (_, block) = block_of("flipped", 1);
    let flipped: Ulid = block.meta.id.parse().unwrap();
    let samples = block.meta.datasets[0].samples.unwrap();
    let mut bytes = block.bytes;
    bytes[(samples.offset + samples.length / 2) as usize] ^= 0xff;
    store.put(&block_path("mixed", flipped), bytes.into()).await.unwrap();
    let (_, block) = block_of("cut", 2);
    let cut: Ulid = block.meta.id.parse().unwrap();
    let bytes = block.bytes[..block.bytes.len() - 3].to_vec();
    store.put(&block_path("mixed", cut), bytes.into()).await.unwrap();
    (store, good, flipped, cut)
}

fn skipped_ids(diagnostics: &Diagnostics) -> BTreeMap<String, &'static str> {
    diagnostics.skipped.iter().map(|s| (s.id.clone(), s.reason)).collect()
}

#[tokio::test]
async fn damaged_blocks_are_skipped_and_named() {
    let (store, good, flipped, cut) = store_with_damaged_blocks().await;
    let (engine, telemetry) = engine(Arc::clone(&store), EngineOptions::default());
    let both = BTreeMap::from([(flipped.to_string(), "checksum"), (cut.to_string(), "bad_magic")]);

    let (fg, diagnostics) = flame_graph(&engine, query("mixed", &[], ALL)).await;
    check_flame_graph("good block only", &fg, &diagnostics, &good.iter().collect::<Vec<_>>());
    assert_eq!(skipped_ids(&diagnostics), both);
    assert!(
        diagnostics.skipped.iter().all(|s| s.message.contains(&s.id)),
        "{:?}",
        diagnostics.skipped
    );

    let merge = ProfileMerge::new(good[0].profile_type.clone(), ALL.0, ALL.1);
    let (_, diagnostics) = engine.execute(query("mixed", &[], ALL), merge).await.unwrap();
    assert_eq!(skipped_ids(&diagnostics), both);

    let (_, snapshots, streamed, diagnostics) =
        collect(engine.stream(query("mixed", &[], ALL), FlameGraphMerge::new(0), Duration::ZERO))
            .await
            .unwrap();
    assert_eq!(streamed, fg);
    assert_eq!(skipped_ids(&diagnostics), both);
    for (progress, _) in &snapshots {
        assert!(progress.bytes_done <= progress.bytes_total, "{progress:?}");
    }

    // The index of the block with broken samples is intact: label queries still see it.
    let (series, diagnostics) = engine
        .execute(query("mixed", &[], ALL), SeriesLabels::default())
        .await
        .unwrap();
    let services: BTreeSet<_> = series.iter().filter_map(|(l, _)| l.get(SERVICE_NAME)).collect();
    assert_eq!(services, BTreeSet::from(["flipped", "good"]));
    assert_eq!(
        skipped_ids(&diagnostics),
        BTreeMap::from([(cut.to_string(), "bad_magic")])
    );
    let (bounds, skipped) = engine.time_bounds("mixed").await.unwrap();
    assert!(bounds.is_some());
    assert_eq!(skipped.len(), 1);

    let metrics = telemetry.encode();
    for reason in ["checksum", "bad_magic"] {
        let line = format!("flamepipe_query_skipped_blocks_total{{reason=\"{reason}\"}}");
        assert!(metrics.contains(&line), "{line} missing from {metrics}");
    }
}

#[tokio::test]
async fn damaged_blocks_fail_the_query_when_configured() {
    let (store, _, _, _) = store_with_damaged_blocks().await;
    let options = EngineOptions {
        unreadable_blocks: UnreadableBlocks::Fail,
        ..EngineOptions::default()
    };
    let (engine, _) = engine(store, options);
    match engine.execute(query("mixed", &[], ALL), FlameGraphMerge::new(0)).await {
        Err(QueryError::Block(e)) => assert!(matches!(e.reason(), "checksum" | "bad_magic"), "{e}"),
        Err(e) => panic!("unexpected error {e:?}"),
        Ok(result) => panic!("a damaged block answered {result:?}"),
    }
    match collect(engine.stream(query("mixed", &[], ALL), FlameGraphMerge::new(0), Duration::ZERO)).await {
        Err(QueryError::Block(_)) => {}
        other => panic!("expected a block error, got {:?}", other.map(|(_, _, fg, _)| fg)),
    }
    assert!(engine.time_bounds("mixed").await.is_err());
}
