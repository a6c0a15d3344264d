//! The two transports: gRPC `ProfilesService/Export` (tonic's server machinery over our HTTP
//! servers, which speak HTTP/2 as well) and OTLP/HTTP `POST /v1development/profiles`.
//!
//! Both hand the raw request bytes to [`Shared::export`]: check the proto version (an older
//! `v1development` layout would be misread, see [`crate::version`]), decode, convert, deliver
//! and wait for the acknowledgement. Profiles that point outside the dictionary are rejected
//! alone and reported in `partial_success`; everything else about a request is all-or-nothing.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::{Buf, Bytes};
use flamepipe_core::component::{AckMode, BuildContext, DeliverError, PipelineSender, deliver};
use flamepipe_core::telemetry::Telemetry;
use flamepipe_core::time::now_ns;
use http_body_util::{BodyExt, Limited};
use opentelemetry_proto::tonic::collector::profiles::v1development::{
    ExportProfilesPartialSuccess, ExportProfilesServiceRequest, ExportProfilesServiceResponse,
};
use prost::Message;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EnabledCompressionEncodings, EncodeBuf, Encoder};
use tonic::{Code, Status};
use tracing::{debug, warn};

use crate::config::Config;
use crate::convert::{self, Limits};
use crate::{json, version};

/// The gRPC method path.
pub const GRPC_PATH: &str = "/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export";
/// The OTLP/HTTP path for profiles.
pub const HTTP_PATH: &str = "/v1development/profiles";
/// Rejected-profile messages quoted in a partial success.
const MAX_QUOTED_ERRORS: usize = 5;

/// Why a request failed, with its gRPC code and HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Invalid(String),
    #[error("request body larger than {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    Unsupported(String),
    #[error("too many requests in flight; retry later")]
    Busy,
    #[error("{0}")]
    Deliver(#[from] DeliverError),
}

