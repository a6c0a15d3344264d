//! The benches' load generator: concurrent keep-alive clients sending a corpus of pprof files
//! to a running flamepipe's `/ingest`, timing every request, and the server CPU it took.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::Flamepipe;
use crate::measure::process_cpu;
use crate::process::{http, post_with};

/// What one run of [`send_corpus`] measured.
pub struct Load {
    /// Gzip bytes sent.
    pub bytes: usize,
    pub requests: usize,
    pub wall: Duration,
    /// CPU time of the flamepipe process over the run (utime + stime).
    pub server_cpu: Duration,
    /// Per request, sorted.
    pub latencies: Vec<Duration>,
}

impl Load {
    pub fn mb_s_per_core(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.server_cpu.as_secs_f64()
    }

    pub fn percentile(&self, p: usize) -> Duration {
        self.latencies[(self.latencies.len() * p / 100).min(self.latencies.len() - 1)]
    }
}

/// Sends every file `passes` times from `clients` clients, each on its own connection (as SDKs
/// keep theirs), to `/ingest?format=pprof`. Each pass names the files' services anew
/// (`bench-svc-N`, 8 of them, and a `pod` label), so no request repeats another (a dedup
/// processor would drop repeats). Every request must answer 200.
pub fn send_corpus(fp: &Flamepipe, files: &[Vec<u8>], passes: usize, clients: usize) -> Load {
    let total: Vec<&Vec<u8>> = (0..passes).flat_map(|_| files.iter()).collect();
    let files_len = files.len();
    let bytes: usize = total.iter().map(|f| f.len()).sum();
    let next = AtomicUsize::new(0);
    let cpu_before = process_cpu(fp.pid());
    let started = Instant::now();
    let mut latencies: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                let (next, total, url) = (&next, &total, &fp.url);
                s.spawn(move || {
                    let agent = http();
                    let mut lat = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(body) = total.get(i) else { break };
                        let t = Instant::now();
                        let (status, text) = post_with(
                            &agent,
                            &format!(
                                "{url}/ingest?name=bench-svc-{}.cpu%7Bpod%3Dp{}%7D&format=pprof",
                                (i % files_len + i / files_len) % 8,
                                i % 3
                            ),
                            "application/octet-stream",
                            body,
                            &[],
                        );
                        assert_eq!(status, 200, "{text}");
                        lat.push(t.elapsed());
                    }
                    lat
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let wall = started.elapsed();
    let server_cpu = process_cpu(fp.pid()) - cpu_before;
    latencies.sort();
    Load {
        bytes,
        requests: total.len(),
        wall,
        server_cpu,
        latencies,
    }
}
