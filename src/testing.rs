//! Stand-in components for unit tests of config loading and the topology, independent of
//! the real components' settings.
//!
//! `test` receiver: serves `paths` on `address` and, when `send` > 0, a task that sends that
//! many one-profile batches, waiting while the pipeline is full. `test` processor: passes
//! batches on. `test` exporter (profiles or metrics): records the tenant of each batch it got
//! under `sink` (`metrics:<tenant>` for metrics), and with `hang` never returns. `test`
//! connector: profiles to metrics, one point per profile. `test` extension: serves `paths`
//! on `address`, names `store`, and with `task` runs until shutdown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use axum::routing::get;
use flamepipe_core::component::{
    Batch, BoxFuture, BuildContext, BuildError, ConnectorConfig, Exporter, ExporterConfig, ExtensionConfig, HttpMount,
    Output, Payload, PipelineSender, Processor, ProcessorConfig, ReceiverConfig, SendError, ServedParts, Signal,
};
use flamepipe_core::config::{ConfigIssue, Duration, Validate};
use flamepipe_core::metric::{MetricPoint, MetricsBatch};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::registry::{Registry, connector, exporter, extension, processor, receiver};

pub fn registry() -> Registry {
    Registry {
        receivers: vec![("test", receiver::<TestReceiver>), ("other", receiver::<TestReceiver>)],
        processors: vec![("test", processor::<TestProcessor>)],
        exporters: vec![("test", exporter::<TestExporter>)],
        connectors: vec![("test", connector::<TestConnector>)],
        extensions: vec![("test", extension::<TestExtension>)],
    }
}

/// What one `test` exporter recorded.
pub type Sink = Arc<Mutex<Vec<String>>>;

