//! The `profile_metrics` connector's cost (run: `cargo bench --bench profile_metrics`).
//!
//! For `cpu/` and `m10/` of the bench corpus, in one run:
//!
//! - **connector**: the corpus decoded as ingest decodes it (one batch per file, 8 services),
//!   then counted by the connector with 10 rules (one total, nine function rules: exact names
//!   and regexes, `total` and `self`), on one thread (a current-thread runtime), thread CPU
//!   time, best of three: profiles/s, and the time against the decode floor's (gunzip +
//!   prost decode of the same files, one thread) as a share;
//! - **ingest with and without the connector**: the release binary with the ingest bench's
//!   pipeline (pyroscope → segment 1 s → blocks, durable acks, 64 clients), and again with the
//!   connector as a second exporter feeding a `prometheus_remote_write` exporter to a real
//!   VictoriaMetrics; server CPU per MB of gzip input, the order of the runs alternating;
//!   the goal is at most 10% more. A third run has a connector whose one rule matches no
//!   profile: what the second exporter costs the pipeline (its copy of every batch, the
//!   connector's loop) apart from counting.
//!
//! Figures are recorded in docs/benchmarks.md.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use flamepipe_connector_profile_metrics::Config as ConnectorConfigYaml;
use flamepipe_core::Profile;
use flamepipe_core::component::{Ack, Batch, BuildContext, ConnectorConfig, Output};
use flamepipe_core::formats::pprof::proto;
use flamepipe_core::metric::MetricsBatch;
use flamepipe_core::store::StoreRegistry;
use flamepipe_core::telemetry::Telemetry;
use flamepipe_integration::load::send_corpus;
use flamepipe_integration::measure::{best_cpu, median, thread_cpu};
use flamepipe_integration::metrics_store::MetricsStore;
use flamepipe_integration::process::ProfileMetrics;
use flamepipe_integration::{Flamepipe, Options, bench_corpus_files, bench_requests};
use prost::Message;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const BIN: &str = env!("CARGO_BIN_EXE_flamepipe");
const CLIENTS: usize = 64;
const PASSES: usize = 5;
const ROUNDS: usize = 3;

/// Ten rules: the kinds users write (a total; functions by name and by regex, cum and flat).
const RULES: &str = r#"
      - metric: profile_cpu_seconds_total
        profile_type: process_cpu:cpu:nanoseconds:cpu:nanoseconds
        group_by: [service_name]
      - metric: profile_mallocgc_cpu_seconds_total
        profile_type: process_cpu:cpu:nanoseconds:cpu:nanoseconds
        function: { name: runtime.mallocgc, mode: total }
        group_by: [service_name]
      - metric: profile_gc_mark_cpu_seconds_total
        profile_type: process_cpu:cpu:nanoseconds:cpu:nanoseconds
        function: { name: runtime.gcBgMarkWorker, mode: total }
        group_by: [service_name]
      - metric: profile_sort_cpu_seconds_total
        profile_type: process_cpu:cpu:nanoseconds:cpu:nanoseconds
        function: { regex: "sort\\..*", mode: total }
        group_by: [service_name]
      - metric: profile_sha256_self_cpu_seconds_total
        profile_type: process_cpu:cpu:nanoseconds:cpu:nanoseconds
        function: { name: crypto/sha256.block, mode: self }
        group_by: [service_name]
      - metric: profile_gzip_cpu_seconds_total
        profile_type: process_cpu:cpu:nanoseconds:cpu:nanoseconds
        function: { regex: "compress/.*", mode: total }
        group_by: [service_name]
      - metric: profile_http_cpu_seconds_total
        profile_type: process_cpu:cpu:nanoseconds:cpu:nanoseconds
        function: { name: "net/http.(*ServeMux).ServeHTTP", mode: total }
        group_by: [service_name]
      - metric: profile_json_cpu_seconds_total
        profile_type: process_cpu:cpu:nanoseconds:cpu:nanoseconds
        function: { name: main.jsonWork, mode: total }
        group_by: [service_name]
      - metric: profile_runtime_self_cpu_seconds_total
        profile_type: process_cpu:cpu:nanoseconds:cpu:nanoseconds
        function: { regex: "runtime\\..*", mode: self }
        group_by: [service_name]
      - metric: profile_lock_cpu_seconds_total
        profile_type: process_cpu:cpu:nanoseconds:cpu:nanoseconds
        function: { name: runtime.lock, mode: total }
        group_by: [service_name]
"#;

/// A rule no profile of the corpus matches: the connector's cost without its counting.
const IDLE_RULE: &str = r#"
      - metric: profile_nothing_seconds_total
        profile_type: nothing:cpu:nanoseconds:cpu:nanoseconds
"#;

fn connector_config() -> ConnectorConfigYaml {
    let yaml = format!("step: 15s\nrules:\n{RULES}");
    yaml_serde::from_str(&yaml).expect("the bench's rules parse")
}

