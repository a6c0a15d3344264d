//! The component contract: what flows between receivers, processors and exporters, how a
//! request learns that its data is durable, and how components are built.
//!
//! Data moves as batches of one signal over bounded channels: [`Batch`]es of profiles in
//! `profiles/…` pipelines, [`MetricsBatch`]es of metric points in `metrics/…` pipelines
//! (both [`Payload`]s). A receiver hands a batch to every pipeline
//! it feeds with [`PipelineSender::try_send`], which refuses (and the receiver answers 429)
//! when any of them is full. Each batch carries [`Ack`] shares; the request that produced the
//! data succeeds only when every share was completed with [`Ack::done`] after a durable
//! write. A share dropped without `done` (a panic, a closed channel, a bug) fails the request,
//! so no path can acknowledge data that was not written.
//!
//! # Processors: two shapes
//!
//! - [`BatchProcessor`], the simple shape: one batch in, zero or more batches out, state in
//!   its own fields and no timers (the `dedup` processor). [`Simple`] runs one as a
//!   [`Processor`].
//! - [`Processor`], the task shape: a task with its own loop over its input, for timers and
//!   state across time (the `segment` processor, which flushes on an interval).
//!
//! # Dropping data, never acknowledgements
//!
//! A processor may drop profiles (a filter, a deduplicator), but every [`Ack`] share of a
//! batch it takes in must end in one of three ways:
//!
//! 1. passed on with a batch it sends downstream (it completes when that batch is written);
//! 2. completed with [`Ack::done`] at once, when the processor drops the data on purpose and
//!    no write is owed for it (a filter: the sender's data was handled as configured);
//! 3. held until the data it depends on is durable, then `done`, or [`Ack::fail`] when that
//!    write failed (a deduplicator dropping a retry of a profile still being written: the
//!    retry is answered only once the original is stored, and fails with it, so the sender
//!    retries).
//!
//! A share dropped any other way fails its request, so a mistake here shows as an error,
//! never as a silent loss. The registry-wide component tests check every processor for it.
//!
//! # Connectors
//!
//! A connector ([`ConnectorConfig`]) joins two pipelines, as in the OpenTelemetry
//! Collector: it is listed as an exporter of one (it consumes that pipeline's signal) and as a
//! receiver of another (it emits that one's). `profile_metrics` turns profiles into metrics.
//! Its output waits while the pipelines it feeds are full, so back-pressure reaches the
//! pipeline it reads from.
//!
//! # Extensions
//!
//! Components outside the pipelines ([`ExtensionConfig`]: the query API, the compactor) see
//! no batches. They serve routes on the same HTTP servers as receivers and may run a task of
//! their own; they reach stored data through the stores their config names.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::metric::MetricsBatch;
use crate::model::Profile;
use crate::store::StoreRegistry;
use crate::telemetry::Telemetry;

pub type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// The kinds of data a pipeline carries; a pipeline id starts with its signal's name
/// (`profiles/default`, `metrics/profiles`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    Profiles,
    Metrics,
}

impl Signal {
    pub const ALL: [Signal; 2] = [Signal::Profiles, Signal::Metrics];

    /// The name pipeline ids start with.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Profiles => "profiles",
            Signal::Metrics => "metrics",
        }
    }

    pub fn from_name(name: &str) -> Option<Signal> {
        Signal::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the channels of one pipeline carry: a batch of its signal, with the acknowledgement
/// shares of the requests it came from.
pub trait Payload: Send + Default + 'static {
    const SIGNAL: Signal;
    /// A copy for another pipeline or exporter; acknowledgement waits for both.
    fn fork(&self) -> Self;
    /// Reports a failure to every request in the batch.
    fn fail(&self, error: &str);
    /// Acknowledges every request in the batch: call only once the data is delivered.
    fn done(self);
    /// Profiles or metric points held, for exporter metrics.
    fn items(&self) -> usize;
}

impl Payload for Batch {
    const SIGNAL: Signal = Signal::Profiles;
    fn fork(&self) -> Self {
        Batch::fork(self)
    }
    fn fail(&self, error: &str) {
        Batch::fail(self, error)
    }
    fn done(self) {
        Batch::done(self)
    }
    fn items(&self) -> usize {
        self.profiles.len()
    }
}

