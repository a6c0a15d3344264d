//! speedscope files end to end: every fixture, and files recorded here by real profilers
//! (py-spy, pyinstrument), are stored one profile per thread with per-function totals equal to
//! an independent reading of the JSON (`integration/clients/speedscope_reference.py`); a
//! multi-profile file sent with one `from`/`until` (what lost threads in Pyroscope) keeps every
//! thread queryable with its own totals; broken files get a 4xx naming the profile and field,
//! and store nothing.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use flamepipe_integration::process::{post, post_file_with_curl};
use flamepipe_integration::query_client::connect_unary;
use flamepipe_integration::stored::read_store;
use flamepipe_integration::{Flamepipe, Options, fixture, fixtures_in, repo_root, require_peer};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_flamepipe");
const FROM_S: i64 = 1_700_000_000;

/// Per thread name: (total, per function (flat, cum)).
type Totals = BTreeMap<String, (i64, BTreeMap<String, (i64, i64)>)>;

fn python() -> PathBuf {
    PathBuf::from("python3")
}

/// The independent reading of a speedscope file, keyed by the thread name flamepipe gives each
/// profile (docs/profile-types.md: its name; ` (<index>)` appended when the name repeats).
fn reference(file: &Path) -> Totals {
    let out = Command::new(python())
        .arg(repo_root().join("integration/clients/speedscope_reference.py"))
        .arg(file)
        .output()
        .expect("run speedscope_reference.py");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let profiles: Vec<Value> = serde_json::from_slice(&out.stdout).expect("reference JSON");
    let mut counts: HashMap<String, usize> = HashMap::new();
    for p in &profiles {
        *counts
            .entry(p["name"].as_str().unwrap_or("").trim().to_string())
            .or_default() += 1;
    }
    profiles
        .iter()
        .map(|p| {
            let index = p["index"].as_u64().expect("index");
            let name = p["name"].as_str().unwrap_or("").trim().to_string();
            let thread = if name.is_empty() {
                format!("profile {index}")
            } else if counts[&name] > 1 {
                format!("{name} ({index})")
            } else {
                name
            };
            let functions = p["functions"]
                .as_object()
                .expect("functions")
                .iter()
                .map(|(f, v)| (f.clone(), (v[0].as_i64().unwrap(), v[1].as_i64().unwrap())))
                .filter(|(_, v)| *v != (0, 0))
                .collect();
            (thread, (p["total"].as_i64().expect("total"), functions))
        })
        .collect()
}

/// What flamepipe stored for `service`, in the same shape.
fn stored(data: &Path, service: &str) -> Totals {
    let mut out = Totals::new();
    for s in read_store(data) {
        let p = &s.profile;
        if p.series.get("service_name") != Some(service) {
            continue;
        }
        let thread = p.series.get("thread_name").expect("thread_name").to_string();
        let entry = out.entry(thread).or_default();
        entry.0 += p.total();
        for (f, t) in p.function_totals() {
            let v = entry.1.entry(f).or_default();
            v.0 += t.flat;
            v.1 += t.cum;
        }
    }
    for (_, (_, functions)) in out.iter_mut() {
        functions.retain(|_, v| *v != (0, 0));
    }
    out
}

fn ingest(fp: &Flamepipe, service: &str, body: &[u8]) -> (u16, String) {
    post(
        &format!(
            "{}/ingest?name={service}&format=speedscope&from={FROM_S}&until={}",
            fp.url,
            FROM_S + 10
        ),
        "application/json",
        body,
        &[],
    )
}

#[test]
fn every_speedscope_fixture_is_stored_per_thread_with_exact_totals() {
    let fp = Flamepipe::start(BIN, &Options::default());
    let files = fixtures_in("speedscope");
    assert!(files.len() >= 9);
    for (i, file) in files.iter().enumerate() {
        let (status, text) = ingest(&fp, &format!("ss-{i}"), &std::fs::read(file).unwrap());
        assert_eq!(status, 200, "{}: {text}", file.display());
    }
    for (i, file) in files.iter().enumerate() {
        let expected = reference(file);
        assert_eq!(stored(&fp.data, &format!("ss-{i}")), expected, "{}", file.display());
    }
}

