//! OTLP ingest benchmark over the bench corpus (integration/testdata/bench-corpus) (run: `cargo bench --bench otlp`).
//!
//! The cpu/ and m10/ pprof files are turned into OTLP once, up front: each file is decoded
//! with the ingest decoder (`pprof::decode_profiles`, service `bench-N`), encoded with the
//! OTLP exporter's `encode` and serialised with prost, so one OTLP request carries one pprof
//! file (both of its sample types), the same unit as `--bench ingest`. OTLP/HTTP senders
//! usually gzip, so a gzipped copy of each request is what gets sent.
//!
//! Prints, for each corpus, in one run:
//! (a) floors, one thread, thread CPU time, best of three passes, over the gzipped requests:
//!     gunzip; gunzip + prost decode of the `ExportProfilesServiceRequest` (the analogue of
//!     the pprof bench's floor); and the receiver's CPU work without HTTP and storage: gunzip,
//!     the version check, prost decode and conversion into the core model;
//! (b) full ingest: the release `flamepipe` binary with the pprof bench's pipeline shape, the
//!     `otlp` receiver in front (OTLP/HTTP on loopback) -> segment 1s -> blocks on local disk,
//!     fsync, `ack: durable`, fed by 64 keep-alive clients with `POST /v1development/profiles`
//!     (`Content-Encoding: gzip`); CPU time of the flamepipe process only;
//! as MB/s of gzipped OTLP per core, requests (= pprof files) and OTLP profiles per second
//! per core, MB/s per core counted in the pprof files' gzip bytes (comparable with
//! `--bench ingest`), the ratios to the floors, ack latency, peak RSS and the stored bytes.
//! Every request must be answered 200 with no partial success and the server must count
//! every profile as accepted, so no figure can come from refused requests.
//! Figures are recorded in docs/benchmarks.md ("OTLP ingest").
//!
//! `OTLP_BENCH_CORPORA=m10` (comma-separated) and `OTLP_BENCH_ROUNDS=1` narrow a run.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flamepipe_core::Labels;
use flamepipe_core::formats::pprof::{self, ConvertOptions, Limits};
use flamepipe_integration::measure::{best_cpu, dir_size, median, peak_rss_mib, process_cpu, thread_cpu};
use flamepipe_integration::process::http;
use flamepipe_integration::{Flamepipe, Options, bench_corpus, files_in};
use flamepipe_receiver_otlp::HTTP_PATH;
use flamepipe_receiver_otlp::convert::{self, Limits as OtlpLimits};
use flamepipe_receiver_otlp::version;
use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use prost::Message;

const BIN: &str = env!("CARGO_BIN_EXE_flamepipe");
const CLIENTS: usize = 64;
/// Rounds per corpus; the median is the figure to quote (this machine is noisy).
const ROUNDS: usize = 3;
/// Times each round sends the corpus: enough server CPU that /proc's 10 ms ticks are <1%.
const PASSES: usize = 5;
/// The receiver's defaults (`receivers/otlp/src/config.rs`).
const MAX_DECOMPRESSED: usize = 64 << 20;
const RECEIVER_LIMITS: OtlpLimits = OtlpLimits {
    max_samples: 1_000_000,
    max_stack_depth: 8192,
};

fn mb(bytes: usize) -> f64 {
    bytes as f64 / 1e6
}

/// One corpus as pprof files and as OTLP requests, file by file.
struct Corpus {
    pprof_gz: Vec<Vec<u8>>,
    /// The encoded `ExportProfilesServiceRequest`s.
    otlp: Vec<Vec<u8>>,
    /// The same, gzipped (flate2's default level): what is sent.
    otlp_gz: Vec<Vec<u8>>,
    /// OTLP profiles (one per sample type) in all requests.
    profiles: usize,
}

impl Corpus {
    fn load(dir: &Path) -> Corpus {
        let files = files_in(dir);
        let pprof_gz: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
        let mut otlp = Vec::with_capacity(files.len());
        let mut otlp_gz = Vec::with_capacity(files.len());
        let mut profiles = 0;
        for (i, (path, gz)) in files.iter().zip(&pprof_gz).enumerate() {
            // The series of the pprof bench: 8 services, 3 pods.
            let series: Labels = [
                ("service_name", format!("bench-{}", i % 8)),
                ("pod", format!("p{}", i % 3)),
            ]
            .into_iter()
            .collect();
            let opts = ConvertOptions {
                series: &series,
                name: None,
                timestamp_ns: None,
                duration_ns: None,
                default_timestamp_ns: flamepipe_core::time::now_ns(),
                display_names: None,
            };
            let decoded = pprof::decode_profiles(gz, &Limits::default(), &opts)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            profiles += decoded.len();
            let request = flamepipe_exporter_otlp::encode::encode(&decoded).encode_to_vec();
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(&request).unwrap();
            otlp_gz.push(enc.finish().unwrap());
            otlp.push(request);
        }
        Corpus {
            pprof_gz,
            otlp,
            otlp_gz,
            profiles,
        }
    }

