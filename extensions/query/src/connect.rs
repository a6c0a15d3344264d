//! The Connect protocol, as much of it as the query API needs: unary calls with proto or JSON
//! bodies, server-streaming responses in 5-byte envelopes, and Connect errors.
//!
//! Spec: connectrpc.com/docs/protocol. Unary errors are an HTTP status plus
//! `{"code", "message"}`; streaming errors travel in the end-stream envelope (flag `0x02`)
//! of a `200` response.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use flamepipe_core::body::maybe_gunzip;
use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    Proto,
    Json,
}

/// Connect error codes used here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    Canceled,
    InvalidArgument,
    ResourceExhausted,
    Unimplemented,
    Internal,
    Unavailable,
}

impl Code {
    pub fn name(self) -> &'static str {
        match self {
            Code::Canceled => "canceled",
            Code::InvalidArgument => "invalid_argument",
            Code::ResourceExhausted => "resource_exhausted",
            Code::Unimplemented => "unimplemented",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
        }
    }

    /// The HTTP status of a unary error with this code (the Connect spec's table).
    pub fn http_status(self) -> StatusCode {
        match self {
            Code::Canceled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            Code::InvalidArgument => StatusCode::BAD_REQUEST,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.name())]
pub struct ConnectError {
    pub code: Code,
    pub message: String,
    /// The HTTP status of a unary answer: the code's, except for an unsupported media type.
    pub status: StatusCode,
}

impl ConnectError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ConnectError {
            code,
            message: message.into(),
            status: code.http_status(),
        }
    }

    /// A request body in a codec or encoding we do not speak: 415, as Connect servers answer.
    pub fn unsupported_media(message: impl Into<String>) -> Self {
        ConnectError {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ..Self::new(Code::Unimplemented, message)
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({ "code": self.code.name(), "message": self.message })
    }
}

impl IntoResponse for ConnectError {
    fn into_response(self) -> Response {
        (
            self.status,
            [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            self.json().to_string(),
        )
            .into_response()
    }
}

fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim)
        .unwrap_or("")
}

fn decode<M: prost::Message + Default + DeserializeOwned>(codec: Codec, bytes: &[u8]) -> Result<M, ConnectError> {
    match codec {
        Codec::Proto => M::decode(bytes).map_err(|e| ConnectError::invalid(format!("cannot decode the request: {e}"))),
        Codec::Json => {
            let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
                b"{}".as_slice()
            } else {
                bytes
            };
            serde_json::from_slice(bytes).map_err(|e| ConnectError::invalid(format!("cannot decode the request: {e}")))
        }
    }
}

/// Decodes a unary request body (`application/proto` or `application/json`, optionally gzipped).
pub fn unary_request<M: prost::Message + Default + DeserializeOwned>(
    headers: &HeaderMap,
    body: &[u8],
    max_bytes: u64,
) -> Result<(Codec, M), ConnectError> {
    let codec = match content_type(headers) {
        "application/proto" | "application/protobuf" => Codec::Proto,
        "application/json" => Codec::Json,
        other => {
            return Err(ConnectError::unsupported_media(format!(
                "unsupported content type {other:?}: use application/proto or application/json"
            )));
        }
    };
    let body = inflate(headers.get(header::CONTENT_ENCODING), body, max_bytes)?;
    Ok((codec, decode(codec, &body)?))
}

fn inflate(encoding: Option<&HeaderValue>, body: &[u8], max_bytes: u64) -> Result<Vec<u8>, ConnectError> {
    match encoding.and_then(|v| v.to_str().ok()).unwrap_or("identity") {
        "identity" | "" => Ok(body.to_vec()),
        "gzip" => maybe_gunzip(body, usize::try_from(max_bytes).unwrap_or(usize::MAX))
            .map(|b| b.into_owned())
            .map_err(|e| ConnectError::invalid(format!("cannot gunzip the request: {e}"))),
        other => Err(ConnectError::unsupported_media(format!(
            "unsupported content encoding {other:?}: use gzip or identity"
        ))),
    }
}

/// A unary response in the request's codec.
pub fn unary_response<M: prost::Message + Serialize>(codec: Codec, message: &M) -> Response {
    match codec {
        Codec::Proto => (
            [(header::CONTENT_TYPE, HeaderValue::from_static("application/proto"))],
            message.encode_to_vec(),
        )
            .into_response(),
        Codec::Json => match serde_json::to_vec(message) {
            Ok(body) => (
                [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
                body,
            )
                .into_response(),
            Err(e) => ConnectError::new(Code::Internal, format!("cannot encode the response: {e}")).into_response(),
        },
    }
}

/// The codec of a streaming request, from `application/connect+proto` or `+json`.
pub fn stream_codec(headers: &HeaderMap) -> Option<Codec> {
    match content_type(headers) {
        "application/connect+proto" => Some(Codec::Proto),
        "application/connect+json" => Some(Codec::Json),
        _ => None,
    }
}

const FLAG_COMPRESSED: u8 = 0x01;
const FLAG_END_STREAM: u8 = 0x02;

/// Decodes the single enveloped message of a server-streaming request.
pub fn stream_request<M: prost::Message + Default + DeserializeOwned>(
    codec: Codec,
    headers: &HeaderMap,
    body: &[u8],
    max_bytes: u64,
) -> Result<M, ConnectError> {
    let Some((&flags, rest)) = body.split_first() else {
        return Err(ConnectError::invalid("empty request: expected one enveloped message"));
    };
    if rest.len() < 4 {
        return Err(ConnectError::invalid("truncated envelope"));
    }
    let length = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let payload = &rest[4..];
    if payload.len() != length {
        return Err(ConnectError::invalid(format!(
            "envelope says {length} bytes, {} followed",
            payload.len()
        )));
    }
    let payload = if flags & FLAG_COMPRESSED != 0 {
        inflate(headers.get("connect-content-encoding"), payload, max_bytes)?
    } else {
        payload.to_vec()
    };
    decode(codec, &payload)
}

fn envelope(flags: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + payload.len());
    out.put_u8(flags);
    out.put_u32(payload.len() as u32);
    out.put_slice(payload);
    out.freeze()
}

/// One streamed message.
pub fn stream_message<M: prost::Message + Serialize>(codec: Codec, message: &M) -> Bytes {
    match codec {
        Codec::Proto => envelope(0, &message.encode_to_vec()),
        // Serializing our own message types cannot fail.
        Codec::Json => envelope(0, &serde_json::to_vec(message).unwrap_or_default()),
    }
}

/// The end-stream envelope: `{}` or `{"error": {...}}`.
pub fn end_stream(error: Option<&ConnectError>) -> Bytes {
    let body = match error {
        Some(e) => serde_json::json!({ "error": e.json() }),
        None => serde_json::json!({}),
    };
    envelope(FLAG_END_STREAM, body.to_string().as_bytes())
}

/// The content type of a streaming response.
pub fn stream_content_type(codec: Codec) -> HeaderValue {
    HeaderValue::from_static(match codec {
        Codec::Proto => "application/connect+proto",
        Codec::Json => "application/connect+json",
    })
}
