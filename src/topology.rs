//! Builds the running graph from a valid config, runs it, and shuts it down in order.
//!
//! ```text
//! receiver --PipelineSender--> [pipeline head] -> processor -> ... -> processor --Output--> exporter input
//!          (one bounded channel per pipeline,   (each a task)                            (one per exporter,
//!           try_send: full means 429)                                                    shared by pipelines)
//! ```
//!
//! `metrics/…` pipelines are built first, as the receiving side of connectors: their
//! exporters, their heads (forwarding to the exporters) and then the connectors, which hold
//! the only senders into those heads. A connector is then one more exporter input of the
//! `profiles/…` pipelines that list it. Shutdown therefore flows through it: the profiles
//! pipelines close its input, it flushes and returns, and the metrics pipelines it fed close.
//!
//! Every channel holds `service.queue_size` batches (default 64). A batch is one ingest
//! request's profiles, so this is the burst of requests a pipeline absorbs before receivers
//! answer 429; with the receivers' size and concurrency limits this bounds memory. A receiver is built once and feeds all its
//! pipelines; each pipeline gets its own instance of each of its processors (as in the
//! OpenTelemetry Collector); an exporter is built once and reads one channel fed by every
//! pipeline that uses it. A pipeline without processors gets a forwarding task in their place.
//! Extensions (`service.extensions`, in order) are built last: their routes share the
//! receivers' servers, and their tasks run beside the receivers'.
//!
//! Shutdown order, all within `service.shutdown_timeout`: cancel the shutdown token; servers
//! stop accepting and finish in-flight requests (which may wait for durable acks, so the
//! pipelines keep running); receiver and extension tasks return. That drops every [`PipelineSender`], so the
//! pipeline heads close; processors drain, flush and return, dropping their [`Output`]s; the
//! exporter inputs close; exporters flush and return. The telemetry server stops last.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use flamepipe_core::component::{Batch, BoxFuture, BuildContext, BuildError, Output, Payload, PipelineSender, Signal};
use flamepipe_core::config::Duration;
use flamepipe_core::metric::MetricsBatch;
use flamepipe_core::store::StoreRegistry;
use flamepipe_core::telemetry::Telemetry;
use tokio::sync::mpsc;
use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{Config, Pipeline, pipeline_signal};
use crate::server::{self, Bound, ServerError};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("{0}")]
    Failed(String),
    #[error("shutdown did not finish within {0} (service.shutdown_timeout)")]
    ShutdownTimeout(Duration),
}

/// A built topology: everything bound and constructed, nothing running yet.
pub struct Topology {
    servers: Vec<Bound>,
    telemetry_server: Bound,
    component_tasks: Vec<(String, BoxFuture)>,
    pipeline_tasks: Vec<(String, BoxFuture)>,
    pipelines: usize,
    ready: Arc<AtomicBool>,
    ctx: BuildContext,
    shutdown_timeout: Duration,
}

