//! Metrics from profiles end to end: the `profile_metrics` connector and the
//! `prometheus_remote_write` exporter against a real Prometheus and a real VictoriaMetrics,
//! and the `otlp` exporter against the OpenTelemetry Python proto package, checked against
//! `go tool pprof` on the same files.
//!
//! The profiles are real Go CPU profiles from the fixtures, with their start time moved to a
//! few minutes ago (a remote-write receiver keeps recent data; the counters carry the
//! profile's time).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flamepipe_core::formats::pprof::proto;
use flamepipe_integration::metrics_store::MetricsStore;
use flamepipe_integration::process::post_binary;
use flamepipe_integration::{Flamepipe, fixture, go_tool, repo_root, venv_python};
use prost::Message;

const BIN: &str = env!("CARGO_BIN_EXE_flamepipe");

fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as i64
}

/// The fixture's pprof with its start time set to `time_ns`, as an uncompressed body.
fn restamped(file: &Path, time_ns: i64) -> Vec<u8> {
    let bytes = std::fs::read(file).unwrap();
    let raw = flamepipe_core::body::maybe_gunzip(&bytes, 256 << 20).unwrap();
    let mut profile = proto::Profile::decode(raw.as_ref()).unwrap();
    profile.time_nanos = time_ns;
    profile.encode_to_vec()
}

/// `go tool pprof -top -cum` of a CPU profile: the total and one function's cum, in seconds.
fn go_top_cum(go: &Path, file: &Path, function: &str) -> (f64, Option<f64>) {
    let out = Command::new(go)
        .args([
            "tool",
            "pprof",
            "-symbolize=none",
            "-top",
            "-cum",
            "-unit=ns",
            "-nodefraction=0",
            "-nodecount=1000000",
        ])
        .arg(file)
        .output()
        .expect("go tool pprof");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let ns = |s: &str| s.trim_end_matches("ns").parse::<f64>().unwrap_or(0.0) / 1e9;
    let total = text
        .lines()
        .find_map(|l| l.split(" of ").nth(1)?.strip_suffix(" total").map(ns))
        .expect("a total line");
    let cum = text.lines().find_map(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        (cols.len() == 6 && cols[5] == function).then(|| ns(cols[3]))
    });
    (total, cum)
}

fn ingest(fp: &Flamepipe, app: &str, body: &[u8]) {
    let (status, text, _) = post_binary(
        &format!(
            "{}/ingest?name={}&format=pprof",
            fp.url,
            flamepipe_integration::query_client::enc(app)
        ),
        "application/octet-stream",
        body,
        &[],
    );
    assert_eq!(status, 200, "{text}");
}

