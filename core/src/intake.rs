//! The receiving end every receiver shares, between its transport and its pipelines: admit a
//! request or refuse it, read its body within limits, decode it off the async runtime, hand
//! its profiles on and wait for the acknowledgement, and count and log every refusal.
//!
//! A receiver owns its protocol (routes, message formats, how an error is written back); the
//! steps and the meaning of a failure are here, so the receivers cannot drift apart. Every
//! failure is a [`Refusal`] of one [`Kind`], and [`Kind`] is the one table from a kind of
//! failure to its HTTP status, gRPC code, Connect code and default metrics reason.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::HeaderMap;
use axum::http::header::CONTENT_LENGTH;
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{Instrument, debug, warn};

use crate::component::{AckMode, BuildContext, DeliverError, PipelineSender, deliver};
use crate::model::Profile;
use crate::telemetry::Telemetry;

/// A kind of failure. Each row of [`Kind::codes`] says how every protocol reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The request is wrong (bad encoding, profile, parameters, tenant): retrying cannot help.
    Invalid,
    /// The content type or encoding is not one this endpoint speaks.
    Unsupported,
    /// The body, or what it inflates to, is over a limit.
    TooLarge,
    /// Too many requests are being handled at once.
    Busy,
    /// A pipeline's queue is full.
    PipelineFull,
    /// flamepipe is stopping.
    ShuttingDown,
    /// The durable write was not confirmed within `ack_timeout`.
    AckTimeout,
    /// The durable write failed.
    WriteFailed,
    /// A bug: a decoder or a task failed.
    Internal,
}

/// How one kind of failure is reported: HTTP status, gRPC code, Connect code, metrics reason.
pub struct Codes {
    pub http: u16,
    /// The gRPC status code number (`INVALID_ARGUMENT` is 3).
    pub grpc: i32,
    pub connect: &'static str,
    pub reason: &'static str,
}

impl Kind {
    /// The table. Too-large and overloaded requests are RESOURCE_EXHAUSTED, which senders
    /// retry later (never OUT_OF_RANGE, which OTLP senders retry at once); failures of
    /// flamepipe's own writes are UNAVAILABLE / 503, which every sender retries.
    pub const fn codes(self) -> Codes {
        let (http, grpc, connect, reason) = match self {
            Kind::Invalid => (400, 3, "invalid_argument", "bad_request"),
            Kind::Unsupported => (415, 12, "invalid_argument", "unsupported"),
            Kind::TooLarge => (413, 8, "resource_exhausted", "too_large"),
            Kind::Busy => (429, 8, "resource_exhausted", "too_many_requests"),
            Kind::PipelineFull => (429, 8, "resource_exhausted", "pipeline_full"),
            Kind::ShuttingDown => (503, 14, "unavailable", "shutting_down"),
            Kind::AckTimeout => (503, 14, "unavailable", "ack_timeout"),
            Kind::WriteFailed => (503, 14, "unavailable", "write_failed"),
            Kind::Internal => (500, 13, "internal", "internal"),
        };
        Codes {
            http,
            grpc,
            connect,
            reason,
        }
    }

    /// Trouble on flamepipe's side (worth a warning); the rest is the sender's doing.
    pub fn is_server_side(self) -> bool {
        !matches!(self, Kind::Invalid | Kind::Unsupported | Kind::TooLarge)
    }
}

/// A refused request: its kind, the metrics reason (the kind's own or a finer one such as
/// `bad_gzip`), and the message the sender reads.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub kind: Kind,
    pub reason: &'static str,
    pub message: String,
}

impl Refusal {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Refusal {
            kind,
            reason: kind.codes().reason,
            message: message.into(),
        }
    }

    /// A refusal of kind [`Kind::Invalid`] with a finer reason.
    pub fn invalid(reason: &'static str, message: impl Into<String>) -> Self {
        Refusal {
            kind: Kind::Invalid,
            reason,
            message: message.into(),
        }
    }

    pub fn codes(&self) -> Codes {
        self.kind.codes()
    }
}

impl From<DeliverError> for Refusal {
    fn from(e: DeliverError) -> Self {
        let kind = match &e {
            DeliverError::Invalid(_) => return Refusal::invalid("invalid_profile", e.to_string()),
            DeliverError::PipelineFull(_) => Kind::PipelineFull,
            DeliverError::ShuttingDown(_) => Kind::ShuttingDown,
            DeliverError::Timeout => Kind::AckTimeout,
            DeliverError::WriteFailed(_) => Kind::WriteFailed,
        };
        let message = match e {
            DeliverError::PipelineFull(m) => format!("{m}, retry later"),
            DeliverError::Timeout => "timed out waiting for durable write".to_string(),
            DeliverError::WriteFailed(m) => format!("durable write failed: {m}"),
            e => e.to_string(),
        };
        Refusal::new(kind, message)
    }
}