impl Payload for MetricsBatch {
    const SIGNAL: Signal = Signal::Metrics;
    fn fork(&self) -> Self {
        MetricsBatch {
            tenant: Arc::clone(&self.tenant),
            points: self.points.clone(),
            acks: self.acks.clone(),
        }
    }
    fn fail(&self, error: &str) {
        for ack in &self.acks {
            ack.fail(error);
        }
    }
    fn done(self) {
        for ack in self.acks {
            ack.done();
        }
    }
    fn items(&self) -> usize {
        self.points.len()
    }
}

/// Profiles of one tenant on their way through a pipeline.
#[derive(Debug, Default)]
pub struct Batch {
    pub tenant: Arc<str>,
    pub profiles: Vec<Profile>,
    pub acks: Vec<Ack>,
}

impl Batch {
    pub fn new(tenant: impl Into<Arc<str>>, profiles: Vec<Profile>) -> Self {
        Batch {
            tenant: tenant.into(),
            profiles,
            acks: Vec::new(),
        }
    }

    /// A copy for another pipeline; acknowledgement waits for both.
    pub fn fork(&self) -> Batch {
        Batch {
            tenant: Arc::clone(&self.tenant),
            profiles: self.profiles.clone(),
            acks: self.acks.clone(),
        }
    }

    /// Rough memory held: samples, plus each distinct symbol table once (the sample types of
    /// one pprof share a table).
    pub fn approx_bytes(&self) -> usize {
        let mut tables: Vec<*const crate::symbols::Symbols> = Vec::new();
        let mut bytes = 0;
        for p in &self.profiles {
            bytes += p.approx_bytes();
            let table = Arc::as_ptr(&p.symbols);
            if !tables.contains(&table) {
                tables.push(table);
                bytes += p.symbols.approx_bytes();
            }
        }
        bytes
    }

    /// Reports a failure to every request in the batch.
    pub fn fail(&self, error: &str) {
        for ack in &self.acks {
            ack.fail(error);
        }
    }

    /// Acknowledges every request in the batch: call only once the data is durable.
    pub fn done(self) {
        for ack in self.acks {
            ack.done();
        }
    }
}

/// A share in one request's acknowledgement: see the module docs. Cloning makes a new share.
pub struct Ack {
    state: Arc<AckState>,
    done: bool,
}

struct AckState {
    tx: Mutex<Option<oneshot::Sender<Result<(), String>>>>,
}

impl fmt::Debug for Ack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Ack")
    }
}

impl Clone for Ack {
    fn clone(&self) -> Self {
        Ack {
            state: Arc::clone(&self.state),
            done: false,
        }
    }
}

/// The receiving side of an [`Ack`]: resolves once all shares are done, or at the first failure.
pub type AckWaiter = oneshot::Receiver<Result<(), String>>;

impl Ack {
    pub fn new() -> (Ack, AckWaiter) {
        let (tx, rx) = oneshot::channel();
        (
            Ack {
                state: Arc::new(AckState {
                    tx: Mutex::new(Some(tx)),
                }),
                done: false,
            },
            rx,
        )
    }

    /// This share's data is durably written.
    pub fn done(mut self) {
        self.done = true;
    }

    /// Fails the request now; later shares change nothing.
    pub fn fail(&self, error: &str) {
        self.state.fail(error);
    }
}

impl AckState {
    fn fail(&self, error: &str) {
        if let Some(tx) = self.tx.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = tx.send(Err(error.to_string()));
        }
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        if !self.done {
            self.state.fail("data was dropped before it was durably written");
        }
    }
}

impl Drop for AckState {
    fn drop(&mut self) {
        // Every share was done (a failure would have taken the sender already).
        if let Some(tx) = self.tx.get_mut().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = tx.send(Ok(()));
        }
    }
}

/// Why a batch could not be handed on.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SendError {
    #[error("pipeline {0} is full")]
    Full(String),
    #[error("pipeline {0} is shutting down")]
    Closed(String),
}

/// The pipelines one receiver feeds.
#[derive(Debug)]
pub struct PipelineSender<B: Payload = Batch> {
    targets: Vec<(Arc<str>, mpsc::Sender<B>)>,
}

impl<B: Payload> Clone for PipelineSender<B> {
    fn clone(&self) -> Self {
        PipelineSender {
            targets: self.targets.clone(),
        }
    }
}

impl<B: Payload> Default for PipelineSender<B> {
    fn default() -> Self {
        PipelineSender { targets: Vec::new() }
    }
}

