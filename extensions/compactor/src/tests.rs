//! The compaction protocol on an in-memory store, with the clock moved by hand: merging keeps
//! every distinct profile once, compactors racing on one store converge, a compactor paused
//! past its lease cannot commit, a compactor stopped at any call leaves a store that reads
//! correctly and that the next round finishes, and garbage collection and retention delete
//! only what nothing may read.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use flamepipe_core::Profile;
use flamepipe_core::block::manifest::read_latest;
use flamepipe_core::block::{BlockBuilder, BlockReader, block_path, list_blocks, live_blocks};
use flamepipe_core::clock::{Clock, ManualClock, SystemClock};
use flamepipe_core::component::BuildContext;
use flamepipe_core::config;
use flamepipe_core::store::StoreRegistry;
use flamepipe_core::store::faulty::{Failure, Fault, FaultyStore, Operation};
use flamepipe_core::telemetry::Telemetry;
use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt};
use proptest::prelude::*;
use tokio_util::sync::CancellationToken;
use ulid::Ulid;

use crate::config::Level;
use crate::{Compactor, Config, Report};

const LEASE_MS: i64 = 30_000;
const GRACE_MS: i64 = 60_000;

fn config() -> Config {
    Config {
        levels: vec![
            Level {
                max_inputs: 4,
                max_age: config::Duration::from_secs(10),
            },
            Level {
                max_inputs: 3,
                max_age: config::Duration::from_secs(60),
            },
        ],
        lease_duration: config::Duration::from_millis(LEASE_MS as u64),
        grace_period: config::Duration::from_millis(GRACE_MS as u64),
        ..Config::default()
    }
}

fn ctx() -> BuildContext {
    BuildContext {
        id: Arc::from("compactor"),
        telemetry: Arc::new(Telemetry::new()),
        stores: StoreRegistry::default(),
        shutdown: CancellationToken::new(),
    }
}

fn compactor(store: Arc<dyn ObjectStore>, clock: &ManualClock, owner: &str) -> Compactor {
    Compactor::new(config(), store, &ctx())
        .with_clock(Arc::new(clock.clone()))
        .with_owner(owner)
}

/// A clock at the real time (objects' modification times are real), moved by hand after.
fn clock() -> ManualClock {
    ManualClock::at(SystemClock.now_ms())
}

/// One CPU profile of `service` at `at_s` seconds, a second long, one frame per stack.
fn profile(service: &str, at_s: i64, frames: &[(&str, i64)]) -> Profile {
    Profile {
        duration_ns: 1_000_000_000,
        ..crate::merge::tests::profile(service, at_s * 1_000_000_000, frames)
    }
}

/// Writes `profiles` as one segment of tenant `t`, stamped `at_ms`.
async fn segment(store: &dyn ObjectStore, at_ms: i64, profiles: &[Profile]) {
    let mut builder = BlockBuilder::new("t", 0);
    for p in profiles {
        builder.add(p);
    }
    let id = Ulid::from_parts(at_ms as u64, rand_u80());
    store
        .put(&block_path("t", id), builder.finish(id).unwrap().bytes.into())
        .await
        .unwrap();
}

fn rand_u80() -> u128 {
    Ulid::new().random()
}

/// Totals per (service, timestamp, function) over what a query of `t` reads now.
async fn read_totals(store: &Arc<dyn ObjectStore>) -> BTreeMap<(String, i64, String), i64> {
    let mut totals = BTreeMap::new();
    for block in live_blocks(store.as_ref(), "t").await.unwrap() {
        let reader = BlockReader::open(Arc::clone(store), block.path.clone()).await.unwrap();
        for ds in &reader.meta().datasets {
            for p in reader.profiles(ds).await.unwrap() {
                for (name, t) in p.function_totals() {
                    let key = (p.series.get("service_name").unwrap().to_string(), p.timestamp_ns, name);
                    *totals.entry(key).or_insert(0) += t.flat;
                }
            }
        }
    }
    totals
}

fn totals_of(profiles: &[Profile]) -> BTreeMap<(String, i64, String), i64> {
    let mut totals = BTreeMap::new();
    for p in profiles {
        for (name, t) in p.function_totals() {
            let key = (p.series.get("service_name").unwrap().to_string(), p.timestamp_ns, name);
            *totals.entry(key).or_insert(0) += t.flat;
        }
    }
    totals
}

/// Eight segments of distinct profiles, written a second apart from `start_ms`.
async fn eight_segments(store: &dyn ObjectStore, start_ms: i64) -> Vec<Profile> {
    let mut all = Vec::new();
    for i in 0..8 {
        let ps = vec![
            profile("api", 1_700_000_000 + i, &[("main", 10 + i), ("work", i + 1)]),
            profile("db", 1_700_000_000 + i, &[("query", 3 * i + 1)]),
        ];
        segment(store, start_ms + i * 1000, &ps).await;
        all.extend(ps);
    }
    all
}