/// The OTLP metrics and traces receiver of `integration/clients/otlp_sink.py` (the
/// OpenTelemetry Python proto package and grpcio): the process, its output after the port
/// lines, its gRPC endpoint and its OTLP/HTTP endpoint.
fn otlp_sink() -> Option<(
    std::process::Child,
    BufReader<std::process::ChildStdout>,
    String,
    String,
)> {
    let python = venv_python(".venv-otel")?;
    let mut sink = Command::new(python)
        .arg(repo_root().join("integration/clients/otlp_sink.py"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the OTLP sink");
    let mut out = BufReader::new(sink.stdout.take().expect("piped stdout"));
    let (mut grpc, mut http) = (String::new(), String::new());
    out.read_line(&mut grpc).expect("the sink's gRPC port");
    out.read_line(&mut http).expect("the sink's HTTP port");
    Some((
        sink,
        out,
        format!("http://127.0.0.1:{}", grpc.trim()),
        format!("http://127.0.0.1:{}", http.trim()),
    ))
}

/// The connector and pipelines exactly as the configuration reference shows them, with the
/// remote-write endpoints of the test's receivers.
fn config(data: &Path, prometheus: &str, victoria: &str) -> String {
    format!(
        r#"
receivers:
  pyroscope: {{ address: "127.0.0.1:0" }}
processors:
  dedup: {{}}
  segment: {{}}
exporters:
  blocks: {{ store: local }}
  prometheus_remote_write/prom:
    endpoint: {prometheus}
    batch_send_deadline: 200ms
  prometheus_remote_write/vm:
    endpoint: {victoria}
    batch_send_deadline: 200ms
connectors:
  profile_metrics/cpu:
    step: 15s
    rules:
      - metric: profile_cpu_seconds_total
        profile_type: process_cpu:cpu:nanoseconds:cpu:nanoseconds
        match: '{{service_name=~"checkout|cart"}}'
        group_by: [service_name, region]
      - metric: profile_function_cpu_seconds_total
        profile_type: process_cpu:cpu:nanoseconds:cpu:nanoseconds
        function: {{ name: "runtime.mallocgc", mode: total }}
        group_by: [service_name]
storage:
  local: {{ url: "file://{data}" }}
service:
  pipelines:
    profiles/default:
      receivers: [pyroscope]
      processors: [dedup, segment]
      exporters: [blocks, profile_metrics/cpu]
    metrics/profiles:
      receivers: [profile_metrics/cpu]
      exporters: [prometheus_remote_write/prom, prometheus_remote_write/vm]
  telemetry:
    metrics_address: "127.0.0.1:0"
    logs: {{ format: json }}
"#,
        data = data.display()
    )
}

/// Polls `promql` on `store` until `done` holds for its answer, or 90 s pass.
fn until(
    store: &MetricsStore,
    promql: &str,
    done: impl Fn(&[(std::collections::BTreeMap<String, String>, f64)]) -> bool,
) -> Vec<(std::collections::BTreeMap<String, String>, f64)> {
    store.until(promql, Duration::from_secs(90), done)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[test]
fn counters_from_profiles_equal_go_tool_pprof_in_prometheus_and_victoria_metrics() {
    let Some(go) = go_tool() else { return };
    let Some(prometheus) = MetricsStore::prometheus() else {
        return;
    };
    let Some(victoria) = MetricsStore::victoria_metrics() else {
        return;
    };
    let fp = Flamepipe::start_yaml(BIN, |data| config(data, &prometheus.write_url(), &victoria.write_url()));

    let checkout = fixture("pprof/go-bench-encoding-json-cpu.pb.gz");
    let cart = fixture("pprof/go-cpu-json-regex-nolabels.pb.gz");
    let now = now_ns();
    ingest(
        &fp,
        "checkout{region=\"eu\"}",
        &restamped(&checkout, now - 180_000_000_000),
    );
    ingest(&fp, "cart{region=\"us\"}", &restamped(&cart, now - 150_000_000_000));
    // Not selected by the first rule; counted by the second.
    ingest(&fp, "search", &restamped(&cart, now - 120_000_000_000));

    let (checkout_total, checkout_malloc) = go_top_cum(&go, &checkout, "runtime.mallocgc");
    let (cart_total, cart_malloc) = go_top_cum(&go, &cart, "runtime.mallocgc");
    let (checkout_malloc, cart_malloc) = (checkout_malloc.unwrap(), cart_malloc.unwrap());
    for store in [&prometheus, &victoria] {
        let kind = store.kind;
        let totals = until(store, "profile_cpu_seconds_total", |got| got.len() == 2);
        assert_eq!(totals.len(), 2, "{kind:?}: {totals:?}");
        for (labels, value) in &totals {
            let (want, region) = match labels["service_name"].as_str() {
                "checkout" => (checkout_total, "eu"),
                "cart" => (cart_total, "us"),
                other => panic!("{kind:?}: unexpected service {other}"),
            };
            assert!(
                close(*value, want),
                "{kind:?} {labels:?}: {value} != go tool pprof's {want}"
            );
            assert_eq!(labels["region"], region);
            assert!(!labels["instance"].is_empty(), "{labels:?}");
        }
        let functions = until(store, "profile_function_cpu_seconds_total", |got| got.len() == 3);
        assert_eq!(functions.len(), 3, "{kind:?}: {functions:?}");
        for (labels, value) in &functions {
            let want = match labels["service_name"].as_str() {
                "checkout" => checkout_malloc,
                _ => cart_malloc,
            };
            assert!(
                close(*value, want),
                "{kind:?} {labels:?}: {value} != go tool pprof -top -cum's {want}"
            );
            assert!(!labels.contains_key("region"), "only the group_by labels: {labels:?}");
        }
    }
    assert_eq!(
        fp.metric(
            "flamepipe_exporter_send_failed_items_total{exporter=\"prometheus_remote_write/prom\",signal=\"metrics\"}"
        ),
        0.0
    );

    // A profile three hours old, for a new series: Prometheus refuses a sample that far
    // behind its head (outside the 1h out-of-order window) with a 400; the exporter drops
    // that sample alone, counts it, and goes on. VictoriaMetrics keeps it.
    ingest(
        &fp,
        "old{region=\"eu\"}",
        &restamped(&cart, now - 3 * 3_600_000_000_000),
    );
    let dropped = "flamepipe_exporter_dropped_items_total{exporter=\"prometheus_remote_write/prom\",signal=\"metrics\",reason=\"refused\"}";
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while fp.metric(dropped) < 1.0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        fp.metric(dropped),
        1.0,
        "in Prometheus: {:?}\nlogs: {:?}\nmetrics: {:#?}",
        prometheus.query("last_over_time(profile_function_cpu_seconds_total{service_name=\"old\"}[4h])"),
        fp.drain_logs()
            .iter()
            .filter(|l| l.contains("WARN"))
            .collect::<Vec<_>>(),
        fp.metrics()
            .lines()
            .filter(|l| l.contains("_exporter_") || l.contains("_connector_"))
            .collect::<Vec<_>>()
    );
    let old = until(
        &victoria,
        "last_over_time(profile_function_cpu_seconds_total{service_name=\"old\"}[4h])",
        |got| !got.is_empty(),
    );
    assert_eq!(old.len(), 1, "VictoriaMetrics stores the old sample: {old:?}");
}

#[test]
fn a_receiver_that_is_down_gets_what_the_queue_held_once_it_is_back() {
    let Some(go) = go_tool() else { return };
    let Some(mut prometheus) = MetricsStore::prometheus() else {
        return;
    };
    let write = prometheus.write_url();
    let fp = Flamepipe::start_yaml(BIN, |data| {
        format!(
            r#"
receivers:
  pyroscope: {{ address: "127.0.0.1:0" }}
processors:
  segment: {{ flush_interval: 200ms }}
exporters:
  prometheus_remote_write:
    endpoint: {write}
    batch_send_deadline: 50ms
    sending_queue: {{ queue_size: 3 }}
    retry_on_failure: {{ initial_interval: 100ms, max_interval: 500ms, max_elapsed_time: 5m }}
connectors:
  profile_metrics:
    step: 1s
    rules:
      - metric: profile_cpu_seconds_total
        profile_type: process_cpu:cpu:nanoseconds:cpu:nanoseconds
        group_by: [service_name]
storage:
  local: {{ url: "file://{data}" }}
service:
  pipelines:
    profiles: {{ receivers: [pyroscope], processors: [segment], exporters: [profile_metrics] }}
    metrics: {{ receivers: [profile_metrics], exporters: [prometheus_remote_write] }}
  telemetry:
    metrics_address: "127.0.0.1:0"
    logs: {{ format: json }}
"#,
            data = data.display()
        )
    });
    prometheus.stop();
    let file = fixture("pprof/go-cpu-json-regex-nolabels.pb.gz");
    let now = now_ns();
    let profiles = 8;
    for i in 0..profiles {
        // One step apart, each in a flush of its own.
        ingest(
            &fp,
            "queued",
            &restamped(&file, now - 200_000_000_000 + i * 2_000_000_000),
        );
        std::thread::sleep(Duration::from_millis(1_300));
    }
    let made = fp.metric("flamepipe_connector_profile_metrics_points_total{connector=\"profile_metrics\"}");
    assert_eq!(made, profiles as f64, "one point per profile, each in its own step");
    let dropped_full = "flamepipe_exporter_dropped_items_total{exporter=\"prometheus_remote_write\",signal=\"metrics\",reason=\"queue_full\"}";
    assert!(
        fp.metric(dropped_full) >= 1.0,
        "the queue overflowed while the receiver was down:\n{}",
        fp.metrics()
    );
    assert!(
        fp.metric("flamepipe_exporter_retries_total{exporter=\"prometheus_remote_write\",signal=\"metrics\"}") >= 1.0
    );

    prometheus.resume();
    let sent = "flamepipe_exporter_sent_items_total{exporter=\"prometheus_remote_write\",signal=\"metrics\"}";
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while fp.metric(sent) + fp.metric(dropped_full) < made && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let (sent, dropped) = (fp.metric(sent), fp.metric(dropped_full));
    assert_eq!(sent + dropped, made, "every point was sent or dropped and counted");
    // Every point sent arrived once; the newest carries every profile's value, so the
    // counter's total survived the drops.
    let stored = prometheus.query("count_over_time(profile_cpu_seconds_total{service_name=\"queued\"}[1h])");
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0].1, sent, "stored points = points sent, none twice");
    let one = go_top_cum(&go, &file, "").0;
    let last = prometheus.query("profile_cpu_seconds_total{service_name=\"queued\"}");
    assert!(
        close(last[0].1, one * profiles as f64),
        "{last:?} != {profiles} × {one}"
    );
}