/// What an intake needs from its receiver's config.
#[derive(Clone, Copy, Debug)]
pub struct IntakeSettings {
    pub max_request_bytes: usize,
    pub max_concurrent_requests: usize,
    pub ack: AckMode,
    pub ack_timeout: Duration,
}

/// Bodies up to this size (as sent) may be decoded on the runtime thread: well under a
/// millisecond of work, less than the hand-off to the blocking pool and back costs.
const INLINE_DECODE_MAX_BYTES: usize = 32 << 10;
/// ... provided they inflate to no more than this.
const INLINE_INFLATED_MAX_BYTES: u32 = 512 << 10;

/// The gzip magic and deflate method byte that start every gzip member.
const GZIP_MEMBER: [u8; 3] = [0x1f, 0x8b, 0x08];

/// Whether decoding `body` is small enough work for the runtime thread: a small body that is
/// plain, or one gzip stream whose trailer (ISIZE, the inflated size mod 2^32) says it
/// inflates to little. A small body holding gzip further in (a multipart form, a Push
/// request's profiles) could inflate to the decompression limit: the blocking pool takes it.
/// A forged trailer can still make one inline decode inflate up to the receiver's limit.
fn decodes_inline(body: &[u8]) -> bool {
    if body.len() > INLINE_DECODE_MAX_BYTES {
        return false;
    }
    if body.starts_with(&GZIP_MEMBER) {
        let Some(trailer) = body.len().checked_sub(4).map(|at| &body[at..]) else {
            return true;
        };
        let inflated = u32::from_le_bytes(trailer.try_into().expect("four bytes"));
        return inflated <= INLINE_INFLATED_MAX_BYTES;
    }
    !body.windows(GZIP_MEMBER.len()).any(|w| w == GZIP_MEMBER)
}

/// One receiver's intake: see the module docs.
pub struct Intake {
    id: Arc<str>,
    telemetry: Arc<Telemetry>,
    output: PipelineSender,
    settings: IntakeSettings,
    /// One permit per request being handled.
    in_flight: Arc<Semaphore>,
}

impl Intake {
    pub fn new(ctx: &BuildContext, output: PipelineSender, settings: IntakeSettings) -> Self {
        Intake {
            id: Arc::clone(&ctx.id),
            telemetry: Arc::clone(&ctx.telemetry),
            output,
            settings,
            in_flight: Arc::new(Semaphore::new(settings.max_concurrent_requests)),
        }
    }

    /// The receiver's component id, for logs.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn max_request_bytes(&self) -> usize {
        self.settings.max_request_bytes
    }

    /// A slot for one more request, or [`Kind::Busy`] when `max_concurrent_requests` are
    /// being handled.
    pub fn admit(&self) -> Result<OwnedSemaphorePermit, Refusal> {
        Arc::clone(&self.in_flight)
            .try_acquire_owned()
            .map_err(|_| Refusal::new(Kind::Busy, "too many requests in flight, retry later"))
    }

    /// Reads and drops the body of a request refused before it was read (up to
    /// `max_request_bytes`, nothing buffered), so that a client still sending reads the
    /// answer rather than a broken pipe, which senders take for a network error and retry.
    pub async fn drain(&self, body: Body) {
        let mut body = Limited::new(body, self.settings.max_request_bytes);
        while let Some(Ok(_)) = body.frame().await {}
    }

    /// Reads the whole body, refusing (without reading on) as soon as it passes
    /// `max_request_bytes`, or at once when `Content-Length` says it will.
    pub async fn read_body(&self, body: Body, headers: &HeaderMap) -> Result<Bytes, Refusal> {
        let limit = self.settings.max_request_bytes;
        let too_large = || {
            Refusal::new(
                Kind::TooLarge,
                format!("request body exceeds the limit of {limit} bytes"),
            )
        };
        let declared = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        match Limited::new(body, limit).collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
            Err(e) => Err(Refusal::invalid(
                "bad_request",
                format!("could not read the request body: {e}"),
            )),
        }
    }

    /// Runs CPU-bound decoding of `body`: inline when that is little work (see
    /// [`decodes_inline`]), on the blocking pool otherwise. A decoder that panics is a bug of
    /// ours: [`Kind::Internal`].
    pub async fn decode<T: Send + 'static, E: From<Refusal> + Send + 'static>(
        &self,
        body: &[u8],
        decode: impl FnOnce() -> Result<T, E> + Send + 'static,
    ) -> Result<T, E> {
        if decodes_inline(body) {
            return decode();
        }
        tokio::task::spawn_blocking(decode)
            .await
            .map_err(|e| Refusal::new(Kind::Internal, format!("the decoder failed: {e}")))?
    }

    /// Hands one request's profiles on as one batch ([`deliver`]: the shared checks, the
    /// pipelines, the acknowledgement `ack` asks for) and counts them as accepted.
    ///
    /// With span export on, each request is an `ingest` span (receiver, tenant, profiles,
    /// bytes, outcome) lasting until its answer, so it covers the durable write.
    pub async fn deliver(&self, tenant: Arc<str>, profiles: Vec<Profile>, body_len: usize) -> Result<(), Refusal> {
        let count = profiles.len() as u64;
        let span = tracing::info_span!(
            target: "flamepipe",
            "ingest",
            component = %self.id,
            tenant = %tenant,
            profiles = count,
            bytes = body_len,
            outcome = tracing::field::Empty,
        );
        let delivered = deliver(
            &self.output,
            tenant,
            profiles,
            self.settings.ack,
            self.settings.ack_timeout,
        )
        .instrument(span.clone())
        .await;
        span.record("outcome", if delivered.is_ok() { "ok" } else { "refused" });
        delivered?;
        self.telemetry.accepted(&self.id, count, body_len as u64);
        Ok(())
    }

    /// Counts a refusal by reason and logs it: a warning for trouble on our side, debug for
    /// the sender's mistakes (which the sender sees in the answer).
    pub fn refused(&self, refusal: &Refusal, api: &'static str) {
        let reason = refusal.reason;
        self.telemetry.refused(&self.id, reason);
        if refusal.kind.is_server_side() {
            warn!(component = %self.id, api, reason, error = %refusal, "request refused");
        } else {
            debug!(component = %self.id, api, reason, error = %refusal, "request refused");
        }
    }
}

