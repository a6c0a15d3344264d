//! What every store request passes through, in the manner of Quickwit's storage layers: a
//! [`Resilient`] layer (a timeout per attempt, retries with backoff for failures that may
//! pass, never for answers that will not change) under an [`Instrumented`] layer (requests by
//! operation and outcome, retries, bytes).
//!
//! Which failures are transient: timeouts and the store's generic errors (I/O, connection,
//! server errors the client did not already retry). Which are answers: not found, already
//! exists, precondition failed, not modified, permission and configuration errors. A put that
//! creates only if absent is retried like the others; if an earlier attempt did land, the
//! retry answers "already exists", and the caller (the manifest) checks whose version it is.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
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

use crate::telemetry::Telemetry;

/// How [`Resilient`] retries and times out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Per attempt.
    pub timeout: Duration,
    /// Attempts after the first.
    pub max_retries: u32,
    /// Wait before the first retry; doubles each time, with jitter.
    pub backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            timeout: Duration::from_secs(30),
            max_retries: 3,
            backoff: Duration::from_millis(100),
        }
    }
}

/// Whether a failure is worth another attempt.
pub fn is_transient(e: &object_store::Error) -> bool {
    use object_store::Error as E;
    !matches!(
        e,
        E::NotFound { .. }
            | E::AlreadyExists { .. }
            | E::Precondition { .. }
            | E::NotModified { .. }
            | E::InvalidPath { .. }
            | E::NotSupported { .. }
            | E::NotImplemented { .. }
            | E::PermissionDenied { .. }
            | E::Unauthenticated { .. }
            | E::UnknownConfigurationKey { .. }
            | E::JoinError { .. }
    )
}

/// The outcome label of a request's result.
fn outcome<T>(result: &Result<T>) -> &'static str {
    use object_store::Error as E;
    match result {
        Ok(_) => "ok",
        Err(E::NotFound { .. }) => "not_found",
        Err(E::AlreadyExists { .. }) => "already_exists",
        Err(E::Precondition { .. }) => "precondition",
        Err(E::Generic { store: TIMEOUT, .. }) => "timeout",
        Err(_) => "error",
    }
}

/// The `store` field of the error a timed-out attempt gives.
const TIMEOUT: &str = "timeout";

/// Retries and timeouts around a store.
#[derive(Debug)]
pub struct Resilient {
    inner: Arc<dyn ObjectStore>,
    policy: RetryPolicy,
    name: String,
    telemetry: Option<Arc<Telemetry>>,
}

impl Resilient {
    pub fn new(
        inner: Arc<dyn ObjectStore>,
        policy: RetryPolicy,
        name: &str,
        telemetry: Option<Arc<Telemetry>>,
    ) -> Self {
        Resilient {
            inner,
            policy,
            name: name.to_string(),
            telemetry,
        }
    }

    /// Runs `attempt` until it succeeds, fails for good, or runs out of retries.
    async fn run<T, F, Fut>(&self, operation: &str, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut backoff = self.policy.backoff;
        let mut retries = 0;
        loop {
            let result = match tokio::time::timeout(self.policy.timeout, attempt()).await {
                Ok(result) => result,
                Err(_) => Err(object_store::Error::Generic {
                    store: TIMEOUT,
                    source: format!("{operation} took longer than {:?}", self.policy.timeout).into(),
                }),
            };
            match result {
                Err(e) if is_transient(&e) && retries < self.policy.max_retries => {
                    retries += 1;
                    if let Some(t) = &self.telemetry {
                        t.store_retry(&self.name, operation);
                    }
                    tracing::debug!(store = %self.name, operation, retries, error = %e, "store request failed, retrying");
                    tokio::time::sleep(jittered(backoff)).await;
                    backoff = backoff.saturating_mul(2);
                }
                other => return other,
            }
        }
    }
}

/// `d` scaled by a factor in [0.5, 1.0), so that clients retrying together spread out.
fn jittered(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    d.mul_f64(0.5 + f64::from(nanos % 1000) / 2000.0)
}

