//! Every label a profiler sends is queryable: a Go program's CPU profile recorded here, with
//! `pprof.Do` labels (`workload`, `tenant`) on its samples, is ingested, and every label is
//! listed by `LabelNames`/`LabelValues`, selects exactly the samples carrying it (totals equal
//! `go tool pprof -tagfocus` on the same file), groups `SelectSeries`, and survives in the
//! pprof download of a selection. The unlabelled rest stays reachable.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use flamepipe_integration::pprof_ref::go_pprof_totals_with;
use flamepipe_integration::process::post;
use flamepipe_integration::query_client::{connect_unary, enc, get, int64};
use flamepipe_integration::{Flamepipe, Options, go_tool, repo_root};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_flamepipe");
const CPU: &str = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";
const SERVICE: &str = "go-labels";

/// Builds and runs integration/clients/go-labels, returning the CPU profile it wrote.
fn record(go: &Path, dir: &Path) -> PathBuf {
    let binary = dir.join("go-labels");
    let source = repo_root().join("integration/clients/go-labels/main.go");
    let built = Command::new(go)
        .args(["build", "-o"])
        .arg(&binary)
        .arg(&source)
        // One file importing the standard library only: no module needed.
        .env("GO111MODULE", "off")
        .output()
        .expect("go build");
    assert!(
        built.status.success(),
        "go build: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let profile = dir.join("cpu.pb.gz");
    let ran = Command::new(&binary)
        .arg("-out")
        .arg(&profile)
        .args(["-duration", "3s"])
        .output()
        .expect("run go-labels");
    assert!(
        ran.status.success(),
        "go-labels: {}",
        String::from_utf8_lossy(&ran.stderr)
    );
    profile
}

/// `go tool pprof`'s CPU total of `file`, restricted by `args` (`-tagfocus=...`).
fn go_cpu_total(go: &Path, file: &Path, args: &[&str]) -> i64 {
    go_pprof_totals_with(go, file, args)
        .get("cpu/nanoseconds")
        .map_or(0, |per_function| per_function.values().map(|(flat, _)| flat).sum())
}

fn range() -> Value {
    json!({ "start": "946684800000", "end": "1893456000000" })
}

fn unary(fp: &Flamepipe, method: &str, body: &Value) -> Value {
    let reply = connect_unary(fp, method, body, None);
    assert_eq!(reply.status, 200, "{method} {body}: {}", reply.text());
    reply.json()
}

fn names(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().expect("string").to_string())
        .collect()
}

fn flamegraph_total(fp: &Flamepipe, selector: &str) -> i64 {
    let mut request = range();
    request["profileTypeID"] = json!(CPU);
    request["labelSelector"] = json!(selector);
    int64(&unary(fp, "SelectMergeStacktraces", &request)["flamegraph"]["total"])
}

#[test]
fn every_pprof_label_is_queryable_with_exact_totals() {
    let Some(go) = go_tool() else { return };
    let work = tempfile::tempdir().expect("tempdir");
    let file = record(&go, work.path());
    let fp = Flamepipe::start(
        BIN,
        &Options {
            query: Some(String::new()),
            ..Options::default()
        },
    );
    let (status, text) = post(
        &format!("{}/ingest?name={SERVICE}", fp.url),
        "application/octet-stream",
        &std::fs::read(&file).expect("profile"),
        &[],
    );
    assert_eq!(status, 200, "{text}");

    // The reference: totals per label value, from go tool pprof on the file sent.
    let total = go_cpu_total(&go, &file, &[]);
    let mut by_workload = BTreeMap::new();
    for workload in ["hash", "json", "sort"] {
        let focus = format!("-tagfocus=workload=^{workload}$");
        by_workload.insert(workload, go_cpu_total(&go, &file, &[&focus]));
    }
    let labelled: i64 = by_workload.values().sum();
    assert!(
        total > labelled && labelled > 0,
        "the profile has labelled and unlabelled samples"
    );
    let acme = go_cpu_total(&go, &file, &["-tagfocus=tenant=^acme$"]);

    let label_names = names(&unary(&fp, "LabelNames", &range())["names"]);
    assert!(
        label_names.contains("workload") && label_names.contains("tenant"),
        "{label_names:?}"
    );
    let mut request = range();
    request["name"] = json!("workload");
    let values = names(&unary(&fp, "LabelValues", &request)["names"]);
    let present: BTreeSet<String> = by_workload
        .iter()
        .filter(|(_, t)| **t > 0)
        .map(|(w, _)| w.to_string())
        .collect();
    assert_eq!(values, present);

    let base = format!("service_name=\"{SERVICE}\"");
    assert_eq!(
        flamegraph_total(&fp, &format!("{{{base}}}")),
        total,
        "the whole profile"
    );
    for (workload, expected) in &by_workload {
        let got = flamegraph_total(&fp, &format!("{{{base}, workload=\"{workload}\"}}"));
        assert_eq!(got, *expected, "workload={workload}");
    }
    assert_eq!(
        flamegraph_total(&fp, &format!("{{{base}, workload=\"\"}}")),
        total - labelled,
        "the unlabelled rest"
    );
    assert_eq!(
        flamegraph_total(&fp, &format!("{{{base}, tenant=\"acme\"}}")),
        acme,
        "tenant=acme"
    );

    // SelectSeries grouped by workload: one group per value, plus the unlabelled rest.
    let mut request = range();
    request["profileTypeID"] = json!(CPU);
    request["labelSelector"] = json!(format!("{{{base}}}"));
    request["step"] = json!(86_400);
    request["groupBy"] = json!(["workload"]);
    let series = unary(&fp, "SelectSeries", &request);
    let mut grouped: BTreeMap<String, i64> = BTreeMap::new();
    for s in series["series"].as_array().expect("series") {
        let workload = s["labels"]
            .as_array()
            .and_then(|l| l.iter().find(|p| p["name"] == "workload"))
            .and_then(|p| p["value"].as_str())
            .unwrap_or("")
            .to_string();
        let sum: f64 = s["points"]
            .as_array()
            .expect("points")
            .iter()
            .map(|p| p["value"].as_f64().expect("value"))
            .sum();
        *grouped.entry(workload).or_default() += sum as i64;
    }
    let mut expected: BTreeMap<String, i64> = by_workload
        .iter()
        .filter(|(_, t)| **t > 0)
        .map(|(w, &t)| (w.to_string(), t))
        .collect();
    expected.insert(String::new(), total - labelled);
    assert_eq!(grouped, expected, "SelectSeries grouped by workload");

    // A pprof download of one workload keeps the samples' labels.
    let query = format!("{CPU}{{{base}, workload=\"hash\"}}");
    let reply = get(
        &format!(
            "{}/api/v1/pprof?query={}&from=946684800&until=1893456000",
            fp.url,
            enc(&query)
        ),
        &[],
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let download = work.path().join("hash.pb.gz");
    std::fs::write(&download, &reply.body).expect("write download");
    assert_eq!(go_cpu_total(&go, &download, &[]), by_workload["hash"]);
    let tags = Command::new(&go)
        .args(["tool", "pprof", "-tags", "-symbolize=none"])
        .arg(&download)
        .output()
        .expect("go tool pprof -tags");
    let tags = String::from_utf8_lossy(&tags.stdout);
    assert!(
        tags.contains("workload: Total") && tags.contains("hash") && !tags.contains("json"),
        "the download's samples are labelled workload=hash:\n{tags}"
    );
}
