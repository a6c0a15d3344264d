//! The HTTP side: routes, the shared intake (limits, admission, decoding off the runtime,
//! delivery and acknowledgement), tenants, and how refusals are written back.
//!
//! Each handler reads the body under `max_request_bytes`, decodes it, then hands ONE batch to
//! the pipelines. Nothing is sent before the whole request decoded, so a refused request leaves
//! no trace downstream. Every refusal is counted in telemetry under a stable reason.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use flamepipe_core::Profile;
use flamepipe_core::component::{BuildContext, PipelineSender};
use flamepipe_core::formats::pprof::Limits;
use flamepipe_core::intake::{Intake, IntakeSettings, Refusal, complete_detached};
use tokio::sync::OwnedSemaphorePermit;

use crate::config::Config;
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
    intake: Intake,
    limits: Limits,
}

/// The receiver's routes, ready to be merged into the server of its address.
pub fn router(config: &Config, ctx: &BuildContext, output: PipelineSender) -> Router {
    let shared = Arc::new(Shared {
        intake: Intake::new(
            ctx,
            output,
            IntakeSettings {
                max_request_bytes: config.max_request_bytes.as_usize(),
                max_concurrent_requests: config.max_concurrent_requests,
                ack: config.ack,
                ack_timeout: config.ack_timeout.0,
            },
        ),
        limits: Limits {
            max_decompressed_bytes: config.max_decompressed_bytes.as_usize(),
            max_samples: config.max_samples,
        },
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
    let result = match shared.intake.admit() {
        Ok(permit) => {
            ingest_request(
                Arc::clone(&shared),
                permit,
                query.as_deref().unwrap_or(""),
                &headers,
                body,
            )
            .await
        }
        Err(refusal) => {
            shared.intake.drain(body).await;
            Err(refusal)
        }
    };
    match result {
        Ok(()) => StatusCode::OK.into_response(),
        Err(refusal) => {
            shared.intake.refused(&refusal, "ingest");
            let status = StatusCode::from_u16(refusal.codes().http).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, refusal.message).into_response()
        }
    }
}

async fn ingest_request(
    shared: Arc<Shared>,
    permit: OwnedSemaphorePermit,
    query: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<(), Refusal> {
    let tenant = tenant(headers)?;
    // The query is checked before the body is read: a bad name costs no body transfer.
    let params = IngestParams::parse(query, now_ns())?;
    let bytes = shared.intake.read_body(body, headers).await?;
    let body_len = bytes.len();
    let content_type = content_type(headers.get(CONTENT_TYPE)).to_string();
    complete_detached(permit, async move {
        let body = IngestBody::from_request(&content_type, bytes).await?;
        let limits = shared.limits;
        let profile = body.profile().clone();
        let profiles = shared
            .intake
            .decode(&profile, move || {
                ingest::decode(&params, body, &limits).map_err(Refusal::from)
            })
            .await?;
        shared.intake.deliver(tenant, profiles, body_len).await
    })
    .await
}

async fn push_handler(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    let encoding = PushEncoding::from_content_type(content_type(headers.get(CONTENT_TYPE)));
    let result = match shared.intake.admit() {
        Ok(permit) => push_request(Arc::clone(&shared), permit, encoding, &headers, body).await,
        Err(refusal) => {
            shared.intake.drain(body).await;
            Err(refusal)
        }
    };
    match result {
        Ok(encoding) => push::ok_response(encoding),
        Err(refusal) => {
            shared.intake.refused(&refusal, "push");
            push::error_response(&refusal)
        }
    }
}

async fn push_request(
    shared: Arc<Shared>,
    permit: OwnedSemaphorePermit,
    encoding: Result<PushEncoding>,
    headers: &HeaderMap,
    body: Body,
) -> Result<PushEncoding, Refusal> {
    let encoding = encoding?;
    let tenant = tenant(headers)?;
    let compressed = push_compressed(
        headers
            .get(CONTENT_ENCODING)
            .map(|v| v.to_str().unwrap_or("<not ascii>")),
    )?;
    let bytes = shared.intake.read_body(body, headers).await?;
    let body_len = bytes.len();
    complete_detached(permit, async move {
        let limits = shared.limits;
        let inline_check = bytes.clone();
        let profiles = shared
            .intake
            .decode(&inline_check, move || {
                push::decode(encoding, compressed, bytes, &limits).map_err(Refusal::from)
            })
            .await?;
        shared.intake.deliver(tenant, profiles, body_len).await
    })
    .await?;
    Ok(encoding)
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
        Some(v) => Err(Error::ContentEncoding(v.to_string())),
    }
}

fn tenant(headers: &HeaderMap) -> Result<Arc<str>> {
    flamepipe_core::tenant::tenant(headers).map_err(Error::Tenant)
}

fn content_type(value: Option<&HeaderValue>) -> &str {
    value.and_then(|v| v.to_str().ok()).unwrap_or("")
}

pub(crate) use flamepipe_core::time::now_ns;
