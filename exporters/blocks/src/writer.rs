//! The writer: encodes each segment into a block once, puts it, and acknowledges; the
//! sending queue, retries and timeout are the shared exporter helper's.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use flamepipe_core::Profile;
use flamepipe_core::block::{BlockBuilder, EncodedBlock, block_path};
use flamepipe_core::component::{Batch, BoxFuture, BuildContext, Exporter, Signal};
use flamepipe_core::exporter_helper::{self, Deliver, Delivered, ExportError, Request};
use flamepipe_core::telemetry::{CounterFamily, LabelPairs, component};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tokio::sync::{OnceCell, mpsc};
use tracing::{Instrument, debug};
use ulid::Ulid;

use crate::config::Config;

pub struct BlockWriter {
    config: Config,
    store: Arc<dyn ObjectStore>,
    ctx: BuildContext,
}

impl BlockWriter {
    pub fn new(config: Config, store: Arc<dyn ObjectStore>, ctx: &BuildContext) -> Self {
        BlockWriter {
            config,
            store,
            ctx: ctx.clone(),
        }
    }
}

/// A segment in the sending queue: its requests' acknowledgements, and its block once
/// encoded (a retry puts the same bytes under the same id).
pub struct PendingBlock {
    batch: Batch,
    profile_count: usize,
    profiles: Mutex<Option<Vec<Profile>>>,
    encoded: OnceCell<Result<(Ulid, Bytes), String>>,
}

impl PendingBlock {
    fn new(mut batch: Batch) -> Self {
        let profiles = std::mem::take(&mut batch.profiles);
        PendingBlock {
            batch,
            profile_count: profiles.len(),
            profiles: Mutex::new(Some(profiles)),
            encoded: OnceCell::new(),
        }
    }

    /// Encodes off the runtime, the first time. Only the profiles go to the encoder: the
    /// acks stay here, so that whatever happens there (even a panic) they are answered.
    async fn encoded(&self) -> &Result<(Ulid, Bytes), String> {
        self.encoded
            .get_or_init(|| async {
                let profiles = self
                    .profiles
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
                    .unwrap_or_default();
                let tenant = self.batch.tenant.to_string();
                let id = Ulid::new();
                let encoded = tokio::task::spawn_blocking(move || {
                    let mut builder = BlockBuilder::new(tenant, 0);
                    for p in &profiles {
                        builder.add(p);
                    }
                    builder.finish(id)
                })
                .await;
                match encoded {
                    Ok(Ok(EncodedBlock { bytes, .. })) => Ok((id, Bytes::from(bytes))),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(e) => Err(format!("block encoding failed: {e}")),
                }
            })
            .await
    }
}

impl Request for PendingBlock {
    const SIGNAL: Signal = Signal::Profiles;
    fn items(&self) -> usize {
        self.profile_count
    }
    fn done(self) {
        self.batch.done();
    }
    fn fail(&self, error: &str) {
        self.batch.fail(error);
    }
}

struct Put {
    store: Arc<dyn ObjectStore>,
    id: Arc<str>,
    metrics: BlockMetrics,
}

/// The exporter's own metrics: blocks and bytes written, and failed writes (each attempt).
struct BlockMetrics {
    labels: LabelPairs,
    written_bytes: CounterFamily,
    written_blocks: CounterFamily,
    failed_writes: CounterFamily,
}

impl BlockMetrics {
    fn new(ctx: &BuildContext) -> Self {
        let t = &ctx.telemetry;
        BlockMetrics {
            labels: component("exporter", &ctx.id),
            written_bytes: t.metric("exporter_written_bytes", "Bytes written to object storage"),
            written_blocks: t.metric("exporter_written_blocks", "Block objects written"),
            failed_writes: t.metric("exporter_failed_writes", "Block write attempts that failed"),
        }
    }
}