impl Error {
    fn code(&self) -> Code {
        match self {
            Error::Invalid(_) | Error::Deliver(DeliverError::Invalid(_)) => Code::InvalidArgument,
            Error::TooLarge(_) | Error::Busy | Error::Deliver(DeliverError::PipelineFull(_)) => Code::ResourceExhausted,
            Error::Unsupported(_) => Code::Unimplemented,
            Error::Deliver(DeliverError::ShuttingDown(_) | DeliverError::Timeout | DeliverError::WriteFailed(_)) => {
                Code::Unavailable
            }
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Error::Invalid(_) | Error::Deliver(DeliverError::Invalid(_)) => StatusCode::BAD_REQUEST,
            Error::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Unsupported(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::Busy | Error::Deliver(DeliverError::PipelineFull(_)) => StatusCode::TOO_MANY_REQUESTS,
            Error::Deliver(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The metrics reason.
    fn reason(&self) -> &'static str {
        match self {
            Error::Invalid(_) => "bad_request",
            Error::TooLarge(_) => "too_large",
            Error::Unsupported(_) => "unsupported",
            Error::Busy => "too_many_requests",
            Error::Deliver(DeliverError::Invalid(_)) => "invalid_profile",
            Error::Deliver(DeliverError::PipelineFull(_)) => "pipeline_full",
            Error::Deliver(DeliverError::ShuttingDown(_)) => "shutting_down",
            Error::Deliver(DeliverError::Timeout) => "ack_timeout",
            Error::Deliver(DeliverError::WriteFailed(_)) => "write_failed",
        }
    }
}

pub(crate) struct Shared {
    id: Arc<str>,
    telemetry: Arc<Telemetry>,
    output: PipelineSender,
    limits: Limits,
    max_request_bytes: usize,
    max_decompressed_bytes: usize,
    ack: AckMode,
    ack_timeout: std::time::Duration,
    in_flight: Arc<tokio::sync::Semaphore>,
}

/// The gRPC router and the OTLP/HTTP router.
pub fn routers(config: &Config, ctx: &BuildContext, output: PipelineSender) -> (Router, Router) {
    let shared = Arc::new(Shared {
        id: Arc::clone(&ctx.id),
        telemetry: Arc::clone(&ctx.telemetry),
        output,
        limits: Limits {
            max_samples: config.max_samples,
            max_stack_depth: config.max_stack_depth,
        },
        max_request_bytes: config.max_request_bytes.as_usize(),
        max_decompressed_bytes: config.max_decompressed_bytes.as_usize(),
        ack: config.ack,
        ack_timeout: config.ack_timeout.0,
        in_flight: Arc::new(tokio::sync::Semaphore::new(config.max_concurrent_requests)),
    });
    let grpc_shared = Arc::clone(&shared);
    let grpc = Router::new().route_service(
        GRPC_PATH,
        tower::service_fn(move |request: Request<Body>| {
            let shared = Arc::clone(&grpc_shared);
            async move { Ok::<_, Infallible>(grpc_export(shared, request).await) }
        }),
    );
    let http = Router::new().route(HTTP_PATH, post(http_export)).with_state(shared);
    (grpc, http)
}

impl Shared {
    /// Inflates (if `gzipped`), checks, decodes, converts and delivers one request. `body_len`
    /// is its size as sent, for the accepted-bytes metric.
    async fn export(
        self: Arc<Self>,
        tenant: Arc<str>,
        body: Bytes,
        format: BodyFormat,
        body_len: usize,
    ) -> Result<ExportProfilesServiceResponse, Error> {
        let _permit = Arc::clone(&self.in_flight)
            .try_acquire_owned()
            .map_err(|_| Error::Busy)?;
        let limits = self.limits;
        let max_decompressed = self.max_decompressed_bytes;
        // Decoding runs off the async runtime; the task completes even if the client leaves.
        let shared = Arc::clone(&self);
        tokio::spawn(async move {
            let converted =
                tokio::task::spawn_blocking(move || decode_export(body, format, &limits, max_decompressed, now_ns()))
                    .await
                    .map_err(|e| Error::Invalid(format!("decoding failed: {e}")))??;
            let count = converted.profiles.len() as u64;
            if !converted.profiles.is_empty() {
                deliver(
                    &shared.output,
                    tenant,
                    converted.profiles,
                    shared.ack,
                    shared.ack_timeout,
                )
                .await?;
            }
            shared.telemetry.accepted(&shared.id, count, body_len as u64);
            let partial_success = (converted.rejected > 0).then(|| {
                let mut message = converted
                    .errors
                    .iter()
                    .take(MAX_QUOTED_ERRORS)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ");
                if converted.errors.len() > MAX_QUOTED_ERRORS {
                    message.push_str(&format!("; and {} more", converted.errors.len() - MAX_QUOTED_ERRORS));
                }
                warn!(component = %shared.id, rejected = converted.rejected, errors = %message, "profiles rejected");
                ExportProfilesPartialSuccess {
                    rejected_profiles: converted.rejected as i64,
                    error_message: message,
                }
            });
            Ok(ExportProfilesServiceResponse { partial_success })
        })
        .await
        .map_err(|e| Error::Invalid(format!("request task failed: {e}")))?
    }

    /// Reads and drops the body of a request refused before it was read (up to
    /// `max_request_bytes`), so that a client still sending reads our answer rather than a
    /// broken pipe, which senders take for a network error and retry.
    async fn refuse_unread(&self, error: Error, body: Body) -> Error {
        let mut body = Limited::new(body, self.max_request_bytes);
        while let Some(Ok(_)) = body.frame().await {}
        error
    }

    fn refused(&self, error: &Error, transport: &'static str) {
        self.telemetry.refused(&self.id, error.reason());
        if matches!(error, Error::Deliver(e) if !matches!(e, DeliverError::Invalid(_))) {
            warn!(component = %self.id, transport, reason = error.reason(), %error, "request refused");
        } else {
            debug!(component = %self.id, transport, reason = error.reason(), %error, "request refused");
        }
    }
}

/// How a request body is encoded.
#[derive(Clone, Copy, Debug, Default)]
pub struct BodyFormat {
    pub gzipped: bool,
    pub json: bool,
}

/// What the receiver makes of one request body, on either transport: inflate (if gzipped),
/// check the proto version, decode (protobuf or OTLP/JSON) and convert, with `now_ns` for
/// profiles without a time. Profiles rejected alone are counted in the result.
pub fn decode_export(
    body: Bytes,
    format: BodyFormat,
    limits: &Limits,
    max_decompressed_bytes: usize,
    now_ns: i64,
) -> Result<convert::Converted, Error> {
    let body = if format.gzipped {
        gunzip(&body, max_decompressed_bytes)?
    } else {
        body
    };
    let request = if format.json {
        // JSON names did not change from v1.9 to v1.10; older layouts' names are refused as
        // unknown fields.
        json::decode(&body).map_err(|e| Error::Invalid(e.to_string()))?
    } else {
        let body = repair_or_refuse(body)?;
        ExportProfilesServiceRequest::decode(body)
            .map_err(|e| Error::Invalid(format!("cannot decode the ExportProfilesServiceRequest: {e}")))?
    };
    convert::convert(&request, limits, now_ns).map_err(|e| Error::Invalid(e.to_string()))
}

fn gunzip(body: &[u8], limit: usize) -> Result<Bytes, Error> {
    flamepipe_core::body::maybe_gunzip(body, limit)
        .map(|b| Bytes::from(b.into_owned()))
        .map_err(|e| match e {
            flamepipe_core::body::BodyError::TooLarge { .. } => Error::TooLarge(limit),
            e => Error::Invalid(format!("cannot gunzip the body: {e}")),
        })
}

/// Passes v1.10 requests; renumbers the samples of v1.9 ones (the OTel Python profiling SDK's
/// layout, which differs from v1.10 only there); refuses older layouts, which would be misread.
fn repair_or_refuse(body: Bytes) -> Result<Bytes, Error> {
    match version::check(&body) {
        Ok(()) => Ok(body),
        Err(mismatch) if version::is_repairable(&mismatch) => {
            let mut upgraded = body.to_vec();
            if !version::upgrade_samples(&mut upgraded) {
                return Err(Error::Invalid(mismatch.to_string()));
            }
            debug!(
                detected = mismatch.detected,
                "renumbered the samples of an older OTLP layout"
            );
            Ok(Bytes::from(upgraded))
        }
        Err(mismatch) => Err(Error::Invalid(mismatch.to_string())),
    }
}

fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or("")
        .trim()
}

fn tenant(headers: &HeaderMap) -> Result<Arc<str>, Error> {
    flamepipe_core::tenant::tenant(headers)
        .map_err(|m| Error::Invalid(format!("invalid tenant id in X-Scope-OrgID: {m}")))
}

// ---- gRPC ----

/// gRPC through tonic's server machinery. Messages over `max_decompressed_bytes` (after
/// `grpc-encoding: gzip`) are refused by tonic with OUT_OF_RANGE, which OTLP senders retry:
/// that is answered RESOURCE_EXHAUSTED instead, and counted like our own refusals.
async fn grpc_export(shared: Arc<Shared>, request: Request<Body>) -> Response {
    let mut accept = EnabledCompressionEncodings::default();
    accept.enable(CompressionEncoding::Gzip);
    let mut grpc = tonic::server::Grpc::new(RawRequestCodec)
        .apply_compression_config(accept, EnabledCompressionEncodings::default())
        .apply_max_message_size_config(Some(shared.max_decompressed_bytes), None);
    let called = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let service = ExportService(Arc::clone(&shared), Arc::clone(&called));
    let mut response = grpc.unary(service, request).await.map(Body::new);
    let status = response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Some(code) = status.filter(|c| c != "0")
        && !called.load(std::sync::atomic::Ordering::Acquire)
    {
        let (reason, resource_exhausted) = match code.as_str() {
            "11" | "8" => ("too_large", true),
            _ => ("bad_request", false),
        };
        if resource_exhausted {
            response
                .headers_mut()
                .insert("grpc-status", HeaderValue::from_static("8"));
        }
        shared.telemetry.refused(&shared.id, reason);
        debug!(component = %shared.id, transport = "grpc", reason, code, "request refused before decoding");
    }
    response
}

/// The export method; sets its flag when called, so that refusals made earlier (by tonic) can
/// be told apart.
struct ExportService(Arc<Shared>, Arc<std::sync::atomic::AtomicBool>);

impl tonic::server::UnaryService<Bytes> for ExportService {
    type Response = ExportProfilesServiceResponse;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<tonic::Response<Self::Response>, Status>> + Send>>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let shared = Arc::clone(&self.0);
        self.1.store(true, std::sync::atomic::Ordering::Release);
        Box::pin(async move {
            let result = async {
                let tenant = tenant(&request.metadata().clone().into_headers())?;
                let body = request.into_inner();
                // tonic has inflated the message already: this is its size after gzip.
                let len = body.len();
                Arc::clone(&shared)
                    .export(tenant, body, BodyFormat::default(), len)
                    .await
            }
            .await;
            result.map(tonic::Response::new).map_err(|e| {
                shared.refused(&e, "grpc");
                Status::new(e.code(), e.to_string())
            })
        })
    }
}

/// Hands the request message over as bytes (the version check needs them) and encodes the
/// response with prost.
struct RawRequestCodec;

impl Codec for RawRequestCodec {
    type Encode = ExportProfilesServiceResponse;
    type Decode = Bytes;
    type Encoder = ResponseEncoder;
    type Decoder = BytesDecoder;

