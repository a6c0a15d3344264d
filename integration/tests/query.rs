//! The query API (docs/query-api.md) end to end: real pprof fixtures ingested over HTTP, then
//! read back through every method and transport and compared with what `go tool pprof` reads
//! from the same files; streams' event order and guarantees; a disconnected client's query
//! stops reading; the render timeline counts what its flame graph counts; bad queries are
//! answered with the problem named; acknowledged profiles are visible at once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use flamepipe_core::Labels;
use flamepipe_core::block::{BlockBuilder, block_path};
use flamepipe_core::formats::pprof::{ConvertOptions, Limits, decode_profiles};
use flamepipe_integration::pprof_ref::{ReferenceTotals, go_pprof_totals, without_zeros};
use flamepipe_integration::process::post;
use flamepipe_integration::query_client::{
    Reply, connect_stream, connect_unary, enc, envelope, envelopes, get, int64, ndjson, post_bytes,
};
use flamepipe_integration::{Flamepipe, Options, fixture, go_tool};
use prost::Message;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_flamepipe");

/// Every fixture is ingested with `from` = this (unix seconds). A pprof's own `time_nanos`
/// wins over `from` (the fixtures' times run from 2021 to 2026), so queries read a wide range.
const FROM_S: i64 = 1_700_000_000;
/// The range every query reads: 2000-01-01 to 2030-01-01.
const START_S: i64 = 946_684_800;
const END_S: i64 = 1_893_456_000;
/// A range before any data: 1990-01-01 plus 100 s.
const EMPTY_FROM_S: i64 = 631_152_000;
const EMPTY_UNTIL_S: i64 = EMPTY_FROM_S + 100;
/// `SelectSeries` steps: one day (the range has under 11,000 of them).
const STEP_S: i64 = 86_400;
const START_MS: i64 = START_S * 1000;
const END_MS: i64 = END_S * 1000;

/// Pyroscope's `querier.v1` messages, field numbers as published (docs/query-api.md).
mod pb {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SelectMergeStacktracesRequest {
        #[prost(string, tag = "1")]
        pub profile_type_id: String,
        #[prost(string, tag = "2")]
        pub label_selector: String,
        #[prost(int64, tag = "3")]
        pub start: i64,
        #[prost(int64, tag = "4")]
        pub end: i64,
        #[prost(int64, optional, tag = "5")]
        pub max_nodes: Option<i64>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SelectMergeStacktracesResponse {
        #[prost(message, optional, tag = "1")]
        pub flamegraph: Option<FlameGraph>,
    }

    #[derive(Clone, PartialEq, Eq, prost::Message)]
    pub struct FlameGraph {
        #[prost(string, repeated, tag = "1")]
        pub names: Vec<String>,
        #[prost(message, repeated, tag = "2")]
        pub levels: Vec<Level>,
        #[prost(int64, tag = "3")]
        pub total: i64,
        #[prost(int64, tag = "4")]
        pub max_self: i64,
    }

    #[derive(Clone, PartialEq, Eq, prost::Message)]
    pub struct Level {
        #[prost(int64, repeated, tag = "1")]
        pub values: Vec<i64>,
    }

    /// `SelectMergeProfileRequest`: the same first five fields.
    pub type SelectMergeProfileRequest = SelectMergeStacktracesRequest;

    /// flamepipe's `SelectMergeStacktracesStreamResponse`: exactly one field is set. Only the
    /// fields the tests read are declared (prost skips the others).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StreamEvent {
        #[prost(message, optional, tag = "1")]
        pub plan: Option<QueryPlan>,
        #[prost(message, optional, tag = "2")]
        pub snapshot: Option<FlameGraphSnapshot>,
        #[prost(message, optional, tag = "3")]
        pub result: Option<FlameGraphResult>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct QueryPlan {
        #[prost(uint64, tag = "1")]
        pub blocks_total: u64,
        #[prost(uint64, tag = "2")]
        pub datasets_total: u64,
        #[prost(uint64, tag = "3")]
        pub bytes_total: u64,
        #[prost(bool, tag = "4")]
        pub complete: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct FlameGraphSnapshot {
        #[prost(message, optional, tag = "2")]
        pub flamegraph: Option<FlameGraph>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct FlameGraphResult {
        #[prost(message, optional, tag = "1")]
        pub flamegraph: Option<FlameGraph>,
    }
}

// ---- HTTP ----

/// A Connect unary call with a JSON body: (status, parsed answer).
fn connect_json(fp: &Flamepipe, method: &str, body: &Value, tenant: Option<&str>) -> (u16, Value) {
    let reply = connect_unary(fp, method, body, tenant);
    (reply.status, reply.json())
}

/// A Connect unary call that must succeed.
fn call(fp: &Flamepipe, method: &str, body: &Value) -> Value {
    let (status, value) = connect_json(fp, method, body, None);
    assert_eq!(status, 200, "{method} {body}: {value}");
    value
}

/// A Connect unary call with a proto body: the answer's bytes.
fn connect_proto(fp: &Flamepipe, method: &str, request: &impl Message) -> Vec<u8> {
    let Reply {
        status,
        content_type: ct,
        body,
        ..
    } = post_bytes(
        &format!("{}/querier.v1.QuerierService/{method}", fp.url),
        "application/proto",
        &request.encode_to_vec(),
        &[],
    );
    assert_eq!(status, 200, "{method}: {}", String::from_utf8_lossy(&body));
    assert_eq!(ct, "application/proto", "{method}");
    body
}

/// `query=...&from=...&until=...` for the HTTP endpoints over the test range.
fn http_range(query: &str) -> String {
    format!("query={}&from={START_S}&until={END_S}", enc(query))
}

// ---- JSON helpers (protobuf JSON: 64-bit integers are strings) ----

/// A flame graph in protobuf JSON, as the proto message.
fn flamegraph_from_json(v: &Value) -> pb::FlameGraph {
    pb::FlameGraph {
        names: v["names"]
            .as_array()
            .unwrap_or_else(|| panic!("names in {v}"))
            .iter()
            .map(|n| n.as_str().expect("name").to_string())
            .collect(),
        levels: v["levels"]
            .as_array()
            .unwrap_or_else(|| panic!("levels in {v}"))
            .iter()
            .map(|l| pb::Level {
                values: l["values"].as_array().expect("values").iter().map(int64).collect(),
            })
            .collect(),
        total: int64(&v["total"]),
        max_self: int64(&v["maxSelf"]),
    }
}

fn total_of(flamegraph: &Value) -> i64 {
    int64(&flamegraph["total"])
}

// ---- reference comparisons ----

/// The bucket all unsymbolized frames go to: `go tool pprof` names them by their mapping's
/// file (`[libc.so.6]`, or `<unknown>`), the flame graph by address (`0x7f12...`).
const UNSYMBOLIZED: &str = "<unsymbolized>";

fn go_name(name: &str) -> &str {
    if (name.starts_with('[') && name.ends_with(']')) || name == "<unknown>" {
        UNSYMBOLIZED
    } else {
        name
    }
}

fn flamegraph_name(name: &str) -> &str {
    match name.strip_prefix("0x") {
        Some(hex) if !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()) => UNSYMBOLIZED,
        _ => name,
    }
}

/// Per-function flat totals (non-zero) from `go tool pprof`'s totals of one sample type.
fn reference_flats(totals: &HashMap<String, (i64, i64)>) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for (name, (flat, _)) in totals {
        *out.entry(go_name(name).to_string()).or_insert(0) += flat;
    }
    out.retain(|_, v| *v != 0);
    out
}

/// Per-function flat totals (non-zero) of a flame graph: the sum of `self` over its nodes.
fn flamegraph_flats(fg: &pb::FlameGraph) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for level in fg.levels.iter().skip(1) {
        assert_eq!(level.values.len() % 4, 0, "a level holds 4 values per node");
        for node in level.values.chunks(4) {
            let name = &fg.names[node[3] as usize];
            *out.entry(flamegraph_name(name).to_string()).or_insert(0) += node[2];
        }
    }
    out.retain(|_, v| *v != 0);
    out
}