#[test]
fn bad_rules_are_refused_with_their_paths() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pipeline.yaml");
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(
        br#"
receivers:
  pyroscope: {}
exporters:
  prometheus_remote_write: { endpoint: "not a url" }
connectors:
  profile_metrics:
    step: 0s
    rules:
      - metric: profile cpu
        profile_type: process_cpu:cpu:nanoseconds:cpu:nanoseconds
      - metric: profile_cpu_total
        profile_type: process_cpu:cpu:nanoseconds:cpu:nanoseconds
        match: '{service_name=~"("}'
        group_by: [__name__]
      - metric: profile_alloc_bytes_total
        profile_type: memory:alloc_space
        function: { regex: "(", mode: total }
      - metric: profile_fn_cpu_seconds_total
        profile_type: process_cpu:cpu:nanoseconds:cpu:nanoseconds
        function: { name: "a", regex: "b" }
service:
  pipelines:
    profiles: { receivers: [pyroscope], exporters: [profile_metrics] }
    metrics: { receivers: [profile_metrics], exporters: [prometheus_remote_write] }
"#,
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for path in [
        "exporters.prometheus_remote_write.endpoint: invalid endpoint",
        "connectors.profile_metrics.step: must be at least 1s",
        "connectors.profile_metrics.rules[0].metric: \"profile cpu\" is not a Prometheus metric name",
        "connectors.profile_metrics.rules[1].metric: \"profile_cpu_total\" counts seconds",
        "connectors.profile_metrics.rules[1].match: invalid selector",
        "connectors.profile_metrics.rules[1].group_by[0]: \"__name__\" is not a label name",
        "connectors.profile_metrics.rules[2].profile_type: invalid profile type",
        "connectors.profile_metrics.rules[2].function.regex:",
        "connectors.profile_metrics.rules[3].function: give exactly one of name and regex",
    ] {
        assert!(stderr.contains(path), "missing {path:?} in:\n{stderr}");
    }
}