/// Builds every component that a pipeline uses and binds every listener.
pub async fn build(mut config: Config) -> Result<Topology, RunError> {
    let telemetry = Arc::new(Telemetry::new());
    let ctx = BuildContext {
        id: Arc::from(""),
        stores: StoreRegistry::new(std::mem::take(&mut config.storage)).with_telemetry(Arc::clone(&telemetry)),
        telemetry,
        shutdown: CancellationToken::new(),
    };
    let all_pipelines = std::mem::take(&mut config.service.pipelines);
    let queue_size = config.service.queue_size;
    let mut pipeline_tasks: Vec<(String, BoxFuture)> = Vec::new();
    let of_signal = |signal: Signal| -> Vec<&(String, Pipeline)> {
        all_pipelines
            .iter()
            .filter(|(id, _)| pipeline_signal(id) == signal)
            .collect()
    };

    // Metrics pipelines: exporters, then heads that forward to them.
    let metrics_pipelines = of_signal(Signal::Metrics);
    let mut metrics_exporters: BTreeMap<String, mpsc::Sender<MetricsBatch>> = BTreeMap::new();
    for id in metrics_pipelines.iter().flat_map(|(_, p)| &p.exporters) {
        if metrics_exporters.contains_key(id) {
            continue;
        }
        let exporter_config = config.exporters.get(id).ok_or_else(|| missing("exporter", id))?;
        let exporter = exporter_config.build_metrics(&ctx.for_component(id))?;
        let (tx, rx) = mpsc::channel(queue_size);
        pipeline_tasks.push((format!("exporter {id} (metrics)"), exporter.run(rx)));
        metrics_exporters.insert(id.clone(), tx);
    }
    let mut metrics_heads: BTreeMap<&str, mpsc::Sender<MetricsBatch>> = BTreeMap::new();
    for (pipeline_id, pipeline) in &metrics_pipelines {
        if !pipeline.processors.is_empty() {
            return Err(RunError::Failed(format!(
                "pipeline {pipeline_id}: no processor handles metrics"
            )));
        }
        let (head, input) = mpsc::channel(queue_size);
        metrics_heads.insert(pipeline_id, head);
        let exporters = pipeline
            .exporters
            .iter()
            .map(|id| metrics_exporters[id].clone())
            .collect();
        pipeline_tasks.push((
            format!("pipeline {pipeline_id}"),
            Box::pin(forward(input, Output::new(exporters))),
        ));
    }
    drop(metrics_exporters);

    // Connectors: each feeds the metrics pipelines that list it as a receiver, and is an
    // exporter input of the profiles pipelines that list it as an exporter, and of the
    // extensions that feed it (the compactor's `profile_metrics`).
    let pipelines = of_signal(Signal::Profiles);
    let fed_by_extensions: Vec<String> = config
        .service
        .extensions
        .iter()
        .filter_map(|id| config.extensions.get(id))
        .flat_map(|e| e.feeds())
        .map(str::to_string)
        .collect();
    let mut exporter_inputs: BTreeMap<String, mpsc::Sender<Batch>> = BTreeMap::new();
    let connector_ids: Vec<&String> = pipelines
        .iter()
        .flat_map(|(_, p)| &p.exporters)
        .chain(&fed_by_extensions)
        .collect();
    for id in connector_ids {
        let Some(connector) = config.connectors.remove(id) else {
            continue;
        };
        let targets = metrics_pipelines
            .iter()
            .filter(|(_, p)| p.receivers.contains(id))
            .map(|(pid, _)| metrics_heads[pid.as_str()].clone())
            .collect();
        let exporter = connector.build_profiles_to_metrics(&ctx.for_component(id), Output::new(targets))?;
        let (tx, rx) = mpsc::channel(queue_size);
        pipeline_tasks.push((format!("connector {id}"), exporter.run(rx)));
        exporter_inputs.insert(id.clone(), tx);
    }
    // Connectors now hold the only senders into the metrics pipelines.
    drop(metrics_heads);

    for id in pipelines.iter().flat_map(|(_, p)| &p.exporters) {
        if exporter_inputs.contains_key(id) {
            continue;
        }
        let exporter_config = config.exporters.get(id).ok_or_else(|| missing("exporter", id))?;
        let exporter = exporter_config.build(&ctx.for_component(id))?;
        let (tx, rx) = mpsc::channel(queue_size);
        pipeline_tasks.push((format!("exporter {id}"), exporter.run(rx)));
        exporter_inputs.insert(id.clone(), tx);
    }

    let mut heads: BTreeMap<&str, mpsc::Sender<Batch>> = BTreeMap::new();
    for (pipeline_id, pipeline) in &pipelines {
        let (head, mut input) = mpsc::channel(queue_size);
        heads.insert(pipeline_id, head);
        let exporters: Vec<_> = pipeline
            .exporters
            .iter()
            .map(|id| exporter_inputs[id].clone())
            .collect();
        if pipeline.processors.is_empty() {
            pipeline_tasks.push((
                format!("pipeline {pipeline_id}"),
                Box::pin(forward(input, Output::new(exporters))),
            ));
            continue;
        }
        for (i, id) in pipeline.processors.iter().enumerate() {
            let def = config.processors.get(id).ok_or_else(|| missing("processor", id))?;
            let processor_config = def.instance().map_err(|issues| BuildError {
                component: id.clone(),
                message: issues
                    .iter()
                    .map(|i| format!("{}: {}", i.path, i.message))
                    .collect::<Vec<_>>()
                    .join("; "),
            })?;
            let processor = processor_config.build(&ctx.for_component(id))?;
            let (output, next) = if i + 1 == pipeline.processors.len() {
                (Output::new(exporters.clone()), None)
            } else {
                let (tx, rx) = mpsc::channel(queue_size);
                (Output::new(vec![tx]), Some(rx))
            };
            pipeline_tasks.push((format!("processor {id} in {pipeline_id}"), processor.run(input, output)));
            match next {
                Some(rx) => input = rx,
                None => break,
            }
        }
    }
    // The connectors extensions feed, for the extensions' build below.
    let connector_inputs: BTreeMap<String, mpsc::Sender<Batch>> = fed_by_extensions
        .iter()
        .filter_map(|id| Some((id.clone(), exporter_inputs.get(id)?.clone())))
        .collect();
    // From here on only Outputs (and extensions) hold exporter inputs, so exporters see their
    // input close once everything feeding them has finished.
    drop(exporter_inputs);

    let mut component_tasks = Vec::new();
    let mut mounts = Vec::new();
    let mut built = Vec::new();
    for id in pipelines.iter().flat_map(|(_, p)| &p.receivers) {
        if built.contains(&id) {
            continue;
        }
        built.push(id);
        let targets = pipelines
            .iter()
            .filter(|(_, p)| p.receivers.contains(id))
            .map(|(pid, _)| (Arc::from(pid.as_str()), heads[pid.as_str()].clone()))
            .collect();
        let receiver_config = config.receivers.remove(id).ok_or_else(|| missing("receiver", id))?;
        let parts = receiver_config.build(&ctx.for_component(id), PipelineSender::new(targets))?;
        mounts.extend(parts.mounts.into_iter().map(|m| (id.clone(), m)));
        if let Some(task) = parts.task {
            component_tasks.push((format!("receiver {id}"), task));
        }
    }
    // Receivers now hold the only senders into the pipelines.
    drop(heads);

    // Extensions, in start order: their routes join the receivers' servers, their tasks run
    // beside the receivers' and stop with them.
    for id in &config.service.extensions {
        let extension = config.extensions.remove(id).ok_or_else(|| missing("extension", id))?;
        let feeds = extension
            .feeds()
            .iter()
            .map(|c| {
                let input = connector_inputs.get(*c).ok_or_else(|| missing("connector", c))?;
                Ok(Output::new(vec![input.clone()]))
            })
            .collect::<Result<Vec<_>, RunError>>()?;
        let parts = extension.build_feeding(&ctx.for_component(id), feeds)?;
        mounts.extend(parts.mounts.into_iter().map(|m| (id.clone(), m)));
        if let Some(task) = parts.task {
            component_tasks.push((format!("extension {id}"), task));
        }
    }
    // Extensions now hold the only other senders into the connectors they feed.
    drop(connector_inputs);
    // Pushers of flamepipe's own metrics (`service.telemetry.metrics.readers`); each pushes
    // once more when shutdown starts.
    for (i, reader) in config.service.telemetry.metrics.readers.iter().enumerate() {
        let otlp = &reader.periodic.exporter.otlp;
        component_tasks.push((
            format!("telemetry metrics reader {i}"),
            Box::pin(flamepipe_exporter_otlp::telemetry::push_periodically(
                Arc::clone(&ctx.telemetry),
                otlp.endpoint.clone(),
                reader.periodic.interval.0,
                otlp.timeout.0,
                ctx.shutdown.clone(),
            )),
        ));
    }
    let servers = server::bind(mounts).await?;
    let ready = Arc::new(AtomicBool::new(false));
    let router = server::telemetry_router(Arc::clone(&ctx.telemetry), Arc::clone(&ready));
    let telemetry_address = config.service.telemetry.metrics_address.0;
    let telemetry_mount = flamepipe_core::component::HttpMount {
        address: telemetry_address,
        paths: Vec::new(),
        router,
    };
    let telemetry_server = server::bind(vec![("telemetry".to_string(), telemetry_mount)])
        .await?
        .pop()
        .ok_or_else(|| RunError::Failed("telemetry server was not bound".to_string()))?;
    Ok(Topology {
        servers,
        telemetry_server,
        component_tasks,
        pipeline_tasks,
        pipelines: all_pipelines.len(),
        ready,
        ctx,
        shutdown_timeout: config.service.shutdown_timeout,
    })
}