impl fmt::Display for Resilient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Resilient({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for Resilient {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.run("put", || self.inner.put_opts(location, payload.clone(), opts.clone()))
            .await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        // Parts are retried by the client; a multipart upload is not restarted here.
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.run("get", || self.inner.get_opts(location, options.clone())).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.run("get", || self.inner.get_ranges(location, ranges)).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.run("list", || self.inner.list_with_delimiter(prefix)).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.run("copy", || self.inner.copy_opts(from, to, options.clone()))
            .await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.run("copy", || self.inner.rename_opts(from, to, options.clone()))
            .await
    }
}

/// Metrics around a store: every request by operation and outcome, and bytes.
#[derive(Debug)]
pub struct Instrumented {
    inner: Arc<dyn ObjectStore>,
    name: String,
    telemetry: Arc<Telemetry>,
}

impl Instrumented {
    pub fn new(inner: Arc<dyn ObjectStore>, name: &str, telemetry: Arc<Telemetry>) -> Self {
        Instrumented {
            inner,
            name: name.to_string(),
            telemetry,
        }
    }

    fn count<T>(&self, operation: &str, result: &Result<T>) {
        self.telemetry.store_request(&self.name, operation, outcome(result));
    }
}

impl fmt::Display for Instrumented {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Instrumented({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for Instrumented {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        let bytes = payload.content_length() as u64;
        let result = self.inner.put_opts(location, payload, opts).await;
        self.count("put", &result);
        if result.is_ok() {
            self.telemetry.store_bytes(&self.name, "written", bytes);
        }
        result
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        let result = self.inner.put_multipart_opts(location, opts).await;
        self.count("put", &result);
        result
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let head = options.head;
        let result = self.inner.get_opts(location, options).await;
        self.count(if head { "head" } else { "get" }, &result);
        if let Ok(r) = &result
            && !head
        {
            self.telemetry
                .store_bytes(&self.name, "read", r.range.end.saturating_sub(r.range.start));
        }
        result
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let result = self.inner.get_ranges(location, ranges).await;
        self.count("get", &result);
        if let Ok(parts) = &result {
            let bytes: usize = parts.iter().map(Bytes::len).sum();
            self.telemetry.store_bytes(&self.name, "read", bytes as u64);
        }
        result
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        let (name, telemetry) = (self.name.clone(), Arc::clone(&self.telemetry));
        self.inner
            .delete_stream(locations)
            .inspect(move |r| telemetry.store_request(&name, "delete", outcome(r)))
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.telemetry.store_request(&self.name, "list", "ok");
        self.inner.list(prefix)
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        self.telemetry.store_request(&self.name, "list", "ok");
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let result = self.inner.list_with_delimiter(prefix).await;
        self.count("list", &result);
        result
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        let result = self.inner.copy_opts(from, to, options).await;
        self.count("copy", &result);
        result
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        let result = self.inner.rename_opts(from, to, options).await;
        self.count("copy", &result);
        result
    }
}

#[cfg(test)]
mod tests {
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;

    use super::*;

    #[tokio::test]
    async fn every_request_is_counted_by_operation_and_outcome() {
        let telemetry = Arc::new(Telemetry::new());
        let store = Instrumented::new(Arc::new(InMemory::new()), "local", Arc::clone(&telemetry));
        let path = Path::from("a");
        store.put(&path, PutPayload::from_static(b"12345")).await.unwrap();
        store.get(&path).await.unwrap().bytes().await.unwrap();
        assert!(store.get(&Path::from("b")).await.is_err());
        let text = telemetry.encode();
        for line in [
            r#"flamepipe_store_requests_total{store="local",operation="put",outcome="ok"} 1"#,
            r#"flamepipe_store_requests_total{store="local",operation="get",outcome="ok"} 1"#,
            r#"flamepipe_store_requests_total{store="local",operation="get",outcome="not_found"} 1"#,
            r#"flamepipe_store_bytes_total{store="local",direction="written"} 5"#,
            r#"flamepipe_store_bytes_total{store="local",direction="read"} 5"#,
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }
}