#[test]
fn counters_go_out_as_otlp_metrics_that_a_real_decoder_reads() {
    let Some(go) = go_tool() else { return };
    let Some((mut sink, mut out, endpoint, http)) = otlp_sink() else {
        return;
    };
    let mut fp = Flamepipe::start_yaml(BIN, |data| {
        format!(
            r#"
receivers:
  pyroscope: {{ address: "127.0.0.1:0" }}
processors:
  segment: {{ flush_interval: 200ms }}
exporters:
  otlp/metrics: {{ endpoint: "{endpoint}" }}
  otlphttp/metrics: {{ endpoint: "{http}" }}
connectors:
  profile_metrics:
    step: 15s
    rules:
      - metric: profile_cpu_seconds_total
        profile_type: process_cpu:cpu:nanoseconds:cpu:nanoseconds
        group_by: [service_name]
storage:
  local: {{ url: "file://{data}" }}
service:
  pipelines:
    profiles: {{ receivers: [pyroscope], processors: [segment], exporters: [profile_metrics] }}
    metrics: {{ receivers: [profile_metrics], exporters: [otlp/metrics, otlphttp/metrics] }}
  telemetry:
    metrics_address: "127.0.0.1:0"
    logs: {{ format: json }}
"#,
            data = data.display()
        )
    });
    let file = fixture("pprof/go-bench-encoding-json-cpu.pb.gz");
    let time_ns = now_ns() - 60_000_000_000;
    ingest(&fp, "checkout", &restamped(&file, time_ns));
    // On SIGTERM the connector sends what it counted, then the exporter drains.
    assert!(fp.terminate(Duration::from_secs(30)).success());
    std::thread::sleep(Duration::from_millis(300));
    let _ = sink.kill();
    let _ = sink.wait();
    let mut lines = String::new();
    out.read_to_string(&mut lines).unwrap();
    let points: Vec<serde_json::Value> = lines.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(
        points.len(),
        2,
        "one point over gRPC (otlp), one over OTLP/HTTP (otlphttp): {lines}"
    );
    let mut transports: Vec<&str> = points.iter().map(|p| p["transport"].as_str().unwrap()).collect();
    transports.sort_unstable();
    assert_eq!(transports, ["grpc", "http"]);
    for p in &points {
        let (total, _) = go_top_cum(&go, &file, "");
        let step_ns = 15_000_000_000u64;
        assert_eq!(p["name"], "profile_cpu_seconds_total");
        assert_eq!(p["unit"], "s");
        assert_eq!(p["monotonic"], true);
        assert_eq!(p["temporality"], 2, "AGGREGATION_TEMPORALITY_CUMULATIVE");
        assert_eq!(p["attributes"]["service_name"], "checkout");
        assert!(!p["attributes"]["instance"].as_str().unwrap().is_empty());
        assert_eq!(p["tenant"], "anonymous");
        assert!(
            close(p["value"].as_f64().unwrap(), total),
            "{p} != go tool pprof's {total}"
        );
        let stamped = p["time_ns"].as_u64().unwrap();
        assert_eq!(
            stamped,
            time_ns as u64 / step_ns * step_ns,
            "the profile's time, rounded to the step"
        );
        assert_eq!(
            p["start_ns"].as_u64().unwrap(),
            stamped,
            "a series whose first profile predates the process starts at that profile's step"
        );
    }
}