    fn encoder(&mut self) -> ResponseEncoder {
        ResponseEncoder
    }

    fn decoder(&mut self) -> BytesDecoder {
        BytesDecoder
    }
}

struct ResponseEncoder;

impl Encoder for ResponseEncoder {
    type Item = ExportProfilesServiceResponse;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst).map_err(|e| Status::internal(e.to_string()))
    }
}

struct BytesDecoder;

impl Decoder for BytesDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

// ---- OTLP/HTTP ----

/// OTLP/HTTP: protobuf bodies (optionally gzipped); the answer is an
/// `ExportProfilesServiceResponse`, or on failure a `google.rpc.Status`, both protobuf.
async fn http_export(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    let result = async {
        let refusal = match content_type(&headers) {
            "application/x-protobuf" | "application/protobuf" | "application/json" => None,
            other => Some(Error::Unsupported(format!(
                "unsupported content type {other:?}: send application/x-protobuf or application/json"
            ))),
        };
        let json = content_type(&headers) == "application/json";
        let gzipped = match headers.get(CONTENT_ENCODING).and_then(|v| v.to_str().ok()) {
            None | Some("identity") => false,
            Some("gzip") => true,
            Some(other) => {
                return Err(shared
                    .refuse_unread(
                        Error::Unsupported(format!("unsupported content encoding {other:?}")),
                        body,
                    )
                    .await);
            }
        };
        if let Some(e) = refusal {
            return Err(shared.refuse_unread(e, body).await);
        }
        let tenant = match tenant(&headers) {
            Ok(t) => t,
            Err(e) => return Err(shared.refuse_unread(e, body).await),
        };
        let raw = Limited::new(body, shared.max_request_bytes)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                    Error::TooLarge(shared.max_request_bytes)
                } else {
                    Error::Invalid(format!("cannot read the body: {e}"))
                }
            })?
            .to_bytes();
        let len = raw.len();
        Arc::clone(&shared)
            .export(tenant, raw, BodyFormat { gzipped, json }, len)
            .await
    }
    .await;
    if content_type(&headers) == "application/json" {
        return json_answer(&shared, result);
    }
    let protobuf = HeaderValue::from_static("application/x-protobuf");
    match result {
        Ok(response) => ([(CONTENT_TYPE, protobuf)], response.encode_to_vec()).into_response(),
        Err(e) => {
            shared.refused(&e, "http");
            let status = RpcStatus {
                code: e.code() as i32,
                message: e.to_string(),
            };
            (e.status(), [(CONTENT_TYPE, protobuf)], status.encode_to_vec()).into_response()
        }
    }
}

/// The answer to an OTLP/JSON request, in JSON (`partialSuccess`, or a `google.rpc.Status`).
fn json_answer(shared: &Shared, result: Result<ExportProfilesServiceResponse, Error>) -> Response {
    let json = HeaderValue::from_static("application/json");
    match result {
        Ok(response) => {
            let body = match response.partial_success {
                Some(p) => serde_json::json!({ "partialSuccess": {
                    "rejectedProfiles": p.rejected_profiles.to_string(),
                    "errorMessage": p.error_message,
                }}),
                None => serde_json::json!({}),
            };
            ([(CONTENT_TYPE, json)], body.to_string()).into_response()
        }
        Err(e) => {
            shared.refused(&e, "http");
            let body = serde_json::json!({ "code": e.code() as i32, "message": e.to_string() });
            (e.status(), [(CONTENT_TYPE, json)], body.to_string()).into_response()
        }
    }
}

/// `google.rpc.Status`, the error body of OTLP/HTTP (details are not sent).
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}
