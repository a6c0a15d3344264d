//! Real remote-write receivers for the tests: Prometheus (Debian `prometheus`, with the
//! remote-write receiver and an out-of-order window) and VictoriaMetrics (Debian
//! `victoria-metrics`), each started on a free 127.0.0.1 port with a data directory of its
//! own, and queried through their HTTP APIs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::process::http;
use crate::require_peer;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Prometheus,
    VictoriaMetrics,
}

/// One running receiver; stopped on drop.
pub struct MetricsStore {
    pub kind: Kind,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    port: u16,
    binary: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl MetricsStore {
    /// Prometheus with `--web.enable-remote-write-receiver` and a 1h out-of-order window.
    /// `None` outside CI when it is not installed; in CI a missing peer fails the test.
    pub fn prometheus() -> Option<MetricsStore> {
        let binary = require_peer(PathBuf::from("/usr/bin/prometheus"), "prometheus (Debian prometheus)")?;
        Some(Self::start(Kind::Prometheus, binary))
    }

    /// VictoriaMetrics with a 100-year retention, so old test data is kept.
    pub fn victoria_metrics() -> Option<MetricsStore> {
        let binary = require_peer(
            PathBuf::from("/usr/bin/victoria-metrics"),
            "victoria-metrics (Debian victoria-metrics)",
        )?;
        Some(Self::start(Kind::VictoriaMetrics, binary))
    }

    fn start(kind: Kind, binary: PathBuf) -> MetricsStore {
        let mut store = MetricsStore {
            kind,
            url: String::new(),
            port: free_port(),
            binary,
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
        };
        store.url = format!("http://127.0.0.1:{}", store.port);
        store.resume();
        store
    }

    /// The remote write URL.
    pub fn write_url(&self) -> String {
        format!("{}/api/v1/write", self.url)
    }

    /// Stops the process (SIGKILL); its data stays for [`MetricsStore::resume`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts (again) on the same port and data directory, and waits until it is ready.
    pub fn resume(&mut self) {
        let address = format!("127.0.0.1:{}", self.port);
        let data = self.dir.path().join("data");
        let mut command = Command::new(&self.binary);
        match self.kind {
            Kind::Prometheus => {
                let config = self.dir.path().join("prometheus.yml");
                std::fs::write(
                    &config,
                    "global:\n  scrape_interval: 1m\nstorage:\n  tsdb:\n    out_of_order_time_window: 1h\n",
                )
                .expect("write prometheus.yml");
                command.args([
                    format!("--config.file={}", config.display()),
                    format!("--storage.tsdb.path={}", data.display()),
                    format!("--web.listen-address={address}"),
                    "--web.enable-remote-write-receiver".to_string(),
                ]);
            }
            Kind::VictoriaMetrics => {
                command.args([
                    format!("-httpListenAddr={address}"),
                    format!("-storageDataPath={}", data.display()),
                    "-retentionPeriod=100y".to_string(),
                    "-search.latencyOffset=0s".to_string(),
                    "-search.disableCache".to_string(),
                ]);
            }
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {:?}: {e}", self.kind));
        self.child = Some(child);
        let ready = match self.kind {
            Kind::Prometheus => format!("{}/-/ready", self.url),
            Kind::VictoriaMetrics => format!("{}/health", self.url),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if http().get(&ready).call().is_ok_and(|r| r.status().is_success()) {
                return;
            }
            assert!(Instant::now() < deadline, "{:?} was not ready in 60s", self.kind);
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// An instant query at the current time: each series' labels (`__name__` included) and
    /// value.
    pub fn query(&self, promql: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        if self.kind == Kind::VictoriaMetrics {
            // Makes what was written searchable now rather than within a second or so.
            let _ = http().get(&format!("{}/internal/force_flush", self.url)).call();
        }
        let url = format!("{}/api/v1/query?query={}", self.url, crate::query_client::enc(promql));
        let body = http()
            .get(&url)
            .call()
            .expect("query")
            .into_body()
            .read_to_string()
            .expect("query body");
        let reply: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        assert_eq!(reply["status"], "success", "{promql}: {body}");
        reply["data"]["result"]
            .as_array()
            .map(|series| {
                series
                    .iter()
                    .map(|s| {
                        let labels = s["metric"]
                            .as_object()
                            .map(|m| {
                                m.iter()
                                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                                    .collect()
                            })
                            .unwrap_or_default();
                        let value = s["value"][1].as_str().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN);
                        (labels, value)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Polls `promql` until `done` holds for its answer (at most `timeout`), and returns
    /// the last answer.
    pub fn until(
        &self,
        promql: &str,
        timeout: Duration,
        done: impl Fn(&[(BTreeMap<String, String>, f64)]) -> bool,
    ) -> Vec<(BTreeMap<String, String>, f64)> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.query(promql);
            if done(&got) || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for MetricsStore {
    fn drop(&mut self) {
        self.stop();
    }
}