    fn sizes(&self) -> (usize, usize, usize, usize) {
        let sum = |v: &[Vec<u8>]| v.iter().map(Vec::len).sum::<usize>();
        let pprof_raw = self
            .pprof_gz
            .iter()
            .map(|f| flamepipe_core::body::gunzip(f, MAX_DECOMPRESSED).unwrap().len())
            .sum();
        (sum(&self.pprof_gz), pprof_raw, sum(&self.otlp), sum(&self.otlp_gz))
    }
}

fn gunzip(gz: &[u8]) -> Bytes {
    Bytes::from(
        flamepipe_core::body::maybe_gunzip(gz, MAX_DECOMPRESSED)
            .unwrap()
            .into_owned(),
    )
}

/// What the receiver does with a gzipped OTLP/HTTP body between reading it and delivering
/// the converted profiles (`receivers/otlp/src/receiver.rs`, `Shared::export`).
fn receive(gz: &[u8]) -> convert::Converted {
    let body = gunzip(gz);
    version::check(&body).expect("a v1.10 request");
    let request = ExportProfilesServiceRequest::decode(body).expect("decode");
    convert::convert(&request, &RECEIVER_LIMITS, 1).expect("convert")
}

/// Floors over the gzipped requests, as MB/s of gzipped OTLP and requests/s.
struct Floor {
    gunzip_mb_s: f64,
    /// gunzip + prost decode.
    mb_s: f64,
    req_s: f64,
    /// gunzip + version check + prost decode + conversion.
    recv_mb_s: f64,
    recv_req_s: f64,
}

fn floor(corpus: &Corpus) -> Floor {
    let files = &corpus.otlp_gz;
    let bytes = mb(files.iter().map(Vec::len).sum());
    let gunzip_t = best_cpu(files, |f: &Vec<u8>| {
        std::hint::black_box(gunzip(f));
    });
    let decode = best_cpu(files, |f: &Vec<u8>| {
        std::hint::black_box(ExportProfilesServiceRequest::decode(gunzip(f)).unwrap());
    });
    let recv = best_cpu(files, |f: &Vec<u8>| {
        std::hint::black_box(receive(f));
    });
    Floor {
        gunzip_mb_s: bytes / gunzip_t.as_secs_f64(),
        mb_s: bytes / decode.as_secs_f64(),
        req_s: files.len() as f64 / decode.as_secs_f64(),
        recv_mb_s: bytes / recv.as_secs_f64(),
        recv_req_s: files.len() as f64 / recv.as_secs_f64(),
    }
}

