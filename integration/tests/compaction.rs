//! Compaction end to end, on the real binary: `flamepipe compact` beside a running agent
//! merges its segments while the agent keeps answering queries, with every profile's totals
//! kept (`go tool pprof` per fixture, every thread of a speedscope file); two agents, two
//! compactors and a query node on one S3 bucket (moto_server) converge to every acknowledged
//! profile stored once, and no query during the run counts more than was sent; a compactor
//! killed with SIGKILL again and again leaves a store that reads correctly.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use flamepipe_core::block::{list_blocks, live_blocks};
use flamepipe_core::store::{StorageConfig, StoreRegistry};
use flamepipe_integration::moto::MotoServer;
use flamepipe_integration::pprof_ref::{assert_totals_match_go, stored_totals_by_service};
use flamepipe_integration::process::post;
use flamepipe_integration::query_client::post_bytes;
use flamepipe_integration::stored::{StoredProfile, read_live, read_store};
use flamepipe_integration::{Flamepipe, Options, fixtures_in, go_tool};
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_flamepipe");
const CPU: &str = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";

/// A compactor section that does its work within seconds.
const FAST_COMPACTOR: &str = "    interval: 200ms\n    lease_duration: 5s\n    grace_period: 2s\n    levels:\n      \
     - { max_inputs: 8, max_age: 1s }\n      - { max_inputs: 4, max_age: 2s }\n";

/// Per (tenant, service, thread name or "", profile type, function): flat total.
type Totals = BTreeMap<(String, String, String, String, String), i64>;

fn totals(stored: &[StoredProfile]) -> Totals {
    let mut out = Totals::new();
    for s in stored {
        let p = &s.profile;
        let service = p.series.get("service_name").unwrap_or_default().to_string();
        let thread = p.series.get("thread_name").unwrap_or_default().to_string();
        for (function, t) in p.function_totals() {
            *out.entry((
                s.tenant.clone(),
                service.clone(),
                thread.clone(),
                p.profile_type.id(),
                function,
            ))
            .or_default() += t.flat;
        }
    }
    out.retain(|_, v| *v != 0);
    out
}

fn block_state(store: &dyn ObjectStore) -> (Vec<u32>, usize) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let physical = list_blocks(store, None).await.unwrap();
        let mut tenants: Vec<String> = physical.iter().map(|b| b.tenant.clone()).collect();
        tenants.sort();
        tenants.dedup();
        let mut levels = Vec::new();
        for t in tenants {
            levels.extend(live_blocks(store, &t).await.unwrap().iter().map(|b| b.level));
        }
        levels.sort();
        (levels, physical.len())
    })
}

/// Waits until no segment is live and every object left is live (compaction finished and
/// its inputs were deleted).
fn wait_for_compaction(store: &dyn ObjectStore, within: Duration) -> Vec<u32> {
    let deadline = Instant::now() + within;
    loop {
        let (levels, physical) = block_state(store);
        if !levels.is_empty() && levels.iter().all(|&l| l > 0) && physical == levels.len() {
            return levels;
        }
        assert!(
            Instant::now() < deadline,
            "compaction did not finish in {within:?}: live levels {levels:?}, {physical} objects"
        );
        thread::sleep(Duration::from_millis(200));
    }
}

fn local(data: &Path) -> Arc<dyn ObjectStore> {
    Arc::new(LocalFileSystem::new_with_prefix(data).unwrap())
}

/// Sends `file` to the receiver at `url` as `service` of `tenant`.
fn send(url: &str, service: &str, file: &Path, tenant: &str) {
    let body = std::fs::read(file).unwrap();
    let format = if file.extension().is_some_and(|e| e == "json") {
        "speedscope"
    } else {
        "pprof"
    };
    let (status, text) = post(
        &format!("{url}/ingest?name={service}&format={format}&from=1700000000&until=1700000010"),
        "application/octet-stream",
        &body,
        &[("X-Scope-OrgID", tenant)],
    );
    assert_eq!(status, 200, "{}: {text}", file.display());
}

