//! Nothing acknowledged is lost: not on kill -9, not on SIGTERM; overload answers 429.

use std::time::Duration;

use flamepipe_integration::process::post;
use flamepipe_integration::stored::read_store;
use flamepipe_integration::{Flamepipe, Options, fixture};

const BIN: &str = env!("CARGO_BIN_EXE_flamepipe");

/// The service of every stored profile, sorted; a request stored twice shows twice.
fn services(fp: &Flamepipe) -> Vec<String> {
    let mut names: Vec<String> = read_store(&fp.data)
        .iter()
        .filter_map(|s| s.profile.series.get("service_name").map(str::to_string))
        .collect();
    names.sort();
    names
}

/// What `services` must show for `names`, each sent once as a pprof with `types` sample types.
fn each_once(names: impl IntoIterator<Item = String>, types: usize) -> Vec<String> {
    let mut expected: Vec<String> = names.into_iter().flat_map(|n| std::iter::repeat_n(n, types)).collect();
    expected.sort();
    expected
}

/// Sample types of pyroscope-go-cpu-tiny.pb.gz (samples, cpu) and pyroscope-go-heap.pb.gz.
const TINY_CPU_TYPES: usize = 2;
const HEAP_TYPES: usize = 4;

#[test]
fn acknowledged_profiles_survive_kill_9() {
    let mut fp = Flamepipe::start(
        BIN,
        &Options {
            flush_interval: "200ms",
            ..Options::default()
        },
    );
    let body = std::fs::read(fixture("pprof/pyroscope-go-cpu-tiny.pb.gz")).unwrap();
    let url = fp.url.clone();
    let acknowledged: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..20)
            .map(|i| {
                let (url, body) = (&url, &body);
                s.spawn(move || {
                    let name = format!("crash-{i:02}");
                    let (status, text) = post(
                        &format!("{url}/ingest?name={name}"),
                        "application/octet-stream",
                        body,
                        &[],
                    );
                    assert_eq!(status, 200, "{text}");
                    name
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    fp.kill9();
    let fp = fp.restart();
    assert_eq!(services(&fp), each_once(acknowledged, TINY_CPU_TYPES));
    // The restarted process serves on the same store.
    let (status, _) = post(
        &format!("{}/ingest?name=after-restart", fp.url),
        "application/octet-stream",
        &body,
        &[],
    );
    assert_eq!(status, 200);
    assert_eq!(
        services(&fp).iter().filter(|s| *s == "after-restart").count(),
        TINY_CPU_TYPES
    );
}

#[test]
fn sigterm_flushes_open_segments_and_exits_0() {
    let opts = Options {
        ack: "received",
        flush_interval: "1h",
        ..Options::default()
    };
    let mut fp = Flamepipe::start(BIN, &opts);
    let body = std::fs::read(fixture("pprof/pyroscope-go-cpu-tiny.pb.gz")).unwrap();
    for i in 0..5 {
        let (status, text) = post(
            &format!("{}/ingest?name=term-{i}", fp.url),
            "application/octet-stream",
            &body,
            &[],
        );
        assert_eq!(status, 200, "{text}");
    }
    assert!(
        services(&fp).is_empty(),
        "flushed before the interval; the test proves nothing"
    );
    let status = fp.terminate(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0));
    assert_eq!(
        services(&fp),
        each_once((0..5).map(|i| format!("term-{i}")), TINY_CPU_TYPES)
    );
}

#[test]
fn overload_answers_429_and_loses_nothing_acknowledged() {
    // Two requests at a time, each waiting about 300 ms for its segment: 16 clients at once
    // must overload it, whatever the machine's speed.
    let opts = Options {
        flush_interval: "300ms",
        queue_size: Some(1),
        receiver_extra: "    max_concurrent_requests: 2\n".into(),
        ..Options::default()
    };
    let mut fp = Flamepipe::start(BIN, &opts);
    let body = std::fs::read(fixture("pprof/pyroscope-go-heap.pb.gz")).unwrap();
    let url = fp.url.clone();
    let results: Vec<(String, u16)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|t| {
                let (url, body) = (&url, &body);
                s.spawn(move || {
                    (0..6)
                        .map(|i| {
                            let name = format!("load-{t:02}-{i}");
                            let (status, _) = post(
                                &format!("{url}/ingest?name={name}"),
                                "application/octet-stream",
                                body,
                                &[],
                            );
                            (name, status)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert!(results.iter().all(|(_, s)| *s == 200 || *s == 429), "{results:?}");
    let accepted: Vec<String> = results
        .iter()
        .filter(|(_, s)| *s == 200)
        .map(|(n, _)| n.clone())
        .collect();
    let refused = results.len() - accepted.len();
    eprintln!("accepted {}, refused with 429: {refused}", accepted.len());
    assert!(refused > 0, "16 clients against 2 slots were never refused");
    let counted: f64 = ["pipeline_full", "too_many_requests"]
        .iter()
        .map(|r| {
            fp.metric(&format!(
                "flamepipe_receiver_refused_requests_total{{receiver=\"pyroscope\",reason=\"{r}\"}}"
            ))
        })
        .sum();
    assert_eq!(counted as usize, refused, "every 429 is counted");
    assert_eq!(fp.terminate(Duration::from_secs(30)).code(), Some(0));
    assert_eq!(
        services(&fp),
        each_once(accepted, HEAP_TYPES),
        "stored must be exactly the acknowledged requests, once each"
    );
}
