//! A store that fails on purpose, for tests of what a failing store does to the parts above
//! it: errors for chosen operations and paths, latency, and a process that stops between
//! two calls (every call after the `n`th fails, as if the process had died there). Deletions
//! obey only the stop.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

/// The kinds of store request a fault may target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Get,
    Put,
    List,
    Copy,
}

/// What happens to a request a fault matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// A generic error, which the retry layer takes for transient.
    Transient,
    /// Permission denied: an answer, not retried.
    Permanent,
    /// The request succeeds after `delay`.
    Slow(Duration),
}

/// A rule: requests of `operation` (any when `None`) whose path contains `path` fail, the next
/// `times` of them.
#[derive(Clone, Debug)]
pub struct Fault {
    pub operation: Option<Operation>,
    pub path: String,
    pub times: usize,
    pub failure: Failure,
}

pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    faults: Mutex<Vec<Fault>>,
    calls: AtomicUsize,
    /// Calls allowed before the store stops answering; `usize::MAX` for never.
    stop_after: AtomicUsize,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Arc<Self> {
        Arc::new(FaultyStore {
            inner,
            faults: Mutex::new(Vec::new()),
            calls: AtomicUsize::new(0),
            stop_after: AtomicUsize::new(usize::MAX),
        })
    }

    pub fn inject(&self, fault: Fault) {
        self.faults.lock().unwrap_or_else(|e| e.into_inner()).push(fault);
    }

    /// After `calls` more calls, every call fails: a process stopped between two requests.
    pub fn stop_after(&self, calls: usize) {
        let done = self.calls.load(Ordering::SeqCst);
        self.stop_after.store(done.saturating_add(calls), Ordering::SeqCst);
    }

    /// Answers again after [`FaultyStore::stop_after`].
    pub fn resume(&self) {
        self.stop_after.store(usize::MAX, Ordering::SeqCst);
    }

    /// Calls made so far.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    async fn before(&self, operation: Operation, path: Option<&Path>) -> Result<()> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        if call >= self.stop_after.load(Ordering::SeqCst) {
            return Err(error("the process stopped"));
        }
        let failure = {
            let mut faults = self.faults.lock().unwrap_or_else(|e| e.into_inner());
            let path = path.map(|p| p.to_string()).unwrap_or_default();
            let hit = faults
                .iter_mut()
                .find(|f| f.times > 0 && f.operation.is_none_or(|o| o == operation) && path.contains(&f.path));
            hit.map(|f| {
                f.times -= 1;
                f.failure.clone()
            })
        };
        match failure {
            None => Ok(()),
            Some(Failure::Transient) => Err(error("injected transient failure")),
            Some(Failure::Permanent) => Err(object_store::Error::PermissionDenied {
                path: path.map(|p| p.to_string()).unwrap_or_default(),
                source: "injected permanent failure".into(),
            }),
            Some(Failure::Slow(delay)) => {
                tokio::time::sleep(delay).await;
                Ok(())
            }
        }
    }
}

fn error(message: &'static str) -> object_store::Error {
    object_store::Error::Generic {
        store: "faulty",
        source: message.into(),
    }
}

impl fmt::Debug for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.before(Operation::Put, Some(location)).await?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.before(Operation::Put, Some(location)).await?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.before(Operation::Get, Some(location)).await?;
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.before(Operation::Get, Some(location)).await?;
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        // Deletions obey `stop_after` only: the whole stream counts as one call.
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        if call >= self.stop_after.load(Ordering::SeqCst) {
            return futures::stream::once(async { Err(error("the process stopped")) }).boxed();
        }
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        if call >= self.stop_after.load(Ordering::SeqCst) {
            return futures::stream::once(async { Err(error("the process stopped")) }).boxed();
        }
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.before(Operation::List, prefix).await?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.before(Operation::Copy, Some(to)).await?;
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.before(Operation::Copy, Some(to)).await?;
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;

    use super::*;
    use crate::store::layers::{Resilient, RetryPolicy};

    #[tokio::test]
    async fn faults_hit_their_requests_and_the_retry_layer_rides_out_transient_ones() {
        let faulty = FaultyStore::new(Arc::new(InMemory::new()));
        let path = Path::from("blocks/t/L0/x.block");
        faulty.inject(Fault {
            operation: Some(Operation::Put),
            path: "blocks/".into(),
            times: 2,
            failure: Failure::Transient,
        });
        assert!(faulty.put(&path, PutPayload::from_static(b"x")).await.is_err());
        let resilient = Resilient::new(
            Arc::clone(&faulty) as Arc<dyn ObjectStore>,
            RetryPolicy {
                backoff: Duration::from_millis(1),
                ..RetryPolicy::default()
            },
            "test",
            None,
        );
        // One injected failure left: the retry layer gets past it.
        resilient.put(&path, PutPayload::from_static(b"x")).await.unwrap();
        faulty.inject(Fault {
            operation: None,
            path: String::new(),
            times: 1,
            failure: Failure::Permanent,
        });
        // An answer is not retried.
        assert!(matches!(
            resilient.get(&path).await,
            Err(object_store::Error::PermissionDenied { .. })
        ));
        assert_eq!(resilient.get(&path).await.unwrap().bytes().await.unwrap(), "x");
        faulty.stop_after(1);
        assert!(faulty.get(&path).await.is_ok());
        assert!(faulty.get(&path).await.is_err());
        faulty.resume();
        assert!(faulty.get(&path).await.is_ok());
    }

    #[tokio::test]
    async fn a_request_that_hangs_times_out_and_is_retried() {
        let faulty = FaultyStore::new(Arc::new(InMemory::new()));
        let path = Path::from("x");
        faulty.put(&path, PutPayload::from_static(b"x")).await.unwrap();
        faulty.inject(Fault {
            operation: Some(Operation::Get),
            path: String::new(),
            times: 1,
            failure: Failure::Slow(Duration::from_secs(3600)),
        });
        let resilient = Resilient::new(
            Arc::clone(&faulty) as Arc<dyn ObjectStore>,
            RetryPolicy {
                timeout: Duration::from_millis(50),
                max_retries: 1,
                backoff: Duration::from_millis(1),
            },
            "test",
            None,
        );
        assert_eq!(resilient.get(&path).await.unwrap().bytes().await.unwrap(), "x");
    }
}