/// Runs the rest of a request whose body has arrived in a task of its own, so that it is seen
/// through even if the client hangs up meanwhile: SDKs upload at exit without waiting for the
/// answer (pyroscope-io 0.8 does), and their last profile must not depend on whether the
/// process died before or after the decode finished. The task holds the request's admission
/// `permit` to its end, so `max_concurrent_requests` bounds that work too. A task that panics
/// is [`Kind::Internal`].
pub async fn complete_detached<T: Send + 'static, E: From<Refusal> + Send + 'static>(
    permit: OwnedSemaphorePermit,
    work: impl Future<Output = Result<T, E>> + Send + 'static,
) -> Result<T, E> {
    tokio::spawn(async move {
        let _permit = permit;
        work.await
    })
    .await
    .map_err(|e| Refusal::new(Kind::Internal, format!("request task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn small_plain_or_little_inflating_bodies_decode_inline() {
        assert!(decodes_inline(b"main;work 1\n"));
        assert!(decodes_inline(&gzip(&[7u8; 100 << 10])));
        // A few KiB that inflate to 8 MiB: the blocking pool.
        let bomb = gzip(&vec![0u8; 8 << 20]);
        assert!(bomb.len() < INLINE_DECODE_MAX_BYTES);
        assert!(!decodes_inline(&bomb));
        // Gzip inside a small body (a form field, a Push profile): its size is unknown.
        let mut form = b"--boundary\r\n\r\n".to_vec();
        form.extend(gzip(b"profile"));
        assert!(!decodes_inline(&form));
        assert!(!decodes_inline(&vec![b'a'; INLINE_DECODE_MAX_BYTES + 1]));
    }

    #[test]
    fn every_kind_has_one_row() {
        let kinds = [
            Kind::Invalid,
            Kind::Unsupported,
            Kind::TooLarge,
            Kind::Busy,
            Kind::PipelineFull,
            Kind::ShuttingDown,
            Kind::AckTimeout,
            Kind::WriteFailed,
            Kind::Internal,
        ];
        let mut reasons: Vec<&str> = kinds.iter().map(|k| k.codes().reason).collect();
        reasons.sort();
        reasons.dedup();
        assert_eq!(reasons.len(), kinds.len(), "reasons are distinct");
        for k in kinds {
            let c = k.codes();
            // Retryable kinds are never INVALID_ARGUMENT; invalid ones never 5xx.
            assert_eq!(c.grpc == 3, c.http == 400, "{k:?}");
            assert_eq!(k.is_server_side(), c.http >= 429, "{k:?}");
        }
    }

    #[test]
    fn deliver_errors_map_to_their_kinds() {
        assert_eq!(Refusal::from(DeliverError::Timeout).codes().http, 503);
        assert_eq!(Refusal::from(DeliverError::Timeout).reason, "ack_timeout");
        let full = Refusal::from(DeliverError::PipelineFull("pipeline p is full".into()));
        assert_eq!(
            (full.codes().http, full.message.as_str()),
            (429, "pipeline p is full, retry later")
        );
    }
}
