//! The writer task: encode, put with retries, acknowledge.

use std::sync::Arc;

use flamepipe_core::block::{BlockBuilder, EncodedBlock, block_path};
use flamepipe_core::component::{Batch, BoxFuture, BuildContext, Exporter};
use flamepipe_core::telemetry::Telemetry;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tracing::{debug, warn};
use ulid::Ulid;

use crate::config::Config;

pub struct BlockWriter {
    config: Config,
    store: Arc<dyn ObjectStore>,
    id: Arc<str>,
    telemetry: Arc<Telemetry>,
}

impl BlockWriter {
    pub fn new(config: Config, store: Arc<dyn ObjectStore>, ctx: &BuildContext) -> Self {
        BlockWriter {
            config,
            store,
            id: Arc::clone(&ctx.id),
            telemetry: Arc::clone(&ctx.telemetry),
        }
    }

    async fn run_loop(self, mut input: mpsc::Receiver<Batch>) {
        let this = Arc::new(self);
        let slots = Arc::new(Semaphore::new(this.config.max_concurrent_writes));
        let mut writes = JoinSet::new();
        while let Some(batch) = input.recv().await {
            let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                break;
            };
            let this = Arc::clone(&this);
            writes.spawn(async move {
                this.write(batch).await;
                drop(permit);
            });
            while writes.try_join_next().is_some() {}
        }
        while writes.join_next().await.is_some() {}
        debug!(component = %this.id, "blocks exporter drained");
    }

    async fn write(&self, mut batch: Batch) {
        if batch.profiles.is_empty() {
            return batch.done();
        }
        // Only the profiles go to the encoder: the acks stay here, so that whatever happens
        // there (even a panic) they are answered.
        let (tenant, profiles) = (batch.tenant.to_string(), std::mem::take(&mut batch.profiles));
        let id = Ulid::new();
        let encoded = tokio::task::spawn_blocking(move || {
            let mut builder = BlockBuilder::new(tenant, 0);
            for p in &profiles {
                builder.add(p);
            }
            builder.finish(id)
        })
        .await;
        let block = match encoded {
            Ok(Ok(block)) => block,
            Ok(Err(e)) => return self.give_up(&batch, &e.to_string()),
            Err(e) => return self.give_up(&batch, &format!("block encoding failed: {e}")),
        };
        let EncodedBlock { meta, bytes } = block;
        let size = bytes.len();
        match self
            .put_with_retries(
                &block_path(&batch.tenant, id),
                PutPayload::from(bytes::Bytes::from(bytes)),
            )
            .await
        {
            Ok(()) => {
                self.telemetry.block_written(&self.id, size as u64);
                debug!(component = %self.id, block = %meta.id, tenant = %meta.tenant,
                    profiles = meta.profile_count, bytes = size, "block written");
                batch.done();
            }
            Err(e) => self.give_up(&batch, &e),
        }
    }

    async fn put_with_retries(&self, path: &Path, payload: PutPayload) -> Result<(), String> {
        let mut backoff = self.config.retry_backoff.0;
        let mut attempt = 0;
        loop {
            match self.store.put(path, payload.clone()).await {
                Ok(_) => return Ok(()),
                Err(e) if attempt < self.config.max_retries => {
                    attempt += 1;
                    warn!(component = %self.id, block = %path, attempt, error = %e, "block write failed, retrying");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
                Err(e) => return Err(format!("writing block {path}: {e}")),
            }
        }
    }

    fn give_up(&self, batch: &Batch, error: &str) {
        self.telemetry.write_failed(&self.id);
        warn!(component = %self.id, tenant = %batch.tenant, error, "block not written; failing its requests");
        batch.fail(error);
    }
}

impl Exporter for BlockWriter {
    fn run(self: Box<Self>, input: mpsc::Receiver<Batch>) -> BoxFuture {
        Box::pin(self.run_loop(input))
    }
}

#[cfg(test)]
mod tests {
    use flamepipe_core::block::{BlockReader, list_blocks};
    use flamepipe_core::component::{Ack, ExporterConfig};
    use flamepipe_core::store::{StorageConfig, StoreRegistry};
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
        let exporter = Box::new(config).build(&ctx).unwrap();
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