impl<B: Payload> PipelineSender<B> {
    pub fn new(targets: Vec<(Arc<str>, mpsc::Sender<B>)>) -> Self {
        PipelineSender { targets }
    }

    /// Hands `batch` to every pipeline, or to none when any of them is full or closed.
    pub fn try_send(&self, batch: B) -> Result<(), SendError> {
        let mut permits = Vec::with_capacity(self.targets.len());
        for (name, tx) in &self.targets {
            match tx.try_reserve() {
                Ok(permit) => permits.push(permit),
                Err(mpsc::error::TrySendError::Full(())) => return Err(SendError::Full(name.to_string())),
                Err(mpsc::error::TrySendError::Closed(())) => return Err(SendError::Closed(name.to_string())),
            }
        }
        let mut batch = Some(batch);
        let last = permits.len().saturating_sub(1);
        for (i, permit) in permits.into_iter().enumerate() {
            let b = if i == last {
                batch.take().unwrap_or_default()
            } else {
                batch.as_ref().map(Payload::fork).unwrap_or_default()
            };
            permit.send(b);
        }
        Ok(())
    }
}

/// Where a processor sends its output: the next processor, or every exporter of the
/// pipeline; where a connector sends its output: the pipelines it feeds.
#[derive(Debug)]
pub struct Output<B: Payload = Batch> {
    targets: Vec<mpsc::Sender<B>>,
}

impl<B: Payload> Clone for Output<B> {
    fn clone(&self) -> Self {
        Output {
            targets: self.targets.clone(),
        }
    }
}

impl<B: Payload> Output<B> {
    pub fn new(targets: Vec<mpsc::Sender<B>>) -> Self {
        Output { targets }
    }

    /// Sends to every target, waiting while they are full: back-pressure reaches the
    /// receivers through the pipeline's first channel.
    pub async fn send(&self, batch: B) {
        let Some((last, rest)) = self.targets.split_last() else {
            return;
        };
        for tx in rest {
            let fork = batch.fork();
            if let Err(e) = tx.send(fork).await {
                e.0.fail("pipeline is shutting down");
            }
        }
        if let Err(e) = last.send(batch).await {
            e.0.fail("pipeline is shutting down");
        }
    }
}

/// When a receiver answers a request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AckMode {
    /// After every exporter durably wrote the data (Pyroscope v2 does the same): acknowledged
    /// data is never lost, at the cost of the segment interval in latency.
    #[default]
    Durable,
    /// As soon as the batch was handed to the pipelines: lower latency, but data still in
    /// memory is lost if the process dies.
    Received,
}

/// Why [`deliver`] could not hand a request's data on, or saw it fail.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeliverError {
    /// A profile fails the checks every stored profile must pass: the sender's fault.
    #[error("invalid {0}")]
    Invalid(#[from] crate::validate::InvalidProfile),
    #[error("{0}")]
    PipelineFull(String),
    #[error("{0}")]
    ShuttingDown(String),
    #[error("the write was not confirmed in time")]
    Timeout,
    #[error("the write failed: {0}")]
    WriteFailed(String),
}

/// Hands one request's profiles on as one batch and waits for the acknowledgement `ack` asks
/// for (at most `timeout`): the step every receiver ends a request with.
///
/// The profiles pass the checks the block reader applies first
/// ([`check_batch`](crate::validate::check_batch)): a request holding a profile that fails
/// them is refused whole, so nothing enters a pipeline that a query could not read back.
pub async fn deliver(
    output: &PipelineSender,
    tenant: Arc<str>,
    profiles: Vec<Profile>,
    ack: AckMode,
    timeout: std::time::Duration,
) -> Result<(), DeliverError> {
    crate::validate::check_batch(&profiles)?;
    let (share, waiter) = Ack::new();
    let batch = Batch {
        tenant,
        profiles,
        acks: vec![share],
    };
    output.try_send(batch).map_err(|e| match e {
        SendError::Full(_) => DeliverError::PipelineFull(e.to_string()),
        SendError::Closed(_) => DeliverError::ShuttingDown(e.to_string()),
    })?;
    if ack == AckMode::Durable {
        match tokio::time::timeout(timeout, waiter).await {
            Err(_) => return Err(DeliverError::Timeout),
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(message))) => return Err(DeliverError::WriteFailed(message)),
            // The last share always reports on drop, so this means a bug upstream.
            Ok(Err(_)) => return Err(DeliverError::WriteFailed("acknowledgement lost".to_string())),
        }
    }
    Ok(())
}

