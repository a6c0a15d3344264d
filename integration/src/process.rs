//! The flamepipe process under test: started from a generated pipeline.yaml on loopback
//! port 0, its bound addresses read back from its JSON logs.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tempfile::TempDir;

/// What differs between test pipelines.
#[derive(Clone, Debug)]
pub struct Options {
    /// `durable` or `received`.
    pub ack: &'static str,
    pub flush_interval: &'static str,
    /// Extra YAML lines for the pyroscope receiver (indented by the caller with 4 spaces).
    pub receiver_extra: String,
    /// Pipeline channel capacity, when a test needs it small.
    pub queue_size: Option<usize>,
    /// Serve the query API: `Some(extra)` adds the `query` extension on the receiver's address
    /// (one server answers both, at [`Flamepipe::url`]) reading the blocks exporter's store;
    /// `extra` holds further keys of its section, indented by the caller with 4 spaces.
    pub query: Option<String>,
    /// Add an `otlp` receiver to the pipeline: `Some(extra)` holds further keys of its section
    /// (indented by the caller with 4 spaces). Its gRPC and HTTP endpoints get listeners of
    /// their own, as on the default ports 4317 and 4318: gRPC on [`OTLP_GRPC_IP`], HTTP on
    /// [`OTLP_HTTP_IP`] (port 0 each), found again by address in the `listening` logs, at
    /// [`Flamepipe::otlp_grpc_url`] and [`Flamepipe::otlp_http_url`].
    pub otlp: Option<String>,
    /// Put a `dedup` processor before `segment`: `Some(extra)` holds keys of its section
    /// (indented by the caller with 4 spaces).
    pub dedup: Option<String>,
    /// Run the `compactor` extension on the blocks exporter's store: `Some(extra)` holds
    /// further keys of its section (indented by the caller with 4 spaces).
    pub compactor: Option<String>,
    /// Add a `profile_metrics` connector as a second exporter of the pipeline, feeding a
    /// `metrics` pipeline that ends in a `prometheus_remote_write` exporter.
    pub profile_metrics: Option<ProfileMetrics>,
}

/// The connector's rules and where its metrics go (see [`Options::profile_metrics`]).
#[derive(Clone, Debug)]
pub struct ProfileMetrics {
    /// The items of its `rules:` list, indented by the caller with 6 spaces.
    pub rules: String,
    /// The remote write URL.
    pub endpoint: String,
}

/// The loopback address of the `otlp` receiver's gRPC listener (see [`Options::otlp`]).
pub const OTLP_GRPC_IP: &str = "127.0.0.2";
/// The loopback address of the `otlp` receiver's OTLP/HTTP listener.
pub const OTLP_HTTP_IP: &str = "127.0.0.3";

impl Default for Options {
    fn default() -> Self {
        Options {
            ack: "durable",
            flush_interval: "100ms",
            receiver_extra: String::new(),
            queue_size: None,
            query: None,
            otlp: None,
            dedup: None,
            compactor: None,
            profile_metrics: None,
        }
    }
}

pub struct Flamepipe {
    dir: Option<TempDir>,
    pub data: PathBuf,
    /// The pyroscope receiver (http://...), and the query API when configured.
    pub url: String,
    pub metrics_url: String,
    /// The `otlp` receiver's gRPC endpoint (http://...), when [`Options::otlp`] is set.
    pub otlp_grpc_url: String,
    /// The `otlp` receiver's OTLP/HTTP server (http://..., without the path), when
    /// [`Options::otlp`] is set.
    pub otlp_http_url: String,
    child: Child,
    binary: PathBuf,
    config: PathBuf,
    logs: mpsc::Receiver<String>,
}

