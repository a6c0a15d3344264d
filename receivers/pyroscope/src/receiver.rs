//! The HTTP side: routes, body limits, tenants, hand-off to the pipelines and acknowledgement.
//!
//! Each handler reads the body under `max_request_bytes`, decodes it on the blocking pool (the
//! decode is CPU-bound and must not stall the runtime), then hands ONE batch to the pipelines.
//! Nothing is sent before the whole request decoded, so a refused request leaves no trace
//! downstream. Every refusal is counted in telemetry under a stable reason.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use flamepipe_core::Profile;
use flamepipe_core::component::{BuildContext, DeliverError, PipelineSender, deliver};
use flamepipe_core::formats::pprof::Limits;
use flamepipe_core::telemetry::Telemetry;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tracing::{debug, warn};

use crate::config::{AckMode, Config};
use crate::error::{Error, Result};
use crate::ingest::{self, IngestBody, IngestParams};
use crate::push::{self, PushEncoding};

/// Paths of the legacy ingest API; Pyroscope serves it under both.
pub const INGEST_PATHS: [&str; 2] = ["/ingest", "/pyroscope/ingest"];
/// Path of the Connect Push API.
pub const PUSH_PATH: &str = "/push.v1.PusherService/Push";

pub(crate) fn paths() -> Vec<String> {
    INGEST_PATHS.iter().chain([&PUSH_PATH]).map(|p| p.to_string()).collect()
}

/// What every handler shares.
pub(crate) struct Shared {
    id: Arc<str>,
    telemetry: Arc<Telemetry>,
    output: PipelineSender,
    limits: Limits,
    max_request_bytes: usize,
    ack: AckMode,
    ack_timeout: std::time::Duration,
    /// One permit per request being handled.
    in_flight: Arc<tokio::sync::Semaphore>,
}

/// The receiver's routes, ready to be merged into the server of its address.
pub fn router(config: &Config, ctx: &BuildContext, output: PipelineSender) -> Router {
    let shared = Arc::new(Shared {
        id: Arc::clone(&ctx.id),
        telemetry: Arc::clone(&ctx.telemetry),
        output,
        limits: Limits {
            max_decompressed_bytes: config.max_decompressed_bytes.as_usize(),
            max_samples: config.max_samples,
        },
        max_request_bytes: config.max_request_bytes.as_usize(),
        ack: config.ack,
        ack_timeout: config.ack_timeout.0,
        in_flight: Arc::new(tokio::sync::Semaphore::new(config.max_concurrent_requests)),
    });
    let mut router = Router::new();
    for path in INGEST_PATHS {
        router = router.route(path, post(ingest_handler));
    }
    router.route(PUSH_PATH, post(push_handler)).with_state(shared)
}

async fn ingest_handler(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = match shared.admit() {
        Ok(_permit) => ingest_request(Arc::clone(&shared), query.as_deref().unwrap_or(""), &headers, body).await,
        Err(e) => Err(shared.refuse_unread(e, body).await),
    };
    match result {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => {
            shared.refused(&e, "ingest");
            (e.status(), e.to_string()).into_response()
        }
    }
}

async fn ingest_request(shared: Arc<Shared>, query: &str, headers: &HeaderMap, body: Body) -> Result<()> {
    let tenant = tenant(headers)?;
    // The query is checked before the body is read: a bad name costs no body transfer.
    let params = IngestParams::parse(query, now_ns())?;
    let bytes = read_body(body, headers, shared.max_request_bytes).await?;
    let body_len = bytes.len();
    let content_type = content_type(headers.get(CONTENT_TYPE)).to_string();
    let limits = shared.limits;
    complete_detached(shared, tenant, body_len, async move {
        let body = IngestBody::from_request(&content_type, bytes).await?;
        decode_off_runtime(body_len, move || ingest::decode(&params, body, &limits)).await
    })
    .await
}

/// What the receiver makes of one `/ingest` request (its query string, Content-Type and
/// body), without the HTTP around it: the same steps the handler takes, on this thread.
pub async fn decode_ingest(
    query: &str,
    content_type: &str,
    body: Bytes,
    limits: &Limits,
    now_ns: i64,
) -> Result<Vec<Profile>> {
    let params = IngestParams::parse(query, now_ns)?;
    let body = IngestBody::from_request(content_type, body).await?;
    ingest::decode(&params, body, limits)
}

/// What the receiver makes of one Push request (its Content-Type, Content-Encoding and body),
/// without the HTTP around it: the same steps the handler takes, on this thread.
pub fn decode_push(
    content_type: &str,
    content_encoding: Option<&str>,
    body: Bytes,
    limits: &Limits,
) -> Result<Vec<Profile>> {
    let encoding = PushEncoding::from_content_type(content_type)?;
    push::decode(encoding, push_compressed(content_encoding)?, body, limits)
}

/// Whether a Push body is gzipped, from its Content-Encoding (absent, `identity` or `gzip`).
fn push_compressed(content_encoding: Option<&str>) -> Result<bool> {
    match content_encoding {
        None => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("identity") => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("gzip") => Ok(true),
        Some(v) => Err(Error::bad_request(format!(
            "unsupported content encoding {v:?}: expected gzip or identity"
        ))),
    }
}