/// An HTTP route set a component serves; components on one address share one server.
pub struct HttpMount {
    pub address: SocketAddr,
    /// The paths of `router`, to detect a path claimed twice on one address.
    pub paths: Vec<String>,
    pub router: axum::Router,
}

/// What a built receiver or extension runs: routes to serve and, for components that work
/// on their own (pull-based receivers, the compactor), a task.
#[derive(Default)]
pub struct ServedParts {
    pub mounts: Vec<HttpMount>,
    pub task: Option<BoxFuture>,
}

/// A processor, task shape: consumes its input until it closes, then flushes and returns.
pub trait Processor: Send {
    fn run(self: Box<Self>, input: mpsc::Receiver<Batch>, output: Output) -> BoxFuture;
}

/// A processor, simple shape: turns each batch into the batches to send on. See the module
/// docs for what it must do with the acknowledgements of data it drops.
pub trait BatchProcessor: Send + 'static {
    /// One batch in, zero or more out (in order).
    fn process(&mut self, batch: Batch) -> Vec<Batch>;

    /// The input closed: what is left to send on. Nothing, by default.
    fn finish(&mut self) -> Vec<Batch> {
        Vec::new()
    }
}

/// Runs a [`BatchProcessor`] as a [`Processor`]: batches are processed in arrival order and
/// sent on before the next is taken, so back-pressure reaches the receivers as for any task.
pub struct Simple<P>(pub P);

impl<P: BatchProcessor> Processor for Simple<P> {
    fn run(self: Box<Self>, mut input: mpsc::Receiver<Batch>, output: Output) -> BoxFuture {
        let mut processor = self.0;
        Box::pin(async move {
            while let Some(batch) = input.recv().await {
                for out in processor.process(batch) {
                    output.send(out).await;
                }
            }
            for out in processor.finish() {
                output.send(out).await;
            }
        })
    }
}

/// An exporter: writes what arrives until its input closes, then flushes and returns.
/// `B` is the signal it takes: profiles by default.
pub trait Exporter<B: Payload = Batch>: Send {
    fn run(self: Box<Self>, input: mpsc::Receiver<B>) -> BoxFuture;
}

/// What components get from the runtime rather than from YAML.
#[derive(Clone)]
pub struct BuildContext {
    /// The component id, `type` or `type/name`.
    pub id: Arc<str>,
    pub telemetry: Arc<Telemetry>,
    pub stores: StoreRegistry,
    /// Cancelled when the process starts shutting down.
    pub shutdown: CancellationToken,
}

impl BuildContext {
    pub fn for_component(&self, id: &str) -> BuildContext {
        BuildContext {
            id: id.into(),
            ..self.clone()
        }
    }

    /// A build error naming this component.
    pub fn error(&self, message: impl fmt::Display) -> BuildError {
        BuildError {
            component: self.id.to_string(),
            message: message.to_string(),
        }
    }

    fn unsupported(&self, signal: Signal) -> BuildError {
        self.error(format!("does not handle {signal}"))
    }
}

/// A component that could not be built from a valid config (a port taken, a store unreachable).
#[derive(Debug, thiserror::Error)]
#[error("{component}: {message}")]
pub struct BuildError {
    pub component: String,
    pub message: String,
}

/// The config contract every component config implements.
pub trait ReceiverConfig: Send + fmt::Debug {
    /// The signals it emits, for config validation. Profiles, by default.
    fn signals(&self) -> Vec<Signal> {
        vec![Signal::Profiles]
    }
    /// The routes it will mount, for config validation (`address`, `path`).
    fn routes(&self) -> Vec<(SocketAddr, String)>;
    fn build(self: Box<Self>, ctx: &BuildContext, output: PipelineSender) -> Result<ServedParts, BuildError>;
}

pub trait ProcessorConfig: Send + fmt::Debug {
    /// The signals it handles, for config validation. Profiles, by default.
    fn signals(&self) -> Vec<Signal> {
        vec![Signal::Profiles]
    }
    fn build(self: Box<Self>, ctx: &BuildContext) -> Result<Box<dyn Processor>, BuildError>;
}

