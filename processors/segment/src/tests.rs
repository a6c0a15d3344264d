use std::sync::Arc;
use std::time::Duration as StdDuration;

use flamepipe_core::component::{Ack, Batch, BuildContext, Output, ProcessorConfig};
use flamepipe_core::config::{ByteSize, Duration};
use flamepipe_core::store::StoreRegistry;
use flamepipe_core::telemetry::Telemetry;
use flamepipe_core::{Labels, Profile, ProfileType, Sample};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::Config;

fn ctx() -> BuildContext {
    BuildContext {
        id: "segment".into(),
        telemetry: Arc::new(Telemetry::new()),
        stores: StoreRegistry::default(),
        shutdown: CancellationToken::new(),
    }
}

fn profile(samples: usize) -> Profile {
    let mut b = flamepipe_core::SymbolsBuilder::new();
    let stack = b.stack(&[]);
    Profile {
        series: Labels::new(),
        profile_type: ProfileType::parse("process_cpu:cpu:nanoseconds:cpu:nanoseconds").unwrap(),
        timestamp_ns: 1,
        duration_ns: 0,
        period: 0,
        samples: vec![
            Sample {
                stack,
                value: 1,
                labels: 0
            };
            samples
        ],
        symbols: Arc::new(b.finish()),
    }
}

fn batch(tenant: &str, samples: usize) -> (Batch, flamepipe_core::component::AckWaiter) {
    let (ack, waiter) = Ack::new();
    let mut b = Batch::new(tenant, vec![profile(samples)]);
    b.acks.push(ack);
    (b, waiter)
}

fn start(config: Config) -> (mpsc::Sender<Batch>, mpsc::Receiver<Batch>, tokio::task::JoinHandle<()>) {
    let (in_tx, in_rx) = mpsc::channel(16);
    let (out_tx, out_rx) = mpsc::channel(16);
    let processor = Box::new(config).build(&ctx()).unwrap();
    let task = tokio::spawn(processor.run(in_rx, Output::new(vec![out_tx])));
    (in_tx, out_rx, task)
}

#[tokio::test(start_paused = true)]
async fn gathers_per_tenant_until_the_interval_ends() {
    let (tx, mut out, _task) = start(Config::default());
    let (a1, _w1) = batch("a", 1);
    let (a2, _w2) = batch("a", 1);
    let (b1, _w3) = batch("b", 1);
    tx.send(a1).await.unwrap();
    tx.send(b1).await.unwrap();
    tx.send(a2).await.unwrap();
    tokio::time::sleep(StdDuration::from_millis(500)).await;
    assert!(out.try_recv().is_err(), "flushed before the interval ended");
    tokio::time::sleep(StdDuration::from_millis(600)).await;
    let mut got = [out.recv().await.unwrap(), out.recv().await.unwrap()];
    got.sort_by(|x, y| x.tenant.cmp(&y.tenant));
    assert_eq!(&*got[0].tenant, "a");
    assert_eq!(got[0].profiles.len(), 2);
    assert_eq!(got[1].profiles.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn flushes_early_at_max_bytes_and_on_close() {
    let config = Config {
        flush_interval: Duration::from_secs(3600),
        max_bytes: ByteSize(10_000),
    };
    let (tx, mut out, task) = start(config);
    let (big, _w) = batch("a", 1000);
    tx.send(big).await.unwrap();
    let first = out.recv().await.unwrap();
    assert_eq!(first.profiles[0].samples.len(), 1000);
    let (small, _w2) = batch("a", 1);
    tx.send(small).await.unwrap();
    drop(tx);
    task.await.unwrap();
    assert_eq!(out.recv().await.unwrap().profiles.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn acks_wait_for_the_segment() {
    let (tx, mut out, _task) = start(Config::default());
    let (a, mut waiter) = batch("a", 1);
    tx.send(a).await.unwrap();
    let segment = out.recv().await.unwrap();
    assert!(waiter.try_recv().is_err(), "acknowledged before the exporter finished");
    segment.done();
    assert_eq!(waiter.await.unwrap(), Ok(()));
}