#[test]
fn every_thread_of_a_multi_profile_file_is_queryable() {
    let fp = Flamepipe::start(
        BIN,
        &Options {
            query: Some(String::new()),
            ..Options::default()
        },
    );
    // Four threads, one from/until: in Pyroscope all but one would share (series, timestamp).
    let file = fixture("speedscope/python-pyspy-threads.speedscope.json");
    let (status, text) = ingest(&fp, "pyspy", &std::fs::read(&file).unwrap());
    assert_eq!(status, 200, "{text}");
    let expected = reference(&file);
    assert_eq!(expected.len(), 4);
    let range = json!({ "start": (FROM_S * 1000 - 1).to_string(), "end": (FROM_S * 1000 + 20_000).to_string() });
    let mut request = range.clone();
    request["name"] = json!("thread_name");
    request["matchers"] = json!(["{service_name=\"pyspy\"}"]);
    let reply = connect_unary(&fp, "LabelValues", &request, None);
    assert_eq!(reply.status, 200, "{}", reply.text());
    let threads: Vec<String> = reply.json()["names"]
        .as_array()
        .expect("names")
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(threads, expected.keys().cloned().collect::<Vec<_>>());
    for (thread, (total, _)) in &expected {
        let mut request = range.clone();
        request["profileTypeID"] = json!("wall:wall:nanoseconds:wall:nanoseconds");
        request["labelSelector"] = json!(format!(
            "{{service_name=\"pyspy\", thread_name=\"{}\"}}",
            thread.replace('\\', "\\\\").replace('"', "\\\"")
        ));
        let reply = connect_unary(&fp, "SelectMergeStacktraces", &request, None);
        assert_eq!(reply.status, 200, "{}", reply.text());
        let got: i64 = reply.json()["flamegraph"]["total"].as_str().unwrap().parse().unwrap();
        assert_eq!(got, *total, "{thread}");
    }
}

#[test]
fn broken_speedscope_files_are_refused_whole_with_the_place_named() {
    let fp = Flamepipe::start(BIN, &Options::default());
    let good =
        r#"{"type":"sampled","name":"t","unit":"seconds","startValue":0,"endValue":1,"samples":[[0]],"weights":[1]}"#;
    let frames = r#""shared":{"frames":[{"name":"main"}]}"#;
    let file = |profiles: &str| format!(r#"{{{frames},"profiles":[{good},{profiles}]}}"#).into_bytes();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("invalid JSON", b"{\"shared\":".to_vec(), "invalid speedscope JSON"),
        (
            "frame out of range",
            file(
                r#"{"type":"sampled","name":"u","unit":"seconds","startValue":0,"endValue":1,"samples":[[0,9]],"weights":[1]}"#,
            ),
            "profiles[1].samples: samples[0]: frame 9 does not exist",
        ),
        (
            "weights and samples of different lengths",
            file(
                r#"{"type":"sampled","name":"u","unit":"seconds","startValue":0,"endValue":1,"samples":[[0]],"weights":[1,2]}"#,
            ),
            "profiles[1].weights: 2 weights for 1 samples",
        ),
        (
            "unbalanced events",
            std::fs::read(fixture("bad/real-speedscope-incomplete-trace.json")).unwrap(),
            "is opened and never closed",
        ),
        (
            "time-reversed events",
            file(
                r#"{"type":"evented","name":"u","unit":"none","startValue":0,"endValue":9,"events":[{"type":"O","frame":0,"at":5},{"type":"C","frame":0,"at":3}]}"#,
            ),
            "profiles[1].events: events[1] at 3",
        ),
        (
            "a huge number",
            file(
                r#"{"type":"sampled","name":"u","unit":"seconds","startValue":0,"endValue":1,"samples":[[0]],"weights":[1e300]}"#,
            ),
            "profiles[1].weights: weights[0] = 1e300",
        ),
        (
            "a number JSON cannot hold",
            file(
                r#"{"type":"sampled","name":"u","unit":"seconds","startValue":0,"endValue":1,"samples":[[0]],"weights":[1e999]}"#,
            ),
            "invalid speedscope JSON at profiles[1]",
        ),
        (
            "frames missing",
            std::fs::read(fixture("bad/made-missing-frames.python-pyspy-threads.speedscope.json")).unwrap(),
            "invalid speedscope JSON at shared",
        ),
    ];
    for (what, body, message) in &cases {
        let (status, text) = ingest(&fp, "broken", body);
        assert_eq!(status, 400, "{what}: {text}");
        assert!(text.contains(message), "{what}: {text:?} should name {message:?}");
    }
    let refused =
        fp.metric("flamepipe_receiver_refused_requests_total{receiver=\"pyroscope\",reason=\"bad_speedscope\"}");
    assert_eq!(refused, cases.len() as f64);

    // 500 MB announced: refused before it is read (the default limit is 16 MiB).
    let big = tempfile::NamedTempFile::new().unwrap();
    big.as_file().set_len(500 << 20).unwrap();
    let (status, _) = post_file_with_curl(&format!("{}/ingest?name=broken&format=speedscope", fp.url), big.path());
    assert_eq!(status, 413);
    assert!(read_store(&fp.data).is_empty(), "nothing of a refused file is stored");
    // And a good file still goes in.
    let (status, text) = ingest(&fp, "after", &file(good));
    assert_eq!(status, 200, "{text}");
}