/// Checks a flame graph's layout (docs/query-api.md): level 0 is the root `total`; each node
/// lies inside one node of the level above; a parent's self part comes first, then its
/// children side by side, ordered by name (an `other` node last), adding up to its total.
fn check_layout(what: &str, fg: &pb::FlameGraph) {
    assert_eq!(fg.names.first().map(String::as_str), Some("total"), "{what}: root name");
    assert_eq!(fg.levels[0].values, vec![0, fg.total, 0, 0], "{what}: root node");
    // (x, total, self, name) with absolute x.
    let levels: Vec<Vec<(i64, i64, i64, &str)>> = fg
        .levels
        .iter()
        .map(|level| {
            assert_eq!(level.values.len() % 4, 0, "{what}: a level holds 4 values per node");
            let mut end = 0;
            level
                .values
                .chunks(4)
                .map(|n| {
                    assert!(n[0] >= 0 && n[1] >= n[2] && n[2] >= 0, "{what}: node {n:?}");
                    let x = end + n[0];
                    end = x + n[1];
                    (x, n[1], n[2], fg.names[n[3] as usize].as_str())
                })
                .collect()
        })
        .collect();
    for depth in 1..levels.len() {
        let mut placed = 0;
        for &(px, ptotal, pself, pname) in &levels[depth - 1] {
            let children: Vec<_> = levels[depth]
                .iter()
                .filter(|c| c.0 >= px && c.0 < px + ptotal)
                .collect();
            placed += children.len();
            let sum: i64 = children.iter().map(|c| c.1).sum();
            assert_eq!(
                pself + sum,
                ptotal,
                "{what}: {pname} at depth {}: self + children",
                depth - 1
            );
            let mut x = px + pself;
            for c in &children {
                assert_eq!(c.0, x, "{what}: {} under {pname}: children follow the self part", c.3);
                x += c.1;
            }
            let names: Vec<&str> = children.iter().map(|c| c.3).filter(|n| *n != "other").collect();
            assert!(
                names.windows(2).all(|w| w[0] < w[1]),
                "{what}: children of {pname} by name: {names:?}"
            );
            if let Some(i) = children.iter().position(|c| c.3 == "other") {
                assert_eq!(i, children.len() - 1, "{what}: `other` comes last under {pname}");
            }
        }
        assert_eq!(
            placed,
            levels[depth].len(),
            "{what}: every node at depth {depth} has a parent"
        );
    }
    let max_self = levels.iter().flatten().map(|n| n.2).max().unwrap_or(0);
    assert_eq!(fg.max_self, max_self, "{what}: max_self");
}

/// `go tool pprof`'s totals of a profile we answered, written to a file first.
fn answered_totals(go: &Path, dir: &Path, name: &str, bytes: &[u8]) -> ReferenceTotals {
    let file = dir.join(name);
    std::fs::write(&file, bytes).expect("write profile");
    go_pprof_totals(go, &file)
}

/// (type/unit) of a profile type id `name:sample_type:sample_unit:period_type:period_unit`.
fn sample_key(id: &str) -> String {
    let parts: Vec<&str> = id.split(':').collect();
    assert_eq!(parts.len(), 5, "profile type id {id:?}");
    format!("{}/{}", parts[1], parts[2])
}

// ---- ingest ----

fn ingest(url: &str, service: &str, from_s: i64, body: &[u8], tenant: Option<&str>) {
    let headers: Vec<(&str, &str)> = tenant.map(|t| ("X-Scope-OrgID", t)).into_iter().collect();
    let (status, text) = post(
        &format!("{url}/ingest?name={service}&from={from_s}&until={}", from_s + 10),
        "application/octet-stream",
        body,
        &headers,
    );
    assert_eq!(status, 200, "ingest {service}: {text}");
}

fn query_options(extra: &str) -> Options {
    Options {
        query: Some(extra.to_string()),
        ..Options::default()
    }
}

/// The profile type ids with data per service, from `Series`.
fn types_by_service(fp: &Flamepipe) -> BTreeMap<String, BTreeSet<String>> {
    let answer = call(
        fp,
        "Series",
        &json!({ "start": START_MS.to_string(), "end": END_MS.to_string() }),
    );
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for set in answer["labelsSet"].as_array().expect("labelsSet") {
        let labels = label_map(&set["labels"]);
        out.entry(labels["service_name"].clone())
            .or_default()
            .insert(labels["__profile_type__"].clone());
    }
    out
}

fn label_map(labels: &Value) -> BTreeMap<String, String> {
    labels
        .as_array()
        .unwrap_or_else(|| panic!("labels: {labels}"))
        .iter()
        .map(|p| {
            (
                p["name"].as_str().expect("name").to_string(),
                p["value"].as_str().expect("value").to_string(),
            )
        })
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().expect("string").to_string())
        .collect()
}

/// One service per fixture: CPU and memory profiles of several languages, one unsymbolized.
const FIXTURES: &[(&str, &str)] = &[
    ("go-cpu", "pyroscope-go-cpu-labels.pprof"),
    ("go-heap", "go-heap-mixed.pb.gz"),
    ("unsymbolized-cpu", "parca-unsymbolized-normal-cpu.pb.gz"),
    ("python-cpu", "pyroscope-python-cpu.pb.gz"),
    ("java-cpu", "pyroscope-java-cpu.pb.gz"),
    ("node-heap", "pyroscope-nodejs-heap.pb.gz"),
    ("go-regexp-cpu", "go-bench-regexp-cpu.pb.gz"),
    ("python-memory", "python-pyroscope-agent-memory.pb"),
];

