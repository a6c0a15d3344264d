//! Real profiler SDKs pointed at a running flamepipe: pyroscope-io 1.x (Push API),
//! pyroscope-io 0.8.x (legacy /ingest), @pyroscope/nodejs raw-body and multipart uploads.
//! Their profiles must be stored under the right service, labels and profile types.

use std::path::Path;
use std::process::{Command, Output};

use std::time::Duration;

use flamepipe_integration::stored::{StoredProfile, read_store_until};
use flamepipe_integration::{Flamepipe, Options, node_with_modules, repo_root, venv_python};

const BIN: &str = env!("CARGO_BIN_EXE_flamepipe");

fn run_client(program: &Path, script: &str, args: &[&str]) -> Output {
    let out = Command::new(program)
        .arg(repo_root().join("integration/clients").join(script))
        .args(args)
        .output()
        .expect("run client");
    eprintln!(
        "{script} {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success());
    out
}

/// What is stored once `service` has a profile of each type starting with one of `types`
/// (SDKs may exit before their last upload lands, and send types in separate uploads).
fn stored_for(data: &Path, service: &str, types: &[&str]) -> Vec<StoredProfile> {
    read_store_until(data, Duration::from_secs(15), |stored| {
        types.iter().all(|t| {
            stored.iter().any(|s| {
                s.profile.series.get("service_name") == Some(service) && s.profile.profile_type.id().starts_with(t)
            })
        })
    })
}

fn profiles_of<'a>(stored: &'a [StoredProfile], service: &str) -> Vec<&'a StoredProfile> {
    stored
        .iter()
        .filter(|s| s.profile.series.get("service_name") == Some(service))
        .collect()
}

fn types_of(profiles: &[&StoredProfile]) -> Vec<String> {
    let mut types: Vec<String> = profiles.iter().map(|s| s.profile.profile_type.id()).collect();
    types.sort();
    types.dedup();
    types
}

fn has_function(profiles: &[&StoredProfile], needle: &str) -> bool {
    profiles.iter().any(|s| {
        let p = &s.profile;
        p.function_totals().keys().any(|name| name.contains(needle))
    })
}

#[test]
fn python_sdk_1x_pushes() {
    let Some(python) = venv_python(".venv") else { return };
    let fp = Flamepipe::start(BIN, &Options::default());
    run_client(
        &python,
        "pyroscope_python.py",
        &[
            "--server",
            &fp.url,
            "--app",
            "py-push",
            "--seconds",
            "4",
            "--tag",
            "env=test",
            "--tenant",
            "team-py",
            "--mem",
            "--tag-fib",
        ],
    );
    let stored = stored_for(&fp.data, "py-push", &["process_cpu:cpu:", "memory:"]);
    let ours = profiles_of(&stored, "py-push");
    assert!(!ours.is_empty(), "nothing stored for py-push");
    for s in &ours {
        assert_eq!(s.tenant, "team-py");
        assert_eq!(s.profile.series.get("env"), Some("test"));
        assert_eq!(
            s.profile.series.get("otel_scope_name"),
            Some("com.grafana.pyroscope/python")
        );
    }
    let types = types_of(&ours);
    assert!(
        types.contains(&"process_cpu:cpu:nanoseconds:cpu:nanoseconds".to_string()),
        "{types:?}"
    );
    assert!(types.iter().any(|t| t.starts_with("memory:")), "{types:?}");
    let cpu: Vec<_> = ours
        .iter()
        .copied()
        .filter(|s| s.profile.profile_type.name == "process_cpu")
        .collect();
    assert!(has_function(&cpu, "flamepipe_busy_work") && has_function(&cpu, "flamepipe_fib"));
    // The tag wrapper's label is a series label: phase=fib holds the fib work, and the rest of
    // the run is in the series without it.
    let (tagged, untagged): (Vec<_>, Vec<_>) = cpu
        .iter()
        .copied()
        .partition(|s| s.profile.series.get("phase") == Some("fib"));
    assert!(!tagged.is_empty(), "no series with phase=fib");
    assert!(
        has_function(&tagged, "flamepipe_fib"),
        "phase=fib does not hold flamepipe_fib"
    );
    assert!(has_function(&untagged, "flamepipe_busy_work"));
    // The sampler reads a thread's tags and its stack a moment apart: allow a few samples
    // at the edges of the wrapped call.
    let cum = |profiles: &[&StoredProfile], function: &str| -> i64 {
        profiles
            .iter()
            .map(|s| s.profile.function_totals().get(function).map_or(0, |t| t.cum))
            .sum()
    };
    let tagged_total: i64 = tagged.iter().map(|s| s.profile.total()).sum();
    assert!(
        cum(&tagged, "flamepipe_fib") * 10 >= tagged_total * 9,
        "phase=fib is mostly flamepipe_fib"
    );
}

