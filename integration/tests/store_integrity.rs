//! Store integrity end to end: profiles real profilers send (an empty sample type, strings
//! that are not UTF-8) are stored and leave every query API of the tenant working; damaged
//! blocks (one cut short, one with flipped bytes) are skipped and named by every query API and
//! both streams, found by `flamepipe blocks verify`, and moved aside by `--quarantine`.
//! Expected totals come from `go tool pprof` reading the files sent.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use flamepipe_core::block::format::BlockMeta;
use flamepipe_integration::pprof_ref::go_pprof_totals;
use flamepipe_integration::process::post;
use flamepipe_integration::query_client::{Reply, connect_stream, connect_unary, enc, get, int64, ndjson};
use flamepipe_integration::{Flamepipe, Options, fixture, go_tool};
use prost::Message;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_flamepipe");
/// 2000-01-01 to 2030-01-01: holds every fixture's own timestamp.
const START_S: i64 = 946_684_800;
const END_S: i64 = 1_893_456_000;
const STEP_S: i64 = 86_400;
const SKIPPED_HEADER: &str = "flamepipe-skipped-blocks";

fn range() -> Value {
    json!({ "start": (START_S * 1000).to_string(), "end": (END_S * 1000).to_string() })
}

fn ingest(fp: &Flamepipe, service: &str, file: &Path) -> (u16, String) {
    let body = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    post(
        &format!("{}/ingest?name={service}&from={START_S}&until={}", fp.url, START_S + 10),
        "application/octet-stream",
        &body,
        &[],
    )
}

/// The blocks an answer says it skipped: block id -> reason.
type Skipped = BTreeMap<String, String>;

/// Parses the `flamepipe-skipped-blocks` header: `<id>;reason=<reason>, ...`.
fn skipped_header(reply: &Reply) -> Skipped {
    reply
        .header(SKIPPED_HEADER)
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|entry| {
            let (id, reason) = entry
                .split_once(";reason=")
                .unwrap_or_else(|| panic!("header entry {entry:?}"));
            (id.to_string(), reason.to_string())
        })
        .collect()
}