/// Thread CPU time of the connector counting every batch, then sending its points.
fn connector_cpu(batches: &[Vec<Profile>]) -> Duration {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let ctx = BuildContext {
            id: "profile_metrics".into(),
            telemetry: Arc::new(Telemetry::new()),
            stores: StoreRegistry::default(),
            shutdown: CancellationToken::new(),
        };
        let (out, mut points) = mpsc::channel::<MetricsBatch>(1024);
        let drain = tokio::spawn(async move { while points.recv().await.is_some() {} });
        let connector = Box::new(connector_config())
            .build_profiles_to_metrics(&ctx, Output::new(vec![out]))
            .expect("connector");
        let (tx, input) = mpsc::channel(16);
        let started = thread_cpu();
        let run = tokio::spawn(connector.run(input));
        let mut waiters = Vec::new();
        for profiles in batches {
            let (ack, waiter) = Ack::new();
            let mut batch = Batch::new("anonymous", profiles.clone());
            batch.acks.push(ack);
            tx.send(batch).await.unwrap();
            waiters.push(waiter);
        }
        for w in waiters {
            w.await.unwrap().unwrap();
        }
        drop(tx);
        run.await.unwrap();
        drain.await.unwrap();
        thread_cpu() - started
    })
}

fn decode_floor(files: &[Vec<u8>]) -> Duration {
    let mut buf = Vec::new();
    best_cpu(files, |f: &Vec<u8>| {
        buf.clear();
        flate2::read::GzDecoder::new(f.as_slice())
            .read_to_end(&mut buf)
            .unwrap();
        std::hint::black_box(proto::Profile::decode(buf.as_slice()).unwrap());
    })
}

fn ingest_mb_s(files: &[Vec<u8>], metrics: Option<(&MetricsStore, &str)>) -> f64 {
    let opts = Options {
        flush_interval: "1s",
        profile_metrics: metrics.map(|(store, rules)| ProfileMetrics {
            rules: rules.trim_start_matches('\n').to_string(),
            endpoint: store.write_url(),
        }),
        ..Options::default()
    };
    let fp = Flamepipe::start(BIN, &opts);
    let load = send_corpus(&fp, files, PASSES, CLIENTS);
    load.mb_s_per_core()
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would pass nothing: run only for bench.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let victoria = MetricsStore::victoria_metrics().expect("victoria-metrics (integration/setup.sh installs it)");
    println!("flamepipe profile_metrics benchmark: 10 rules (1 total, 9 function rules)");
    println!(
        "{:<8}{:>8}{:>12}{:>14}{:>14}{:>12}   {:>14}{:>14}{:>9}{:>14}{:>9}",
        "corpus",
        "files",
        "profiles",
        "connector ms",
        "profiles/s",
        "/floor",
        "ingest MB/s/c",
        "with conn.",
        "cost",
        "idle conn.",
        "cost"
    );
    for name in ["cpu", "m10"] {
        let files = bench_corpus_files(name);
        let batches = bench_requests(&files);
        let profiles: usize = batches.iter().map(Vec::len).sum();
        let connector = (0..3).map(|_| connector_cpu(&batches)).min().unwrap();
        let floor = decode_floor(&files);
        let (mut costs, mut idle_costs) = (Vec::new(), Vec::new());
        let (mut without, mut with, mut idle) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            // Runs: none, the ten rules, the idle rule; reversed every other round.
            let mut order = [0usize, 1, 2];
            if round % 2 == 1 {
                order.reverse();
            }
            let mut mb_s = [0.0; 3];
            for run in order {
                let rules = [None, Some(RULES), Some(IDLE_RULE)][run];
                mb_s[run] = ingest_mb_s(&files, rules.map(|r| (&victoria, r)));
            }
            costs.push(mb_s[0] / mb_s[1] - 1.0);
            idle_costs.push(mb_s[0] / mb_s[2] - 1.0);
            without.push(mb_s[0]);
            with.push(mb_s[1]);
            idle.push(mb_s[2]);
        }
        println!(
            "{:<8}{:>8}{:>12}{:>14.1}{:>14.0}{:>12.2}   {:>14.1}{:>14.1}{:>8.1}%{:>14.1}{:>8.1}%",
            name,
            files.len(),
            profiles,
            connector.as_secs_f64() * 1e3,
            profiles as f64 / connector.as_secs_f64(),
            connector.as_secs_f64() / floor.as_secs_f64(),
            median(without),
            median(with),
            median(costs) * 100.0,
            median(idle),
            median(idle_costs) * 100.0,
        );
    }
    // The corpus' profiles are days old: look back far enough to see their points.
    let series = victoria.query("count(last_over_time(profile_cpu_seconds_total[90d]))");
    println!("VictoriaMetrics holds {series:?} profile_cpu_seconds_total series");
}