#[test]
fn remote_write_2_to_receivers_that_speak_only_1_is_an_error_never_a_success() {
    let Some(prometheus) = MetricsStore::prometheus() else {
        return;
    };
    let Some(victoria) = MetricsStore::victoria_metrics() else {
        return;
    };
    let fp = Flamepipe::start_yaml(BIN, |data| {
        format!(
            r#"
receivers:
  pyroscope: {{ address: "127.0.0.1:0" }}
processors:
  segment: {{ flush_interval: 200ms }}
exporters:
  prometheus_remote_write/prom:
    endpoint: {prometheus}
    protobuf_message: io.prometheus.write.v2.Request
    batch_send_deadline: 50ms
  prometheus_remote_write/vm:
    endpoint: {victoria}
    protobuf_message: io.prometheus.write.v2.Request
    batch_send_deadline: 50ms
connectors:
  profile_metrics:
    step: 1s
    rules:
      - metric: profile_cpu_seconds_total
        profile_type: process_cpu:cpu:nanoseconds:cpu:nanoseconds
        group_by: [service_name]
storage:
  local: {{ url: "file://{data}" }}
service:
  pipelines:
    profiles: {{ receivers: [pyroscope], processors: [segment], exporters: [profile_metrics] }}
    metrics: {{ receivers: [profile_metrics], exporters: [prometheus_remote_write/prom, prometheus_remote_write/vm] }}
  telemetry:
    metrics_address: "127.0.0.1:0"
    logs: {{ format: json }}
"#,
            prometheus = prometheus.write_url(),
            victoria = victoria.write_url(),
            data = data.display()
        )
    });
    let file = fixture("pprof/go-cpu-json-regex-nolabels.pb.gz");
    ingest(&fp, "v2", &restamped(&file, now_ns() - 60_000_000_000));
    for exporter in ["prometheus_remote_write/prom", "prometheus_remote_write/vm"] {
        let failed =
            format!("flamepipe_exporter_send_failed_items_total{{exporter=\"{exporter}\",signal=\"metrics\"}}");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while fp.metric(&failed) < 1.0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(fp.metric(&failed), 1.0, "{exporter}: the point is counted as failed");
        let sent = format!("flamepipe_exporter_sent_items_total{{exporter=\"{exporter}\",signal=\"metrics\"}}");
        assert_eq!(
            fp.metric(&sent),
            0.0,
            "{exporter}: a 2xx that stored nothing is not a success"
        );
    }
    assert!(
        fp.drain_logs()
            .iter()
            .any(|l| l.contains("does not speak remote write 2.0")),
        "the log says why"
    );
    assert!(prometheus.query("profile_cpu_seconds_total").is_empty());
    assert!(victoria.query("profile_cpu_seconds_total").is_empty());
}