fn missing(kind: &str, id: &str) -> RunError {
    // Config checks guarantee every referenced component exists.
    RunError::Failed(format!("{kind} {id} is referenced but not defined"))
}

/// A pipeline without processors: hands batches straight to its exporters.
async fn forward<B: Payload>(mut input: mpsc::Receiver<B>, output: Output<B>) {
    while let Some(batch) = input.recv().await {
        output.send(batch).await;
    }
}

type Finished = (String, Result<(), JoinError>);

fn spawn_all(tasks: Vec<(String, BoxFuture)>) -> JoinSet<Finished> {
    let mut set = JoinSet::new();
    for (name, task) in tasks {
        // The inner task's JoinError tells a panic apart from a return.
        let handle = tokio::spawn(task);
        set.spawn(async move { (name, handle.await) });
    }
    set
}

fn spawn_servers(servers: Vec<Bound>, shutdown: &CancellationToken) -> JoinSet<Finished> {
    let mut set = JoinSet::new();
    for server in servers {
        let name = format!("http server on {} ({})", server.address, server.owners.join(", "));
        let shutdown = shutdown.clone();
        let handle = tokio::spawn(async move {
            if let Err(e) = server.serve(shutdown).await {
                error!(error = %e, "http server failed");
            }
        });
        set.spawn(async move { (name, handle.await) });
    }
    set
}

