//! The dedup processor through its batch interface, with real acknowledgements: retries are
//! passed once and answered once the original is written (failing with it), distinct
//! profiles that collide are all passed with unique timestamps, the window is bounded, and a
//! property test over random interleavings of retries, distinct profiles and write outcomes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use flamepipe_core::component::{Ack, AckWaiter, Batch, BatchProcessor, BuildContext};
use flamepipe_core::store::StoreRegistry;
use flamepipe_core::symbols::{Function, Line, Location, SampleLabel};
use flamepipe_core::telemetry::Telemetry;
use flamepipe_core::{Labels, Profile, ProfileType, Sample, SymbolsBuilder};
use proptest::prelude::*;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::processor::Dedup;

const T0: i64 = 1_700_000_000_000_000_000;

fn dedup(config: Config) -> (Dedup, Arc<Telemetry>) {
    let telemetry = Arc::new(Telemetry::new());
    let ctx = BuildContext {
        id: "dedup".into(),
        telemetry: Arc::clone(&telemetry),
        stores: StoreRegistry::default(),
        shutdown: CancellationToken::new(),
    };
    (Dedup::new(config, &ctx), telemetry)
}

/// A CPU profile of `service` whose stacks are `stacks` (leaf-first function names) with
/// their values; `label` tags every sample when given. Each call interns afresh, as two
/// requests would.
fn profile(service: &str, timestamp_ns: i64, stacks: &[(&[&str], i64)], label: Option<(&str, &str)>) -> Profile {
    let mut b = SymbolsBuilder::new();
    let labels = label.map(|(k, v)| {
        let set = [SampleLabel {
            key: b.string(k),
            str: b.string(v),
            ..Default::default()
        }];
        b.label_set(&set)
    });
    let samples = stacks
        .iter()
        .map(|(frames, value)| {
            let locations: Vec<u32> = frames
                .iter()
                .map(|f| {
                    let name = b.string(f);
                    let function = b.function(Function {
                        name,
                        ..Default::default()
                    });
                    b.location(Location {
                        mapping: 0,
                        address: 0,
                        lines: vec![Line { function, line: 0 }],
                    })
                })
                .collect();
            Sample {
                stack: b.stack(&locations),
                value: *value,
                labels: labels.unwrap_or(0),
            }
        })
        .collect();
    Profile {
        series: Labels::from_iter([("service_name", service)]),
        profile_type: ProfileType::new("process_cpu", "cpu", "nanoseconds", "cpu", "nanoseconds"),
        timestamp_ns,
        duration_ns: 10_000_000_000,
        period: 10_000_000,
        samples,
        symbols: Arc::new(b.finish()),
    }
}

/// A batch of `profiles` with one request's acknowledgement.
fn request(profiles: Vec<Profile>) -> (Batch, AckWaiter) {
    let (ack, waiter) = Ack::new();
    let mut batch = Batch::new("acme", profiles);
    batch.acks.push(ack);
    (batch, waiter)
}

/// Waits for a request's answer (at most a second: nothing here should take longer).
async fn answer(waiter: AckWaiter) -> Result<(), String> {
    tokio::time::timeout(Duration::from_secs(1), waiter)
        .await
        .expect("the request was never answered")
        .expect("the acknowledgement was lost")
}

fn pending(waiter: &mut AckWaiter) -> bool {
    matches!(waiter.try_recv(), Err(tokio::sync::oneshot::error::TryRecvError::Empty))
}

fn work() -> Vec<(&'static [&'static str], i64)> {
    vec![(&["leaf", "main"], 30), (&["other", "main"], 10)]
}

