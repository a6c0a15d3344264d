//! The Push API, `POST /push.v1.PusherService/Push`, as Connect unary over HTTP/1.1: what
//! Pyroscope SDKs 1.x and Grafana Alloy's `pyroscope.write` send.
//!
//! The message is `push.v1.PushRequest`; its structs are written by hand below (three small
//! messages do not justify a protobuf build step). Bodies come as protobuf
//! (`application/proto`) or protojson (`application/json`), gzipped as a whole when
//! `Content-Encoding: gzip` says so (or when the gzip magic does). Each sample's `raw_profile`
//! is a pprof, gzipped or not.
//!
//! Labels: `.` in names becomes `_`; `__name__` names the profile type; other names starting
//! with `__` are Pyroscope-internal (`__session_id__`, `__delta__`, ...) and are dropped; a
//! series without `service_name` gets `unknown_service`, as in Pyroscope.

use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bytes::Bytes;
use flamepipe_core::Profile;
use flamepipe_core::body;
use flamepipe_core::formats::pprof::{self, ConvertOptions, Limits};
use flamepipe_core::labels::{
    Labels, METRIC_NAME, SERVICE_NAME, UNKNOWN_SERVICE, is_sender_label_name, sanitize_label_name,
};
use prost::Message as _;
use serde::{Deserialize, Deserializer};

use flamepipe_core::intake::Refusal;

use crate::error::{Error, Result};
use crate::receiver::now_ns;