/// The skipped blocks a stream's result diagnostics list.
fn skipped_diagnostics(result: &Value) -> Skipped {
    result["diagnostics"]["skippedBlocks"]
        .as_array()
        .map(|all| {
            all.iter()
                .map(|s| {
                    let id = s["blockId"].as_str().expect("blockId").to_string();
                    let message = s["message"].as_str().expect("message");
                    assert!(message.contains(&id), "the message names the block: {s}");
                    (id, s["reason"].as_str().expect("reason").to_string())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A unary method that must answer 200: its JSON and what it skipped.
fn unary(fp: &Flamepipe, method: &str, body: &Value) -> (Value, Skipped) {
    let reply = connect_unary(fp, method, body, None);
    assert_eq!(reply.status, 200, "{method} {body}: {}", reply.text());
    (reply.json(), skipped_header(&reply))
}

fn strings(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().expect("string").to_string())
        .collect()
}

/// The stream's result event (the last one).
fn result_of(what: &str, events: &[Value]) -> Value {
    let last = events.last().unwrap_or_else(|| panic!("{what}: no events"));
    last.get("result")
        .unwrap_or_else(|| panic!("{what}: the last event is not a result: {last}"))
        .clone()
}

fn series_sum(series: &Value) -> i64 {
    series
        .as_array()
        .map(|all| {
            all.iter()
                .flat_map(|s| s["points"].as_array().cloned().unwrap_or_default())
                .map(|p| p["value"].as_f64().expect("value"))
                .sum::<f64>()
        })
        .unwrap_or(0.0) as i64
}

/// `go tool pprof`'s total of one sample type (`type/unit`, as stored) of a profile file.
fn go_total(go: &Path, file: &Path, key: &str) -> i64 {
    let totals = go_pprof_totals(go, file);
    let per_function = totals
        .get(key)
        .unwrap_or_else(|| panic!("{}: no {key} in {:?}", file.display(), totals.keys()));
    per_function.values().map(|(flat, _)| flat).sum()
}

/// `type/unit` of a profile type id.
fn sample_key(id: &str) -> String {
    let parts: Vec<&str> = id.split(':').collect();
    assert_eq!(parts.len(), 5, "profile type id {id:?}");
    format!("{}/{}", parts[1], parts[2])
}

/// Every API that reads samples, for one profile type and selector: each must answer
/// `total` and name exactly the `skipped` blocks (the header on unary answers, the result's
/// diagnostics on streams). Returns the flame graph's frame names.
fn check_sample_apis(
    go: &Path,
    fp: &Flamepipe,
    work: &Path,
    type_id: &str,
    selector: &str,
    total: i64,
    skipped: &Skipped,
) -> BTreeSet<String> {
    let what = format!("{type_id}{selector}");
    let request = json!({
        "profileTypeID": type_id, "labelSelector": selector,
        "start": (START_S * 1000).to_string(), "end": (END_S * 1000).to_string(),
    });
    let (answer, got) = unary(fp, "SelectMergeStacktraces", &request);
    assert_eq!(
        int64(&answer["flamegraph"]["total"]),
        total,
        "{what}: SelectMergeStacktraces"
    );
    assert_eq!(&got, skipped, "{what}: SelectMergeStacktraces skipped");
    let names = strings(&answer["flamegraph"]["names"]);

    let (answer, got) = unary(fp, "SelectMergeProfile", &request);
    let sampled: i64 = answer["sample"]
        .as_array()
        .map(|all| all.iter().map(|s| int64(&s["value"][0])).sum())
        .unwrap_or(0);
    assert_eq!(sampled, total, "{what}: SelectMergeProfile");
    assert_eq!(&got, skipped, "{what}: SelectMergeProfile skipped");

    let mut series_request = request.clone();
    series_request["step"] = json!(STEP_S);
    let (answer, got) = unary(fp, "SelectSeries", &series_request);
    assert_eq!(series_sum(&answer["series"]), total, "{what}: SelectSeries");
    assert_eq!(&got, skipped, "{what}: SelectSeries skipped");

    let query = format!(
        "query={}&from={START_S}&until={END_S}",
        enc(&format!("{type_id}{selector}"))
    );
    let reply = get(&format!("{}/pyroscope/render?{query}", fp.url), &[]);
    assert_eq!(reply.status, 200, "{what}: render {}", reply.text());
    assert_eq!(reply.json()["flamebearer"]["numTicks"], json!(total), "{what}: render");
    assert_eq!(&skipped_header(&reply), skipped, "{what}: render skipped");

    let reply = get(&format!("{}/api/v1/pprof?{query}", fp.url), &[]);
    assert_eq!(reply.status, 200, "{what}: pprof {}", reply.text());
    assert_eq!(&skipped_header(&reply), skipped, "{what}: pprof skipped");
    let file = work.join("download.pb.gz");
    std::fs::write(&file, &reply.body).expect("write the download");
    assert_eq!(
        go_total(go, &file, &sample_key(type_id)),
        total,
        "{what}: go tool pprof on the download"
    );

    let stream = format!("{}/api/v1/stream/flamegraph?{query}&snapshotInterval=10ms", fp.url);
    let result = result_of("NDJSON flame graph", &ndjson(&stream));
    assert_eq!(
        int64(&result["flamegraph"]["total"]),
        total,
        "{what}: NDJSON flame graph"
    );
    assert_eq!(
        &skipped_diagnostics(&result),
        skipped,
        "{what}: NDJSON flame graph skipped"
    );
    let stream = format!(
        "{}/api/v1/stream/series?{query}&step={STEP_S}&snapshotInterval=10ms",
        fp.url
    );
    let result = result_of("NDJSON series", &ndjson(&stream));
    assert_eq!(series_sum(&result["series"]), total, "{what}: NDJSON series");
    assert_eq!(&skipped_diagnostics(&result), skipped, "{what}: NDJSON series skipped");

    let result = result_of(
        "Connect flame graph",
        &connect_stream(fp, "SelectMergeStacktracesStream", &request),
    );
    assert_eq!(
        int64(&result["flamegraph"]["total"]),
        total,
        "{what}: Connect flame graph"
    );
    assert_eq!(
        &skipped_diagnostics(&result),
        skipped,
        "{what}: Connect flame graph skipped"
    );
    let result = result_of(
        "Connect series",
        &connect_stream(fp, "SelectSeriesStream", &series_request),
    );
    assert_eq!(series_sum(&result["series"]), total, "{what}: Connect series");
    assert_eq!(&skipped_diagnostics(&result), skipped, "{what}: Connect series skipped");
    names
}

/// The metadata APIs: each answers 200, sees exactly `services`, and names `skipped`.
/// Returns the profile type ids listed.
fn check_metadata_apis(fp: &Flamepipe, services: &BTreeSet<&str>, skipped: &Skipped) -> BTreeSet<String> {
    let services: BTreeSet<String> = services.iter().map(|s| s.to_string()).collect();
    let (answer, got) = unary(fp, "ProfileTypes", &range());
    assert_eq!(&got, skipped, "ProfileTypes skipped");
    let types: BTreeSet<String> = answer["profileTypes"]
        .as_array()
        .expect("profileTypes")
        .iter()
        .map(|t| t["ID"].as_str().expect("ID").to_string())
        .collect();
    let (answer, got) = unary(fp, "LabelNames", &range());
    assert!(strings(&answer["names"]).contains("service_name"), "{answer}");
    assert_eq!(&got, skipped, "LabelNames skipped");
    let mut request = range();
    request["name"] = json!("service_name");
    let (answer, got) = unary(fp, "LabelValues", &request);
    assert_eq!(strings(&answer["names"]), services, "LabelValues");
    assert_eq!(&got, skipped, "LabelValues skipped");
    let (answer, got) = unary(fp, "Series", &range());
    let listed: BTreeSet<String> = answer["labelsSet"]
        .as_array()
        .expect("labelsSet")
        .iter()
        .flat_map(|set| set["labels"].as_array().cloned().unwrap_or_default())
        .filter(|l| l["name"] == "service_name")
        .map(|l| l["value"].as_str().expect("value").to_string())
        .collect();
    assert_eq!(listed, services, "Series");
    assert_eq!(&got, skipped, "Series skipped");
    let (answer, _) = unary(fp, "GetProfileStats", &json!({}));
    assert_eq!(answer["dataIngested"], true, "{answer}");
    types
}

fn query_options() -> Options {
    Options {
        query: Some(String::new()),
        ..Options::default()
    }
}

#[test]
fn profiles_real_profilers_send_leave_the_tenant_queryable() {
    let Some(go) = go_tool() else { return };
    let fp = Flamepipe::start(BIN, &query_options());
    let work = tempfile::tempdir().expect("tempdir");
    let files = [
        ("normal", fixture("pprof/go-heap-mixed.pb.gz")),
        ("empty-type", fixture("pprof/made-empty-sample-type.pb.gz")),
        ("latin1", fixture("pprof/made-invalid-utf8-strings.pb.gz")),
    ];
    for (service, file) in &files {
        let (status, text) = ingest(&fp, service, file);
        assert_eq!(status, 200, "{service}: {text}");
    }

    let services: BTreeSet<&str> = files.iter().map(|(s, _)| *s).collect();
    let types = check_metadata_apis(&fp, &services, &Skipped::new());
    assert!(
        types.contains("unknown:unknown:unknown:cpu:nanoseconds"),
        "the empty sample type is stored under the placeholder: {types:?}"
    );
    let mut checked = 0;
    for (service, file) in &files {
        for (key, per_function) in go_pprof_totals(&go, file) {
            let type_id = types
                .iter()
                .find(|id| sample_key(id) == key)
                .unwrap_or_else(|| panic!("{service}: no stored type for {key} in {types:?}"));
            let total = per_function.values().map(|(flat, _)| flat).sum();
            let selector = format!("{{service_name=\"{service}\"}}");
            let names = check_sample_apis(&go, &fp, work.path(), type_id, &selector, total, &Skipped::new());
            if *service == "latin1" {
                assert!(
                    names.contains("m\u{FFFD}in.regexWork"),
                    "Latin-1 bytes become U+FFFD, the rest of the name is kept: {names:?}"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 7, "{checked} (service, type) pairs checked");
    assert_eq!(fp.metric("flamepipe_query_skipped_blocks_total"), 0.0);
}

#[test]
fn profiles_that_fail_the_checks_are_refused_whole() {
    let fp = Flamepipe::start(BIN, &query_options());
    // A label that cannot be a label name: refused with a message naming it.
    let body = std::fs::read(fixture("pprof/go-mutex.pb.gz")).unwrap();
    let (status, text) = post(
        &format!("{}/ingest?name=app{{bad-name=x}}", fp.url),
        "application/octet-stream",
        &body,
        &[],
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("bad-name"), "{text}");
    // A start before 1970 (now minus 100 years) fails the time check.
    let (status, text) = post(
        &format!(
            "{}/ingest?name=folded.cpu&format=folded&from=now-100y&until=now",
            fp.url
        ),
        "text/plain",
        b"main;work 10\n",
        &[],
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("timestamp") && text.contains("before 1970"), "{text}");
    let refused =
        fp.metric("flamepipe_receiver_refused_requests_total{receiver=\"pyroscope\",reason=\"invalid_profile\"}");
    assert_eq!(refused, 1.0);
    let stored = std::fs::read_dir(fp.data.join("blocks/anonymous/L0")).map_or(0, |d| d.count());
    assert_eq!(stored, 0, "nothing of a refused request is stored");
}

/// The id of the block holding `service`, from `flamepipe blocks ls`.
fn block_of(ls: &str, service: &str) -> String {
    let column = ls
        .lines()
        .next()
        .and_then(|header| header.split('\t').position(|c| c == "SERVICES"))
        .expect("a SERVICES column");
    ls.lines()
        .skip(1)
        .find(|l| l.split('\t').nth(column) == Some(service))
        .unwrap_or_else(|| panic!("no block of {service} in\n{ls}"))
        .split('\t')
        .next()
        .expect("id")
        .to_string()
}

fn blocks_cli(args: &[&str], data: &Path) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("blocks")
        .args(args)
        .arg("--store")
        .arg(data)
        .output()
        .expect("run flamepipe blocks");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn block_file(data: &Path, id: &str) -> PathBuf {
    data.join(format!("blocks/anonymous/L0/{id}.block"))
}

/// Flips one byte in the middle of the first dataset's index section, found from the footer.
fn flip_index_byte(path: &Path) {
    let mut bytes = std::fs::read(path).expect("read block");
    let n = bytes.len();
    let footer_len = u32::from_le_bytes(bytes[n - 16..n - 12].try_into().unwrap()) as usize;
    let meta = BlockMeta::decode(&bytes[n - 16 - footer_len..n - 16]).expect("footer");
    let index = meta.datasets[0].index.expect("index section");
    bytes[(index.offset + index.length / 2) as usize] ^= 0x5a;
    std::fs::write(path, bytes).expect("write block");
}

#[test]
fn damaged_blocks_are_skipped_named_verified_and_quarantined() {
    let Some(go) = go_tool() else { return };
    let mut fp = Flamepipe::start(BIN, &query_options());
    let work = tempfile::tempdir().expect("tempdir");
    // Go CPU profiles, one service each, one request at a time: with durable acks each lands
    // in a block of its own.
    let files = [
        ("kept-a", fixture("pprof/go-cpu-json-regex-nolabels.pb.gz")),
        ("cut", fixture("pprof/go-cpu-labels-mixed.pb.gz")),
        ("flipped", fixture("pprof/pyroscope-go-cpu-labels.pprof")),
        ("kept-b", fixture("pprof/google-pprof-go-sample-cpu.pb.gz")),
    ];
    for (service, file) in &files {
        let (status, text) = ingest(&fp, service, file);
        assert_eq!(status, 200, "{service}: {text}");
    }
    let (code, ls, err) = blocks_cli(&["ls"], &fp.data);
    assert_eq!(code, 0, "{err}");
    let cut = block_of(&ls, "cut");
    let flipped = block_of(&ls, "flipped");
    assert_eq!(ls.lines().count(), 5, "one block per request:\n{ls}");

    let cpu = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";
    let kept_total: i64 = [&files[0].1, &files[3].1]
        .iter()
        .map(|f| go_total(&go, f, "cpu/nanoseconds"))
        .sum();
    let everything: i64 = files.iter().map(|(_, f)| go_total(&go, f, "cpu/nanoseconds")).sum();
    check_sample_apis(&go, &fp, work.path(), cpu, "{}", everything, &Skipped::new());

    // Damage two blocks while flamepipe is stopped (its footer cache would hide a change).
    fp.terminate(std::time::Duration::from_secs(10));
    let path = block_file(&fp.data, &cut);
    let bytes = std::fs::read(&path).expect("read block");
    std::fs::write(&path, &bytes[..bytes.len() - 100]).expect("cut block");
    flip_index_byte(&block_file(&fp.data, &flipped));
    let fp = fp.restart();

    let both = Skipped::from([(cut.clone(), "bad_magic".into()), (flipped.clone(), "checksum".into())]);
    let kept = BTreeSet::from(["kept-a", "kept-b"]);
    check_metadata_apis(&fp, &kept, &both);
    check_sample_apis(&go, &fp, work.path(), cpu, "{}", kept_total, &both);
    // GetProfileStats reads footers only: the block whose index is damaged still counts.
    let reply = connect_unary(&fp, "GetProfileStats", &json!({}), None);
    assert_eq!(
        skipped_header(&reply),
        Skipped::from([(cut.clone(), "bad_magic".into())])
    );

    for reason in ["bad_magic", "checksum"] {
        let sample = format!("flamepipe_query_skipped_blocks_total{{reason=\"{reason}\"}}");
        assert!(fp.metric(&sample) >= 1.0, "{sample}");
    }
    let warnings: Vec<String> = fp
        .drain_logs()
        .into_iter()
        .filter(|l| l.contains("skipping a block that cannot be read"))
        .collect();
    for id in [&cut, &flipped] {
        let count = warnings.iter().filter(|l| l.contains(id.as_str())).count();
        assert_eq!(
            count, 1,
            "one warning per damaged block, however many queries: {warnings:?}"
        );
    }

    let (code, out, err) = blocks_cli(&["verify"], &fp.data);
    assert_eq!(code, 1, "verify exits 1 with damaged blocks: {out}{err}");
    let bad: BTreeSet<&str> = out.lines().collect();
    assert_eq!(bad.len(), 2, "{out}");
    assert!(
        bad.iter()
            .any(|l| l.starts_with(&format!("BAD blocks/anonymous/L0/{cut}.block bad_magic: "))),
        "{out}"
    );
    assert!(
        bad.iter()
            .any(|l| l.starts_with(&format!("BAD blocks/anonymous/L0/{flipped}.block checksum: "))),
        "{out}"
    );
    assert!(err.contains("verified 4 blocks") && err.contains("2 damaged"), "{err}");

    let (code, out, err) = blocks_cli(&["verify", "--quarantine"], &fp.data);
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(out.matches("QUARANTINED").count(), 2, "{out}");
    let (code, out, err) = blocks_cli(&["verify"], &fp.data);
    assert_eq!((code, out.as_str()), (0, ""), "{err}");
    for id in [&cut, &flipped] {
        assert!(
            fp.data
                .join(format!("quarantine/blocks/anonymous/L0/{id}.block"))
                .is_file()
        );
    }

    // Quarantined blocks are out of every listing: nothing is skipped any more.
    let skipped_before = fp.metric("flamepipe_query_skipped_blocks_total{reason=\"checksum\"}");
    check_metadata_apis(&fp, &kept, &Skipped::new());
    check_sample_apis(&go, &fp, work.path(), cpu, "{}", kept_total, &Skipped::new());
    assert_eq!(
        fp.metric("flamepipe_query_skipped_blocks_total{reason=\"checksum\"}"),
        skipped_before
    );
}