#[test]
fn flamepipes_own_metrics_are_pushed_over_otlp_as_metrics_shows_them() {
    let Some((mut sink, out, endpoint, _)) = otlp_sink() else {
        return;
    };
    let (tx, lines) = std::sync::mpsc::channel::<serde_json::Value>();
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&line) {
                let _ = tx.send(v);
            }
        }
    });
    let fp = Flamepipe::start_yaml(BIN, |data| {
        format!(
            r#"
receivers:
  pyroscope: {{ address: "127.0.0.1:0" }}
processors:
  segment: {{ flush_interval: 100ms }}
exporters:
  blocks: {{ store: local }}
storage:
  local: {{ url: "file://{data}" }}
service:
  pipelines:
    profiles: {{ receivers: [pyroscope], processors: [segment], exporters: [blocks] }}
  telemetry:
    metrics_address: "127.0.0.1:0"
    metrics:
      readers:
        - periodic:
            interval: 1s
            exporter:
              otlp: {{ endpoint: "{endpoint}", protocol: grpc }}
    logs: {{ format: json }}
"#,
            data = data.display()
        )
    });
    ingest(
        &fp,
        "own-metrics",
        &std::fs::read(fixture("pprof/go-cpu-json-regex-nolabels.pb.gz")).unwrap(),
    );
    let accepted = "flamepipe_receiver_accepted_profiles_total{receiver=\"pyroscope\"}";
    let want = fp.metric(accepted);
    assert!(want >= 1.0);
    // Points arrive every second; wait for one that has the ingest in it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (mut counter, mut histogram) = (None, None);
    while std::time::Instant::now() < deadline && (counter.is_none() || histogram.is_none()) {
        let Ok(p) = lines.recv_timeout(Duration::from_millis(500)) else {
            continue;
        };
        if p["name"] == "flamepipe_receiver_accepted_profiles_total" && p["value"].as_f64() == Some(want) {
            counter = Some(p);
        } else if p["name"] == "flamepipe_processor_segment_flush_duration_seconds" && p["count"].as_u64() >= Some(1) {
            histogram = Some(p);
        }
    }
    let counter = counter.expect("the accepted-profiles counter, with the value /metrics shows");
    assert_eq!(counter["kind"], "sum");
    assert_eq!(counter["monotonic"], true);
    assert_eq!(counter["temporality"], 2);
    assert_eq!(counter["attributes"]["receiver"], "pyroscope");
    assert_eq!(counter["resource"]["service.name"], "flamepipe");
    let histogram = histogram.expect("the segment flush histogram");
    assert_eq!(histogram["kind"], "histogram");
    assert_eq!(
        histogram["buckets"].as_u64().unwrap(),
        histogram["bounds"].as_u64().unwrap() + 1
    );
    drop(fp);
    let _ = sink.kill();
    let _ = sink.wait();
}

