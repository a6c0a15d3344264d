//! Bad input gets a 4xx naming the problem, is counted by reason, stores nothing, and leaves
//! the server serving.

use std::io::Write;

use flamepipe_core::formats::pprof::proto;
use flamepipe_integration::process::{post, post_with_curl};
use flamepipe_integration::stored::read_store;
use flamepipe_integration::{Flamepipe, Options, fixture};
use prost::Message;

const BIN: &str = env!("CARGO_BIN_EXE_flamepipe");

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A pprof whose sample points at a location that does not exist.
fn dangling_location() -> Vec<u8> {
    proto::Profile {
        sample_type: vec![proto::ValueType { r#type: 1, unit: 2 }],
        sample: vec![proto::Sample {
            location_id: vec![42],
            value: vec![1],
            label: vec![],
        }],
        string_table: vec!["".into(), "cpu".into(), "nanoseconds".into()],
        ..Default::default()
    }
    .encode_to_vec()
}

#[test]
fn bad_requests_are_refused_counted_and_harmless() {
    let opts = Options {
        receiver_extra: "    max_request_bytes: 1MiB\n    max_decompressed_bytes: 8MiB\n".into(),
        ..Options::default()
    };
    let fp = Flamepipe::start(BIN, &opts);
    let read = |rel: &str| std::fs::read(fixture(rel)).unwrap();
    let bomb = gzip(&vec![0u8; 100 << 20]);
    assert!(bomb.len() < 1 << 20, "the bomb must pass the request size limit");
    let good = read("pprof/pyroscope-go-cpu-tiny.pb.gz");
    // (what, query, body, expected status, the message mentions, refusal reason)
    type Case<'a> = (&'a str, String, Vec<u8>, u16, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (
            "truncated gzip",
            "name=a".into(),
            read("bad/made-truncated-gzip.go-cpu-labels-mixed.pb.gz"),
            400,
            "gzip",
            "bad_gzip",
        ),
        (
            "wrong magic",
            "name=a".into(),
            read("bad/made-wrong-magic.go-heap-mixed.pb.gz"),
            400,
            "protobuf",
            "bad_protobuf",
        ),
        (
            "truncated protobuf",
            "name=a&format=pprof".into(),
            read("bad/made-truncated-protobuf.pyroscope-go-cpu-uncompressed.pb"),
            400,
            "protobuf",
            "bad_protobuf",
        ),
        (
            "function id 0",
            "name=a&format=pprof".into(),
            read("bad/real-dotnet-function-id-zero.pb"),
            400,
            "reserved id 0",
            "bad_pprof",
        ),
        (
            "dangling location",
            "name=a&format=pprof".into(),
            dangling_location(),
            400,
            "location id 42",
            "bad_pprof",
        ),
        (
            "empty body",
            "name=a&format=pprof".into(),
            Vec::new(),
            400,
            "empty",
            "empty_body",
        ),
        (
            "unknown format",
            "name=a&format=bogus".into(),
            good.clone(),
            400,
            "bogus",
            "unknown_format",
        ),
        (
            "broken name",
            "name=app%7Ba%3Db".into(),
            good.clone(),
            400,
            "name",
            "bad_name",
        ),
        (
            "oversized body",
            "name=a&format=pprof".into(),
            vec![7u8; 2 << 20],
            413,
            "exceeds the limit",
            "too_large",
        ),
        (
            "gzip bomb",
            "name=a&format=pprof".into(),
            bomb,
            413,
            "limit",
            "too_large",
        ),
    ];
    for (what, query, body, status, needle, reason) in &cases {
        let refusals =
            format!("flamepipe_receiver_refused_requests_total{{receiver=\"pyroscope\",reason=\"{reason}\"}}");
        let before = fp.metric(&refusals);
        let started = std::time::Instant::now();
        let url = format!("{}/ingest?{query}", fp.url);
        // A 413 may come before the body is read; curl reads it, a strict client sees a reset.
        let (got, text) = if *status == 413 {
            post_with_curl(&url, body)
        } else {
            post(&url, "application/octet-stream", body, &[])
        };
        assert_eq!(got, *status, "{what}: {text}");
        assert!(
            text.to_lowercase().contains(&needle.to_lowercase()),
            "{what}: message {text:?} should mention {needle:?}"
        );
        assert!(started.elapsed().as_secs() < 10, "{what} took {:?}", started.elapsed());
        assert_eq!(
            fp.metric(&refusals),
            before + 1.0,
            "{what}: refusal not counted under {reason}"
        );
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(read_store(&fp.data).is_empty(), "a refused request stored something");

    let (status, text) = post(
        &format!("{}/ingest?name=still-serving", fp.url),
        "application/octet-stream",
        &good,
        &[],
    );
    assert_eq!(status, 200, "{text}");
    let stored = read_store(&fp.data);
    assert_eq!(stored.len(), 2, "the tiny Go CPU profile has two sample types");

    // The accepted request shows in flamepipe's own metrics, through to the durable write.
    assert_eq!(
        fp.metric("flamepipe_receiver_accepted_profiles_total{receiver=\"pyroscope\"}"),
        2.0
    );
    assert_eq!(
        fp.metric("flamepipe_receiver_accepted_bytes_total{receiver=\"pyroscope\"}"),
        good.len() as f64
    );
    assert_eq!(
        fp.metric("flamepipe_exporter_written_blocks_total{exporter=\"blocks\"}"),
        1.0
    );
    assert!(fp.metric("flamepipe_exporter_written_bytes_total{exporter=\"blocks\"}") > 0.0);
    // The flush latency is recorded just after the write is acknowledged: allow it a moment.
    let flushes = "flamepipe_processor_segment_flush_duration_seconds_count{processor=\"segment\"}";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while fp.metric(flushes) < 1.0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(fp.metric(flushes), 1.0);
    let ready = flamepipe_integration::process::http()
        .get(&format!("{}/ready", fp.metrics_url))
        .call()
        .unwrap();
    assert_eq!(ready.status(), 200);
}