/// The receiver's stages one by one (no gunzip but the first), ms of thread CPU per pass over
/// the corpus, best of three: where the floor's time goes.
fn stages(corpus: &Corpus) -> [(&'static str, Duration); 4] {
    let gunzip_t = best_cpu(&corpus.otlp_gz, |f: &Vec<u8>| {
        std::hint::black_box(gunzip(f));
    });
    let check = best_cpu(&corpus.otlp, |f: &Vec<u8>| {
        std::hint::black_box(version::check(f)).unwrap();
    });
    let bodies: Vec<Bytes> = corpus.otlp.iter().map(|f| Bytes::copy_from_slice(f)).collect();
    let mut decode = Duration::MAX;
    for _ in 0..3 {
        let start = thread_cpu();
        for b in &bodies {
            std::hint::black_box(ExportProfilesServiceRequest::decode(b.clone()).unwrap());
        }
        decode = decode.min(thread_cpu() - start);
    }
    let requests: Vec<ExportProfilesServiceRequest> = bodies
        .into_iter()
        .map(|b| ExportProfilesServiceRequest::decode(b).unwrap())
        .collect();
    let mut conv = Duration::MAX;
    for _ in 0..3 {
        let start = thread_cpu();
        for r in &requests {
            std::hint::black_box(convert::convert(r, &RECEIVER_LIMITS, 1).unwrap());
        }
        conv = conv.min(thread_cpu() - start);
    }
    [
        ("gunzip", gunzip_t),
        ("version check", check),
        ("prost decode", decode),
        ("convert", conv),
    ]
}

struct Ingest {
    /// MB of gzipped OTLP as sent, per second of server CPU.
    mb_s_per_core: f64,
    /// MB of the pprof files the requests came from (gzipped), per second of server CPU.
    pprof_mb_s_per_core: f64,
    req_s_per_core: f64,
    profiles_s_per_core: f64,
    wall_mb_s: f64,
    ack_p50: Duration,
    ack_p99: Duration,
    peak_rss: f64,
    stored_ratio: f64,
}

fn full_ingest(corpus: &Corpus, passes: usize) -> Ingest {
    let opts = Options {
        flush_interval: "1s",
        otlp: Some(String::new()),
        ..Options::default()
    };
    let fp = Flamepipe::start(BIN, &opts);
    let pid = fp.pid();
    let url = format!("{}{HTTP_PATH}", fp.otlp_http_url);
    let total: Vec<&Vec<u8>> = (0..passes).flat_map(|_| corpus.otlp_gz.iter()).collect();
    let bytes: usize = total.iter().map(|f| f.len()).sum();
    let pprof_bytes = passes * corpus.pprof_gz.iter().map(Vec::len).sum::<usize>();
    let profiles = passes * corpus.profiles;
    let next = AtomicUsize::new(0);
    let cpu_before = process_cpu(pid);
    let started = Instant::now();
    let mut latencies: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (next, total, url) = (&next, &total, &url);
                s.spawn(move || {
                    // One keep-alive connection per client, as SDKs keep theirs.
                    let agent = http();
                    let mut lat = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(body) = total.get(i) else { break };
                        let t = Instant::now();
                        let mut resp = agent
                            .post(url.as_str())
                            .header("Content-Type", "application/x-protobuf")
                            .header("Content-Encoding", "gzip")
                            .send(body.as_slice())
                            .expect("POST");
                        let status = resp.status().as_u16();
                        let answer = resp.body_mut().read_to_vec().unwrap_or_default();
                        lat.push(t.elapsed());
                        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
                        // An empty ExportProfilesServiceResponse: no partial success.
                        assert!(answer.is_empty(), "partial success: {answer:?}");
                    }
                    lat
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let wall = started.elapsed();
    let cpu = process_cpu(pid) - cpu_before;
    let accepted = fp.metric("flamepipe_receiver_accepted_profiles_total{receiver=\"otlp\"}");
    assert_eq!(accepted as usize, profiles, "profiles accepted by the otlp receiver");
    let accepted_bytes = fp.metric("flamepipe_receiver_accepted_bytes_total{receiver=\"otlp\"}");
    assert_eq!(accepted_bytes as usize, bytes, "bytes accepted by the otlp receiver");
    latencies.sort();
    let stored = dir_size(&fp.data);
    let secs = cpu.as_secs_f64();
    Ingest {
        mb_s_per_core: mb(bytes) / secs,
        pprof_mb_s_per_core: mb(pprof_bytes) / secs,
        req_s_per_core: total.len() as f64 / secs,
        profiles_s_per_core: profiles as f64 / secs,
        wall_mb_s: mb(bytes) / wall.as_secs_f64(),
        ack_p50: latencies[latencies.len() / 2],
        ack_p99: latencies[latencies.len() * 99 / 100],
        peak_rss: peak_rss_mib(pid),
        stored_ratio: stored as f64 / bytes as f64,
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would pass nothing: run only for bench.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let corpora = std::env::var("OTLP_BENCH_CORPORA").unwrap_or_else(|_| "cpu,m10".into());
    let rounds = std::env::var("OTLP_BENCH_ROUNDS")
        .ok()
        .map(|v| v.parse().expect("OTLP_BENCH_ROUNDS: a number"))
        .unwrap_or(ROUNDS)
        .max(1);
    let corpus_dir = bench_corpus();
    println!("flamepipe OTLP ingest benchmark; corpus {}", corpus_dir.display());
    println!("MB = gzipped OTLP bytes as sent, except pprof MB/s/c (the source pprof files' gzip bytes)");
    let mut summaries = Vec::new();
    for name in corpora.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let t = Instant::now();
        let corpus = Corpus::load(&corpus_dir.join(name));
        let converted_in = t.elapsed();
        let (pprof_gz, pprof_raw, otlp_raw, otlp_gz) = corpus.sizes();
        let files = corpus.otlp.len();
        println!();
        println!(
            "{name}: {files} files -> {files} OTLP requests, {} profiles (converted in {converted_in:.1?})",
            corpus.profiles
        );
        println!(
            "  bytes: pprof gz {:.2} MB, pprof raw {:.2} MB; OTLP raw {:.2} MB ({:.2}x pprof raw), \
             OTLP gz {:.2} MB ({:.2}x pprof gz)",
            mb(pprof_gz),
            mb(pprof_raw),
            mb(otlp_raw),
            otlp_raw as f64 / pprof_raw as f64,
            mb(otlp_gz),
            otlp_gz as f64 / pprof_gz as f64,
        );
        // Every request converts whole: no rejected profile, the expected count.
        let converted: usize = corpus
            .otlp_gz
            .iter()
            .map(|f| {
                let c = receive(f);
                assert_eq!(c.rejected, 0, "{:?}", c.errors);
                c.profiles.len()
            })
            .sum();
        assert_eq!(converted, corpus.profiles);
        let stage_times = stages(&corpus);
        let all: Duration = stage_times.iter().map(|(_, d)| *d).sum();
        println!(
            "  receiver stages, one thread, ms per pass over the corpus: {}",
            stage_times
                .iter()
                .map(|(s, d)| format!(
                    "{s} {:.1} ({:.0}%)",
                    d.as_secs_f64() * 1e3,
                    100.0 * d.as_secs_f64() / all.as_secs_f64()
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!(
            "{:<6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>6} {:>7} {:>9} {:>9} {:>8} {:>9} {:>7} {:>7} {:>7} {:>9}",
            "corpus",
            "gunzip",
            "floor",
            "floor",
            "recv",
            "recv",
            "ingest",
            "b/a",
            "b/recv",
            "ingest",
            "ingest",
            "pprof",
            "wall",
            "ack p50",
            "ack p99",
            "RSS",
            "stored/gz"
        );
        println!(
            "{:<6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>6} {:>7} {:>9} {:>9} {:>8} {:>9} {:>7} {:>7} {:>7} {:>9}",
            "",
            "MB/s",
            "MB/s",
            "req/s",
            "MB/s",
            "req/s",
            "MB/s/c",
            "",
            "",
            "req/s/c",
            "prof/s/c",
            "MB/s/c",
            "MB/s",
            "",
            "",
            "MiB",
            ""
        );
        let mut rows = Vec::new();
        for round in 1..=rounds {
            // The floor before and after the ingest run, best of both: this machine's speed
            // drifts, and a slow floor would flatter the ratio.
            let before = floor(&corpus);
            let ingest = full_ingest(&corpus, PASSES);
            let after = floor(&corpus);
            let f = Floor {
                gunzip_mb_s: before.gunzip_mb_s.max(after.gunzip_mb_s),
                mb_s: before.mb_s.max(after.mb_s),
                req_s: before.req_s.max(after.req_s),
                recv_mb_s: before.recv_mb_s.max(after.recv_mb_s),
                recv_req_s: before.recv_req_s.max(after.recv_req_s),
            };
            let ratio = ingest.mb_s_per_core / f.mb_s;
            let recv_ratio = ingest.mb_s_per_core / f.recv_mb_s;
            println!(
                "{:<6} {:>8.1} {:>8.1} {:>8.0} {:>8.1} {:>8.0} {:>9.1} {:>6.2} {:>7.2} {:>9.0} {:>9.0} {:>8.1} {:>9.1} {:>7.0?} {:>7.0?} {:>7.0} {:>9.3}",
                format!("{name}#{round}"),
                f.gunzip_mb_s,
                f.mb_s,
                f.req_s,
                f.recv_mb_s,
                f.recv_req_s,
                ingest.mb_s_per_core,
                ratio,
                recv_ratio,
                ingest.req_s_per_core,
                ingest.profiles_s_per_core,
                ingest.pprof_mb_s_per_core,
                ingest.wall_mb_s,
                ingest.ack_p50,
                ingest.ack_p99,
                ingest.peak_rss,
                ingest.stored_ratio,
            );
            rows.push((ratio, recv_ratio, ingest));
        }
        let m = |f: fn(&(f64, f64, Ingest)) -> f64| median(rows.iter().map(f).collect());
        summaries.push(format!(
            "{name}: medians over {rounds} rounds: ingest {:.1} MB/s/core of OTLP gz, {:.1} MB/s/core of pprof gz, \
             {:.0} requests/s/core, {:.0} profiles/s/core; b/a {:.2}, b/recv {:.2}",
            m(|r| r.2.mb_s_per_core),
            m(|r| r.2.pprof_mb_s_per_core),
            m(|r| r.2.req_s_per_core),
            m(|r| r.2.profiles_s_per_core),
            m(|r| r.0),
            m(|r| r.1),
        ));
        println!("{}", summaries.last().unwrap());
    }
    println!();
    for s in summaries {
        println!("{s}");
    }
}