#[test]
fn spans_of_ingest_block_writes_and_queries_go_out_over_otlp() {
    let Some((mut sink, out, endpoint, _)) = otlp_sink() else {
        return;
    };
    let (tx, lines) = std::sync::mpsc::channel::<serde_json::Value>();
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&line) {
                let _ = tx.send(v);
            }
        }
    });
    let mut fp = Flamepipe::start_yaml(BIN, |data| {
        format!(
            r#"
receivers:
  pyroscope: {{ address: "127.0.0.1:0" }}
processors:
  segment: {{ flush_interval: 100ms }}
exporters:
  blocks: {{ store: local }}
extensions:
  query: {{ address: "127.0.0.1:0", store: local }}
storage:
  local: {{ url: "file://{data}" }}
service:
  extensions: [query]
  pipelines:
    profiles: {{ receivers: [pyroscope], processors: [segment], exporters: [blocks] }}
  telemetry:
    metrics_address: "127.0.0.1:0"
    traces:
      processors:
        - batch:
            exporter:
              otlp: {{ endpoint: "{endpoint}", protocol: grpc }}
    logs: {{ format: json }}
"#,
            data = data.display()
        )
    });
    let file = fixture("pprof/go-cpu-json-regex-nolabels.pb.gz");
    ingest(&fp, "traced", &std::fs::read(&file).unwrap());
    let block = std::fs::read_dir(fp.data.join("blocks/anonymous/L0"))
        .unwrap()
        .map(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .trim_end_matches(".block")
                .to_string()
        })
        .next()
        .expect("one block written");
    let query = serde_json::json!({
        "profileTypeID": "process_cpu:cpu:nanoseconds:cpu:nanoseconds",
        "labelSelector": "{service_name=\"traced\"}",
        "start": "1700000000000",
        "end": (now_ns() / 1_000_000).to_string(),
    });
    let reply = flamepipe_integration::query_client::connect_unary(&fp, "SelectMergeStacktraces", &query, None);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_ne!(reply.json()["flamegraph"]["total"], "0", "the query finds the profile");
    // The batch span processor sends on shutdown what it still holds.
    assert!(fp.terminate(Duration::from_secs(30)).success());
    let mut spans: Vec<serde_json::Value> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::time::Instant::now() < deadline && spans.len() < 3 {
        if let Ok(v) = lines.recv_timeout(Duration::from_millis(500))
            && v.get("span").is_some()
        {
            spans.push(v);
        }
    }
    let _ = sink.kill();
    let _ = sink.wait();
    let find = |name: &str| {
        spans
            .iter()
            .find(|s| s["span"] == name)
            .unwrap_or_else(|| panic!("no {name} span in {spans:?}"))
            .clone()
    };
    let ingest_span = find("ingest");
    assert_eq!(ingest_span["attributes"]["tenant"], "anonymous");
    assert_eq!(ingest_span["attributes"]["outcome"], "ok");
    assert_eq!(ingest_span["resource"]["service.name"], "flamepipe");
    let write = find("block.write");
    assert_eq!(write["attributes"]["block"], block.as_str(), "the block id it wrote");
    let query_span = find("query");
    assert_eq!(
        query_span["attributes"]["blocks"],
        block.as_str(),
        "the block id it read"
    );
}

