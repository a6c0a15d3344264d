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
use flamepipe_core::component::{BuildContext, PipelineSender};
use flamepipe_core::intake::{Intake, IntakeSettings, Kind, Refusal, complete_detached};
use flamepipe_core::time::now_ns;
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

/// Why a request failed: the shared intake's refusal, whose kind gives the gRPC code and
/// HTTP status ([`flamepipe_core::intake::Kind`]).
pub type Error = Refusal;

fn invalid(message: impl Into<String>) -> Error {
    Refusal::invalid("bad_request", message)
}

fn grpc_status(e: &Error) -> Status {
    Status::new(Code::from(e.codes().grpc), e.message.clone())
}

fn http_status(e: &Error) -> StatusCode {
    StatusCode::from_u16(e.codes().http).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

pub(crate) struct Shared {
    intake: Intake,
    limits: Limits,
    max_decompressed_bytes: usize,
}

/// The gRPC router and the OTLP/HTTP router.
pub fn routers(config: &Config, ctx: &BuildContext, output: PipelineSender) -> (Router, Router) {
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
            max_samples: config.max_samples,
            max_stack_depth: config.max_stack_depth,
        },
        max_decompressed_bytes: config.max_decompressed_bytes.as_usize(),
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
        let permit = self.intake.admit()?;
        let (limits, max_decompressed) = (self.limits, self.max_decompressed_bytes);
        // The task completes even if the client leaves.
        let shared = Arc::clone(&self);
        complete_detached(permit, async move {
            let inline_check = body.clone();
            let converted = shared
                .intake
                .decode(&inline_check, move || {
                    decode_export(body, format, &limits, max_decompressed, now_ns())
                })
                .await?;
            if !converted.profiles.is_empty() {
                shared.intake.deliver(tenant, converted.profiles, body_len).await?;
            }
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
                warn!(component = shared.intake.id(), rejected = converted.rejected, errors = %message, "profiles rejected");
                ExportProfilesPartialSuccess {
                    rejected_profiles: converted.rejected as i64,
                    error_message: message,
                }
            });
            Ok(ExportProfilesServiceResponse { partial_success })
        })
        .await
    }

    /// Reads and drops the body of a request refused before it was read.
    async fn refuse_unread(&self, error: Error, body: Body) -> Error {
        self.intake.drain(body).await;
        error
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
        json::decode(&body).map_err(|e| invalid(e.to_string()))?
    } else {
        let body = repair_or_refuse(body)?;
        ExportProfilesServiceRequest::decode(body)
            .map_err(|e| invalid(format!("cannot decode the ExportProfilesServiceRequest: {e}")))?
    };
    convert::convert(&request, limits, now_ns).map_err(|e| invalid(e.to_string()))
}

fn gunzip(body: &[u8], limit: usize) -> Result<Bytes, Error> {
    flamepipe_core::body::maybe_gunzip(body, limit)
        .map(|b| Bytes::from(b.into_owned()))
        .map_err(|e| match e {
            flamepipe_core::body::BodyError::TooLarge { .. } => Refusal::new(
                Kind::TooLarge,
                format!("the body inflates past max_decompressed_bytes ({limit} bytes)"),
            ),
            e => Refusal::invalid(e.reason(), format!("cannot gunzip the body: {e}")),
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
                return Err(invalid(mismatch.to_string()));
            }
            debug!(
                detected = mismatch.detected,
                "renumbered the samples of an older OTLP layout"
            );
            Ok(Bytes::from(upgraded))
        }
        Err(mismatch) => Err(invalid(mismatch.to_string())),
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
        .map_err(|m| Refusal::invalid("bad_tenant", format!("invalid tenant id in X-Scope-OrgID: {m}")))
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
        let kind = if resource_exhausted {
            Kind::TooLarge
        } else {
            Kind::Invalid
        };
        let refusal = Refusal {
            kind,
            reason,
            message: format!("refused before decoding with gRPC status {code}"),
        };
        shared.intake.refused(&refusal, "grpc");
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
                shared.intake.refused(&e, "grpc");
                grpc_status(&e)
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
            other => Some(Refusal::new(
                Kind::Unsupported,
                format!("unsupported content type {other:?}: send application/x-protobuf or application/json"),
            )),
        };
        let json = content_type(&headers) == "application/json";
        let gzipped = match headers.get(CONTENT_ENCODING).and_then(|v| v.to_str().ok()) {
            None | Some("identity") => false,
            Some("gzip") => true,
            Some(other) => {
                return Err(shared
                    .refuse_unread(
                        Refusal::new(Kind::Unsupported, format!("unsupported content encoding {other:?}")),
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
        let raw = shared.intake.read_body(body, &headers).await?;
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
            shared.intake.refused(&e, "http");
            let status = RpcStatus {
                code: e.codes().grpc,
                message: e.message.clone(),
            };
            (http_status(&e), [(CONTENT_TYPE, protobuf)], status.encode_to_vec()).into_response()
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
            shared.intake.refused(&e, "http");
            let body = serde_json::json!({ "code": e.codes().grpc, "message": e.message });
            (http_status(&e), [(CONTENT_TYPE, json)], body.to_string()).into_response()
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