#[test]
fn python_sdk_08_ingests() {
    let Some(python) = venv_python(".venv-legacy") else {
        return;
    };
    let fp = Flamepipe::start(BIN, &Options::default());
    run_client(
        &python,
        "pyroscope_python.py",
        &[
            "--server",
            &fp.url,
            "--app",
            "py-legacy",
            "--seconds",
            "4",
            "--tag",
            "env=test",
        ],
    );
    let stored = stored_for(&fp.data, "py-legacy", &["process_cpu:cpu:"]);
    let ours = profiles_of(&stored, "py-legacy");
    assert!(!ours.is_empty(), "nothing stored for py-legacy");
    assert_eq!(types_of(&ours), vec!["process_cpu:cpu:nanoseconds:cpu:nanoseconds"]);
    assert!(
        ours.iter()
            .all(|s| s.profile.series.get("pyroscope_spy") == Some("pyspy"))
    );
    // 0.8 puts its tags on every sample rather than in the name.
    let p = &ours[0].profile;
    let tagged = p.samples.iter().all(|s| {
        p.symbols
            .label_set(s.labels)
            .iter()
            .any(|l| p.symbols.str(l.key) == "env" && p.symbols.str(l.str) == "test")
    });
    assert!(tagged, "sample labels lost");
    assert!(has_function(&ours, "flamepipe_fib"));
}

fn node_case(mode: &str, app: &str) {
    let Some(node) = node_with_modules() else { return };
    let fp = Flamepipe::start(BIN, &Options::default());
    run_client(
        &node,
        "pyroscope_node.js",
        &[
            "--server",
            &fp.url,
            "--app",
            app,
            "--seconds",
            "5",
            "--tag",
            "env=test",
            "--mode",
            mode,
            "--flush-ms",
            "2000",
        ],
    );
    let stored = stored_for(&fp.data, app, &["wall:wall:", "memory:inuse_space:"]);
    let ours = profiles_of(&stored, app);
    assert!(!ours.is_empty(), "nothing stored for {app}");
    for s in &ours {
        assert_eq!(s.profile.series.get("env"), Some("test"));
        assert_eq!(s.profile.series.get("process_runtime_name"), Some("nodejs"));
        assert_eq!(s.profile.series.get("pyroscope_spy"), Some("nodespy"));
    }
    let types = types_of(&ours);
    assert!(
        types.contains(&"wall:wall:nanoseconds:wall:nanoseconds".to_string()),
        "{types:?}"
    );
    assert!(
        types.contains(&"memory:inuse_space:bytes:inuse_space:bytes".to_string()),
        "{types:?}"
    );
    let wall: Vec<_> = ours
        .iter()
        .copied()
        .filter(|s| s.profile.profile_type.name == "wall")
        .collect();
    assert!(has_function(&wall, "flamepipeFib"));
}

#[test]
fn node_sdk_raw_body() {
    node_case("raw", "node-raw");
}

#[test]
fn node_sdk_multipart() {
    node_case("multipart", "node-multipart");
}
