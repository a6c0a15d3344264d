//! Every real pprof fixture, sent over HTTP to the real binary, is stored with per-function
//! totals equal to what `go tool pprof` reads from the same file.

use std::thread;

use flamepipe_integration::pprof_ref::{assert_totals_match_go, stored_totals_by_service};
use flamepipe_integration::process::post;
use flamepipe_integration::stored::read_store;
use flamepipe_integration::{Flamepipe, Options, fixtures_in, go_tool};

const BIN: &str = env!("CARGO_BIN_EXE_flamepipe");

#[test]
fn every_pprof_fixture_matches_go_tool_pprof() {
    let Some(go) = go_tool() else { return };
    let fp = Flamepipe::start(BIN, &Options::default());
    let files = fixtures_in("pprof");
    assert!(files.len() >= 50);

    // Send in parallel: acknowledgements come per segment, so this also checks that many
    // requests in one segment are each stored once.
    thread::scope(|s| {
        for chunk in files.chunks(8).enumerate().collect::<Vec<_>>() {
            let url = &fp.url;
            s.spawn(move || {
                let (c, files) = chunk;
                for (i, file) in files.iter().enumerate() {
                    let name = format!("fixture-{}", c * 8 + i);
                    let body = std::fs::read(file).unwrap();
                    let (status, text) = post(
                        &format!("{url}/ingest?name={name}&from=1700000000&until=1700000010"),
                        "application/octet-stream",
                        &body,
                        &[],
                    );
                    assert_eq!(status, 200, "{}: {text}", file.display());
                }
            });
        }
    });

    let stored = read_store(&fp.data);
    assert!(stored.iter().all(|s| s.tenant == "anonymous"));
    // `go tool pprof -traces` names an unsymbolized frame by its mapping's file.
    let by_service = stored_totals_by_service(&stored);
    for (i, file) in files.iter().enumerate() {
        let ours = by_service
            .get(&format!("fixture-{i}"))
            .unwrap_or_else(|| panic!("{} not stored", file.display()));
        assert_totals_match_go(&go, file, ours);
    }
}

#[test]
fn sample_labels_and_profile_types_survive() {
    let fp = Flamepipe::start(BIN, &Options::default());
    let cases = [
        (
            "pyroscope-go-cpu-labels.pprof",
            "app.cpu",
            vec![
                "process_cpu:cpu:nanoseconds:cpu:nanoseconds",
                "process_cpu:samples:count:cpu:nanoseconds",
            ],
        ),
        (
            "pyroscope-go-heap.pb.gz",
            "app.heap",
            vec![
                "memory:alloc_objects:count:space:bytes",
                "memory:alloc_space:bytes:space:bytes",
                "memory:inuse_objects:count:space:bytes",
                "memory:inuse_space:bytes:space:bytes",
            ],
        ),
        (
            "pyroscope-go-goroutine-labels.pb.gz",
            "app.goroutines",
            vec!["goroutines:goroutine:count:goroutine:count"],
        ),
        (
            "pyroscope-go-mutex.pb.gz",
            "app.mutex",
            vec![
                "mutex:contentions:count:contentions:count",
                "mutex:delay:nanoseconds:contentions:count",
            ],
        ),
    ];
    for (file, name, _) in &cases {
        let body = std::fs::read(flamepipe_integration::fixture(&format!("pprof/{file}"))).unwrap();
        let (status, text) = post(
            &format!("{}/ingest?name={name}%7Benv%3Dprod%7D&spyName=gospy", fp.url),
            "application/octet-stream",
            &body,
            &[("X-Scope-OrgID", "team-a")],
        );
        assert_eq!(status, 200, "{file}: {text}");
    }
    let stored = read_store(&fp.data);
    for (file, name, types) in &cases {
        let mut got: Vec<String> = stored
            .iter()
            .filter(|s| s.profile.series.get("service_name") == Some(name))
            .map(|s| {
                assert_eq!(s.tenant, "team-a");
                assert_eq!(s.profile.series.get("env"), Some("prod"), "{file}");
                assert_eq!(s.profile.series.get("pyroscope_spy"), Some("gospy"), "{file}");
                s.profile.series.get("__profile_type__").unwrap().to_string()
            })
            .collect();
        got.sort();
        // Sample labels split a profile into series; each type is there once or more.
        got.dedup();
        assert_eq!(&got, types, "{file}");
    }
    // The labelled CPU profile is split into series by its labels; its samples keep them all.
    let mut keys: Vec<String> = stored
        .iter()
        .filter(|s| s.profile.series.get("service_name") == Some("app.cpu"))
        .flat_map(|s| {
            let p = &s.profile;
            p.samples
                .iter()
                .flat_map(|s| {
                    p.symbols
                        .label_set(s.labels)
                        .iter()
                        .map(|l| p.symbols.str(l.key).to_string())
                })
                .collect::<Vec<_>>()
        })
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys, vec!["foo", "function", "profile_id"]);
}