/// The CPU total a query API at `url` answers for `selector`.
fn cpu_total(url: &str, selector: &str, tenant: &str) -> i64 {
    let request = json!({
        "profileTypeID": CPU,
        "labelSelector": selector,
        // Everything: pprof files carry their own times.
        "start": "946684800000",
        "end": "4102444800000",
    });
    let reply = post_bytes(
        &format!("{url}/querier.v1.QuerierService/SelectMergeStacktraces"),
        "application/json",
        request.to_string().as_bytes(),
        &[("X-Scope-OrgID", tenant)],
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["flamegraph"]["total"]
        .as_str()
        .map_or(0, |t| t.parse().unwrap())
}

#[test]
fn a_compactor_beside_an_agent_merges_its_segments_and_every_total_stays() {
    let Some(go) = go_tool() else { return };
    let agent = Flamepipe::start(
        BIN,
        &Options {
            query: Some(String::new()),
            ..Options::default()
        },
    );
    let pprofs = fixtures_in("pprof");
    let threads = fixtures_in("speedscope")
        .into_iter()
        .find(|f| f.to_string_lossy().contains("threads"))
        .expect("a multi-thread speedscope fixture");
    // In waves, so that there are many segments.
    for wave in pprofs.chunks(6) {
        thread::scope(|s| {
            for file in wave {
                let i = pprofs.iter().position(|f| f == file).unwrap();
                let url = agent.url.as_str();
                s.spawn(move || send(url, &format!("fixture-{i}"), file, "anonymous"));
            }
        });
    }
    send(&agent.url, "threads", &threads, "team-b");
    let before = totals(&read_store(&agent.data));
    let before_api = cpu_total(&agent.url, "{}", "anonymous");
    assert!(before_api > 0);
    let segments = block_state(local(&agent.data).as_ref()).0.len();
    assert!(segments >= 5, "{segments} segments");

    let data = agent.data.clone();
    let _compactor = Flamepipe::start_compactor(BIN, |_| {
        format!(
            "extensions:\n  compactor:\n    store: local\n{FAST_COMPACTOR}\
             storage:\n  local:\n    url: file://{}\n\
             service:\n  extensions: [compactor]\n  telemetry:\n    metrics_address: 127.0.0.1:0\n    logs:\n      format: json\n",
            data.display()
        )
    });
    let levels = wait_for_compaction(local(&agent.data).as_ref(), Duration::from_secs(60));
    assert!(levels.len() < segments, "{segments} segments became {levels:?}");

    let stored = read_store(&agent.data);
    assert_eq!(totals(&stored), before, "compaction changed a total");
    // The agent's query API reads the compacted blocks.
    assert_eq!(cpu_total(&agent.url, "{}", "anonymous"), before_api);
    let by_service = stored_totals_by_service(&stored);
    for (i, file) in pprofs.iter().enumerate() {
        assert_totals_match_go(&go, file, &by_service[&format!("fixture-{i}")]);
    }
    // Every thread of the speedscope file is still its own series.
    let thread_names: std::collections::BTreeSet<&str> = stored
        .iter()
        .filter(|s| s.tenant == "team-b")
        .filter_map(|s| s.profile.series.get("thread_name"))
        .collect();
    assert!(thread_names.len() >= 2, "{thread_names:?}");
    // `blocks ls` shows the levels and that every block left is live.
    let out = std::process::Command::new(BIN)
        .args(["blocks", "ls", "--store"])
        .arg(&agent.data)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{listing}");
    let rows: Vec<Vec<&str>> = listing.lines().skip(1).map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), levels.len());
    assert!(rows.iter().all(|r| r[2] != "0" && r[3] == "live"), "{listing}");
}