/// Batches received per sink name, shared between a test and the exporters it configured.
pub fn sink(name: &str) -> Sink {
    static SINKS: OnceLock<Mutex<HashMap<String, Sink>>> = OnceLock::new();
    let mut sinks = SINKS.get_or_init(Default::default).lock().unwrap();
    Arc::clone(sinks.entry(name.to_string()).or_default())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TestReceiver {
    address: SocketAddr,
    paths: Vec<String>,
    send: usize,
}

impl Default for TestReceiver {
    fn default() -> Self {
        TestReceiver {
            address: "127.0.0.1:4040".parse().unwrap(),
            paths: vec!["/ingest".into()],
            send: 0,
        }
    }
}

impl Validate for TestReceiver {
    fn validate(&self) -> Vec<ConfigIssue> {
        Vec::new()
    }
}

impl ReceiverConfig for TestReceiver {
    fn routes(&self) -> Vec<(SocketAddr, String)> {
        self.paths.iter().map(|p| (self.address, p.clone())).collect()
    }

    fn build(self: Box<Self>, ctx: &BuildContext, output: PipelineSender) -> Result<ServedParts, BuildError> {
        let mut router = axum::Router::new();
        for path in &self.paths {
            // Like a real receiver, the routes hold the pipelines' senders.
            let output = output.clone();
            router = router.route(
                path,
                get(move || {
                    let _ = &output;
                    async { "ok" }
                }),
            );
        }
        let id = ctx.id.to_string();
        let send = self.send;
        let task: BoxFuture = Box::pin(async move {
            let mut sent = 0;
            while sent < send {
                match output.try_send(Batch::new(format!("{id}#{sent}"), Vec::new())) {
                    Ok(()) => sent += 1,
                    Err(SendError::Full(_)) => tokio::task::yield_now().await,
                    Err(SendError::Closed(_)) => return,
                }
            }
        });
        Ok(ServedParts {
            mounts: vec![HttpMount {
                address: self.address,
                paths: self.paths.clone(),
                router,
            }],
            task: (send > 0).then_some(task),
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TestProcessor {
    flush_interval: Duration,
}

impl Default for TestProcessor {
    fn default() -> Self {
        TestProcessor {
            flush_interval: Duration::from_secs(1),
        }
    }
}

impl Validate for TestProcessor {
    fn validate(&self) -> Vec<ConfigIssue> {
        if self.flush_interval.is_zero() {
            return vec![ConfigIssue::new(
                "flush_interval",
                "must be greater than 0s, got \"0s\"",
            )];
        }
        Vec::new()
    }
}

struct PassThrough;

impl Processor for PassThrough {
    fn run(self: Box<Self>, mut input: mpsc::Receiver<Batch>, output: Output) -> BoxFuture {
        Box::pin(async move {
            while let Some(batch) = input.recv().await {
                output.send(batch).await;
            }
        })
    }
}

impl ProcessorConfig for TestProcessor {
    fn build(self: Box<Self>, _: &BuildContext) -> Result<Box<dyn Processor>, BuildError> {
        Ok(Box::new(PassThrough))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TestExporter {
    sink: String,
    /// Never return once the input closes, to test the shutdown timeout.
    hang: bool,
}

impl Validate for TestExporter {
    fn validate(&self) -> Vec<ConfigIssue> {
        Vec::new()
    }
}

struct Recorder(Sink, bool);

impl Exporter for Recorder {
    fn run(self: Box<Self>, mut input: mpsc::Receiver<Batch>) -> BoxFuture {
        Box::pin(async move {
            while let Some(batch) = input.recv().await {
                self.0.lock().unwrap().push(batch.tenant.to_string());
                batch.done();
            }
            if self.1 {
                std::future::pending::<()>().await;
            }
        })
    }
}

impl Exporter<MetricsBatch> for Recorder {
    fn run(self: Box<Self>, mut input: mpsc::Receiver<MetricsBatch>) -> BoxFuture {
        Box::pin(async move {
            while let Some(batch) = input.recv().await {
                self.0.lock().unwrap().push(format!("metrics:{}", batch.tenant));
                batch.done();
            }
        })
    }
}

impl ExporterConfig for TestExporter {
    fn signals(&self) -> Vec<Signal> {
        Signal::ALL.to_vec()
    }

    fn build(&self, _: &BuildContext) -> Result<Box<dyn Exporter>, BuildError> {
        Ok(Box::new(Recorder(sink(&self.sink), self.hang)))
    }

    fn build_metrics(&self, _: &BuildContext) -> Result<Box<dyn Exporter<MetricsBatch>>, BuildError> {
        Ok(Box::new(Recorder(sink(&self.sink), self.hang)))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TestConnector {}

impl Validate for TestConnector {
    fn validate(&self) -> Vec<ConfigIssue> {
        Vec::new()
    }
}

/// Emits one point per profile, then acknowledges the profiles.
struct Counting(Output<MetricsBatch>);

impl Exporter for Counting {
    fn run(self: Box<Self>, mut input: mpsc::Receiver<Batch>) -> BoxFuture {
        Box::pin(async move {
            while let Some(batch) = input.recv().await {
                let points = batch
                    .profiles
                    .iter()
                    .map(|p| MetricPoint {
                        name: "test_profiles_total".into(),
                        labels: p.series.clone(),
                        start_ms: 0,
                        timestamp_ms: p.timestamp_ns / 1_000_000,
                        value: 1.0,
                    })
                    .collect();
                self.0.send(MetricsBatch::new(batch.tenant.clone(), points)).await;
                Payload::done(batch);
            }
        })
    }
}

impl ConnectorConfig for TestConnector {
    fn signals(&self) -> (Signal, Signal) {
        (Signal::Profiles, Signal::Metrics)
    }

    fn build_profiles_to_metrics(
        self: Box<Self>,
        _: &BuildContext,
        output: Output<MetricsBatch>,
    ) -> Result<Box<dyn Exporter>, BuildError> {
        Ok(Box::new(Counting(output)))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TestExtension {
    address: SocketAddr,
    paths: Vec<String>,
    store: String,
    task: bool,
}

impl Default for TestExtension {
    fn default() -> Self {
        TestExtension {
            address: "127.0.0.1:4040".parse().unwrap(),
            paths: Vec::new(),
            store: flamepipe_core::store::DEFAULT_STORE.to_string(),
            task: false,
        }
    }
}

impl Validate for TestExtension {
    fn validate(&self) -> Vec<ConfigIssue> {
        Vec::new()
    }
}

impl ExtensionConfig for TestExtension {
    fn routes(&self) -> Vec<(SocketAddr, String)> {
        self.paths.iter().map(|p| (self.address, p.clone())).collect()
    }

    fn stores(&self) -> Vec<&str> {
        vec![&self.store]
    }

    fn build(self: Box<Self>, ctx: &BuildContext) -> Result<ServedParts, BuildError> {
        let mut router = axum::Router::new();
        for path in &self.paths {
            router = router.route(path, get(|| async { "extension" }));
        }
        let shutdown = ctx.shutdown.clone();
        let task: BoxFuture = Box::pin(async move { shutdown.cancelled().await });
        Ok(ServedParts {
            mounts: vec![HttpMount {
                address: self.address,
                paths: self.paths.clone(),
                router,
            }],
            task: self.task.then_some(task),
        })
    }
}