impl Deliver<PendingBlock> for Put {
    async fn deliver(&self, pending: &PendingBlock) -> Result<Delivered, ExportError> {
        if pending.profile_count == 0 {
            return Ok(Delivered::default());
        }
        let (id, bytes) = match pending.encoded().await {
            Ok(encoded) => encoded,
            Err(e) => return Err(ExportError::Permanent(e.clone())),
        };
        let path = block_path(&pending.batch.tenant, *id);
        let span = tracing::info_span!(
            target: "flamepipe",
            "block.write",
            component = %self.id,
            block = %id,
            tenant = %pending.batch.tenant,
            profiles = pending.profile_count,
            requests = pending.batch.acks.len(),
            bytes = bytes.len(),
        );
        let result = self
            .store
            .put(&path, PutPayload::from(bytes.clone()))
            .instrument(span)
            .await;
        match result {
            Ok(_) => {
                self.metrics
                    .written_bytes
                    .get_or_create(&self.metrics.labels)
                    .inc_by(bytes.len() as u64);
                self.metrics.written_blocks.get_or_create(&self.metrics.labels).inc();
                debug!(component = %self.id, block = %id, tenant = %pending.batch.tenant,
                    profiles = pending.profile_count, bytes = bytes.len(), "block written");
                Ok(Delivered::default())
            }
            Err(e) => {
                self.metrics.failed_writes.get_or_create(&self.metrics.labels).inc();
                let message = format!("writing block {path}: {e}");
                Err(if flamepipe_core::store::layers::is_transient(&e) {
                    ExportError::retryable(message)
                } else {
                    ExportError::Permanent(message)
                })
            }
        }
    }
}

impl Exporter for BlockWriter {
    fn run(self: Box<Self>, input: mpsc::Receiver<Batch>) -> BoxFuture {
        Box::pin(async move {
            let put = Put {
                store: self.store,
                id: Arc::clone(&self.ctx.id),
                metrics: BlockMetrics::new(&self.ctx),
            };
            exporter_helper::run(&self.ctx, self.config.helper_settings(), put, input, PendingBlock::new).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use flamepipe_core::block::{BlockReader, list_blocks};
    use flamepipe_core::component::{Ack, ExporterConfig};
    use flamepipe_core::store::{StorageConfig, StoreRegistry};
    use flamepipe_core::telemetry::Telemetry;
    use flamepipe_core::{Labels, Profile, ProfileType, Sample, SymbolsBuilder};
    use tokio_util::sync::CancellationToken;

    use super::*;

    fn profile(value: i64) -> Profile {
        let mut b = SymbolsBuilder::new();
        let stack = b.stack(&[]);
        Profile {
            series: [("service_name", "svc")].into_iter().collect::<Labels>(),
            profile_type: ProfileType::parse("process_cpu:cpu:nanoseconds:cpu:nanoseconds").unwrap(),
            timestamp_ns: 5,
            duration_ns: 1,
            period: 1,
            samples: vec![Sample {
                stack,
                value,
                labels: 0,
            }],
            symbols: Arc::new(b.finish()),
        }
    }

    #[tokio::test]
    async fn writes_a_block_then_acknowledges() {
        let stores = StoreRegistry::new(
            [("t".to_string(), StorageConfig::url("memory://t"))]
                .into_iter()
                .collect(),
        );
        let ctx = BuildContext {
            id: "blocks".into(),
            telemetry: Arc::new(Telemetry::new()),
            stores: stores.clone(),
            shutdown: CancellationToken::new(),
        };
        let config = Config {
            store: "t".into(),
            ..Config::default()
        };
        let exporter = config.build(&ctx).unwrap();
        let (tx, rx) = mpsc::channel(4);
        let task = tokio::spawn(exporter.run(rx));
        let (ack, waiter) = Ack::new();
        let mut batch = Batch::new("tenant-a", vec![profile(7), profile(8)]);
        batch.acks.push(ack);
        tx.send(batch).await.unwrap();
        assert_eq!(waiter.await.unwrap(), Ok(()));

        let store = stores.open("t").unwrap();
        let blocks = list_blocks(store.as_ref(), Some("tenant-a")).await.unwrap();
        assert_eq!(blocks.len(), 1);
        let reader = BlockReader::open(store, blocks[0].path.clone()).await.unwrap();
        let profiles = reader.profiles(&reader.meta().datasets[0]).await.unwrap();
        assert_eq!(profiles.iter().map(Profile::total).sum::<i64>(), 15);
        assert!(
            ctx.telemetry
                .encode()
                .contains("flamepipe_exporter_written_blocks_total{exporter=\"blocks\"} 1")
        );
        drop(tx);
        task.await.unwrap();
    }
}