#[test]
fn every_api_matches_go_tool_pprof() {
    let Some(go) = go_tool() else { return };
    let fp = Flamepipe::start(BIN, &query_options(""));
    let work = tempfile::tempdir().expect("tempdir");

    let references: HashMap<&str, ReferenceTotals> = thread::scope(|s| {
        let handles: Vec<_> = FIXTURES
            .iter()
            .map(|&(service, file)| {
                let (url, go) = (&fp.url, &go);
                s.spawn(move || {
                    let path = fixture(&format!("pprof/{file}"));
                    ingest(url, service, FROM_S, &std::fs::read(&path).expect("fixture"), None);
                    (service, go_pprof_totals(go, &path))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("ingest thread")).collect()
    });
    // Another tenant's profile, which no query of the default tenant may see.
    let other_body = std::fs::read(fixture("pprof/pyroscope-go-cpu-labels.pprof")).expect("fixture");
    ingest(&fp.url, "other-service", FROM_S, &other_body, Some("other"));

    // (f) The metadata methods list exactly what was ingested.
    let range = json!({ "start": START_MS.to_string(), "end": END_MS.to_string() });
    let types = types_by_service(&fp);
    let services: Vec<String> = FIXTURES.iter().map(|(s, _)| s.to_string()).collect();
    assert_eq!(
        types.keys().cloned().collect::<BTreeSet<_>>(),
        services.iter().cloned().collect(),
        "services in Series"
    );
    for (service, ids) in &types {
        let keys: BTreeSet<String> = ids.iter().map(|id| sample_key(id)).collect();
        let expected: BTreeSet<String> = references[service.as_str()].keys().cloned().collect();
        assert_eq!(keys, expected, "{service}: sample types");
    }
    let series = call(&fp, "Series", &range);
    let sets = series["labelsSet"].as_array().expect("labelsSet");
    // One series per type, and more where a profile's sample labels split it (go-cpu's
    // samples carry `foo` and `function`: each label set is a series).
    let base = ["__name__", "__profile_type__", "pyroscope_spy", "service_name"];
    let mut split = 0;
    for set in sets {
        let labels = label_map(&set["labels"]);
        let extra: Vec<&str> = labels
            .keys()
            .map(String::as_str)
            .filter(|k| !base.contains(k))
            .collect();
        if !extra.is_empty() {
            assert_eq!(labels["service_name"], "go-cpu", "only go-cpu has sample labels: {set}");
            assert!(extra.iter().all(|k| ["foo", "function"].contains(k)), "{set}");
            split += 1;
        }
        let id = &labels["__profile_type__"];
        assert_eq!(Some(labels["__name__"].as_str()), id.split(':').next(), "{set}");
    }
    assert!(split > 2, "go-cpu's labelled samples make series of their own");
    let unsplit = sets.len() - split;
    assert!(
        unsplit <= types.values().map(BTreeSet::len).sum::<usize>(),
        "at most one unlabelled series per type"
    );
    let mut sorted_services = services.clone();
    sorted_services.sort();
    let values = call(
        &fp,
        "LabelValues",
        &json!({ "name": "service_name", "start": START_MS.to_string(), "end": END_MS.to_string() }),
    );
    assert_eq!(strings(&values["names"]), sorted_services);
    let names = call(&fp, "LabelNames", &range);
    assert_eq!(
        strings(&names["names"]),
        [
            "__name__",
            "__profile_type__",
            "foo",
            "function",
            "pyroscope_spy",
            "service_name"
        ]
    );
    let profile_types = call(&fp, "ProfileTypes", &range);
    let all_ids: BTreeSet<String> = types.values().flatten().cloned().collect();
    let listed = profile_types["profileTypes"].as_array().expect("profileTypes");
    assert_eq!(
        listed.len(),
        all_ids.len(),
        "ProfileTypes lists each type once: {profile_types}"
    );
    for t in listed {
        let id = t["ID"].as_str().expect("ID");
        assert!(all_ids.contains(id), "{id} was not ingested");
        let parts: Vec<&str> = id.split(':').collect();
        let fields: Vec<&str> = ["name", "sampleType", "sampleUnit", "periodType", "periodUnit"]
            .iter()
            .map(|f| t[*f].as_str().unwrap_or(""))
            .collect();
        assert_eq!(fields, parts, "{t}");
    }
    let restricted = call(
        &fp,
        "Series",
        &json!({ "matchers": ["{service_name=\"go-heap\"}"], "labelNames": ["__profile_type__"],
                 "start": START_MS.to_string(), "end": END_MS.to_string() }),
    );
    let listed: BTreeSet<String> = restricted["labelsSet"]
        .as_array()
        .expect("labelsSet")
        .iter()
        .map(|s| {
            let labels = label_map(&s["labels"]);
            assert_eq!(labels.len(), 1, "labelNames restricts the labels: {s}");
            labels["__profile_type__"].clone()
        })
        .collect();
    assert_eq!(&listed, &types["go-heap"], "Series with a matcher");
    let before = json!({ "start": (EMPTY_FROM_S * 1000).to_string(), "end": (EMPTY_UNTIL_S * 1000).to_string() });
    let nothing = call(&fp, "ProfileTypes", &before);
    assert!(
        nothing["profileTypes"].as_array().is_none_or(Vec::is_empty),
        "no types before the data: {nothing}"
    );

    let stats = call(&fp, "GetProfileStats", &json!({}));
    assert_eq!(stats["dataIngested"], true, "{stats}");
    let (oldest, newest) = (int64(&stats["oldestProfileTime"]), int64(&stats["newestProfileTime"]));
    assert!(START_MS <= oldest && oldest <= newest && newest <= END_MS, "{stats}");
    let (status, stats) = connect_json(&fp, "GetProfileStats", &json!({}), Some("nobody"));
    assert_eq!((status, &stats["dataIngested"]), (200, &json!(false)), "{stats}");

    // (a)-(e), (g) per service and profile type.
    let mut checked = 0;
    for (service, ids) in &types {
        let reference = &references[service.as_str()];
        for id in ids {
            let key = sample_key(id);
            let what = format!("{service} {id}");
            let expected = &reference[&key];
            let expected_flats = reference_flats(expected);
            let expected_total: i64 = expected_flats.values().sum();
            if service == "unsymbolized-cpu" && expected_total != 0 {
                assert!(expected_flats.contains_key(UNSYMBOLIZED), "{what}: unsymbolized frames");
            }
            let selector = format!("{{service_name=\"{service}\"}}");
            let request = json!({
                "profileTypeID": id, "labelSelector": selector,
                "start": START_MS.to_string(), "end": END_MS.to_string(),
            });

            // (a) SelectMergeStacktraces, JSON (default max_nodes) and proto (a large one).
            let answer = call(&fp, "SelectMergeStacktraces", &request);
            let fg_json_value = answer["flamegraph"].clone();
            let fg = flamegraph_from_json(&fg_json_value);
            let proto_answer = connect_proto(
                &fp,
                "SelectMergeStacktraces",
                &pb::SelectMergeStacktracesRequest {
                    profile_type_id: id.clone(),
                    label_selector: selector.clone(),
                    start: START_MS,
                    end: END_MS,
                    max_nodes: Some(1_000_000),
                },
            );
            let fg_proto = pb::SelectMergeStacktracesResponse::decode(proto_answer.as_slice())
                .expect("SelectMergeStacktracesResponse")
                .flamegraph
                .unwrap_or_default();
            assert_eq!(fg, fg_proto, "{what}: JSON and proto flame graphs");
            assert!(!fg.names.iter().any(|n| n == "other"), "{what}: nothing pruned");
            check_layout(&what, &fg);
            assert_eq!(fg.total, expected_total, "{what}: total");
            assert_eq!(flamegraph_flats(&fg), expected_flats, "{what}: flat per function");
            // Pruned to 10 nodes: the same total, small children gathered into `other`.
            let mut pruned_request = request.clone();
            pruned_request["maxNodes"] = json!("10");
            let pruned = flamegraph_from_json(&call(&fp, "SelectMergeStacktraces", &pruned_request)["flamegraph"]);
            check_layout(&format!("{what} maxNodes 10"), &pruned);
            assert_eq!(pruned.total, fg.total, "{what}: pruned total");
            // Kept: nodes whose total reaches the 10th largest (ties may keep a few more).
            let mut totals: Vec<i64> = fg
                .levels
                .iter()
                .skip(1)
                .flat_map(|l| l.values.chunks(4))
                .map(|n| n[1])
                .collect();
            totals.sort_unstable_by(|a, b| b.cmp(a));
            let threshold = totals.get(9).copied().unwrap_or(i64::MIN);
            let kept: Vec<i64> = pruned
                .levels
                .iter()
                .skip(1)
                .flat_map(|l| l.values.chunks(4))
                .filter(|n| pruned.names[n[3] as usize] != "other")
                .map(|n| n[1])
                .collect();
            assert!(
                kept.iter().all(|&t| t >= threshold),
                "{what}: a node below {threshold} kept"
            );
            let allowed = totals.iter().filter(|&&t| t >= threshold).count();
            assert!(
                kept.len() <= allowed,
                "{what}: {} nodes kept, {allowed} reach {threshold}",
                kept.len()
            );
            if allowed < totals.len() {
                assert!(pruned.names.iter().any(|n| n == "other"), "{what}: pruned into `other`");
            } else {
                assert_eq!(pruned, fg, "{what}: nothing to prune");
            }

            // (b) SelectMergeProfile (proto): go tool pprof reads the original's totals.
            let merged = connect_proto(
                &fp,
                "SelectMergeProfile",
                &pb::SelectMergeProfileRequest {
                    profile_type_id: id.clone(),
                    label_selector: selector.clone(),
                    start: START_MS,
                    end: END_MS,
                    max_nodes: None,
                },
            );
            let name = format!("{service}-{}.pb", key.replace('/', "-"));
            let totals = answered_totals(&go, work.path(), &name, &merged);
            assert_eq!(
                totals.keys().collect::<Vec<_>>(),
                [&key],
                "{what}: SelectMergeProfile sample types"
            );
            assert_eq!(
                without_zeros(&totals[&key]),
                without_zeros(expected),
                "{what}: SelectMergeProfile per-function totals"
            );

            // (c) /api/v1/pprof: gzipped pprof that go tool pprof opens.
            let Reply {
                status,
                content_type: ct,
                body,
                ..
            } = get(
                &format!("{}/api/v1/pprof?{}", fp.url, http_range(&format!("{id}{selector}"))),
                &[],
            );
            assert_eq!(status, 200, "{what}: /api/v1/pprof {}", String::from_utf8_lossy(&body));
            assert_eq!(ct, "application/octet-stream", "{what}");
            assert_eq!(&body[..2], &[0x1f, 0x8b], "{what}: gzip");
            let file = work.path().join(format!("{name}.gz"));
            std::fs::write(&file, &body).expect("write download");
            let top = Command::new(&go)
                .args(["tool", "pprof", "-top", "-symbolize=none"])
                .arg(&file)
                .output()
                .expect("go tool pprof -top");
            assert!(
                top.status.success(),
                "{what}: go tool pprof -top: {}",
                String::from_utf8_lossy(&top.stderr)
            );
            let totals = go_pprof_totals(&go, &file);
            assert_eq!(
                without_zeros(&totals[&key]),
                without_zeros(expected),
                "{what}: /api/v1/pprof per-function totals"
            );

            // (d) /pyroscope/render: flamebearer with the same graph and a timeline.
            let Reply {
                status,
                content_type: ct,
                body,
                ..
            } = get(
                &format!("{}/pyroscope/render?{}", fp.url, http_range(&format!("{id}{selector}"))),
                &[],
            );
            let text = String::from_utf8_lossy(&body);
            assert_eq!(status, 200, "{what}: render {text}");
            assert_eq!(ct, "application/json", "{what}: render");
            let render: Value = serde_json::from_slice(&body).expect("render JSON");
            let fb = &render["flamebearer"];
            assert_eq!(fb["numTicks"].as_i64(), Some(expected_total), "{what}: numTicks");
            assert_eq!(fb["maxSelf"].as_i64(), Some(fg.max_self), "{what}: maxSelf");
            assert_eq!(strings(&fb["names"]), fg.names, "{what}: render names");
            let levels: Vec<Vec<i64>> = serde_json::from_value(fb["levels"].clone()).expect("levels");
            assert_eq!(
                levels,
                fg.levels.iter().map(|l| l.values.clone()).collect::<Vec<_>>(),
                "{what}: render levels"
            );
            let samples: Vec<i64> = serde_json::from_value(render["timeline"]["samples"].clone()).expect("samples");
            assert_eq!(samples.iter().sum::<i64>(), expected_total, "{what}: timeline sum");
            // max(10 s, range / 1500), in whole seconds.
            let step_ns = ((END_S - START_S) * 1_000_000_000 / 1500).max(10_000_000_000);
            let step_s = (step_ns + 999_999_999) / 1_000_000_000;
            assert_eq!(
                render["timeline"]["durationDelta"].as_i64(),
                Some(step_s),
                "{what}: step"
            );

            // (e) SelectSeries grouped by service.
            let answer = call(
                &fp,
                "SelectSeries",
                &json!({
                    "profileTypeID": id, "labelSelector": selector,
                    "start": START_MS.to_string(), "end": END_MS.to_string(),
                    "step": STEP_S, "groupBy": ["service_name"],
                }),
            );
            let series = answer["series"].as_array().expect("series");
            if expected_total == 0 {
                assert!(
                    series.iter().all(|s| s["points"]
                        .as_array()
                        .is_none_or(|p| p.iter().all(|p| p["value"].as_f64() == Some(0.0)))),
                    "{what}: {answer}"
                );
            } else {
                assert_eq!(series.len(), 1, "{what}: {answer}");
                assert_eq!(
                    label_map(&series[0]["labels"]),
                    BTreeMap::from([("service_name".to_string(), service.clone())]),
                    "{what}: series labels"
                );
                let points = series[0]["points"].as_array().expect("points");
                let sum: f64 = points.iter().map(|p| p["value"].as_f64().expect("value")).sum();
                assert_eq!(sum, expected_total as f64, "{what}: series sum");
                for p in points {
                    let t = int64(&p["timestamp"]);
                    assert_eq!(
                        (t - START_MS) % (STEP_S * 1000),
                        0,
                        "{what}: point at start + k * step: {p}"
                    );
                    assert!((START_MS..=END_MS).contains(&t), "{what}: {p}");
                }
            }

            // (g) Another tenant sees none of it.
            let (status, other) = connect_json(&fp, "SelectMergeStacktraces", &request, Some("other"));
            assert_eq!(status, 200, "{what}: {other}");
            assert_eq!(total_of(&other["flamegraph"]), 0, "{what}: tenant other: {other}");
            checked += 1;
        }
    }
    assert_eq!(
        checked,
        references.values().map(HashMap::len).sum::<usize>(),
        "service/type pairs checked"
    );
    let (status, other) = connect_json(
        &fp,
        "LabelValues",
        &json!({ "name": "service_name", "start": START_MS.to_string(), "end": END_MS.to_string() }),
        Some("other"),
    );
    assert_eq!(status, 200, "{other}");
    assert_eq!(strings(&other["names"]), ["other-service"], "tenant other");
    let (status, other) = connect_json(&fp, "ProfileTypes", &range, Some("other"));
    assert_eq!(status, 200, "{other}");
    let other_types: BTreeSet<String> = other["profileTypes"]
        .as_array()
        .expect("profileTypes")
        .iter()
        .map(|t| t["ID"].as_str().expect("ID").to_string())
        .collect();
    assert_eq!(&other_types, &types["go-cpu"], "tenant other's types");
}

// ---- streams ----

/// Checks a flame graph stream's events (without the end) and returns the result event's
/// flame graph: plans (the last complete) then snapshots then one result, progress never
/// moving backwards, snapshot totals non-decreasing and at most the result's.
fn check_stream(what: &str, events: &[Value], kind: &str) -> Value {
    let mut phase = 0; // 0 plan, 1 snapshot, 2 result
    let mut plan: Option<Value> = None;
    let mut last_progress: Option<Value> = None;
    let mut last_total = 0i64;
    let mut result = None;
    let mut snapshots = 0;
    let total = |v: &Value| -> i64 {
        if kind == "flamegraph" {
            total_of(&v["flamegraph"])
        } else {
            series_sum(&v["series"]) as i64
        }
    };
    for event in events {
        let object = event.as_object().unwrap_or_else(|| panic!("{what}: event {event}"));
        assert_eq!(object.len(), 1, "{what}: exactly one field per event: {event}");
        if let Some(p) = event.get("plan") {
            assert_eq!(phase, 0, "{what}: plan after a snapshot or result: {event}");
            if let Some(previous) = &plan {
                assert_eq!(previous["complete"], false, "{what}: a plan after the complete one");
                for f in ["blocksTotal", "datasetsTotal", "bytesTotal"] {
                    assert!(int64(&p[f]) >= int64(&previous[f]), "{what}: plan {f} shrank");
                }
            }
            plan = Some(p.clone());
        } else if let Some(s) = event.get("snapshot") {
            assert!(phase <= 1, "{what}: snapshot after the result");
            let plan = plan
                .as_ref()
                .unwrap_or_else(|| panic!("{what}: snapshot before a plan"));
            assert_eq!(plan["complete"], true, "{what}: snapshot before the complete plan");
            phase = 1;
            snapshots += 1;
            let p = &s["progress"];
            assert_eq!(p["blocksTotal"], plan["blocksTotal"], "{what}: {s}");
            assert_eq!(p["datasetsTotal"], plan["datasetsTotal"], "{what}: {s}");
            assert!(int64(&p["bytesTotal"]) <= int64(&plan["bytesTotal"]), "{what}: {p}");
            assert!(int64(&p["bytesDone"]) <= int64(&p["bytesTotal"]), "{what}: {p}");
            assert!(int64(&p["datasetsDone"]) <= int64(&p["datasetsTotal"]), "{what}: {p}");
            assert!(int64(&p["blocksDone"]) <= int64(&p["blocksTotal"]), "{what}: {p}");
            assert!(
                int64(&p["profilesMerged"]) > 0,
                "{what}: a snapshot merges something: {p}"
            );
            if let Some(last) = &last_progress {
                for f in ["blocksDone", "datasetsDone", "bytesDone", "profilesMerged"] {
                    assert!(int64(&p[f]) >= int64(&last[f]), "{what}: {f} went back: {last} -> {p}");
                }
                assert!(
                    int64(&p["bytesTotal"]) <= int64(&last["bytesTotal"]),
                    "{what}: bytesTotal grew"
                );
            }
            last_progress = Some(p.clone());
            let t = total(s);
            assert!(t >= last_total, "{what}: snapshot total decreased {last_total} -> {t}");
            last_total = t;
        } else if let Some(r) = event.get("result") {
            assert!(phase <= 1, "{what}: a second result");
            let plan = plan.as_ref().unwrap_or_else(|| panic!("{what}: result before a plan"));
            assert_eq!(plan["complete"], true, "{what}: result before the complete plan");
            phase = 2;
            let t = total(r);
            assert!(
                last_total <= t,
                "{what}: snapshot total {last_total} above the result's {t}"
            );
            let d = &r["diagnostics"];
            assert_eq!(d["datasetsRead"], plan["datasetsTotal"], "{what}: {d}");
            if let Some(last) = &last_progress {
                assert!(
                    int64(&d["profilesMerged"]) >= int64(&last["profilesMerged"]),
                    "{what}: {d}"
                );
            }
            assert!(int64(&d["durationNs"]) > 0, "{what}: {d}");
            let stages: Vec<String> = d["stages"]
                .as_array()
                .expect("stages")
                .iter()
                .map(|s| s["stage"].as_str().expect("stage").to_string())
                .collect();
            assert_eq!(
                stages,
                ["plan", "index", "fetch", "decode", "extract", "merge", "render"],
                "{what}"
            );
            result = Some(r.clone());
        } else {
            panic!("{what}: unknown event {event}");
        }
    }
    let result = result.unwrap_or_else(|| panic!("{what}: no result in {events:?}"));
    eprintln!("{what}: {} events, {snapshots} snapshots", events.len());
    let plan = plan.expect("plan");
    if int64(&plan["datasetsTotal"]) > 0 && kind == "flamegraph" {
        assert!(snapshots > 0, "{what}: no snapshot in {} events", events.len());
    }
    result
}

fn series_sum(series: &Value) -> f64 {
    series
        .as_array()
        .map(|all| {
            all.iter()
                .flat_map(|s| s["points"].as_array().cloned().unwrap_or_default())
                .map(|p| p["value"].as_f64().expect("value"))
                .sum()
        })
        .unwrap_or(0.0)
}

#[test]
fn streams_report_plan_snapshots_result() {
    let fp = Flamepipe::start(BIN, &query_options(""));
    let files = [
        ("go-regexp-cpu", "go-bench-regexp-cpu.pb.gz"),
        ("go-cpu", "pyroscope-go-cpu-labels.pprof"),
        ("go-heap", "go-heap-mixed.pb.gz"),
    ];
    let bodies: Vec<(&str, Vec<u8>)> = files
        .iter()
        .map(|(s, f)| (*s, std::fs::read(fixture(&format!("pprof/{f}"))).expect("fixture")))
        .collect();
    // Waves of requests: with `ack: durable` each wave is answered once it is in a block, so
    // the data is spread over several blocks.
    const WAVES: i64 = 8;
    for wave in 0..WAVES {
        thread::scope(|s| {
            for (service, body) in &bodies {
                let url = &fp.url;
                s.spawn(move || ingest(url, service, FROM_S + wave * 10, body, None));
            }
        });
    }
    let blocks = std::fs::read_dir(fp.data.join("blocks/anonymous/L0"))
        .expect("blocks dir")
        .count();
    assert!(blocks >= WAVES as usize, "{blocks} blocks");

    let cpu = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";
    let types = types_by_service(&fp);
    assert!(types["go-regexp-cpu"].contains(cpu), "{types:?}");
    let selector = "{service_name=~\"go-.*\"}";
    let request = json!({
        "profileTypeID": cpu, "labelSelector": selector,
        "start": START_MS.to_string(), "end": END_MS.to_string(),
    });
    let unary = call(&fp, "SelectMergeStacktraces", &request)["flamegraph"].clone();
    let unary_total = total_of(&unary);
    assert!(unary_total > 0);

    // Connect server streaming, JSON.
    let events = connect_stream(&fp, "SelectMergeStacktracesStream", &request);
    let result = check_stream("connect stream", &events, "flamegraph");
    assert_eq!(result["flamegraph"], unary, "connect stream result = unary answer");
    let plan = events.iter().rev().find_map(|e| e.get("plan")).expect("plan");
    // Both services' datasets of every wave: an index, symbols and samples each.
    assert_eq!(int64(&plan["datasetsTotal"]), 2 * WAVES, "{plan}");
    assert_eq!(
        int64(&result["diagnostics"]["blocksRead"]),
        3 * 2 * WAVES,
        "{}",
        result["diagnostics"]
    );

    // Connect server streaming, proto: the same events.
    let request_pb = pb::SelectMergeStacktracesRequest {
        profile_type_id: cpu.to_string(),
        label_selector: selector.to_string(),
        start: START_MS,
        end: END_MS,
        max_nodes: None,
    };
    let Reply {
        status,
        content_type: ct,
        body,
        ..
    } = post_bytes(
        &format!(
            "{}/querier.v1.QuerierStreamService/SelectMergeStacktracesStream",
            fp.url
        ),
        "application/connect+proto",
        &envelope(0, &request_pb.encode_to_vec()),
        &[("Flamepipe-Snapshot-Interval", "10ms")],
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(ct, "application/connect+proto");
    let mut all = envelopes(&body);
    let (flags, end) = all.pop().expect("an end-stream envelope");
    assert_eq!((flags, end.as_slice()), (2, b"{}".as_slice()), "proto stream end");
    let events: Vec<pb::StreamEvent> = all
        .iter()
        .map(|(flags, payload)| {
            assert_eq!(*flags, 0);
            pb::StreamEvent::decode(payload.as_slice()).expect("stream event")
        })
        .collect();
    let kinds: String = events
        .iter()
        .map(|e| match (&e.plan, &e.snapshot, &e.result) {
            (Some(_), None, None) => 'p',
            (None, Some(_), None) => 's',
            (None, None, Some(_)) => 'r',
            _ => panic!("not exactly one field: {e:?}"),
        })
        .collect();
    let plans = kinds.chars().take_while(|&c| c == 'p').count();
    let snapshots = kinds[plans..].chars().take_while(|&c| c == 's').count();
    assert_eq!(
        &kinds[plans + snapshots..],
        "r",
        "plans, snapshots, one result: {kinds}"
    );
    assert!(plans >= 1 && snapshots >= 1, "{kinds}");
    let plan = events[plans - 1].plan.as_ref().expect("plan");
    assert!(plan.complete && plan.datasets_total == 2 * WAVES as u64, "{plan:?}");
    let unary_pb = flamegraph_from_json(&unary);
    let mut last = 0;
    for e in &events[plans..plans + snapshots] {
        let total = e
            .snapshot
            .as_ref()
            .and_then(|s| s.flamegraph.as_ref())
            .expect("snapshot flame graph")
            .total;
        assert!(
            last <= total && total <= unary_pb.total,
            "snapshot totals: {last} -> {total}"
        );
        last = total;
    }
    let result = events[plans + snapshots]
        .result
        .as_ref()
        .and_then(|r| r.flamegraph.clone());
    assert_eq!(result.as_ref(), Some(&unary_pb), "proto stream result = unary answer");

    // NDJSON.
    let query = format!("{cpu}{selector}");
    let url = format!(
        "{}/api/v1/stream/flamegraph?{}&snapshotInterval=10ms",
        fp.url,
        http_range(&query)
    );
    let events = ndjson(&url);
    let result = check_stream("ndjson stream", &events, "flamegraph");
    assert_eq!(result["flamegraph"], unary, "ndjson result = unary answer");

    // A series stream, grouped by service: the same total, the unary series.
    let url = format!(
        "{}/api/v1/stream/series?{}&step={STEP_S}&groupBy=service_name&snapshotInterval=10ms",
        fp.url,
        http_range(&query)
    );
    let events = ndjson(&url);
    let result = check_stream("series stream", &events, "series");
    assert_eq!(series_sum(&result["series"]), unary_total as f64, "series stream total");
    let unary_series = call(
        &fp,
        "SelectSeries",
        &json!({
            "profileTypeID": cpu, "labelSelector": selector,
            "start": START_MS.to_string(), "end": END_MS.to_string(),
            "step": STEP_S, "groupBy": ["service_name"],
        }),
    );
    assert_eq!(
        result["series"], unary_series["series"],
        "series stream result = unary answer"
    );
    assert_eq!(result["series"].as_array().map(Vec::len), Some(2), "two services");

    // A range without data: a plan of nothing and an empty result, no error.
    let url = format!(
        "{}/api/v1/stream/flamegraph?query={}&from={EMPTY_FROM_S}&until={EMPTY_UNTIL_S}&snapshotInterval=10ms",
        fp.url,
        enc(&query)
    );
    let events = ndjson(&url);
    let result = check_stream("empty range", &events, "flamegraph");
    let plans: Vec<&Value> = events.iter().filter_map(|e| e.get("plan")).collect();
    let last = plans.last().expect("a plan");
    assert_eq!(last["blocksTotal"], "0", "{last}");
    assert_eq!(last["datasetsTotal"], "0", "{last}");
    assert_eq!(last["complete"], true, "{last}");
    assert_eq!(events.len(), plans.len() + 1, "plans then the result: {events:?}");
    assert_eq!(total_of(&result["flamegraph"]), 0, "{result}");
    let empty = json!({
        "profileTypeID": cpu, "labelSelector": selector,
        "start": (EMPTY_FROM_S * 1000).to_string(), "end": (EMPTY_UNTIL_S * 1000).to_string(),
    });
    let events = connect_stream(&fp, "SelectMergeStacktracesStream", &empty);
    let result = check_stream("empty range, connect", &events, "flamegraph");
    assert_eq!(total_of(&result["flamegraph"]), 0, "{result}");
}

// ---- disconnects ----

/// Opens a stream on a raw socket, reads until the first snapshot, closes the socket and
/// returns the block reads counted 100 ms and 600 ms later, minus those before.
fn abandon_stream(fp: &Flamepipe, request: &[u8]) -> (u64, u64) {
    let reads = || fp.metric("flamepipe_query_block_reads_total") as u64;
    let before = reads();
    let address = fp.url.trim_start_matches("http://");
    let mut socket = TcpStream::connect(address).expect("connect");
    socket.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    socket.write_all(request).expect("send request");
    let mut seen = Vec::new();
    let mut buf = [0u8; 64 << 10];
    let deadline = Instant::now() + Duration::from_secs(30);
    while !String::from_utf8_lossy(&seen).contains("\"snapshot\"") {
        assert!(Instant::now() < deadline, "no snapshot within 30 s");
        let n = socket.read(&mut buf).expect("read stream");
        assert!(
            n > 0,
            "stream ended before a snapshot: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&seen[..seen.len().min(200)]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    socket.shutdown(Shutdown::Both).expect("shutdown");
    drop(socket);
    thread::sleep(Duration::from_millis(100));
    let soon = reads() - before;
    thread::sleep(Duration::from_millis(500));
    let later = reads() - before;
    (soon, later)
}

/// Writes `count` blocks straight into the store (the query engine lists blocks per query),
/// each holding a fixture's profiles for `service`, the i-th timestamped `FROM_S + i` seconds.
/// Returns the id of the fixture's cpu profile type and its total per block.
fn write_blocks(fp: &Flamepipe, file: &str, service: &str, count: usize) -> (String, i64) {
    let bytes = std::fs::read(fixture(&format!("pprof/{file}"))).expect("fixture");
    let series: Labels = [("service_name", service)].into_iter().collect();
    let options = ConvertOptions {
        series: &series,
        name: None,
        timestamp_ns: None,
        duration_ns: None,
        default_timestamp_ns: 0,
        display_names: None,
    };
    let profiles = decode_profiles(&bytes, &Limits::default(), &options).expect("decode fixture");
    let profile_type = profiles
        .iter()
        .find(|p| p.profile_type.sample_type == "cpu")
        .expect("a cpu profile")
        .profile_type
        .id();
    let per_block_total: i64 = profiles
        .iter()
        .filter(|p| p.profile_type.id() == profile_type)
        .map(|p| p.total())
        .sum();
    let staging = fp.dir().join("staging");
    std::fs::create_dir_all(&staging).expect("staging dir");
    let profiles = Arc::new(profiles);
    thread::scope(|s| {
        for worker in 0..2 {
            let (profiles, staging, data) = (Arc::clone(&profiles), &staging, &fp.data);
            s.spawn(move || {
                for i in (worker..count).step_by(2) {
                    let mut builder = BlockBuilder::new("anonymous", 0);
                    for p in profiles.iter() {
                        let mut p = p.clone();
                        p.timestamp_ns = (FROM_S + i as i64) * 1_000_000_000;
                        builder.add(&p);
                    }
                    let id = ulid::Ulid::new();
                    let block = builder.finish(id).expect("encode block");
                    let target = data.join(block_path("anonymous", id).to_string());
                    std::fs::create_dir_all(target.parent().expect("parent")).expect("blocks dir");
                    // Written aside and renamed in, so no query sees half a block.
                    let tmp = staging.join(id.to_string());
                    std::fs::write(&tmp, &block.bytes).expect("write block");
                    std::fs::rename(&tmp, &target).expect("move block into the store");
                }
            });
        }
    });
    (profile_type, per_block_total)
}

#[test]
fn client_disconnect_stops_block_reads() {
    const COUNT: usize = 400;
    let fp = Flamepipe::start(BIN, &query_options("    max_concurrent_reads: 1\n"));

    let (profile_type, per_block_total) = write_blocks(&fp, "go-bench-regexp-cpu.pb.gz", "many", COUNT);
    let query = format!("{profile_type}{{service_name=\"many\"}}");
    // Every footer, then an index, symbols and samples per dataset (one per block).
    let full_reads = (COUNT + 3 * COUNT) as u64;

    // NDJSON stream (footers not yet cached).
    let request = format!(
        "GET /api/v1/stream/flamegraph?{}&snapshotInterval=10ms HTTP/1.1\r\nHost: flamepipe\r\n\r\n",
        http_range(&query)
    );
    let (soon, later) = abandon_stream(&fp, request.as_bytes());
    eprintln!("NDJSON stream abandoned: {soon} then {later} reads (a full query: {full_reads})");
    assert_eq!(soon, later, "reads went on after the NDJSON client left");
    assert!(
        soon < (COUNT + 3 * COUNT / 2) as u64,
        "{soon} reads of the {full_reads} a full query needs: the query ran on"
    );

    // Connect stream (footers cached now).
    let body = envelope(
        0,
        json!({
            "profileTypeID": profile_type, "labelSelector": "{service_name=\"many\"}",
            "start": START_MS.to_string(), "end": END_MS.to_string(),
        })
        .to_string()
        .as_bytes(),
    );
    let mut request = format!(
        "POST /querier.v1.QuerierStreamService/SelectMergeStacktracesStream HTTP/1.1\r\nHost: flamepipe\r\n\
         Content-Type: application/connect+json\r\nFlamepipe-Snapshot-Interval: 10ms\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    let (soon, later) = abandon_stream(&fp, &request);
    eprintln!(
        "Connect stream abandoned: {soon} then {later} reads (a full query: {})",
        3 * COUNT
    );
    assert_eq!(soon, later, "reads went on after the Connect client left");
    assert!(
        soon < (3 * COUNT / 2) as u64,
        "{soon} reads of the {} a full query needs: the query ran on",
        3 * COUNT
    );

    // A query to the end reads every dataset: what the streams were spared.
    let reads = || fp.metric("flamepipe_query_block_reads_total") as u64;
    let before = reads();
    let started = Instant::now();
    let answer = call(
        &fp,
        "SelectMergeStacktraces",
        &json!({
            "profileTypeID": profile_type, "labelSelector": "{service_name=\"many\"}",
            "start": START_MS.to_string(), "end": END_MS.to_string(),
        }),
    );
    eprintln!("a full query took {:?}", started.elapsed());
    assert_eq!(
        reads() - before,
        3 * COUNT as u64,
        "a full query's reads (footers cached)"
    );
    assert_eq!(total_of(&answer["flamegraph"]), per_block_total * COUNT as i64);
}

/// `/pyroscope/render`'s timeline counts the profiles its flame graph counts, also when `from`
/// falls inside a timeline step; `SelectSeries` points sum to the same.
#[test]
fn render_timeline_counts_what_the_flame_graph_counts() {
    const COUNT: i64 = 30;
    let fp = Flamepipe::start(BIN, &query_options(""));
    // Profiles at FROM_S + 0..30 s; FROM_S is a multiple of the 10 s timeline step.
    let (cpu, per_block) = write_blocks(&fp, "pyroscope-go-cpu-tiny.pb.gz", "timeline", COUNT as usize);
    assert!(per_block > 0);
    let query = format!("{cpu}{{service_name=\"timeline\"}}");
    for (from, until) in [
        (FROM_S, FROM_S + COUNT),
        (FROM_S + 5, FROM_S + 24),
        (FROM_S + 13, FROM_S + 100),
        (FROM_S - 7, FROM_S + 3),
    ] {
        let what = format!("from {} until {}", from - FROM_S, until - FROM_S);
        let in_range: Vec<i64> = (FROM_S..FROM_S + COUNT)
            .filter(|t| (from..=until).contains(t))
            .collect();
        let expected = per_block * in_range.len() as i64;
        let url = format!(
            "{}/pyroscope/render?query={}&from={from}&until={until}",
            fp.url,
            enc(&query)
        );
        let Reply { status, body, .. } = get(&url, &[]);
        assert_eq!(status, 200, "{what}: {}", String::from_utf8_lossy(&body));
        let render: Value = serde_json::from_slice(&body).expect("render JSON");
        assert_eq!(
            render["flamebearer"]["numTicks"].as_i64(),
            Some(expected),
            "{what}: numTicks"
        );
        let timeline = &render["timeline"];
        assert_eq!(timeline["durationDelta"].as_i64(), Some(10), "{what}");
        let start = timeline["startTime"].as_i64().expect("startTime");
        assert!(start <= from && from < start + 10, "{what}: startTime {start}");
        let samples: Vec<i64> = serde_json::from_value(timeline["samples"].clone()).expect("samples");
        let mut per_step = vec![0i64; samples.len()];
        for t in &in_range {
            per_step[((t - start) / 10) as usize] += per_block;
        }
        assert_eq!(
            samples,
            per_step,
            "{what}: timeline (sum {})",
            samples.iter().sum::<i64>()
        );

        let answer = call(
            &fp,
            "SelectSeries",
            &json!({
                "profileTypeID": cpu, "labelSelector": "{service_name=\"timeline\"}",
                "start": (from * 1000).to_string(), "end": (until * 1000).to_string(), "step": 10,
            }),
        );
        assert_eq!(
            series_sum(&answer["series"]),
            expected as f64,
            "{what}: SelectSeries {answer}"
        );
    }
}

// ---- bad queries ----

#[test]
fn bad_queries_name_the_problem() {
    let fp = Flamepipe::start(BIN, &query_options(""));
    let cpu = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";
    let good = json!({
        "profileTypeID": cpu, "labelSelector": "{service_name=\"a\"}",
        "start": START_MS.to_string(), "end": END_MS.to_string(),
    });
    let with = |key: &str, value: Value| {
        let mut v = good.clone();
        v[key] = value;
        v
    };
    let cases = [
        (
            with("labelSelector", json!("{service_name=}")),
            "invalid selector at position",
        ),
        (with("profileTypeID", json!("cpu")), "invalid profile type"),
        (with("start", json!((END_MS + 1).to_string())), "is after"),
        (with("maxNodes", json!("-1")), "negative"),
        (with("maxNodes", json!((1i64 << 40).to_string())), "over the limit"),
    ];
    for (request, problem) in &cases {
        let (status, answer) = connect_json(&fp, "SelectMergeStacktraces", request, None);
        assert_eq!(status, 400, "{request}: {answer}");
        assert_eq!(answer["code"], "invalid_argument", "{request}: {answer}");
        let message = answer["message"].as_str().expect("message");
        assert!(
            message.contains(problem),
            "{request}: {message:?} does not say {problem:?}"
        );
    }
    let (status, answer) = connect_json(&fp, "SelectMergeStacktraces", &good, None);
    assert_eq!(status, 200, "the good query: {answer}");

    // The same problems as HTTP parameters: 400 with a plain-text message.
    let http_cases = [
        (
            format!("query={}", enc(&format!("{cpu}{{service_name=}}"))),
            "invalid selector at position",
        ),
        (format!("query={}", enc("cpu{}")), "invalid profile type"),
        (
            format!("query={}&from={END_S}&until={START_S}", enc(&format!("{cpu}{{}}"))),
            "is after",
        ),
        (format!("query={}&maxNodes=-1", enc(&format!("{cpu}{{}}"))), "negative"),
        (
            format!("query={}&maxNodes={}", enc(&format!("{cpu}{{}}")), 1i64 << 40),
            "over the limit",
        ),
    ];
    for path in ["/pyroscope/render", "/api/v1/stream/flamegraph", "/api/v1/pprof"] {
        for (params, problem) in &http_cases {
            let url = format!("{}{path}?{params}", fp.url);
            let Reply {
                status,
                content_type: ct,
                body,
                ..
            } = get(&url, &[]);
            let text = String::from_utf8_lossy(&body);
            assert_eq!(status, 400, "{url}: {text}");
            assert!(ct.starts_with("text/plain"), "{url}: content type {ct:?}");
            assert!(text.contains(problem), "{url}: {text:?} does not say {problem:?}");
        }
    }
    let Reply { status, body, .. } = get(&format!("{}/pyroscope/render", fp.url), &[]);
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("query is required"));

    // A Connect stream reports the error in its end-stream message.
    let request = with("labelSelector", json!("{service_name=}"));
    let Reply {
        status,
        content_type: ct,
        body,
        ..
    } = post_bytes(
        &format!(
            "{}/querier.v1.QuerierStreamService/SelectMergeStacktracesStream",
            fp.url
        ),
        "application/connect+json",
        &envelope(0, request.to_string().as_bytes()),
        &[],
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(ct, "application/connect+json");
    let all = envelopes(&body);
    assert_eq!(all.len(), 1, "only the end-stream message");
    assert_eq!(all[0].0, 2, "end-stream flag");
    let end: Value = serde_json::from_slice(&all[0].1).expect("end-stream JSON");
    assert_eq!(end["error"]["code"], "invalid_argument", "{end}");
    let message = end["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("invalid selector at position"), "{end}");

    // Unsupported content types are refused, naming what to use.
    let (status, text) = post(
        &format!("{}/querier.v1.QuerierService/SelectMergeStacktraces", fp.url),
        "text/plain",
        good.to_string().as_bytes(),
        &[],
    );
    assert!((400..600).contains(&status), "{status} {text}");
    assert!(text.contains("application/json"), "{text}");
    let (status, text) = post(
        &format!(
            "{}/querier.v1.QuerierStreamService/SelectMergeStacktracesStream",
            fp.url
        ),
        "application/json",
        &envelope(0, good.to_string().as_bytes()),
        &[],
    );
    assert_eq!(status, 415, "{text}");
    assert!(text.contains("application/connect+json"), "{text}");
    // A body that is not the message.
    let (status, answer) = post(
        &format!("{}/querier.v1.QuerierService/SelectMergeStacktraces", fp.url),
        "application/json",
        b"{\"start\": [1]}",
        &[],
    );
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("invalid_argument"), "{answer}");
}

// ---- freshness ----

#[test]
fn acknowledged_profiles_are_visible_at_once() {
    let fp = Flamepipe::start(BIN, &query_options(""));
    let body = std::fs::read(fixture("pprof/pyroscope-go-cpu-tiny.pb.gz")).expect("fixture");
    let cpu = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";
    let request = json!({
        "profileTypeID": cpu, "labelSelector": "{service_name=\"fresh\"}",
        "start": START_MS.to_string(), "end": END_MS.to_string(),
    });
    let mut first = 0;
    for n in 1..=5 {
        ingest(&fp.url, "fresh", FROM_S + n * 10, &body, None);
        let total = total_of(&call(&fp, "SelectMergeStacktraces", &request)["flamegraph"]);
        if n == 1 {
            assert!(total > 0, "the first profile is not visible");
            first = total;
        }
        assert_eq!(total, first * n, "after {n} acknowledged profiles");
        let types = call(
            &fp,
            "ProfileTypes",
            &json!({ "start": START_MS.to_string(), "end": END_MS.to_string() }),
        );
        assert!(types.to_string().contains(cpu), "{types}");
    }
}