#[tokio::test]
async fn segments_become_larger_blocks_with_every_profile_once() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let clock = clock();
    let written = eight_segments(store.as_ref(), clock.now_ms()).await;
    let expected = totals_of(&written);
    clock.advance(20_000);
    let c = compactor(Arc::clone(&store), &clock, "a");
    let report = c.run_once().await.unwrap();
    // Two level-1 jobs of four, then a level-2 job of the two (it waited long enough? not
    // yet: the level-1 blocks are 20 s old and the rule is a minute).
    assert_eq!(
        (report.committed, report.inputs, report.fenced),
        (2, 8, 0),
        "{report:?}"
    );
    let live = live_blocks(store.as_ref(), "t").await.unwrap();
    assert_eq!(live.iter().map(|b| b.level).collect::<Vec<_>>(), [1, 1]);
    assert_eq!(read_totals(&store).await, expected);
    // The inputs stay readable for the grace period, then go.
    assert_eq!(list_blocks(store.as_ref(), Some("t")).await.unwrap().len(), 10);
    clock.advance(GRACE_MS);
    let report = c.run_once().await.unwrap();
    assert_eq!(report.committed, 1, "{report:?}");
    assert_eq!(report.deleted, 8);
    let live = live_blocks(store.as_ref(), "t").await.unwrap();
    assert_eq!(live.iter().map(|b| b.level).collect::<Vec<_>>(), [2]);
    assert_eq!(read_totals(&store).await, expected);
    clock.advance(GRACE_MS);
    c.run_once().await.unwrap();
    assert_eq!(list_blocks(store.as_ref(), Some("t")).await.unwrap().len(), 1);
    // Nothing left to do: a round changes nothing.
    let version = read_latest(store.as_ref(), "t").await.unwrap().version;
    assert_eq!(c.run_once().await.unwrap(), Report::default());
    assert_eq!(read_latest(store.as_ref(), "t").await.unwrap().version, version);
}

#[tokio::test]
async fn exact_copies_stored_twice_are_kept_once() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let clock = clock();
    let p = profile("api", 1_700_000_000, &[("main", 5)]);
    let other = profile("api", 1_700_000_000, &[("main", 7)]);
    segment(store.as_ref(), clock.now_ms(), std::slice::from_ref(&p)).await;
    segment(store.as_ref(), clock.now_ms() + 1, &[p.clone(), other.clone()]).await;
    clock.advance(20_000);
    let report = compactor(Arc::clone(&store), &clock, "a").run_once().await.unwrap();
    assert_eq!(report.copies, 1);
    assert_eq!(read_totals(&store).await, totals_of(&[p, other]));
}

#[tokio::test]
async fn compactors_racing_on_one_store_converge_without_double_counting() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let clock = clock();
    let expected = totals_of(&eight_segments(store.as_ref(), clock.now_ms()).await);
    clock.advance(20_000);
    let (a, b) = (
        compactor(Arc::clone(&store), &clock, "a"),
        compactor(Arc::clone(&store), &clock, "b"),
    );
    // Both at once, and a query reading all the while.
    let reader = {
        let store = Arc::clone(&store);
        let expected = expected.clone();
        tokio::spawn(async move {
            for _ in 0..20 {
                assert_eq!(read_totals(&store).await, expected, "a query saw other totals");
                tokio::task::yield_now().await;
            }
        })
    };
    let (ra, rb) = tokio::join!(a.run_once(), b.run_once());
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    reader.await.unwrap();
    assert_eq!(ra.committed + rb.committed, 2, "{ra:?} {rb:?}");
    assert_eq!(read_totals(&store).await, expected);
    clock.advance(GRACE_MS);
    let (ra, rb) = tokio::join!(a.run_once(), b.run_once());
    assert_eq!(ra.unwrap().committed + rb.unwrap().committed, 1);
    assert_eq!(read_totals(&store).await, expected);
}