#[derive(Clone, PartialEq, prost::Message)]
pub struct PushRequest {
    #[prost(message, repeated, tag = "1")]
    pub series: Vec<RawProfileSeries>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RawProfileSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<LabelPair>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<RawSample>,
    // Field 3, `annotations`, is skipped as an unknown field.
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LabelPair {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RawSample {
    /// A pprof, gzipped or not. `Bytes` so that decoding from a `Bytes` body does not copy it.
    #[prost(bytes = "bytes", tag = "1")]
    pub raw_profile: Bytes,
    #[prost(string, tag = "2")]
    pub id: String,
}

/// The (empty) answer to a push.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PushResponse {}

/// protojson of [`PushRequest`]: JSON names (`rawProfile`, `ID`), proto names accepted too,
/// `null` read as empty, unknown fields (`annotations`) ignored.
#[derive(Default, Deserialize)]
#[serde(default)]
struct JsonPushRequest {
    #[serde(deserialize_with = "nullable")]
    series: Vec<JsonSeries>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct JsonSeries {
    #[serde(deserialize_with = "nullable")]
    labels: Vec<JsonLabel>,
    #[serde(deserialize_with = "nullable")]
    samples: Vec<JsonSample>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct JsonLabel {
    #[serde(deserialize_with = "nullable")]
    name: String,
    #[serde(deserialize_with = "nullable")]
    value: String,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct JsonSample {
    #[serde(rename = "rawProfile", alias = "raw_profile", deserialize_with = "nullable")]
    raw_profile: String,
    #[serde(rename = "ID", deserialize_with = "nullable")]
    id: String,
}

fn nullable<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Option::<T>::deserialize(d).map(Option::unwrap_or_default)
}

/// protojson writes standard base64 with padding but accepts URL-safe and unpadded too.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
const BASE64_URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

impl JsonPushRequest {
    fn into_proto(self) -> Result<PushRequest> {
        let series = self
            .series
            .into_iter()
            .map(|s| {
                let samples = s
                    .samples
                    .into_iter()
                    .map(|sample| {
                        let engine = if sample.raw_profile.contains(['-', '_']) {
                            &BASE64_URL
                        } else {
                            &BASE64
                        };
                        let raw = engine
                            .decode(sample.raw_profile.as_bytes())
                            .map_err(|e| Error::bad_request(format!("invalid base64 in rawProfile: {e}")))?;
                        Ok(RawSample {
                            raw_profile: Bytes::from(raw),
                            id: sample.id,
                        })
                    })
                    .collect::<Result<_>>()?;
                let labels = s
                    .labels
                    .into_iter()
                    .map(|l| LabelPair {
                        name: l.name,
                        value: l.value,
                    })
                    .collect();
                Ok(RawProfileSeries { labels, samples })
            })
            .collect::<Result<_>>()?;
        Ok(PushRequest { series })
    }
}

/// The Connect codec of a request, from its Content-Type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PushEncoding {
    Proto,
    Json,
}

impl PushEncoding {
    pub fn from_content_type(content_type: &str) -> Result<Self> {
        let mime = content_type.split(';').next().unwrap_or("").trim();
        if ["application/proto", "application/protobuf", "application/x-protobuf"]
            .iter()
            .any(|m| mime.eq_ignore_ascii_case(m))
        {
            Ok(PushEncoding::Proto)
        } else if mime.eq_ignore_ascii_case("application/json") {
            Ok(PushEncoding::Json)
        } else {
            Err(Error::ContentType(content_type.to_string()))
        }
    }
}

/// Decodes a push body into profiles (CPU-bound: run it on the blocking pool).
pub(crate) fn decode(encoding: PushEncoding, compressed: bool, bytes: Bytes, limits: &Limits) -> Result<Vec<Profile>> {
    // Some senders gzip without saying so; a protobuf or JSON body never starts with the magic.
    let bytes = if compressed || body::is_gzip(&bytes) {
        Bytes::from(body::gunzip(&bytes, limits.max_decompressed_bytes)?)
    } else {
        bytes
    };
    let request = match encoding {
        PushEncoding::Proto => PushRequest::decode(bytes)?,
        PushEncoding::Json => serde_json::from_slice::<JsonPushRequest>(&bytes)
            .map_err(|e| Error::bad_request(format!("invalid push request json: {e}")))?
            .into_proto()?,
    };
    let now = now_ns();
    let mut profiles = Vec::new();
    // One budget for the whole request: a push of many small gzip bombs or many large
    // profiles is bounded like a single one.
    let mut budget = *limits;
    for series in &request.series {
        let (labels, name) = series_labels(&series.labels)?;
        for sample in &series.samples {
            let raw = body::maybe_gunzip(&sample.raw_profile, budget.max_decompressed_bytes)?;
            budget.max_decompressed_bytes -= raw.len();
            let opts = ConvertOptions {
                series: &labels,
                name: name.as_deref(),
                timestamp_ns: None,
                duration_ns: None,
                default_timestamp_ns: now,
                display_names: None,
            };
            let decoded = pprof::decode_profiles(&raw, &budget, &opts)?;
            budget.max_samples -= decoded.iter().map(|p| p.samples.len()).max().unwrap_or(0);
            profiles.extend(decoded);
        }
    }
    if profiles.is_empty() {
        return Err(Error::NoProfiles);
    }
    Ok(profiles)
}

/// Series labels and the profile name (`__name__`) of one pushed series.
fn series_labels(pairs: &[LabelPair]) -> Result<(Labels, Option<String>)> {
    let mut labels = Labels::new();
    let mut name = None;
    for pair in pairs {
        if pair.name == METRIC_NAME {
            // It becomes part of the profile type id, whose parts are separated by ':'.
            if !pair.value.is_empty() && !is_sender_label_name(&pair.value) {
                return Err(Error::bad_request(format!(
                    "invalid profile name {:?} in label __name__",
                    pair.value
                )));
            }
            name = Some(pair.value.clone()).filter(|v| !v.is_empty());
            continue;
        }
        if pair.name.starts_with("__") {
            continue;
        }
        let label = sanitize_label_name(&pair.name);
        if !flamepipe_core::validate::is_valid_label_name(&label) {
            return Err(Error::bad_request(format!("invalid label name {:?}", pair.name)));
        }
        labels.set(label, pair.value.as_str());
    }
    if labels.get(SERVICE_NAME).is_none() {
        labels.set(SERVICE_NAME, UNKNOWN_SERVICE);
    }
    Ok((labels, name))
}

pub(crate) fn ok_response(encoding: PushEncoding) -> Response {
    match encoding {
        PushEncoding::Proto => (
            StatusCode::OK,
            [(CONTENT_TYPE, "application/proto")],
            PushResponse {}.encode_to_vec(),
        )
            .into_response(),
        PushEncoding::Json => (StatusCode::OK, [(CONTENT_TYPE, "application/json")], "{}").into_response(),
    }
}

/// A Connect error: JSON `{"code", "message"}` whatever the request's codec. Too-large bodies
/// answer HTTP 413 with `resource_exhausted`, as connect-go does for messages over its read
/// limit; Connect clients take the code from the body, so the status only matters to plain
/// HTTP tools.
pub(crate) fn error_response(refusal: &Refusal) -> Response {
    let codes = refusal.codes();
    let body = serde_json::json!({ "code": codes.connect, "message": refusal.message });
    let status = StatusCode::from_u16(codes.http).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}