async fn push_handler(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    let encoding = PushEncoding::from_content_type(content_type(headers.get(CONTENT_TYPE)));
    let result = match shared.admit() {
        Ok(_permit) => push_request(Arc::clone(&shared), encoding, &headers, body).await,
        Err(e) => Err(shared.refuse_unread(e, body).await),
    };
    match result {
        Ok(encoding) => push::ok_response(encoding),
        Err(e) => {
            shared.refused(&e, "push");
            push::error_response(&e)
        }
    }
}

async fn push_request(
    shared: Arc<Shared>,
    encoding: Result<PushEncoding>,
    headers: &HeaderMap,
    body: Body,
) -> Result<PushEncoding> {
    let encoding = encoding?;
    let tenant = tenant(headers)?;
    let compressed = push_compressed(
        headers
            .get(CONTENT_ENCODING)
            .map(|v| v.to_str().unwrap_or("<not ascii>")),
    )?;
    let bytes = read_body(body, headers, shared.max_request_bytes).await?;
    let body_len = bytes.len();
    let limits = shared.limits;
    complete_detached(shared, tenant, body_len, async move {
        decode_off_runtime(body_len, move || push::decode(encoding, compressed, bytes, &limits)).await
    })
    .await?;
    Ok(encoding)
}

/// Decodes and delivers a request whose body has arrived, in a task of its own: the request
/// is seen through even if the client hangs up meanwhile. SDKs upload at exit without waiting
/// for the answer (pyroscope-io 0.8 does), and their last profile must not depend on whether
/// the process died before or after the decode finished.
async fn complete_detached(
    shared: Arc<Shared>,
    tenant: Arc<str>,
    body_len: usize,
    decode: impl Future<Output = Result<Vec<Profile>>> + Send + 'static,
) -> Result<()> {
    tokio::spawn(async move {
        let profiles = decode.await?;
        shared.deliver(tenant, profiles, body_len).await
    })
    .await
    .map_err(|e| Error::Internal(format!("request task failed: {e}")))?
}

impl Shared {
    /// Reads and discards the body of a request refused before it was read (up to
    /// `max_request_bytes`, nothing buffered), so that the client, still sending, reads our
    /// answer rather than a reset connection.
    async fn refuse_unread(&self, error: Error, body: Body) -> Error {
        let mut body = Limited::new(body, self.max_request_bytes);
        while let Some(Ok(_)) = body.frame().await {}
        error
    }

    /// A slot for one more request, or 429 when `max_concurrent_requests` are being handled.
    fn admit(&self) -> Result<tokio::sync::OwnedSemaphorePermit> {
        Arc::clone(&self.in_flight).try_acquire_owned().map_err(|_| Error::Busy)
    }

    /// Hands the request's profiles on as one batch and waits for the acknowledgement the
    /// config asks for.
    async fn deliver(&self, tenant: Arc<str>, profiles: Vec<Profile>, body_len: usize) -> Result<()> {
        let count = profiles.len() as u64;
        deliver(&self.output, tenant, profiles, self.ack, self.ack_timeout)
            .await
            .map_err(|e| match e {
                DeliverError::Invalid(e) => Error::InvalidProfile(e),
                DeliverError::PipelineFull(m) => Error::PipelineFull(m),
                DeliverError::ShuttingDown(m) => Error::ShuttingDown(m),
                DeliverError::Timeout => Error::Timeout,
                DeliverError::WriteFailed(m) => Error::WriteFailed(m),
            })?;
        self.telemetry.accepted(&self.id, count, body_len as u64);
        Ok(())
    }

    fn refused(&self, error: &Error, api: &'static str) {
        let reason = error.reason();
        self.telemetry.refused(&self.id, reason);
        if error.is_server_side() {
            warn!(component = %self.id, api, reason, error = %error, "request refused");
        } else {
            debug!(component = %self.id, api, reason, error = %error, "request refused");
        }
    }
}

fn tenant(headers: &HeaderMap) -> Result<Arc<str>> {
    flamepipe_core::tenant::tenant(headers).map_err(Error::Tenant)
}

fn content_type(value: Option<&HeaderValue>) -> &str {
    value.and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// Reads the whole body, refusing (without reading on) as soon as it passes `limit`.
async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(Error::TooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(Error::TooLarge { limit }),
        Err(e) => Err(Error::Read(e.to_string())),
    }
}

/// Bodies up to this size (as sent) are decoded on the runtime thread: well under a
/// millisecond of work, less than the hand-off to the blocking pool and back costs.
const INLINE_DECODE_MAX_BYTES: usize = 32 << 10;

/// Runs CPU-bound decoding: inline for small bodies, on the blocking pool for larger ones.
async fn decode_off_runtime<T: Send + 'static>(
    body_len: usize,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    if body_len <= INLINE_DECODE_MAX_BYTES {
        return f();
    }
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("decoder task failed: {e}")))?
}

pub(crate) use flamepipe_core::time::now_ns;