/// An exporter is built once per signal it is used with (the OpenTelemetry Collector's
/// exporter factories do the same), so building borrows its config.
pub trait ExporterConfig: Send + fmt::Debug {
    /// The signals it takes, for config validation. Profiles, by default.
    fn signals(&self) -> Vec<Signal> {
        vec![Signal::Profiles]
    }
    /// The ids of the stores it writes to (`storage` entries), for config validation.
    fn stores(&self) -> Vec<&str> {
        Vec::new()
    }
    /// The exporter of profiles.
    fn build(&self, ctx: &BuildContext) -> Result<Box<dyn Exporter>, BuildError> {
        Err(ctx.unsupported(Signal::Profiles))
    }
    /// The exporter of metrics.
    fn build_metrics(&self, ctx: &BuildContext) -> Result<Box<dyn Exporter<MetricsBatch>>, BuildError> {
        Err(ctx.unsupported(Signal::Metrics))
    }
}

/// A connector: an exporter of one pipeline that is a receiver of others. One build method
/// per pair of signals, as in the OpenTelemetry Collector's connector factories
/// (`CreateTracesToMetrics`); only the pair [`ConnectorConfig::signals`] names is called.
pub trait ConnectorConfig: Send + fmt::Debug {
    /// The signal it consumes (as an exporter) and the one it emits (as a receiver).
    fn signals(&self) -> (Signal, Signal);
    /// Consumes profiles, emits metrics to `output` (the heads of the pipelines it feeds).
    fn build_profiles_to_metrics(
        self: Box<Self>,
        ctx: &BuildContext,
        output: Output<MetricsBatch>,
    ) -> Result<Box<dyn Exporter>, BuildError> {
        let _ = output;
        Err(ctx.unsupported(Signal::Metrics))
    }
}

/// A component outside the pipelines (the OpenTelemetry Collector's extensions): the query
/// API, the compactor. Defined under `extensions` and run when listed in `service.extensions`.
pub trait ExtensionConfig: Send + fmt::Debug {
    /// The routes it will mount, for config validation (`address`, `path`).
    fn routes(&self) -> Vec<(SocketAddr, String)> {
        Vec::new()
    }
    /// The ids of the stores it uses (`storage` entries), for config validation.
    fn stores(&self) -> Vec<&str> {
        Vec::new()
    }
    /// The connectors it hands profiles to (the compactor's `profile_metrics`), for config
    /// validation and wiring: each must consume profiles.
    fn feeds(&self) -> Vec<&str> {
        Vec::new()
    }
    fn build(self: Box<Self>, ctx: &BuildContext) -> Result<ServedParts, BuildError>;
    /// Builds with the inputs of the connectors [`ExtensionConfig::feeds`] names, in that
    /// order. Extensions that feed none need not implement it.
    fn build_feeding(self: Box<Self>, ctx: &BuildContext, feeds: Vec<Output>) -> Result<ServedParts, BuildError> {
        let _ = feeds;
        self.build(ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ack_resolves_when_all_shares_are_done() {
        let (ack, mut rx) = Ack::new();
        let copy = ack.clone();
        ack.done();
        assert!(rx.try_recv().is_err(), "resolved with a share outstanding");
        copy.done();
        assert_eq!(rx.await.unwrap(), Ok(()));
    }

    #[tokio::test]
    async fn a_dropped_share_fails_the_request() {
        let (ack, rx) = Ack::new();
        let copy = ack.clone();
        ack.done();
        drop(copy);
        assert!(rx.await.unwrap().is_err());
    }

    #[tokio::test]
    async fn ack_failure_wins() {
        let (ack, rx) = Ack::new();
        let copy = ack.clone();
        copy.fail("disk full");
        ack.done();
        copy.done();
        assert_eq!(rx.await.unwrap(), Err("disk full".to_string()));
    }

    #[tokio::test]
    async fn try_send_is_all_or_nothing() {
        let (tx1, mut rx1) = mpsc::channel(1);
        let (tx2, _rx2) = mpsc::channel(1);
        let sender = PipelineSender::new(vec![("a".into(), tx1), ("b".into(), tx2.clone())]);
        tx2.try_send(Batch::default()).unwrap();
        assert_eq!(sender.try_send(Batch::default()), Err(SendError::Full("b".into())));
        assert!(rx1.try_recv().is_err());
    }
}
