//! Nothing acknowledged is lost: not on kill -9, not on SIGTERM; overload answers 429.

use std::time::Duration;

use flamepipe_integration::process::post;
use flamepipe_integration::stored::read_store;
use flamepipe_integration::{Flamepipe, Options, fixture};

const BIN: &str = env!("CARGO_BIN_EXE_flamepipe");

fn services(fp: &Flamepipe) -> Vec<String> {
    let mut names: Vec<String> = read_store(&fp.data)
        .iter()
        .filter_map(|s| s.profile.series.get("service_name").map(str::to_string))
        .collect();
    names.sort();
    names.dedup();
    names
}

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
    assert_eq!(services(&fp), acknowledged);
    // The restarted process serves on the same store.
    let (status, _) = post(
        &format!("{}/ingest?name=after-restart", fp.url),
        "application/octet-stream",
        &body,
        &[],
    );
    assert_eq!(status, 200);
    assert!(services(&fp).contains(&"after-restart".to_string()));
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
    assert_eq!(services(&fp), (0..5).map(|i| format!("term-{i}")).collect::<Vec<_>>());
}

#[test]
fn overload_answers_429_and_loses_nothing_acknowledged() {
    let opts = Options {
        ack: "received",
        flush_interval: "50ms",
        queue_size: Some(1),
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
    let counted =
        fp.metric("flamepipe_receiver_refused_requests_total{receiver=\"pyroscope\",reason=\"pipeline_full\"}");
    assert_eq!(counted as usize, refused, "every 429 is counted");
    assert_eq!(fp.terminate(Duration::from_secs(30)).code(), Some(0));
    let mut expected = accepted;
    expected.sort();
    assert_eq!(
        services(&fp),
        expected,
        "stored must be exactly the acknowledged requests"
    );
}