#[test]
fn counters_at_compaction_equal_counters_at_ingest() {
    let Some(go) = go_tool() else { return };
    let Some(victoria) = MetricsStore::victoria_metrics() else {
        return;
    };
    let write = victoria.write_url();
    let fp = Flamepipe::start_yaml(BIN, |data| {
        let rules = r#"
    step: 1s
    rules:
      - metric: profile_cpu_seconds_total
        profile_type: process_cpu:cpu:nanoseconds:cpu:nanoseconds
        group_by: [service_name]
      - metric: profile_function_cpu_seconds_total
        profile_type: process_cpu:cpu:nanoseconds:cpu:nanoseconds
        function: { name: "runtime.mallocgc", mode: total }
        group_by: [service_name]"#;
        format!(
            r#"
receivers:
  pyroscope: {{ address: "127.0.0.1:0" }}
processors:
  segment: {{ flush_interval: 100ms }}
exporters:
  blocks: {{ store: local }}
  prometheus_remote_write: {{ endpoint: "{write}", batch_send_deadline: 100ms }}
connectors:
  profile_metrics/ingest:
    instance: at-ingest{rules}
  profile_metrics/compaction:
    instance: at-compaction{rules}
extensions:
  compactor:
    store: local
    interval: 200ms
    levels: [{{ max_inputs: 3, max_age: 1s }}, {{ max_inputs: 10, max_age: 1h }}]
    profile_metrics: profile_metrics/compaction
storage:
  local: {{ url: "file://{data}" }}
service:
  extensions: [compactor]
  pipelines:
    profiles: {{ receivers: [pyroscope], processors: [segment], exporters: [blocks, profile_metrics/ingest] }}
    metrics: {{ receivers: [profile_metrics/ingest, profile_metrics/compaction], exporters: [prometheus_remote_write] }}
  telemetry:
    metrics_address: "127.0.0.1:0"
    logs: {{ format: json }}
"#,
            data = data.display()
        )
    });
    let files = [
        fixture("pprof/go-cpu-json-regex-nolabels.pb.gz"),
        fixture("pprof/go-bench-encoding-json-cpu.pb.gz"),
        fixture("pprof/go-cpu-json-regex-nolabels.pb.gz"),
    ];
    let now = now_ns();
    for (i, file) in files.iter().enumerate() {
        // Each in a segment of its own, so the compactor has level-0 blocks to merge.
        ingest(
            &fp,
            "backfill",
            &restamped(file, now - 600_000_000_000 + i as i64 * 30_000_000_000),
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let total: f64 = files.iter().map(|f| go_top_cum(&go, f, "").0).sum();
    let malloc: f64 = files
        .iter()
        .map(|f| go_top_cum(&go, f, "runtime.mallocgc").1.unwrap())
        .sum();
    for (metric, want) in [
        ("profile_cpu_seconds_total", total),
        ("profile_function_cpu_seconds_total", malloc),
    ] {
        let query = format!("last_over_time({metric}{{service_name=\"backfill\"}}[1h])");
        let got = until(&victoria, &query, |got| {
            got.len() == 2 && got.iter().all(|(_, v)| close(*v, want))
        });
        let instances: Vec<&str> = got.iter().map(|(l, _)| l["instance"].as_str()).collect();
        assert_eq!(got.len(), 2, "{metric}: {got:?}");
        assert!(
            instances.contains(&"at-ingest") && instances.contains(&"at-compaction"),
            "{got:?}"
        );
        for (labels, value) in &got {
            assert!(
                close(*value, want),
                "{metric} {labels:?}: {value} != go tool pprof's {want}"
            );
        }
    }
}
