//! An agent -> central chain over OTLP: Pyroscope API -> flamepipe A (pyroscope receiver ->
//! otlp exporter over gRPC, or otlphttp over OTLP/HTTP) -> flamepipe B (otlp receiver ->
//! segment -> blocks). What B stores equals what `go tool pprof` reads from A's input,
//! function by function, and A answers each upload only once B has durably stored it.

use flamepipe_integration::pprof_ref::{assert_totals_match_go, stored_totals_by_service};
use flamepipe_integration::process::post;
use flamepipe_integration::stored::read_store;
use flamepipe_integration::{Flamepipe, Options, fixtures_in, go_tool};

const BIN: &str = env!("CARGO_BIN_EXE_flamepipe");

#[test]
fn pyroscope_to_agent_to_otlp_to_central_keeps_every_total() {
    chain_keeps_every_total("otlp", |central| central.otlp_grpc_url.clone());
}

#[test]
fn pyroscope_to_agent_to_otlp_http_to_central_keeps_every_total() {
    chain_keeps_every_total("otlphttp", |central| central.otlp_http_url.clone());
}

/// The chain with the agent's exporter `exporter`, sending to `endpoint` of the central.
fn chain_keeps_every_total(exporter: &str, endpoint: fn(&Flamepipe) -> String) {
    let Some(go) = go_tool() else { return };
    let central = Flamepipe::start(
        BIN,
        &Options {
            otlp: Some(String::new()),
            ..Options::default()
        },
    );
    let agent = Flamepipe::start_yaml(BIN, |_| {
        format!(
            "receivers:\n  pyroscope:\n    address: 127.0.0.1:0\n\
             exporters:\n  {exporter}:\n    endpoint: {endpoint}\n    timeout: 5s\n\
             service:\n  pipelines:\n    profiles/default:\n      receivers: [pyroscope]\n      exporters: [{exporter}]\n\
             \x20 telemetry:\n    metrics_address: 127.0.0.1:0\n    logs:\n      level: info\n      format: json\n",
            endpoint = endpoint(&central),
        )
    });
    // CPU, heap (4 sample types), mutex, goroutines, an unsymbolized profile, labels.
    let files: Vec<_> = fixtures_in("pprof")
        .into_iter()
        .filter(|f| {
            let name = f.file_name().unwrap().to_string_lossy().to_string();
            name.starts_with("pyroscope-go-") || name.starts_with("go-bench-") || name.contains("unsymbolized")
        })
        .collect();
    assert!(files.len() >= 6, "{files:?}");
    for (i, file) in files.iter().enumerate() {
        let body = std::fs::read(file).unwrap();
        let (status, text) = post(
            &format!("{}/ingest?name=chain-{i}%7Bhop%3Dagent%7D", agent.url),
            "application/octet-stream",
            &body,
            &[("X-Scope-OrgID", "team-a")],
        );
        assert_eq!(status, 200, "{}: {text}", file.display());
    }

    // Durable end to end: every upload was answered after the central store had it.
    let stored = read_store(&central.data);
    for s in &stored {
        assert_eq!(s.tenant, "team-a", "the tenant travels as X-Scope-OrgID");
        let p = &s.profile;
        assert_eq!(
            p.series.get("hop"),
            Some("agent"),
            "series labels travel: {:?}",
            p.series
        );
        assert_eq!(
            p.series.get("__profile_type__"),
            Some(p.profile_type.id().as_str()),
            "{:?}",
            p.series
        );
    }
    let by_service = stored_totals_by_service(&stored);
    for (i, file) in files.iter().enumerate() {
        let ours = by_service
            .get(&format!("chain-{i}"))
            .unwrap_or_else(|| panic!("{} did not reach the central store", file.display()));
        assert_totals_match_go(&go, file, ours);
    }
}

#[test]
fn an_unreachable_central_fails_the_upload_instead_of_acknowledging_it() {
    // Nothing listens on this port: the agent must not answer 200 for data it could not pass on.
    let agent = Flamepipe::start_yaml(BIN, |_| {
        "receivers:\n  pyroscope:\n    address: 127.0.0.1:0\n\
         exporters:\n  otlp:\n    endpoint: http://127.0.0.1:9\n    timeout: 1s\n    \
         retry_on_failure: { initial_interval: 50ms, max_interval: 100ms, max_elapsed_time: 500ms }\n\
         service:\n  pipelines:\n    profiles/default:\n      receivers: [pyroscope]\n      exporters: [otlp]\n\
         \x20 telemetry:\n    metrics_address: 127.0.0.1:0\n    logs:\n      level: info\n      format: json\n"
            .to_string()
    });
    let body = std::fs::read(flamepipe_integration::fixture("pprof/pyroscope-go-cpu-tiny.pb.gz")).unwrap();
    let (status, text) = post(
        &format!("{}/ingest?name=lost", agent.url),
        "application/octet-stream",
        &body,
        &[],
    );
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("forwarding to http://127.0.0.1:9 failed"), "{text}");
}