impl Flamepipe {
    pub fn config_yaml(opts: &Options, data: &Path) -> String {
        let queue = opts
            .queue_size
            .map(|n| format!("  queue_size: {n}\n"))
            .unwrap_or_default();
        let query = opts
            .query
            .as_ref()
            .map(|extra| format!("  query:\n    address: 127.0.0.1:0\n    store: local\n{extra}"));
        let compactor = opts
            .compactor
            .as_ref()
            .map(|extra| format!("  compactor:\n    store: local\n{extra}"));
        let extension_ids: Vec<&str> = [query.as_ref().map(|_| "query"), compactor.as_ref().map(|_| "compactor")]
            .into_iter()
            .flatten()
            .collect();
        let extensions = match (query, compactor) {
            (None, None) => String::new(),
            (q, c) => format!("extensions:\n{}{}", q.unwrap_or_default(), c.unwrap_or_default()),
        };
        let extension_ids = extension_ids.join(", ");
        let (otlp, otlp_id) = opts
            .otlp
            .as_ref()
            .map(|extra| {
                (
                    format!(
                        "  otlp:\n    protocols:\n      grpc: {{ endpoint: '{OTLP_GRPC_IP}:0' }}\n      \
                         http: {{ endpoint: '{OTLP_HTTP_IP}:0' }}\n{extra}"
                    ),
                    ", otlp",
                )
            })
            .unwrap_or_default();
        let (dedup, dedup_id) = opts
            .dedup
            .as_ref()
            .map(|extra| (format!("  dedup:\n{extra}"), "dedup, "))
            .unwrap_or_default();
        let (connectors, remote_write, connector_id, metrics_pipeline) = opts
            .profile_metrics
            .as_ref()
            .map(|m| {
                (
                    format!("connectors:\n  profile_metrics:\n    rules:\n{}", m.rules),
                    format!("  prometheus_remote_write:\n    endpoint: {}\n", m.endpoint),
                    ", profile_metrics",
                    "    metrics:\n      receivers: [profile_metrics]\n      exporters: [prometheus_remote_write]\n",
                )
            })
            .unwrap_or_default();
        format!(
            "receivers:\n  pyroscope:\n    address: 127.0.0.1:0\n    ack: {ack}\n{extra}{otlp}\
             processors:\n{dedup}  segment:\n    flush_interval: {flush}\n\
             exporters:\n  blocks:\n    store: local\n{remote_write}\
             {connectors}{extensions}storage:\n  local:\n    url: file://{data}\n\
             service:\n  extensions: [{extension_ids}]\n{queue}  pipelines:\n    profiles/default:\n      receivers: [pyroscope{otlp_id}]\n      processors: [{dedup_id}segment]\n      exporters: [blocks{connector_id}]\n{metrics_pipeline}\
             \x20 telemetry:\n    metrics_address: 127.0.0.1:0\n    logs:\n      level: info\n      format: json\n",
            ack = opts.ack,
            extra = opts.receiver_extra,
            flush = opts.flush_interval,
            data = data.display(),
        )
    }

    pub fn start(binary: &str, opts: &Options) -> Flamepipe {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let config = dir.path().join("pipeline.yaml");
        std::fs::write(&config, Self::config_yaml(opts, &data)).expect("write config");
        Self::start_with(PathBuf::from(binary), "run", dir, data, config, opts.otlp.is_some())
    }

    /// Starts `flamepipe compact` on a pipeline.yaml of the test's own (made from the data
    /// directory's path): a compactor process, which serves telemetry only.
    pub fn start_compactor(binary: &str, yaml: impl FnOnce(&Path) -> String) -> Flamepipe {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let config = dir.path().join("pipeline.yaml");
        std::fs::write(&config, yaml(&data)).expect("write config");
        Self::start_with(PathBuf::from(binary), "compact", dir, data, config, false)
    }

    /// Starts from a pipeline.yaml of the test's own, made from the data directory's path. It
    /// must serve one component on 127.0.0.1 (found as [`Flamepipe::url`]) and log JSON.
    pub fn start_yaml(binary: &str, yaml: impl FnOnce(&Path) -> String) -> Flamepipe {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let config = dir.path().join("pipeline.yaml");
        std::fs::write(&config, yaml(&data)).expect("write config");
        Self::start_with(PathBuf::from(binary), "run", dir, data, config, false)
    }

    /// Starts again on the same config and data (after a crash or a clean stop).
    pub fn restart(self) -> Flamepipe {
        let mut this = self;
        let _ = this.child.kill();
        let _ = this.child.wait();
        let dir = this.dir.take().expect("a running instance has its directory");
        let otlp = !this.otlp_grpc_url.is_empty();
        let command = if this.url.is_empty() { "compact" } else { "run" };
        Self::start_with(
            this.binary.clone(),
            command,
            dir,
            this.data.clone(),
            this.config.clone(),
            otlp,
        )
    }

