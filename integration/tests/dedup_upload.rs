//! The dedup processor and `flamepipe upload` end to end, on the real binary: the same upload
//! sent five times is stored once and answered five times; five different uploads with the same
//! metadata are all stored, at unique timestamps; a copy of a profile whose write fails fails
//! too, and the retry after it is stored once; `flamepipe upload` of a mixed folder stores
//! every file (pprof gzipped and raw, speedscope, folded) and the query API shows them, with
//! per-file errors and exit codes as a command line user expects.

use std::collections::BTreeSet;
use std::process::Command;

use flamepipe_integration::process::post;
use flamepipe_integration::query_client::connect_unary;
use flamepipe_integration::stored::read_store;
use flamepipe_integration::{Flamepipe, Options, fixture};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_flamepipe");

fn with_dedup() -> Options {
    Options {
        dedup: Some("    window: 10m\n".into()),
        query: Some(String::new()),
        ..Options::default()
    }
}

fn upload_folded(fp: &Flamepipe, body: &str) -> (u16, String) {
    post(
        &format!("{}/ingest?name=retry.cpu&from=1700000000&until=1700000010", fp.url),
        "text/plain",
        body.as_bytes(),
        &[],
    )
}

#[test]
fn retries_are_stored_once_and_colliding_uploads_all_kept() {
    let fp = Flamepipe::start(BIN, &with_dedup());
    let pprof = std::fs::read(fixture("pprof/go-cpu-json-regex-nolabels.pb.gz")).unwrap();
    for attempt in 0..5 {
        let (status, text) = post(
            &format!("{}/ingest?name=same-upload", fp.url),
            "application/octet-stream",
            &pprof,
            &[],
        );
        assert_eq!(status, 200, "attempt {attempt}: {text}");
    }
    let stored = read_store(&fp.data);
    let same: Vec<_> = stored
        .iter()
        .filter(|s| s.profile.series.get("service_name") == Some("same-upload"))
        .collect();
    // One pprof of two sample types, stored once: two profiles.
    assert_eq!(same.len(), 2, "stored {} profiles", same.len());
    assert_eq!(
        fp.metric("flamepipe_processor_dedup_profiles_total{processor=\"dedup\",outcome=\"duplicate\"}"),
        8.0
    );
    // The store layers count the block writes.
    assert!(fp.metric("flamepipe_store_requests_total{store=\"local\",operation=\"put\",outcome=\"ok\"}") >= 1.0);

    // Five different uploads with identical metadata: all kept, at distinct timestamps.
    for i in 1..=5 {
        let (status, text) = upload_folded(&fp, &format!("main;work {i}\n"));
        assert_eq!(status, 200, "{text}");
    }
    let stored = read_store(&fp.data);
    let times: BTreeSet<i64> = stored
        .iter()
        .filter(|s| s.profile.series.get("service_name") == Some("retry"))
        .map(|s| s.profile.timestamp_ns)
        .collect();
    let from = 1_700_000_000_000_000_000i64;
    assert_eq!(
        times,
        (0..5).map(|i| from + i).collect(),
        "five profiles, five timestamps"
    );
    let mut request = json!({ "start": "1699999999000", "end": "1700000020000" });
    request["profileTypeID"] = json!("process_cpu:cpu:nanoseconds:cpu:nanoseconds");
    request["labelSelector"] = json!("{service_name=\"retry\"}");
    let reply = connect_unary(&fp, "SelectMergeStacktraces", &request, None);
    let total: i64 = reply.json()["flamegraph"]["total"].as_str().unwrap().parse().unwrap();
    // 1+2+3+4+5 samples at the default 100 Hz: 10 ms each.
    assert_eq!(total, 15 * 10_000_000, "every upload counts");
    assert!(fp.metric("flamepipe_processor_dedup_profiles_total{processor=\"dedup\",outcome=\"shifted\"}") >= 4.0);
    // A retry of one of them is a duplicate again.
    let (status, _) = upload_folded(&fp, "main;work 3\n");
    assert_eq!(status, 200);
    let again = read_store(&fp.data)
        .iter()
        .filter(|s| s.profile.series.get("service_name") == Some("retry"))
        .count();
    assert_eq!(again, 5);
}

