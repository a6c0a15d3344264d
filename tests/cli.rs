//! The `flamepipe` binary as users run it: exit codes and the messages they read.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn flamepipe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flamepipe"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("FLAMEPIPE_TEST_UNSET_PORT")
        .output()
        .unwrap()
}

fn stderr_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn the_shipped_config_validates() {
    let out = flamepipe(&["validate", "pipeline.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "pipeline.yaml: valid (1 pipelines, 2 receivers, 2 processors, 1 exporters, 2 extensions, 1 stores)\n"
    );
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        flamepipe(&["validate", "--config", "pipeline.yaml"]).status.code(),
        Some(0)
    );
}

#[test]
fn version_and_help() {
    let out = flamepipe(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("flamepipe {}\n", env!("CARGO_PKG_VERSION"))
    );
    let out = flamepipe(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for command in ["run", "validate", "blocks"] {
        assert!(help.contains(command), "{help}");
    }
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(flamepipe(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(flamepipe(&["blocks", "ls"]).status.code(), Some(2));
    let out = flamepipe(&["validate", "tests/testdata/no-such-file.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_lines(&out)[0].starts_with("tests/testdata/no-such-file.yaml: cannot read config: "));
    let out = flamepipe(&["blocks", "ls", "--store", "tests/testdata/no-such-store"]);
    assert_eq!(out.status.code(), Some(2));
}

fn assert_invalid(file: &str, expected: &[&str]) {
    let path = format!("tests/testdata/{file}");
    for command in ["validate", "run"] {
        let args: &[&str] = if command == "run" {
            &["run", "--config", &path]
        } else {
            &["validate", &path]
        };
        let out = flamepipe(args);
        assert_eq!(out.status.code(), Some(2), "{command} {path}");
        let errors: Vec<String> = stderr_lines(&out)
            .into_iter()
            .filter(|l| !l.starts_with("warning: "))
            .collect();
        let expected: Vec<String> = expected.iter().map(|e| format!("{path}: {e}")).collect();
        assert_eq!(errors, expected, "{command} {path}");
    }
}

#[test]
fn bad_references_are_all_reported() {
    assert_invalid(
        "bad-references.yaml",
        &[
            "receivers.kafka: unknown receiver type \"kafka\" (known: pyroscope, otlp)",
            "compactor: unknown section, expected one of receivers, processors, exporters, connectors, extensions, storage, service",
            "service.pipelines.profiles/default.processors[0]: unknown processor \"segment\" (defined: none)",
            "service.pipelines.profiles/default.exporters[1]: unknown exporter \"s3/cold\" (defined: blocks, blocks/spare)",
            "service.pipelines.profiles/empty.exporters: a pipeline needs at least one exporter",
        ],
    );
    let out = flamepipe(&["validate", "tests/testdata/bad-references.yaml"]);
    assert!(stderr_lines(&out).contains(
        &"warning: tests/testdata/bad-references.yaml: exporters.blocks/spare: exporter \"blocks/spare\" is defined but no pipeline uses it; it will not run"
            .to_string()
    ));
}

#[test]
fn bad_values_are_all_reported() {
    assert_invalid(
        "bad-values.yaml",
        &[
            "receivers.pyroscope.max_samples: invalid type: string \"many\", expected usize",
            "processors.segment.flush_interval: invalid duration \"x\" (expected number at 0); expected e.g. \"1s\", \"250ms\"",
            "exporters.blocks.colour: unknown field `colour`, expected one of `store`, `timeout`, `sending_queue`, `retry_on_failure`",
            "storage.cold.url: unsupported store URL \"s4://bucket\": expected file://PATH, a path, s3://BUCKET[/PREFIX], gs://BUCKET[/PREFIX], az://CONTAINER[/PREFIX] or memory://",
            "service.telemetry.metrics_address: invalid address \"localhost\"; expected IP:PORT, e.g. \"127.0.0.1:8888\"",
            "service.telemetry.logs.level: invalid log level \"verbose\"; expected one of trace, debug, info, warn, error",
            "service.shutdown_timeout: must be greater than 0s, got \"0s\"",
        ],
    );
}

#[test]
fn unset_environment_variables_are_named() {
    assert_invalid(
        "bad-env.yaml",
        &[
            "receivers.pyroscope.address: environment variable FLAMEPIPE_TEST_UNSET_PORT is not set (write ${env:FLAMEPIPE_TEST_UNSET_PORT:-default} to give a default)",
        ],
    );
}

#[test]
fn route_and_address_collisions_are_reported() {
    assert_invalid(
        "bad-routes.yaml",
        &[
            "receivers.pyroscope/b: routes \"/ingest\", \"/pyroscope/ingest\", \"/push.v1.PusherService/Push\" on 127.0.0.1:4040 are already served by receiver \"pyroscope/a\"",
            "service.telemetry.metrics_address: 127.0.0.1:4040 collides with 127.0.0.1:4040 used by receiver \"pyroscope/a\"; the telemetry server needs an address of its own",
        ],
    );
}

fn spawn_run(store: &Path, metrics_port: u16) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_flamepipe"))
        .args(["run", "--config", "tests/testdata/run.yaml"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("FLAMEPIPE_TEST_STORE", store)
        .env("FLAMEPIPE_TEST_METRICS_PORT", metrics_port.to_string())
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn a_taken_port_exits_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let store = tempfile::tempdir().unwrap();
    let out = spawn_run(store.path(), port).wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port} (for telemetry)")),
        "{stderr}"
    );
}

#[cfg(unix)]
#[test]
fn runs_until_sigterm_then_exits_0() {
    let store = tempfile::tempdir().unwrap();
    let mut child = spawn_run(store.path(), 0);
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut log = String::new();
    loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0 && Instant::now() < deadline,
            "no start line in:\n{log}"
        );
        log.push_str(&line);
        if line.contains("flamepipe started") {
            break;
        }
    }
    assert!(log.contains("(pyroscope)") && log.contains("(telemetry)"), "{log}");
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert_eq!(status.code(), Some(0), "{log}{rest}");
    assert!(
        rest.contains("shutting down") && rest.contains("flamepipe stopped"),
        "{rest}"
    );
}