#[test]
fn agents_compactors_and_a_query_node_on_one_bucket_store_every_profile_once() {
    let Some(go) = go_tool() else { return };
    let Some(moto) = MotoServer::start("profiles") else {
        return;
    };
    let storage = moto.storage_yaml("s3");
    let telemetry = "  telemetry:\n    metrics_address: 127.0.0.1:0\n    logs:\n      format: json\n";
    let agent = || {
        Flamepipe::start_yaml(BIN, |_| {
            format!(
                "receivers:\n  pyroscope:\n    address: 127.0.0.1:0\n\
                 processors:\n  segment:\n    flush_interval: 100ms\n\
                 exporters:\n  blocks:\n    store: s3\n\
                 storage:\n{storage}\
                 service:\n  pipelines:\n    profiles:\n      receivers: [pyroscope]\n      processors: [segment]\n      exporters: [blocks]\n{telemetry}"
            )
        })
    };
    let compactor = || {
        Flamepipe::start_compactor(BIN, |_| {
            format!(
                "extensions:\n  compactor:\n    store: s3\n{FAST_COMPACTOR}storage:\n{storage}\
                 service:\n  extensions: [compactor]\n{telemetry}"
            )
        })
    };
    let agents = [agent(), agent()];
    let _compactors = [compactor(), compactor()];
    let query = Flamepipe::start_yaml(BIN, |_| {
        format!(
            "extensions:\n  query:\n    address: 127.0.0.1:0\n    store: s3\nstorage:\n{storage}\
             service:\n  extensions: [query]\n{telemetry}"
        )
    });

    let files: Vec<_> = fixtures_in("pprof")
        .into_iter()
        .filter(|f| {
            let name = f.file_name().unwrap().to_string_lossy().to_string();
            name.starts_with("go-") || name.starts_with("pyroscope-go-")
        })
        .collect();
    assert!(files.len() >= 8, "{files:?}");
    // CPU nanoseconds sent so far, as go tool pprof reads the files.
    let cpu_of = |file: &Path| -> i64 {
        flamepipe_integration::pprof_ref::go_pprof_totals(&go, file)
            .get("cpu/nanoseconds")
            .map_or(0, |functions| functions.values().map(|(flat, _)| flat).sum())
    };
    let cpu: Vec<i64> = files.iter().map(|f| cpu_of(f)).collect();
    let query_url = query.url.as_str();
    let agent_urls: Vec<&str> = agents.iter().map(|a| a.url.as_str()).collect();
    let sent = AtomicI64::new(0);
    let done = AtomicUsize::new(0);
    let queries = AtomicUsize::new(0);
    thread::scope(|s| {
        // A query node reading all the while: never more than was sent.
        s.spawn(|| {
            while done.load(Ordering::SeqCst) < 2 {
                let limit = sent.load(Ordering::SeqCst);
                let seen = cpu_total(query_url, "{}", "anonymous");
                assert!(
                    seen <= limit,
                    "a query counted {seen} ns of CPU, more than the {limit} sent"
                );
                queries.fetch_add(1, Ordering::SeqCst);
                thread::sleep(Duration::from_millis(50));
            }
        });
        for (a, agent) in agent_urls.iter().enumerate() {
            let (files, cpu, sent, done) = (&files, &cpu, &sent, &done);
            s.spawn(move || {
                for (i, file) in files.iter().enumerate().filter(|(i, _)| i % 2 == a) {
                    sent.fetch_add(cpu[i], Ordering::SeqCst);
                    send(agent, &format!("s3-{i}"), file, "anonymous");
                    thread::sleep(Duration::from_millis(150));
                }
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    assert!(queries.load(Ordering::SeqCst) > 3);

    let store = StoreRegistry::new(
        [(
            "s3".to_string(),
            StorageConfig {
                options: [
                    ("endpoint", moto.endpoint.as_str()),
                    ("region", "us-east-1"),
                    ("access_key_id", "test"),
                    ("secret_access_key", "test"),
                    ("allow_http", "true"),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
                ..StorageConfig::url(&format!("s3://{}", moto.bucket))
            },
        )]
        .into_iter()
        .collect(),
    )
    .open("s3")
    .unwrap();
    wait_for_compaction(store.as_ref(), Duration::from_secs(90));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stored = runtime.block_on(read_live(Arc::clone(&store)));
    let by_service = stored_totals_by_service(&stored);
    for (i, file) in files.iter().enumerate() {
        assert_totals_match_go(&go, file, &by_service[&format!("s3-{i}")]);
    }
    assert_eq!(cpu_total(query_url, "{}", "anonymous"), cpu.iter().sum::<i64>());
}

#[test]
fn a_compactor_killed_again_and_again_leaves_a_store_that_reads_correctly() {
    let agent = Flamepipe::start(BIN, &Options::default());
    let files = fixtures_in("pprof");
    let data = agent.data.clone();
    let yaml = |_: &Path| {
        format!(
            "extensions:\n  compactor:\n    store: local\n{FAST_COMPACTOR}\
             storage:\n  local:\n    url: file://{}\n\
             service:\n  extensions: [compactor]\n  telemetry:\n    metrics_address: 127.0.0.1:0\n    logs:\n      format: json\n",
            data.display()
        )
    };
    const RUNS: usize = 8;
    let mut sent = 0;
    for run in 0..RUNS {
        // New segments for this run to work on.
        for file in files.iter().skip(run * 4).take(4) {
            send(&agent.url, &format!("kill-{sent}"), file, "anonymous");
            sent += 1;
        }
        let expected = totals(&read_store(&agent.data));
        let mut compactor = Flamepipe::start_compactor(BIN, yaml);
        // Killed somewhere between its first round and a few rounds in.
        thread::sleep(Duration::from_millis(100 + (run as u64 * 173) % 900));
        compactor.kill9();
        assert_eq!(totals(&read_store(&agent.data)), expected, "after kill {run}");
    }
    let expected = totals(&read_store(&agent.data));
    let _last = Flamepipe::start_compactor(BIN, yaml);
    wait_for_compaction(local(&agent.data).as_ref(), Duration::from_secs(60));
    assert_eq!(totals(&read_store(&agent.data)), expected, "after the last compactor");
}