#[test]
fn a_retry_of_a_profile_whose_write_failed_is_not_acknowledged_until_stored() {
    let fp = Flamepipe::start(BIN, &with_dedup());
    // A file where the tenant's block folder belongs: every block write of tenant `broken`
    // fails (after the exporter's retries) until it is removed.
    let blocker = fp.data.join("blocks").join("broken");
    std::fs::create_dir_all(blocker.parent().unwrap()).unwrap();
    std::fs::write(&blocker, b"not a folder").unwrap();
    let send = |url: &str| {
        post(
            &format!("{url}/ingest?name=failing&from=1700000000&until=1700000010"),
            "text/plain",
            b"main;work 7\n",
            &[("X-Scope-OrgID", "broken")],
        )
    };
    // The first request's write is still being retried when its copy arrives: the copy is a
    // duplicate of a pending write, and is answered with that write's failure.
    let (first, copy) = std::thread::scope(|s| {
        let first = s.spawn(|| send(&fp.url));
        std::thread::sleep(std::time::Duration::from_millis(300));
        let copy = s.spawn(|| send(&fp.url));
        (first.join().unwrap(), copy.join().unwrap())
    });
    assert_eq!(first.0, 503, "{}", first.1);
    assert_eq!(copy.0, 503, "{}", copy.1);
    assert!(
        copy.1.contains("the profile this request repeats was not stored"),
        "{}",
        copy.1
    );
    assert_eq!(
        fp.metric("flamepipe_processor_dedup_profiles_total{processor=\"dedup\",outcome=\"duplicate\"}"),
        1.0
    );

    // Once the store works, the sender's retry is new (the failed write was forgotten) and is
    // stored once; a further retry is a duplicate of a durable write and answered at once.
    std::fs::remove_file(&blocker).unwrap();
    for attempt in 0..2 {
        let (status, text) = send(&fp.url);
        assert_eq!(status, 200, "attempt {attempt}: {text}");
    }
    let stored: Vec<_> = read_store(&fp.data)
        .into_iter()
        .filter(|s| s.tenant == "broken")
        .collect();
    assert_eq!(stored.len(), 1, "stored once: the failed write left nothing");
    let total: i64 = stored[0].profile.samples.iter().map(|s| s.value).sum();
    assert_eq!(total, 7 * 10_000_000);
}

fn upload(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .arg("upload")
        .args(args)
        .output()
        .expect("run flamepipe upload");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn upload_sends_a_mixed_folder_and_the_query_api_shows_it() {
    let fp = Flamepipe::start(BIN, &with_dedup());
    let dir = tempfile::tempdir().unwrap();
    let copies = [
        ("cpu.pb.gz", "pprof/go-cpu-labels-mixed.pb.gz"),
        ("raw.pprof", "pprof/pyroscope-go-cpu-uncompressed.pb"),
        ("mislabeled.pb.gz", "pprof/pyroscope-pyspy-labels.pb"),
        ("threads.json", "speedscope/python-pyspy-threads.speedscope.json"),
        ("stacks.txt", "other/python-pyspy.collapsed.txt"),
    ];
    let mut files = Vec::new();
    for (name, source) in copies {
        let path = dir.path().join(name);
        std::fs::copy(fixture(source), &path).unwrap();
        files.push(path.display().to_string());
    }
    let mut args = vec![
        "--url",
        fp.url.as_str(),
        "--labels",
        "env=test,team=profiling",
        "--service",
        "uploaded",
    ];
    args.extend(files.iter().map(String::as_str));
    let (code, stderr) = upload(&args);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stderr.lines().count(), copies.len(), "one line per file:\n{stderr}");
    for format in ["(pprof,", "(speedscope,", "(folded,"] {
        assert!(stderr.contains(format), "{format} missing:\n{stderr}");
    }

    let range = json!({ "start": "946684800000", "end": "1893456000000" });
    let reply = connect_unary(&fp, "ProfileTypes", &range, None);
    let types: BTreeSet<String> = reply.json()["profileTypes"]
        .as_array()
        .expect("profileTypes")
        .iter()
        .map(|t| t["ID"].as_str().unwrap().to_string())
        .collect();
    // pprof and folded CPU profiles, and the speedscope file's wall time.
    for expected in [
        "process_cpu:cpu:nanoseconds:cpu:nanoseconds",
        "wall:wall:nanoseconds:wall:nanoseconds",
    ] {
        assert!(types.contains(expected), "{expected} not in {types:?}");
    }
    let mut request = range.clone();
    request["name"] = json!("team");
    let reply = connect_unary(&fp, "LabelValues", &request, None);
    assert_eq!(reply.json()["names"], json!(["profiling"]));
    let stored = read_store(&fp.data);
    assert!(
        stored
            .iter()
            .all(|s| s.profile.series.get("service_name") == Some("uploaded"))
    );
    assert!(stored.iter().all(|s| s.profile.series.get("env") == Some("test")));

    // Sent again: every file is a duplicate, answered OK, nothing stored twice.
    let before = stored.len();
    let (code, stderr) = upload(&args);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(read_store(&fp.data).len(), before);

    // A file that is no profile fails alone (exit 1), the others still go in.
    let junk = dir.path().join("junk.bin");
    std::fs::write(&junk, b"\x00\x01 this is not a profile").unwrap();
    let tenant_args = [
        "--url",
        fp.url.as_str(),
        "--tenant",
        "other",
        junk.to_str().unwrap(),
        files[0].as_str(),
    ];
    let (code, stderr) = upload(&tenant_args);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("junk.bin: not a pprof, speedscope or folded-text profile"),
        "{stderr}"
    );
    assert!(stderr.contains("1 of 2 files were not uploaded"), "{stderr}");
    assert!(read_store(&fp.data).iter().any(|s| s.tenant == "other"));

    // Usage errors exit 2; an unreachable server is a failure (1) per file.
    let (code, stderr) = upload(&["--labels", "no-equals", files[0].as_str()]);
    assert_eq!(code, 2, "{stderr}");
    let (code, stderr) = upload(&["--url", "http://127.0.0.1:9", files[0].as_str()]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("cannot reach"), "{stderr}");
}
