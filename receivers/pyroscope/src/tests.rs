//! Tests of both APIs through the real router, against captured SDK uploads and the shared
//! pprof fixtures, plus unit tests of time parsing, config and a no-panic property test.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use base64::Engine as _;
use flamepipe_core::Profile;
use flamepipe_core::component::{Batch, BuildContext, PipelineSender};
use flamepipe_core::config::{ByteSize, Validate};
use flamepipe_core::formats::pprof::Limits;
use flamepipe_core::telemetry::Telemetry;
use http_body_util::BodyExt;
use proptest::prelude::*;
use prost::Message as _;
use tokio::sync::mpsc;
use tower::ServiceExt;

use crate::config::{AckMode, Config};
use crate::ingest::{self, IngestBody, IngestParams, parse_time};
use crate::push::{self, LabelPair, PushEncoding, PushRequest, RawProfileSeries, RawSample};

const CPU: &str = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";
/// `pprof/pyroscope-python-cpu.pb.gz`, an old pyroscope agent's upload.
const PY_CPU: &str = "process_cpu:samples:count::milliseconds";

struct Harness {
    router: Router,
    rx: mpsc::Receiver<Batch>,
    telemetry: Arc<Telemetry>,
}

fn harness_with(config: Config, capacity: usize) -> Harness {
    let (tx, rx) = mpsc::channel(capacity);
    let telemetry = Arc::new(Telemetry::new());
    let ctx = BuildContext {
        id: "pyroscope".into(),
        telemetry: Arc::clone(&telemetry),
        stores: Default::default(),
        shutdown: tokio_util::sync::CancellationToken::new(),
    };
    let router = crate::router(
        &config,
        &ctx,
        PipelineSender::new(vec![("profiles/default".into(), tx)]),
    );
    Harness { router, rx, telemetry }
}

/// Answers as soon as the batch is handed on, so tests can read the channel afterwards.
fn harness() -> Harness {
    harness_with(
        Config {
            ack: AckMode::Received,
            ..Config::default()
        },
        16,
    )
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

async fn send(router: &Router, request: Request<Body>) -> Answer {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

fn post(uri: &str, headers: &[(&str, &str)], body: impl Into<Body>) -> Request<Body> {
    let mut request = Request::post(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(body.into()).unwrap()
}

fn manifest_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(manifest_path(&format!("../../integration/testdata/fixtures/{name}"))).unwrap()
}

/// A captured upload: the request exactly as the SDK sent it (request line, headers, body).
fn captured(name: &str) -> Request<Body> {
    let dir = manifest_path("../../integration/testdata/captured");
    let head = std::fs::read_to_string(dir.join(format!("{name}.txt"))).unwrap();
    let body = std::fs::read(dir.join(format!("{name}.body"))).unwrap();
    let mut lines = head.lines();
    let request_line = lines.next().unwrap();
    let uri = request_line.split(' ').nth(1).unwrap();
    let mut request = Request::post(uri);
    for line in lines.take_while(|l| !l.is_empty()) {
        let (name, value) = line.split_once(": ").unwrap();
        request = request.header(name, value);
    }
    request.body(Body::from(body)).unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(data), &mut out).unwrap();
    out
}

fn types(batch: &Batch) -> Vec<String> {
    batch.profiles.iter().map(|p| p.profile_type.id()).collect()
}

fn label<'a>(p: &'a Profile, name: &str) -> &'a str {
    p.series
        .get(name)
        .unwrap_or_else(|| panic!("no label {name} in {}", p.series))
}

fn assert_nothing_sent(h: &mut Harness) {
    assert!(h.rx.try_recv().is_err(), "a refused request sent data downstream");
}

// ---- captured SDK uploads ----

#[tokio::test]
async fn python_1x_push_is_accepted() {
    let mut h = harness();
    let answer = send(&h.router, captured("python-1.x-push")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.headers["content-type"], "application/proto");
    assert!(answer.body.is_empty());
    let batch = h.rx.try_recv().unwrap();
    assert_eq!(&*batch.tenant, "tenant-a");
    assert_eq!(types(&batch), vec![CPU]);
    let p = &batch.profiles[0];
    assert_eq!(label(p, "service_name"), "flamepipe-python");
    assert_eq!(label(p, "__name__"), "process_cpu");
    assert_eq!(label(p, "env"), "test");
    assert_eq!(label(p, "region"), "local");
    assert_eq!(label(p, "otel_scope_name"), "com.grafana.pyroscope/python");
    assert_eq!(label(p, "process_runtime_name"), "cpython");
    assert!(p.timestamp_ns > 1_700_000_000_000_000_000);
    assert!(p.duration_ns > 0);
    assert_eq!(p.period, 10_000_000);
    assert!(p.total() > 0 && p.total() % 10_000_000 == 0);
    assert!(p.function_totals().contains_key("flamepipe_fib"));
    assert!(
        h.telemetry
            .encode()
            .contains("flamepipe_receiver_accepted_profiles_total{receiver=\"pyroscope\"} 1")
    );
}