    /// Runs `flamepipe COMMAND --config CONFIG` and waits for the addresses it logs: the
    /// telemetry server, a component's server (but for `compact`), the otlp receiver's.
    fn start_with(
        binary: PathBuf,
        command: &str,
        dir: TempDir,
        data: PathBuf,
        config: PathBuf,
        otlp: bool,
    ) -> Flamepipe {
        let mut child = Command::new(&binary)
            .args([command, "--config"])
            .arg(&config)
            .current_dir(dir.path())
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start flamepipe");
        let (tx, logs) = mpsc::channel();
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    eprintln!("[flamepipe] {line}");
                    let _ = tx.send(line);
                }
            });
        }
        // A compactor serves no component routes.
        let (mut url, mut metrics_url) = (
            if command == "compact" {
                Some(String::new())
            } else {
                None
            },
            None,
        );
        // Without an otlp receiver its addresses count as found.
        let (mut otlp_grpc_url, mut otlp_http_url) = if otlp {
            (None, None)
        } else {
            (Some(String::new()), Some(String::new()))
        };
        while url.is_none() || metrics_url.is_none() || otlp_grpc_url.is_none() || otlp_http_url.is_none() {
            let line = logs
                .recv_timeout(Duration::from_secs(30))
                .expect("flamepipe did not report its addresses in 30s");
            let Ok(json) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let fields = &json["fields"];
            if fields["message"] != "listening" {
                continue;
            }
            let address = fields["address"].as_str().expect("address field").to_string();
            let serves = fields["serves"].as_str().unwrap_or_default();
            let ip = address.rsplit_once(':').map_or("", |(ip, _)| ip);
            if serves.contains("telemetry") {
                metrics_url = Some(format!("http://{address}"));
            } else if otlp && ip == OTLP_GRPC_IP {
                otlp_grpc_url = Some(format!("http://{address}"));
            } else if otlp && ip == OTLP_HTTP_IP {
                otlp_http_url = Some(format!("http://{address}"));
            } else {
                url = Some(format!("http://{address}"));
            }
        }
        Flamepipe {
            dir: Some(dir),
            data,
            url: url.unwrap_or_default(),
            metrics_url: metrics_url.unwrap_or_default(),
            otlp_grpc_url: otlp_grpc_url.unwrap_or_default(),
            otlp_http_url: otlp_http_url.unwrap_or_default(),
            child,
            binary,
            config,
            logs,
        }
    }

    /// The instance's working directory (config, data).
    pub fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .map(TempDir::path)
            .unwrap_or(Path::new("/nonexistent"))
    }

    /// Lines logged since the last call.
    pub fn drain_logs(&self) -> Vec<String> {
        self.logs.try_iter().collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process's resident set now and at its peak (`VmRSS`, `VmHWM`), in bytes.
    pub fn rss(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("read /proc/PID/status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|kib| kib * 1024)
                .unwrap_or_else(|| panic!("no {name} in /proc/PID/status"))
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        self.child.kill().expect("kill -9");
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for the exit (at most `timeout`).
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "flamepipe did not exit within {timeout:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn metrics(&self) -> String {
        http()
            .get(&format!("{}/metrics", self.metrics_url))
            .call()
            .expect("GET /metrics")
            .into_body()
            .read_to_string()
            .expect("metrics body")
    }

    /// The value of one metric sample, e.g. `flamepipe_receiver_refused_requests_total{receiver="pyroscope",reason="bad_gzip"}`.
    pub fn metric(&self, sample: &str) -> f64 {
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.trim().parse().ok()))
            .unwrap_or(0.0)
    }
}

impl Drop for Flamepipe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP client that returns 4xx/5xx responses instead of failing on them.
pub fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// POSTs `body` and returns (status, response text).
pub fn post(url: &str, content_type: &str, body: &[u8], headers: &[(&str, &str)]) -> (u16, String) {
    post_with(&http(), url, content_type, body, headers)
}

/// [`post`] on a given agent, whose connections are kept alive between calls as SDKs do.
pub fn post_with(
    agent: &ureq::Agent,
    url: &str,
    content_type: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut req = agent.post(url).header("Content-Type", content_type);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = req.send(body).expect("POST");
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap_or_default())
}

/// POSTs `body` and returns (status, content type, response body as bytes): for binary
/// answers such as OTLP/HTTP's protobuf ones.
pub fn post_binary(url: &str, content_type: &str, body: &[u8], headers: &[(&str, &str)]) -> (u16, String, Vec<u8>) {
    let mut req = http().post(url).header("Content-Type", content_type);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = req.send(body).expect("POST");
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = resp
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()
        .unwrap_or_default();
    (status, content_type, body)
}

/// POSTs with curl, which reads an early answer (a 413 sent before the body was read) where
/// a client that insists on writing the whole body first would only see a broken pipe.
pub fn post_with_curl(url: &str, body: &[u8]) -> (u16, String) {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), body).expect("write body");
    post_file_with_curl(url, file.path())
}

/// [`post_with_curl`] of a file's contents, streamed from disk (for bodies too large to hold).
pub fn post_file_with_curl(url: &str, body: &Path) -> (u16, String) {
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "-H",
            "Content-Type: application/octet-stream",
            "-X",
            "POST",
            // Streams the file rather than loading it (--data-binary would hold it all).
            "--upload-file",
        ])
        .arg(body)
        .arg(url)
        .output()
        .expect("run curl (setup.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}