impl Topology {
    /// The listen addresses, with the components served on each, telemetry last.
    pub fn addresses(&self) -> Vec<(SocketAddr, String)> {
        self.servers
            .iter()
            .chain(std::iter::once(&self.telemetry_server))
            .map(|s| (s.address, s.owners.join(",")))
            .collect()
    }

    /// Runs until `stop` resolves (a signal) or a component fails, then shuts down in order.
    /// Returns an error if a component failed or shutdown overran its timeout.
    pub async fn run(self, stop: impl Future<Output = ()>) -> Result<(), RunError> {
        let addresses = self.addresses();
        let listen = addresses
            .iter()
            .map(|(a, o)| format!("{a} ({o})"))
            .collect::<Vec<_>>()
            .join(", ");
        let shutdown = self.ctx.shutdown.clone();
        let telemetry_shutdown = CancellationToken::new();

        let mut pipeline = spawn_all(self.pipeline_tasks);
        let mut components = spawn_all(self.component_tasks);
        let mut servers = spawn_servers(self.servers, &shutdown);
        let mut telemetry = spawn_servers(vec![self.telemetry_server], &telemetry_shutdown);
        for (address, serves) in &addresses {
            info!(address = %address, serves = %serves, "listening");
        }
        self.ready.store(true, Ordering::Release);
        info!(listen = %listen, pipelines = self.pipelines, "flamepipe started");

        let mut failures = Vec::new();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                Some(done) = pipeline.join_next() => {
                    failures.push(ended_early(done));
                    break;
                }
                Some(done) = servers.join_next() => {
                    failures.push(ended_early(done));
                    break;
                }
                Some(done) = telemetry.join_next() => {
                    failures.push(ended_early(done));
                    break;
                }
                Some(done) = components.join_next() => match done {
                    // A pull-based receiver or an extension may finish on its own; only a panic fails.
                    Ok((name, Ok(()))) => warn!(task = %name, "component task finished"),
                    other => {
                        failures.push(ended_early(other));
                        break;
                    }
                },
            }
        }

        info!(timeout = %self.shutdown_timeout, "shutting down");
        self.ready.store(false, Ordering::Release);
        shutdown.cancel();
        let drain = async {
            let mut failures = Vec::new();
            for set in [&mut servers, &mut components, &mut pipeline] {
                while let Some(done) = set.join_next().await {
                    if let Some(failure) = failed(done) {
                        failures.push(failure);
                    }
                }
            }
            telemetry_shutdown.cancel();
            while let Some(done) = telemetry.join_next().await {
                if let Some(failure) = failed(done) {
                    failures.push(failure);
                }
            }
            failures
        };
        match tokio::time::timeout(self.shutdown_timeout.0, drain).await {
            Ok(more) => failures.extend(more),
            Err(_) => {
                error!(timeout = %self.shutdown_timeout, "shutdown timed out; data still in the pipelines may be lost");
                return Err(RunError::ShutdownTimeout(self.shutdown_timeout));
            }
        }
        if failures.is_empty() {
            info!("flamepipe stopped");
            Ok(())
        } else {
            Err(RunError::Failed(failures.join("; ")))
        }
    }
}