#[tokio::test]
async fn python_1x_push_with_memory_splits_per_sample_type() {
    let mut h = harness();
    let answer = send(&h.router, captured("python-1.x-push-cpu-memory")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let batch = h.rx.try_recv().unwrap();
    assert_eq!(&*batch.tenant, "anonymous");
    assert_eq!(
        types(&batch),
        vec![
            "memory:alloc_objects:count:space:bytes",
            "memory:alloc_space:bytes:space:bytes",
            "memory:inuse_objects:count:space:bytes",
            "memory:inuse_space:bytes:space:bytes",
            CPU,
        ]
    );
    assert!(
        batch
            .profiles
            .iter()
            .all(|p| label(p, "service_name") == "flamepipe-python")
    );
}

#[tokio::test]
async fn python_08_ingest_is_accepted() {
    let mut h = harness();
    let answer = send(&h.router, captured("python-0.8-ingest")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let batch = h.rx.try_recv().unwrap();
    assert_eq!(&*batch.tenant, "tenant-a");
    assert_eq!(types(&batch), vec![CPU]);
    let p = &batch.profiles[0];
    assert_eq!(label(p, "service_name"), "flamepipe-python-legacy");
    assert_eq!(label(p, "pyroscope_spy"), "pyspy");
    assert_eq!(label(p, "__name__"), "process_cpu");
    // The pprof's own window start wins over `from`; the duration is until - from.
    assert_eq!(p.timestamp_ns, 1_795_313_860_000_000_000);
    assert_eq!(p.duration_ns, 10_000_000_000);
    // The 0.8 SDK sends its tags as sample labels, which stay on the samples.
    assert!(p.samples.iter().all(|s| s.labels != 0));
}

fn assert_node(batch: &Batch, service: &str, version: &str) {
    assert_eq!(&*batch.tenant, "tenant-a");
    for p in &batch.profiles {
        assert_eq!(label(p, "service_name"), service);
        assert_eq!(label(p, "pyroscope_spy"), "nodespy");
        assert_eq!(label(p, "env"), "test");
        assert_eq!(label(p, "region"), "local");
        assert_eq!(label(p, "otel_scope_name"), "com.grafana.pyroscope/nodejs");
        assert_eq!(label(p, "otel_scope_version"), version);
        assert_eq!(label(p, "process_runtime_version"), "20.20.2");
        assert_eq!(p.duration_ns, 10_000_000_000);
    }
}

#[tokio::test]
async fn nodejs_raw_wall_is_accepted() {
    let mut h = harness();
    let answer = send(&h.router, captured("nodejs-ingest-raw-wall")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let batch = h.rx.try_recv().unwrap();
    assert_eq!(
        types(&batch),
        vec![
            "wall:samples:count:wall:nanoseconds",
            "wall:wall:nanoseconds:wall:nanoseconds",
            "wall:cpu:nanoseconds:wall:nanoseconds",
        ]
    );
    assert_node(&batch, "flamepipe-node", "0.6.4");
}

#[tokio::test]
async fn nodejs_raw_heap_is_accepted() {
    let mut h = harness();
    let answer = send(&h.router, captured("nodejs-ingest-raw-heap")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let batch = h.rx.try_recv().unwrap();
    assert_eq!(
        types(&batch),
        vec![
            "memory:inuse_objects:count:inuse_space:bytes",
            "memory:inuse_space:bytes:inuse_space:bytes"
        ]
    );
    assert_node(&batch, "flamepipe-node", "0.6.4");
}

#[tokio::test]
async fn nodejs_multipart_wall_is_accepted() {
    let mut h = harness();
    let answer = send(&h.router, captured("nodejs-ingest-multipart-wall")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let batch = h.rx.try_recv().unwrap();
    assert_eq!(types(&batch).len(), 3);
    assert!(types(&batch).iter().all(|t| t.starts_with("wall:")));
    assert_node(&batch, "flamepipe-node-multipart", "0.6.1");
}

#[tokio::test]
async fn ingest_is_also_served_under_the_pyroscope_prefix() {
    let mut h = harness();
    let body = fixture("pprof/pyroscope-python-cpu.pb.gz");
    let answer = send(&h.router, post("/pyroscope/ingest?name=app&format=pprof", &[], body)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(types(&h.rx.try_recv().unwrap()), vec![PY_CPU]);
}

// ---- /ingest bodies ----

#[tokio::test]
async fn heap_pprof_splits_into_one_profile_per_sample_type() {
    let mut h = harness();
    let body = fixture("pprof/pyroscope-go-heap.pb.gz");
    let answer = send(
        &h.router,
        post(
            "/ingest?name=heapy.app{env=prod}&from=1700000000&until=1700000010",
            &[],
            body,
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let batch = h.rx.try_recv().unwrap();
    assert_eq!(
        types(&batch),
        vec![
            "memory:alloc_objects:count:space:bytes",
            "memory:alloc_space:bytes:space:bytes",
            "memory:inuse_objects:count:space:bytes",
            "memory:inuse_space:bytes:space:bytes",
        ]
    );
    for p in &batch.profiles {
        // pprof uploads keep the whole name as the service, suffix and all.
        assert_eq!(label(p, "service_name"), "heapy.app");
        assert_eq!(label(p, "env"), "prod");
        assert_eq!(label(p, "pyroscope_spy"), "unknown");
        assert_eq!(p.duration_ns, 10_000_000_000);
        assert!(Arc::ptr_eq(&p.symbols, &batch.profiles[0].symbols));
    }
}

#[tokio::test]
async fn raw_unlabelled_pprof_is_sniffed() {
    let mut h = harness();
    let body = fixture("pprof/pyroscope-go-cpu-uncompressed.pb");
    let answer = send(&h.router, post("/ingest?name=go-app", &[], body)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let batch = h.rx.try_recv().unwrap();
    assert!(
        types(&batch).iter().all(|t| t.starts_with("process_cpu:")),
        "{:?}",
        types(&batch)
    );
}

#[tokio::test]
async fn gzipped_folded_text_is_sniffed_as_folded() {
    let mut h = harness();
    let body = gzip(b"main;work 3\nmain;idle 1\n");
    let answer = send(&h.router, post("/ingest?name=text-app.cpu", &[], body)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let batch = h.rx.try_recv().unwrap();
    assert_eq!(types(&batch), vec!["process_cpu:cpu:nanoseconds:cpu:nanoseconds"]);
    assert_eq!(batch.profiles[0].samples.len(), 2);
}

#[tokio::test]
async fn multipart_with_sample_type_config_names_the_profile() {
    let mut h = harness();
    let boundary = "XyZ";
    let mut body = Vec::new();
    let mut part = |name: &str, data: &[u8]| {
        write!(
            body,
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}\"\r\n"
        )
        .unwrap();
        body.extend_from_slice(b"Content-Type: application/octet-stream\r\n\r\n");
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    };
    // Go mutex and block profiles share sample types; only this config tells them apart.
    part("profile", &fixture("pprof/go-mutex.pb.gz"));
    part("prev_profile", b"");
    part("sample_type_config", br#"{"contentions": {"display-name": "block_count", "units": "lock_samples"}, "delay": {"display-name": "block_duration"}}"#);
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let ct = format!("multipart/form-data; boundary={boundary}");
    let answer = send(
        &h.router,
        post("/ingest?name=go-app&spyName=gospy", &[("content-type", &ct)], body),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let batch = h.rx.try_recv().unwrap();
    assert!(
        types(&batch)
            .iter()
            .all(|t| t.starts_with("block:contentions") || t.starts_with("block:delay")),
        "{:?}",
        types(&batch)
    );
    assert_eq!(label(&batch.profiles[0], "pyroscope_spy"), "gospy");
}

#[tokio::test]
async fn multipart_with_prev_profile_is_refused() {
    let mut h = harness();
    let body = b"--b\r\nContent-Disposition: form-data; name=\"profile\"\r\n\r\nxx\r\n--b\r\nContent-Disposition: form-data; name=\"prev_profile\"\r\n\r\nyy\r\n--b--\r\n".to_vec();
    let answer = send(
        &h.router,
        post(
            "/ingest?name=app",
            &[("content-type", "multipart/form-data; boundary=b")],
            body,
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.body.contains("prev_profile"), "{}", answer.body);
    let missing = b"--b\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nxx\r\n--b--\r\n".to_vec();
    let answer = send(
        &h.router,
        post(
            "/ingest?name=app",
            &[("content-type", "multipart/form-data; boundary=b")],
            missing,
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_nothing_sent(&mut h);
}

#[tokio::test]
async fn folded_text_becomes_a_cpu_profile_in_nanoseconds() {
    let mut h = harness();
    let body = "main;work;leaf 3\nmain;other 2\n\nmain;work;leaf 1\n";
    let uri = "/ingest?name=myapp.cpu%7Benv%3Dprod%2Cservice.version%3D1%7D&from=1700000000&until=1700000010&sampleRate=100&spyName=rbspy";
    let answer = send(&h.router, post(uri, &[("content-type", "text/plain")], body)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let batch = h.rx.try_recv().unwrap();
    assert_eq!(types(&batch), vec![CPU]);
    let p = &batch.profiles[0];
    assert_eq!(label(p, "service_name"), "myapp");
    assert_eq!(label(p, "env"), "prod");
    assert_eq!(label(p, "service_version"), "1");
    assert_eq!(label(p, "pyroscope_spy"), "rbspy");
    assert_eq!(
        (p.timestamp_ns, p.duration_ns, p.period),
        (1_700_000_000_000_000_000, 10_000_000_000, 10_000_000)
    );
    assert_eq!(p.samples.len(), 2);
    assert_eq!(p.total(), 60_000_000);
    let totals = p.function_totals();
    assert_eq!((totals["leaf"].flat, totals["leaf"].cum), (40_000_000, 40_000_000));
    assert_eq!((totals["main"].flat, totals["main"].cum), (0, 60_000_000));
    assert_eq!(totals["other"].flat, 20_000_000);
}

#[tokio::test]
async fn folded_memory_and_lines_keep_counts() {
    let mut h = harness();
    let answer = send(
        &h.router,
        post("/ingest?name=svc.alloc_objects&format=lines", &[], "a;b\na;b\na\n"),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let p = &h.rx.try_recv().unwrap().profiles[0];
    assert_eq!(p.profile_type.id(), "memory:alloc_objects:count::");
    assert_eq!(label(p, "service_name"), "svc");
    assert_eq!(p.total(), 3);

    let answer = send(
        &h.router,
        post("/ingest?name=plain&format=folded&sampleRate=0", &[], "x;y 5\n"),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let p = &h.rx.try_recv().unwrap().profiles[0];
    assert_eq!(p.profile_type.id(), "process_cpu:samples:count::");
    assert_eq!(label(p, "service_name"), "plain");
    assert_eq!(p.total(), 5);

    // A real py-spy collapsed file, with no format parameter: sniffed as text.
    let answer = send(
        &h.router,
        post("/ingest?name=py.wall", &[], fixture("other/python-pyspy.collapsed.txt")),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let p = &h.rx.try_recv().unwrap().profiles[0];
    assert_eq!(p.profile_type.id(), "wall:wall:nanoseconds:wall:nanoseconds");
    assert_eq!(p.total(), 975 * 10_000_000);
}

#[tokio::test]
async fn broken_folded_lines_are_refused() {
    let mut h = harness();
    for body in ["main;work\n", "main;work x\n", "a 1\nb -2\n", " \n\n"] {
        let answer = send(&h.router, post("/ingest?name=app.cpu&format=folded", &[], body)).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body:?}: {}", answer.body);
    }
    assert_nothing_sent(&mut h);
}

// ---- refusals ----

#[tokio::test]
async fn bad_fixtures_are_refused_and_nothing_is_sent() {
    let mut h = harness();
    let dir = manifest_path("../../integration/testdata/fixtures/bad");
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 5);
    for file in files {
        let body = std::fs::read(&file).unwrap();
        for uri in ["/ingest?name=app&format=pprof", "/ingest?name=app"] {
            let answer = send(&h.router, post(uri, &[], body.clone())).await;
            assert!(
                answer.status.is_client_error(),
                "{file:?} {uri}: {} {}",
                answer.status,
                answer.body
            );
            assert!(!answer.body.is_empty());
        }
        let push = PushRequest {
            series: vec![RawProfileSeries {
                labels: vec![LabelPair {
                    name: "service_name".into(),
                    value: "a".into(),
                }],
                samples: vec![RawSample {
                    raw_profile: body.into(),
                    id: String::new(),
                }],
            }],
        };
        let answer = send(
            &h.router,
            post(
                "/push.v1.PusherService/Push",
                &[("content-type", "application/proto")],
                push.encode_to_vec(),
            ),
        )
        .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{file:?}: {}", answer.body);
        assert!(answer.body.contains("\"code\":\"invalid_argument\""), "{}", answer.body);
    }
    assert_nothing_sent(&mut h);
    let metrics = h.telemetry.encode();
    for reason in ["bad_gzip", "bad_protobuf", "bad_pprof"] {
        assert!(
            metrics.contains(&format!("reason=\"{reason}\"")),
            "{reason} not counted: {metrics}"
        );
    }
}

#[tokio::test]
async fn one_bad_sample_refuses_the_whole_push() {
    let mut h = harness();
    let good = fixture("pprof/pyroscope-python-cpu.pb.gz");
    let push = PushRequest {
        series: vec![
            RawProfileSeries {
                labels: vec![],
                samples: vec![RawSample {
                    raw_profile: good.into(),
                    id: "1".into(),
                }],
            },
            RawProfileSeries {
                labels: vec![],
                samples: vec![RawSample {
                    raw_profile: fixture("bad/made-truncated-gzip.go-cpu-labels-mixed.pb.gz").into(),
                    id: "2".into(),
                }],
            },
        ],
    };
    let answer = send(
        &h.router,
        post(
            "/push.v1.PusherService/Push",
            &[("content-type", "application/proto")],
            push.encode_to_vec(),
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_nothing_sent(&mut h);
}

#[tokio::test]
async fn request_errors_name_the_problem() {
    let mut h = harness();
    let pprof = fixture("pprof/pyroscope-python-cpu.pb.gz");
    let cases: &[(&str, &str, &str)] = &[
        ("/ingest?name=app", "", "body is empty"),
        ("/ingest?format=pprof", "x", "missing query parameter name"),
        ("/ingest?name=app%7Benv%3Dprod", "x", "missing closing"),
        ("/ingest?name=app%7B1x%3Dy%7D", "x", "invalid label name"),
        ("/ingest?name=%7Ba%3Db%7D", "x", "empty application name"),
        ("/ingest?name=app&from=yesterday", "x", "invalid from time"),
        ("/ingest?name=app&until=now-3q", "x", "invalid until time"),
        ("/ingest?name=app&sampleRate=fast", "x", "invalid sampleRate"),
    ];
    for (uri, body, message) in cases {
        let answer = send(&h.router, post(uri, &[], *body)).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(answer.body.contains(message), "{uri}: {}", answer.body);
    }
    for format in ["jfr", "trie", "tree", "bogus"] {
        let answer = send(
            &h.router,
            post(&format!("/ingest?name=app&format={format}"), &[], pprof.clone()),
        )
        .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
        assert_eq!(answer.body, format!("unsupported format {format:?}"));
    }
    for tenant in ["a/b", "..", ".", &"t".repeat(151), "", "a%b", "a b", "a#b"] {
        let answer = send(
            &h.router,
            post("/ingest?name=app", &[("x-scope-orgid", tenant)], pprof.clone()),
        )
        .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{tenant:?}");
        assert!(answer.body.contains("X-Scope-OrgID"), "{}", answer.body);
    }
    assert_nothing_sent(&mut h);
    let metrics = h.telemetry.encode();
    for reason in [
        "empty_body",
        "bad_name",
        "bad_time",
        "unknown_format",
        "bad_tenant",
        "bad_request",
    ] {
        assert!(
            metrics.contains(&format!("reason=\"{reason}\"")),
            "{reason} not counted: {metrics}"
        );
    }
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let config = Config {
        ack: AckMode::Received,
        max_request_bytes: ByteSize(1024),
        ..Config::default()
    };
    let mut h = harness_with(config, 4);
    let big = vec![b'a'; 4096];
    let answer = send(
        &h.router,
        post("/ingest?name=app", &[("content-length", "4096")], big.clone()),
    )
    .await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(answer.body.contains("limit of 1024 bytes"), "{}", answer.body);
    // Without a Content-Length, the limit stops the read.
    let chunks = big
        .chunks(512)
        .map(|c| Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(c)))
        .collect::<Vec<_>>();
    let streamed = Body::from_stream(futures::stream::iter(chunks));
    let answer = send(
        &h.router,
        post(
            "/push.v1.PusherService/Push",
            &[("content-type", "application/proto")],
            streamed,
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        answer.body.contains("\"code\":\"resource_exhausted\""),
        "{}",
        answer.body
    );
    assert_nothing_sent(&mut h);
    assert!(h.telemetry.encode().contains("reason=\"too_large\"} 2"));
}

#[tokio::test]
async fn gzip_bombs_are_stopped_at_the_decompressed_limit() {
    let config = Config {
        ack: AckMode::Received,
        max_decompressed_bytes: ByteSize::mib(1),
        ..Config::default()
    };
    let mut h = harness_with(config, 4);
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..200 {
        encoder.write_all(&zeros).unwrap();
    }
    let bomb = encoder.finish().unwrap();
    assert!(bomb.len() < 1 << 20);

    let started = Instant::now();
    let answer = send(&h.router, post("/ingest?name=app&format=pprof", &[], bomb.clone())).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", answer.body);
    let answer = send(
        &h.router,
        post(
            "/push.v1.PusherService/Push",
            &[("content-type", "application/proto"), ("content-encoding", "gzip")],
            bomb,
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", answer.body);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_nothing_sent(&mut h);
}

#[tokio::test]
async fn too_many_samples_get_413() {
    let config = Config {
        ack: AckMode::Received,
        max_samples: 10,
        ..Config::default()
    };
    let mut h = harness_with(config, 4);
    let answer = send(
        &h.router,
        post("/ingest?name=app", &[], fixture("pprof/pyroscope-go-heap.pb.gz")),
    )
    .await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", answer.body);
    let folded: String = (0..11).map(|i| format!("main;f{i} 1\n")).collect();
    let answer = send(&h.router, post("/ingest?name=app", &[], folded)).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", answer.body);
    assert_nothing_sent(&mut h);
}

#[tokio::test]
async fn a_full_pipeline_gets_429_and_a_closed_one_503() {
    let mut h = harness_with(
        Config {
            ack: AckMode::Received,
            ..Config::default()
        },
        1,
    );
    let pprof = fixture("pprof/pyroscope-python-cpu.pb.gz");
    assert_eq!(
        send(&h.router, post("/ingest?name=app", &[], pprof.clone()))
            .await
            .status,
        StatusCode::OK
    );
    let answer = send(&h.router, post("/ingest?name=app", &[], pprof.clone())).await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(answer.body, "pipeline profiles/default is full, retry later");
    let answer = send(&h.router, captured("python-1.x-push")).await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        answer.body.contains("\"code\":\"resource_exhausted\""),
        "{}",
        answer.body
    );
    assert!(h.telemetry.encode().contains("reason=\"pipeline_full\"} 2"));

    assert_eq!(h.rx.try_recv().unwrap().profiles.len(), 1);
    h.rx.close();
    let answer = send(&h.router, post("/ingest?name=app", &[], pprof)).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    let answer = send(&h.router, captured("python-1.x-push")).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer.body.contains("\"code\":\"unavailable\""), "{}", answer.body);
}

// ---- acknowledgement ----

#[tokio::test]
async fn durable_ack_answers_only_after_the_write() {
    let mut h = harness_with(Config::default(), 4);
    let router = h.router.clone();
    let request = tokio::spawn(async move { send(&router, captured("python-1.x-push")).await });
    let batch = h.rx.recv().await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!request.is_finished(), "answered before the write was acknowledged");
    batch.done();
    let answer = request.await.unwrap();
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
}

#[tokio::test]
async fn a_failed_durable_write_gets_503() {
    let mut h = harness_with(Config::default(), 4);
    let router = h.router.clone();
    let request = tokio::spawn(async move {
        send(
            &router,
            post("/ingest?name=app", &[], fixture("pprof/pyroscope-python-cpu.pb.gz")),
        )
        .await
    });
    let batch = h.rx.recv().await.unwrap();
    batch.fail("disk full");
    drop(batch);
    let answer = request.await.unwrap();
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.body, "durable write failed: disk full");

    let router = h.router.clone();
    let request = tokio::spawn(async move { send(&router, captured("python-1.x-push")).await });
    h.rx.recv().await.unwrap().fail("bucket gone");
    let answer = request.await.unwrap();
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer.body.contains("\"code\":\"unavailable\""), "{}", answer.body);
}

#[tokio::test]
async fn a_slow_durable_write_times_out() {
    let config = Config {
        ack_timeout: flamepipe_core::config::Duration::from_millis(100),
        ..Config::default()
    };
    let mut h = harness_with(config, 4);
    let answer = send(
        &h.router,
        post("/ingest?name=app", &[], fixture("pprof/pyroscope-python-cpu.pb.gz")),
    )
    .await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.body, "timed out waiting for durable write");
    assert!(h.rx.try_recv().is_ok());
    assert!(h.telemetry.encode().contains("reason=\"ack_timeout\"} 1"));
}

#[tokio::test]
async fn received_ack_answers_at_once() {
    let mut h = harness();
    let answer = tokio::time::timeout(Duration::from_secs(5), send(&h.router, captured("python-0.8-ingest")))
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    // The batch is still unwritten in the channel.
    assert_eq!(h.rx.try_recv().unwrap().acks.len(), 1);
}

// ---- Connect specifics ----

#[tokio::test]
async fn connect_json_push_with_base64_profiles() {
    let mut h = harness();
    let raw = fixture("pprof/pyroscope-python-cpu.pb.gz");
    let plain = gunzip(&raw);
    let request = serde_json::json!({
        "series": [{
            "labels": [
                {"name": "__name__", "value": "process_cpu"},
                {"name": "service_name", "value": "json-app"},
                {"name": "service.version", "value": "1.2"},
                {"name": "__session_id__", "value": "abc"},
            ],
            "samples": [
                {"rawProfile": base64::engine::general_purpose::STANDARD.encode(&raw), "ID": "u1"},
                {"raw_profile": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&plain)},
            ],
            "annotations": null,
        }]
    });
    let answer = send(
        &h.router,
        post(
            "/push.v1.PusherService/Push",
            &[("content-type", "application/json"), ("x-scope-orgid", "t1")],
            request.to_string(),
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.headers["content-type"], "application/json");
    assert_eq!(answer.body, "{}");
    let batch = h.rx.try_recv().unwrap();
    assert_eq!(&*batch.tenant, "t1");
    assert_eq!(types(&batch), vec![PY_CPU, PY_CPU]);
    let p = &batch.profiles[0];
    assert_eq!(label(p, "service_name"), "json-app");
    assert_eq!(label(p, "service_version"), "1.2");
    assert_eq!(p.series.get("__session_id__"), None);
    assert_eq!(batch.profiles[0].total(), batch.profiles[1].total());
}

#[tokio::test]
async fn connect_errors_use_the_connect_shape() {
    let mut h = harness();
    let push = |ct: &str, body: Vec<u8>| post("/push.v1.PusherService/Push", &[("content-type", ct)], body);
    let cases = [
        (
            push("application/proto", vec![]),
            StatusCode::BAD_REQUEST,
            "no profiles received",
        ),
        (
            push("application/json", b"{}".to_vec()),
            StatusCode::BAD_REQUEST,
            "no profiles received",
        ),
        (
            push("application/proto", vec![0x0a, 0xff]),
            StatusCode::BAD_REQUEST,
            "invalid push request",
        ),
        (
            push("application/json", b"{\"series\": 3}".to_vec()),
            StatusCode::BAD_REQUEST,
            "invalid push request json",
        ),
        (
            push(
                "application/json",
                br#"{"series":[{"samples":[{"rawProfile":"!!"}]}]}"#.to_vec(),
            ),
            StatusCode::BAD_REQUEST,
            "invalid base64",
        ),
        (
            push("text/plain", b"x".to_vec()),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported content type",
        ),
        (
            post(
                "/push.v1.PusherService/Push",
                &[("content-type", "application/proto"), ("content-encoding", "br")],
                vec![1],
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported content encoding \"br\"",
        ),
    ];
    for (request, status, message) in cases {
        let answer = send(&h.router, request).await;
        assert_eq!(answer.status, status, "{}", answer.body);
        assert_eq!(answer.headers["content-type"], "application/json");
        let error: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
        assert_eq!(error["code"], "invalid_argument");
        assert!(error["message"].as_str().unwrap().contains(message), "{}", answer.body);
    }
    // A plain (not gzipped) proto body with a label Pyroscope would refuse.
    let bad_label = PushRequest {
        series: vec![RawProfileSeries {
            labels: vec![LabelPair {
                name: "1bad".into(),
                value: "x".into(),
            }],
            samples: vec![RawSample {
                raw_profile: fixture("pprof/pyroscope-python-cpu.pb.gz").into(),
                id: String::new(),
            }],
        }],
    };
    let answer = send(&h.router, push("application/proto", bad_label.encode_to_vec())).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.body.contains("invalid label name"), "{}", answer.body);
    assert_nothing_sent(&mut h);
}

#[tokio::test]
async fn push_without_service_name_gets_unknown_service() {
    let mut h = harness();
    let push = PushRequest {
        series: vec![RawProfileSeries {
            labels: vec![LabelPair {
                name: "env".into(),
                value: "x".into(),
            }],
            samples: vec![RawSample {
                raw_profile: fixture("pprof/pyroscope-go-heap.pb.gz").into(),
                id: String::new(),
            }],
        }],
    };
    let body = gzip(&push.encode_to_vec());
    let answer = send(
        &h.router,
        post(
            "/push.v1.PusherService/Push",
            &[("content-type", "application/protobuf"), ("content-encoding", "gzip")],
            body,
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let batch = h.rx.try_recv().unwrap();
    assert_eq!(batch.profiles.len(), 4);
    assert!(
        batch
            .profiles
            .iter()
            .all(|p| label(p, "service_name") == "unknown_service")
    );
    assert!(types(&batch)[0].starts_with("memory:"));
}

// ---- units ----

#[test]
fn times_follow_pyroscope_attime() {
    let now = 1_700_000_000_123_456_789;
    assert_eq!(parse_time("now", now), Some(now));
    assert_eq!(parse_time("", now), Some(now));
    assert_eq!(parse_time("1700000000", now), Some(1_700_000_000_000_000_000));
    assert_eq!(parse_time("1700000000123", now), Some(1_700_000_000_123_000_000));
    assert_eq!(parse_time("1700000000123456", now), Some(1_700_000_000_123_456_000));
    assert_eq!(parse_time("1700000000123456789", now), Some(1_700_000_000_123_456_789));
    assert_eq!(parse_time("0", now), Some(0));
    assert_eq!(parse_time("now-1h", now), Some(now - 3_600_000_000_000));
    assert_eq!(parse_time("now-30m", now), Some(now - 1_800_000_000_000));
    assert_eq!(parse_time("now-2d", now), Some(now - 2 * 86_400_000_000_000));
    assert_eq!(parse_time("-10s", now), Some(now - 10_000_000_000));
    assert_eq!(parse_time("now+1min", now), Some(now + 60_000_000_000));
    for bad in [
        "yesterday",
        "now-",
        "now-h",
        "now-1q",
        "12ab",
        "99999999999999999999",
        "-1",
        "1.5",
    ] {
        assert_eq!(parse_time(bad, now), None, "{bad}");
    }
}

#[test]
fn ingest_params_default_and_parse() {
    let now = 42;
    let p = IngestParams::parse(
        "name=app.cpu%7Bregion%3Deu%2C__hidden%3D1%7D&units=samples&aggregationType=sum",
        now,
    )
    .unwrap();
    assert_eq!(p.app, "app.cpu");
    assert_eq!(
        (p.from_ns, p.until_ns, p.sample_rate, p.spy_name.as_str()),
        (now, now, 100, "unknown")
    );
    assert_eq!(p.format, ingest::Format::Sniff);
    assert_eq!(
        p.tags,
        vec![
            ("region".to_string(), "eu".to_string()),
            ("__hidden".to_string(), "1".to_string())
        ]
    );
}

#[test]
fn config_defaults_and_validation() {
    let config: Config = serde_json::from_str("{}").unwrap();
    assert_eq!(config, Config::default());
    assert_eq!(config.address.to_string(), "127.0.0.1:4040");
    assert_eq!(config.max_request_bytes, ByteSize::mib(16));
    assert_eq!(config.max_decompressed_bytes, ByteSize::mib(64));
    assert_eq!(config.max_samples, 1_000_000);
    assert_eq!(config.ack, AckMode::Durable);
    assert!(config.validate().is_empty());

    let config: Config = serde_json::from_str(
        r#"{"address": "0.0.0.0:9", "max_request_bytes": "1KiB", "ack": "received", "ack_timeout": "250ms"}"#,
    )
    .unwrap();
    assert_eq!(
        (config.max_request_bytes, config.ack),
        (ByteSize(1024), AckMode::Received)
    );
    assert!(serde_json::from_str::<Config>(r#"{"max_body": 1}"#).is_err());
    assert!(serde_json::from_str::<Config>(r#"{"ack": "sometimes"}"#).is_err());

    let zero: Config = serde_json::from_str(
        r#"{"max_request_bytes": 0, "max_decompressed_bytes": 0, "max_samples": 0, "ack_timeout": "0s"}"#,
    )
    .unwrap();
    let paths: Vec<_> = zero.validate().into_iter().map(|i| i.path).collect();
    assert_eq!(
        paths,
        vec![
            "max_request_bytes",
            "max_decompressed_bytes",
            "max_samples",
            "ack_timeout"
        ]
    );
}

#[test]
fn routes_are_declared() {
    use flamepipe_core::component::ReceiverConfig;
    let routes: Vec<String> = Config::default().routes().into_iter().map(|(_, p)| p).collect();
    assert_eq!(
        routes,
        vec!["/ingest", "/pyroscope/ingest", "/push.v1.PusherService/Push"]
    );
}

#[test]
fn push_content_types() {
    assert_eq!(
        PushEncoding::from_content_type("application/proto").unwrap(),
        PushEncoding::Proto
    );
    assert_eq!(
        PushEncoding::from_content_type("Application/JSON; charset=utf-8").unwrap(),
        PushEncoding::Json
    );
    assert!(PushEncoding::from_content_type("").is_err());
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bodies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048), gz in any::<bool>()) {
        let body = if gz { gzip(&bytes) } else { bytes };
        let limits = Limits { max_decompressed_bytes: 1 << 20, max_samples: 10_000 };
        for query in ["name=a&format=pprof", "name=a", "name=a.cpu&format=folded", "name=a&format=lines"] {
            let params = IngestParams::parse(query, 0).unwrap();
            let _ = ingest::decode(&params, IngestBody::Raw(body.clone().into()), &limits);
        }
        let ct = "multipart/form-data; boundary=b";
        if let Ok(multipart) = block_on(IngestBody::from_request(ct, body.clone().into())) {
            let _ = ingest::decode(&IngestParams::parse("name=a", 0).unwrap(), multipart, &limits);
        }
        let _ = push::decode(PushEncoding::Proto, false, body.clone().into(), &limits);
        let _ = push::decode(PushEncoding::Json, gz, body.into(), &limits);
    }

    #[test]
    fn mutated_pprof_never_panics(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut body = gunzip(&fixture("pprof/pyroscope-python-cpu.pb.gz"));
        for (index, byte) in flips {
            let i = index.index(body.len());
            body[i] = byte;
        }
        let limits = Limits::default();
        let params = IngestParams::parse("name=a&format=pprof", 0).unwrap();
        let _ = ingest::decode(&params, IngestBody::Raw(body.into()), &limits);
    }
}

#[tokio::test]
async fn requests_over_the_concurrency_limit_get_429() {
    let config = Config {
        max_concurrent_requests: 1,
        ..Config::default()
    };
    let mut h = harness_with(config, 4);
    let router = h.router.clone();
    // The first request holds its slot while it waits for its durable write.
    let first = tokio::spawn(async move { send(&router, captured("python-1.x-push")).await });
    let batch = h.rx.recv().await.unwrap();
    let second = send(&h.router, captured("python-1.x-push")).await;
    assert_eq!(second.status, StatusCode::TOO_MANY_REQUESTS, "{}", second.body);
    assert!(h.telemetry.encode().contains("reason=\"too_many_requests\""));
    batch.done();
    assert_eq!(first.await.unwrap().status, StatusCode::OK);
    // The slot is free again.
    let router = h.router.clone();
    let third = tokio::spawn(async move { send(&router, captured("python-1.x-push")).await });
    h.rx.recv().await.unwrap().done();
    assert_eq!(third.await.unwrap().status, StatusCode::OK);
}

#[tokio::test]
async fn without_from_and_until_the_pprof_keeps_its_own_time_and_duration() {
    let mut h = harness();
    let answer = send(
        &h.router,
        post("/ingest?name=app", &[], fixture("pprof/pyroscope-go-cpu-tiny.pb.gz")),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let p = &h.rx.try_recv().unwrap().profiles[0];
    // `go tool pprof` reads this file as `Duration: 1.10`, started 2021-04-25 03:39:08 UTC.
    assert_eq!(p.duration_ns / 10_000_000, 110);
    assert_eq!(p.timestamp_ns / 1_000_000_000, 1_619_321_948);
}