#[tokio::test]
async fn the_same_upload_five_times_is_passed_once_and_answered_five_times() {
    let (mut d, telemetry) = dedup(Config::default());
    let mut passed = Vec::new();
    let mut waiters = Vec::new();
    for _ in 0..5 {
        let (batch, waiter) = request(vec![profile("app", T0, &work(), None)]);
        passed.extend(d.process(batch));
        waiters.push(waiter);
    }
    assert_eq!(passed.len(), 1, "only the first passes");
    // Nobody is answered before the one copy is written.
    for w in &mut waiters {
        assert!(pending(w));
    }
    passed.pop().unwrap().done();
    for w in waiters {
        assert_eq!(answer(w).await, Ok(()));
    }
    // A retry after the write is answered at once.
    let (batch, waiter) = request(vec![profile("app", T0, &work(), None)]);
    assert!(d.process(batch).is_empty());
    assert_eq!(answer(waiter).await, Ok(()));
    let metrics = telemetry.encode();
    assert!(
        metrics.contains(r#"flamepipe_processor_dedup_profiles_total{processor="dedup",outcome="duplicate"} 5"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"flamepipe_processor_dedup_profiles_total{processor="dedup",outcome="passed"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn distinct_profiles_with_equal_metadata_are_kept_with_unique_timestamps() {
    let (mut d, telemetry) = dedup(Config::default());
    let mut timestamps = Vec::new();
    for i in 0..5 {
        let (batch, waiter) = request(vec![profile("app", T0, &[(&["main"], i + 1)], None)]);
        let mut out = d.process(batch);
        assert_eq!(out.len(), 1);
        let batch = out.pop().unwrap();
        timestamps.push(batch.profiles[0].timestamp_ns);
        batch.done();
        assert_eq!(answer(waiter).await, Ok(()));
    }
    assert_eq!(timestamps, (0..5).map(|i| T0 + i).collect::<Vec<_>>());
    assert!(telemetry.encode().contains(r#"outcome="shifted"} 4"#));
}

#[tokio::test]
async fn a_duplicate_of_a_failed_write_fails_and_its_retry_passes() {
    let (mut d, _) = dedup(Config::default());
    let (first, first_waiter) = request(vec![profile("app", T0, &work(), None)]);
    let mut out = d.process(first);
    let (retry, retry_waiter) = request(vec![profile("app", T0, &work(), None)]);
    assert!(
        d.process(retry).is_empty(),
        "a retry while the first is being written is held"
    );
    out.pop().unwrap().fail("disk full");
    assert!(answer(first_waiter).await.is_err());
    let held = answer(retry_waiter).await;
    assert!(held.as_ref().is_err_and(|e| e.contains("disk full")), "{held:?}");
    // The sender retries again: the failed write stored nothing, so this one passes.
    let (again, again_waiter) = request(vec![profile("app", T0, &work(), None)]);
    let mut out = d.process(again);
    assert_eq!(out.len(), 1, "a retry of a failed write is new");
    assert_eq!(out[0].profiles[0].timestamp_ns, T0, "and takes the freed slot");
    out.pop().unwrap().done();
    assert_eq!(answer(again_waiter).await, Ok(()));
}

#[tokio::test]
async fn content_is_compared_by_names_values_and_labels_not_by_ids_or_order() {
    let (mut d, _) = dedup(Config::default());
    let (batch, _w) = request(vec![profile("app", T0, &work(), Some(("workload", "hash")))]);
    let out = d.process(batch);
    assert_eq!(out.len(), 1);
    out.into_iter().for_each(Batch::done);
    // The same samples in another order, one of them split in two: the same content.
    let reordered = [
        (&["other", "main"][..], 10),
        (&["leaf", "main"][..], 20),
        (&["leaf", "main"][..], 10),
    ];
    let (batch, w) = request(vec![profile("app", T0, &reordered, Some(("workload", "hash")))]);
    assert!(d.process(batch).is_empty(), "the same content is a duplicate");
    assert_eq!(answer(w).await, Ok(()));
    // Another label value, another value, another duration: distinct.
    for p in [
        profile("app", T0, &work(), Some(("workload", "json"))),
        profile(
            "app",
            T0,
            &[(&["leaf", "main"], 31), (&["other", "main"], 10)],
            Some(("workload", "hash")),
        ),
        {
            let mut p = profile("app", T0, &work(), Some(("workload", "hash")));
            p.duration_ns += 1;
            p
        },
    ] {
        let (batch, _w) = request(vec![p]);
        let out = d.process(batch);
        assert_eq!(out.len(), 1, "distinct content passes");
        assert_ne!(out[0].profiles[0].timestamp_ns, T0, "and moves off the taken timestamp");
    }
    // Another service at the same time does not collide at all.
    let (batch, _w) = request(vec![profile("db", T0, &work(), None)]);
    assert_eq!(d.process(batch)[0].profiles[0].timestamp_ns, T0);
}

#[tokio::test]
async fn a_request_with_some_duplicates_waits_for_both_its_write_and_the_originals() {
    let (mut d, _) = dedup(Config::default());
    let (first, _w) = request(vec![profile("app", T0, &work(), None)]);
    let mut original = d.process(first);
    let (mixed, mut mixed_waiter) = request(vec![
        profile("app", T0, &work(), None),
        profile("app", T0 + 60_000_000_000, &work(), None),
    ]);
    let mut out = d.process(mixed);
    assert_eq!(out[0].profiles.len(), 1, "the new profile passes, the repeat does not");
    out.pop().unwrap().done();
    tokio::task::yield_now().await;
    assert!(pending(&mut mixed_waiter), "the repeat's original is not written yet");
    original.pop().unwrap().done();
    assert_eq!(answer(mixed_waiter).await, Ok(()));
}

#[tokio::test(start_paused = true)]
async fn the_window_is_bounded_in_time_and_size() {
    let config = Config {
        window: flamepipe_core::config::Duration::from_secs(60),
        max_entries: 3,
        ..Config::default()
    };
    let (mut d, telemetry) = dedup(config);
    let send = |d: &mut Dedup, ts: i64| {
        let (batch, _w) = request(vec![profile("app", ts, &work(), None)]);
        let out = d.process(batch);
        let passed = out.len();
        out.into_iter().for_each(Batch::done);
        passed
    };
    for i in 0..4 {
        assert_eq!(send(&mut d, T0 + i), 1);
    }
    assert_eq!(d.window_len(), 3, "the oldest was evicted");
    assert_eq!(send(&mut d, T0), 1, "an evicted profile is new again");
    assert!(
        telemetry
            .encode()
            .contains(r#"flamepipe_processor_dedup_forgotten_total{processor="dedup",why="evicted"} 2"#)
    );
    assert_eq!(send(&mut d, T0 + 3), 0, "a remembered one is a duplicate");
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(send(&mut d, T0 + 3), 1, "past the window it is new again");
    assert_eq!(d.window_len(), 1);
}

// ---- property: random interleavings ----

/// One step of a run: send distinct profile `profile` (again, if it was sent before), or
/// finish the oldest write still open, successfully or not.
#[derive(Clone, Debug)]
enum Step {
    Send { profile: usize },
    Write { fail: bool },
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    proptest::collection::vec(
        prop_oneof![
            3 => (0usize..6).prop_map(|profile| Step::Send { profile }),
            2 => proptest::bool::weighted(0.2).prop_map(|fail| Step::Write { fail }),
        ],
        1..40,
    )
}

/// Six distinct profiles: three share the series and timestamp (they collide), three do not.
fn distinct(i: usize) -> Profile {
    let value = i as i64 + 1;
    match i {
        0..3 => profile("app", T0, &[(&["main"], value)], None),
        _ => profile(&format!("svc{i}"), T0 + i as i64, &[(&["main"], value)], None),
    }
}

proptest! {
    #[test]
    fn every_request_is_answered_by_what_was_stored(steps in steps()) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        runtime.block_on(async {
            let (mut d, _) = dedup(Config::default());
            // Writes not done yet, oldest first, and everything stored: (service, time) -> value.
            let mut writing: Vec<Batch> = Vec::new();
            let mut stored: BTreeMap<(String, i64), i64> = BTreeMap::new();
            let mut requests: Vec<(usize, AckWaiter)> = Vec::new();
            for step in steps.iter().cloned().chain(std::iter::repeat_n(Step::Write { fail: false }, 40)) {
                match step {
                    Step::Send { profile } => {
                        let (batch, waiter) = request(vec![distinct(profile)]);
                        writing.extend(d.process(batch));
                        requests.push((profile, waiter));
                    }
                    Step::Write { fail } => {
                        if writing.is_empty() {
                            continue;
                        }
                        let batch = writing.remove(0);
                        if fail {
                            batch.fail("write failed");
                        } else {
                            for p in &batch.profiles {
                                let key = (p.series.get("service_name").unwrap().to_string(), p.timestamp_ns);
                                // (series, timestamp) is unique among stored profiles.
                                prop_assert!(stored.insert(key, p.total()).is_none(), "two profiles stored at one (series, timestamp)");
                            }
                            batch.done();
                        }
                        // Let the processor learn the outcome (its tasks run between requests
                        // in a server too), so retries meet settled writes, failed ones included.
                        for _ in 0..3 {
                            tokio::task::yield_now().await;
                        }
                    }
                }
            }
            prop_assert!(writing.is_empty());
            // Each distinct profile is stored at most once (totals identify them here).
            let totals: Vec<i64> = stored.values().copied().collect();
            let unique: BTreeSet<i64> = totals.iter().copied().collect();
            prop_assert_eq!(totals.len(), unique.len(), "a profile was stored twice: {:?}", stored);
            // A request answered OK has its profile stored; every request is answered.
            for (profile, waiter) in requests {
                let value = profile as i64 + 1;
                if answer(waiter).await.is_ok() {
                    prop_assert!(unique.contains(&value), "profile {} acknowledged but not stored", profile);
                }
            }
            Ok(())
        })?;
    }
}