/// A task that ended while the process was meant to keep running.
fn ended_early(done: Result<Finished, JoinError>) -> String {
    let message = match done {
        Ok((name, Ok(()))) => format!("{name} stopped unexpectedly"),
        Ok((name, Err(e))) => describe(&name, &e),
        Err(e) => describe("task", &e),
    };
    error!(error = %message, "component failed; shutting down");
    message
}

/// A task that failed during shutdown (a panic), if it did.
fn failed(done: Result<Finished, JoinError>) -> Option<String> {
    let message = match done {
        Ok((_, Ok(()))) => return None,
        Ok((name, Err(e))) => describe(&name, &e),
        Err(e) => describe("task", &e),
    };
    error!(error = %message, "component failed during shutdown");
    Some(message)
}

fn describe(name: &str, e: &JoinError) -> String {
    if e.is_panic() {
        format!("{name} panicked")
    } else {
        format!("{name} was cancelled")
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;
    use crate::testing;

    fn config(text: &str) -> Config {
        crate::config::load_str("test.yaml", text, &testing::registry(), &|_| None)
            .unwrap()
            .config
    }

    /// A blocking HTTP/1.0 GET, returning the whole response.
    async fn get(address: SocketAddr, path: &str) -> String {
        let request = format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n");
        tokio::task::spawn_blocking(move || {
            let mut stream = std::net::TcpStream::connect(address).unwrap();
            stream.write_all(request.as_bytes()).unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).unwrap();
            response
        })
        .await
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fans_out_to_pipelines_and_drains_everything_on_shutdown() {
        let topology = build(config(
            "
receivers:
  test: { address: '127.0.0.1:0', send: 200 }
processors:
  test: {}
  test/b: {}
exporters:
  test: { sink: fan }
  test/other: { sink: fan_other }
  test/third: { sink: fan_third }
service:
  pipelines:
    profiles/a: { receivers: [test], processors: [test, test/b], exporters: [test, test/other] }
    profiles/b: { receivers: [test], exporters: [test/third] }
  telemetry: { metrics_address: '127.0.0.1:0' }
",
        ))
        .await
        .unwrap();
        topology.run(async {}).await.unwrap();
        // Every batch through both pipelines, and to both exporters of `a`.
        assert_eq!(testing::sink("fan").lock().unwrap().len(), 200);
        assert_eq!(testing::sink("fan_other").lock().unwrap().len(), 200);
        assert_eq!(testing::sink("fan_third").lock().unwrap().len(), 200);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connector_feeds_a_metrics_pipeline_and_drains_on_shutdown() {
        let topology = build(config(
            "
receivers:
  test: { address: '127.0.0.1:0', send: 50 }
exporters:
  test/profiles: { sink: connected_profiles }
  test/metrics: { sink: connected_metrics }
  test/metrics_b: { sink: connected_metrics_b }
connectors:
  test/count: {}
service:
  pipelines:
    profiles: { receivers: [test], exporters: [test/profiles, test/count] }
    metrics/a: { receivers: [test/count], exporters: [test/metrics] }
    metrics/b: { receivers: [test/count], exporters: [test/metrics_b] }
  telemetry: { metrics_address: '127.0.0.1:0' }
",
        ))
        .await
        .unwrap();
        topology.run(async {}).await.unwrap();
        assert_eq!(testing::sink("connected_profiles").lock().unwrap().len(), 50);
        // Every batch the connector made reached both metrics pipelines before shutdown ended.
        for sink in ["connected_metrics", "connected_metrics_b"] {
            let got = testing::sink(sink).lock().unwrap().clone();
            assert_eq!(got.len(), 50, "{sink}");
            assert!(got.iter().all(|t| t.starts_with("metrics:")), "{got:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serves_telemetry_and_component_routes() {
        let topology = build(config(
            "
receivers:
  test: { address: '127.0.0.1:0', paths: [/hello] }
exporters:
  test: { sink: serve }
service:
  pipelines:
    profiles: { receivers: [test], exporters: [test] }
  telemetry: { metrics_address: '127.0.0.1:0' }
",
        ))
        .await
        .unwrap();
        let addresses = topology.addresses();
        assert_eq!(
            addresses.iter().map(|(_, o)| o.as_str()).collect::<Vec<_>>(),
            ["test", "telemetry"]
        );
        let (component, telemetry) = (addresses[0].0, addresses[1].0);
        topology
            .run(async move {
                let ready = get(telemetry, "/ready").await;
                assert!(ready.starts_with("HTTP/1.0 200"), "{ready}");
                let metrics = get(telemetry, "/metrics").await;
                assert!(metrics.starts_with("HTTP/1.0 200"), "{metrics}");
                assert!(
                    metrics.contains(&format!("content-type: {}", server::OPENMETRICS_CONTENT_TYPE)),
                    "{metrics}"
                );
                assert!(metrics.ends_with("# EOF\n"), "{metrics}");
                assert!(get(telemetry, "/live").await.starts_with("HTTP/1.0 200"));
                assert!(get(component, "/hello").await.ends_with("ok"));
            })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn shutdown_is_bounded_by_the_timeout() {
        let topology = build(config(
            "
receivers:
  test: { address: '127.0.0.1:0' }
exporters:
  test: { sink: hang, hang: true }
service:
  pipelines:
    profiles: { receivers: [test], exporters: [test] }
  telemetry: { metrics_address: '127.0.0.1:0' }
  shutdown_timeout: 100ms
",
        ))
        .await
        .unwrap();
        let e = topology.run(async {}).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "shutdown did not finish within 100ms (service.shutdown_timeout)"
        );
    }

    #[tokio::test]
    async fn a_taken_telemetry_port_fails_the_build() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = taken.local_addr().unwrap();
        let text = format!(
            "
receivers:
  test: {{ address: '127.0.0.1:0' }}
exporters:
  test: {{}}
service:
  pipelines:
    profiles: {{ receivers: [test], exporters: [test] }}
  telemetry: {{ metrics_address: '{address}' }}
"
        );
        let Err(e) = build(config(&text)).await else {
            panic!("built on a taken port")
        };
        assert!(
            e.to_string()
                .starts_with(&format!("cannot listen on {address} (for telemetry): ")),
            "{e}"
        );
    }
}