/// The profilers of `.venv-prof` (setup.sh) run on integration/clients/py_workload.py.
fn profiler(name: &str) -> Option<PathBuf> {
    require_peer(repo_root().join("integration/.venv-prof/bin").join(name), name)
}

#[test]
fn files_recorded_by_py_spy_and_pyinstrument_are_stored_with_their_totals() {
    let (Some(py_spy), Some(pyinstrument)) = (profiler("py-spy"), profiler("pyinstrument")) else {
        return;
    };
    let venv_python = repo_root().join("integration/.venv-prof/bin/python");
    let workload = repo_root().join("integration/clients/py_workload.py");
    let work = tempfile::tempdir().unwrap();
    let spy_file = work.path().join("py-spy.json");
    let out = Command::new(&py_spy)
        .args(["record", "--format", "speedscope", "--rate", "200", "-o"])
        .arg(&spy_file)
        .arg("--")
        .arg(&venv_python)
        .arg(&workload)
        .arg("2")
        .output()
        .expect("run py-spy");
    assert!(out.status.success(), "py-spy: {}", String::from_utf8_lossy(&out.stderr));
    let instrument_file = work.path().join("pyinstrument.json");
    let out = Command::new(&pyinstrument)
        .args(["-r", "speedscope", "-o"])
        .arg(&instrument_file)
        .arg(&workload)
        .arg("2")
        .output()
        .expect("run pyinstrument");
    assert!(
        out.status.success(),
        "pyinstrument: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let fp = Flamepipe::start(BIN, &Options::default());
    for (service, file) in [
        ("recorded-py-spy", &spy_file),
        ("recorded-pyinstrument", &instrument_file),
    ] {
        let (status, text) = ingest(&fp, service, &std::fs::read(file).unwrap());
        assert_eq!(status, 200, "{service}: {text}");
        let expected = reference(file);
        let got = stored(&fp.data, service);
        assert_eq!(got, expected, "{service}");
        let all: BTreeMap<&String, &(i64, i64)> = got.values().flat_map(|(_, f)| f.iter()).collect();
        assert!(
            all.keys().any(|f| f.contains("flamepipe_")),
            "{service}: the workload's functions are there: {:?}",
            all.keys().take(20).collect::<Vec<_>>()
        );
    }
}