#[tokio::test]
async fn a_compactor_paused_past_its_lease_cannot_commit() {
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let clock = clock();
    let expected = totals_of(&eight_segments(inner.as_ref(), clock.now_ms()).await);
    clock.advance(20_000);
    // A's writes of its outputs hang for a while: it has claimed its jobs and merged, but
    // not committed.
    let faulty = FaultyStore::new(Arc::clone(&inner));
    faulty.inject(Fault {
        operation: Some(Operation::Put),
        path: "/L1/".into(),
        times: 2,
        failure: Failure::Slow(Duration::from_millis(400)),
    });
    let a = compactor(Arc::clone(&faulty) as Arc<dyn ObjectStore>, &clock, "a");
    let paused = tokio::spawn(async move { a.run_once().await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Meanwhile A's leases run out, and B takes the jobs over and commits them.
    clock.advance(LEASE_MS + 1);
    let b = compactor(Arc::clone(&inner), &clock, "b");
    let rb = b.run_once().await.unwrap();
    assert_eq!(rb.committed, 2, "{rb:?}");
    // A wakes up: both its jobs are fenced.
    let ra = paused.await.unwrap().unwrap();
    assert_eq!((ra.committed, ra.fenced), (0, 2), "{ra:?}");
    assert_eq!(read_totals(&inner).await, expected);
    assert_eq!(
        live_blocks(inner.as_ref(), "t").await.unwrap().len(),
        2,
        "B's outputs and nothing else"
    );
}

#[tokio::test]
async fn a_compactor_stopped_at_any_call_leaves_a_correct_store_that_the_next_round_finishes() {
    // Where the calls of one round are: found by running it once without stopping.
    let calls_in_a_round = {
        let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let clock = clock();
        eight_segments(inner.as_ref(), clock.now_ms()).await;
        clock.advance(20_000);
        let faulty = FaultyStore::new(inner);
        compactor(Arc::clone(&faulty) as Arc<dyn ObjectStore>, &clock, "a")
            .run_once()
            .await
            .unwrap();
        faulty.calls()
    };
    assert!(calls_in_a_round > 20, "{calls_in_a_round}");
    for stop_at in 0..calls_in_a_round {
        let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let clock = clock();
        let expected = totals_of(&eight_segments(inner.as_ref(), clock.now_ms()).await);
        clock.advance(20_000);
        let faulty = FaultyStore::new(Arc::clone(&inner));
        faulty.stop_after(stop_at);
        let _ = compactor(Arc::clone(&faulty) as Arc<dyn ObjectStore>, &clock, "dead")
            .run_once()
            .await;
        // Whatever was left, a query reads every profile once.
        assert_eq!(read_totals(&inner).await, expected, "stopped at call {stop_at}");
        // The next compactor, once the dead one's leases ran out, finishes the work.
        clock.advance(LEASE_MS + 1);
        let next = compactor(Arc::clone(&inner), &clock, "next");
        next.run_once().await.unwrap();
        assert_eq!(
            read_totals(&inner).await,
            expected,
            "after recovery from a stop at call {stop_at}"
        );
        let levels: Vec<u32> = live_blocks(inner.as_ref(), "t")
            .await
            .unwrap()
            .iter()
            .map(|b| b.level)
            .collect();
        assert_eq!(levels, [1, 1], "stopped at call {stop_at}");
        // And garbage collection leaves only the live blocks.
        clock.advance(GRACE_MS);
        next.run_once().await.unwrap();
        clock.advance(GRACE_MS);
        next.run_once().await.unwrap();
        let stored = list_blocks(inner.as_ref(), Some("t")).await.unwrap().len();
        let live = live_blocks(inner.as_ref(), "t").await.unwrap().len();
        assert_eq!(stored, live, "stopped at call {stop_at}: objects left behind");
        assert_eq!(read_totals(&inner).await, expected, "stopped at call {stop_at}");
    }
}

#[tokio::test]
async fn retention_deletes_blocks_whose_data_expired() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let clock = clock();
    let now_s = clock.now_ms() / 1000;
    let old = profile("api", now_s - 3 * 86_400, &[("main", 1)]);
    let new = profile("api", now_s - 60, &[("main", 2)]);
    segment(store.as_ref(), clock.now_ms() - 3 * 86_400_000, &[old]).await;
    segment(store.as_ref(), clock.now_ms(), std::slice::from_ref(&new)).await;
    let mut config = config();
    config.retention = config::Duration::from_secs(86_400);
    // Nothing to compact yet: only retention acts.
    config.levels[0].max_age = config::Duration::from_secs(3600);
    let c = Compactor::new(config, Arc::clone(&store), &ctx()).with_clock(Arc::new(clock.clone()));
    c.run_once().await.unwrap();
    assert_eq!(read_totals(&store).await, totals_of(&[new]));
    clock.advance(GRACE_MS);
    let report = c.run_once().await.unwrap();
    assert_eq!(report.deleted, 1);
    assert_eq!(list_blocks(store.as_ref(), Some("t")).await.unwrap().len(), 1);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random segments (some profiles stored twice, some sharing a series and timestamp with
    /// other content): after compaction, a query reads the distinct profiles' totals, per
    /// series, time and function.
    #[test]
    fn compaction_keeps_every_distinct_profile_once(
        segments in proptest::collection::vec(
            proptest::collection::vec((0usize..3, 0i64..4, 0usize..4, 1i64..100), 1..6),
            1..10,
        ),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
            let clock = clock();
            let services = ["api", "db", "web"];
            let frames = ["main", "work", "idle", "gc"];
            let mut distinct: Vec<Profile> = Vec::new();
            let mut keys = std::collections::HashSet::new();
            for (i, seg) in segments.iter().enumerate() {
                let ps: Vec<Profile> = seg
                    .iter()
                    .map(|&(s, t, f, v)| profile(services[s], 1_700_000_000 + t, &[(frames[f], v)]))
                    .collect();
                for (p, key) in ps.iter().zip(seg) {
                    if keys.insert(*key) {
                        distinct.push(p.clone());
                    }
                }
                segment(store.as_ref(), clock.now_ms() + i as i64, &ps).await;
            }
            clock.advance(3_600_000);
            let c = compactor(Arc::clone(&store), &clock, "a");
            for _ in 0..3 {
                c.run_once().await.unwrap();
                clock.advance(3_600_000);
            }
            prop_assert_eq!(read_totals(&store).await, totals_of(&distinct));
            Ok(())
        })?;
    }
}
