//! The legacy `POST /ingest` API: query parameters, Pyroscope's time syntax, the multipart
//! envelope and the choice between pprof, speedscope and folded text.
//!
//! Labels follow Pyroscope's legacy path: `service_name` is the whole application name (the
//! part before `{`) unless a `service_name` tag is given; tags whose names start with `__` are
//! dropped; `pyroscope_spy` is the `spyName` parameter; and every `.` in a label name becomes
//! `_` (Pyroscope's `SanitizeLegacyLabelName`), so `otel.scope.name` is stored as
//! `otel_scope_name`.

use std::borrow::Cow;
use std::collections::HashMap;

use bytes::Bytes;
use flamepipe_core::Profile;
use flamepipe_core::body::{self, BodyError};
use flamepipe_core::formats::folded::{self, FoldedOptions, Mode};
use flamepipe_core::formats::pprof::{self, ConvertOptions, Limits};
use flamepipe_core::formats::speedscope::{self, SpeedscopeOptions};
use flamepipe_core::formats::{self, Format as Detected};
use flamepipe_core::labels::{self, Labels, SERVICE_NAME, sanitize_label_name};
use flamepipe_core::profile_type::folded_profile_kind;
use serde::Deserialize;

use crate::error::{Error, Result};

/// The label that records which profiler sent a legacy upload.
const SPY_LABEL: &str = "pyroscope_spy";
/// Pyroscope's default `sampleRate` (Hz) when a sender gives none.
const DEFAULT_SAMPLE_RATE: u32 = 100;

/// The kind of a folded upload whose name has no known suffix: a CPU profile, as
/// `folded_profile_kind("cpu")` gives.
const CPU_KIND: (&str, &str, &str) = ("process_cpu", "samples", "count");

/// The body format the `format` parameter asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    Pprof,
    Folded,
    Lines,
    Speedscope,
    /// No `format`: told from the content (`flamepipe_core::formats::detect`): speedscope JSON,
    /// folded text, else pprof (gzipped or raw).
    Sniff,
}

/// The query parameters of one `/ingest` request, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct IngestParams {
    pub app: String,
    pub tags: Vec<(String, String)>,
    pub from_ns: i64,
    pub until_ns: i64,
    pub format: Format,
    pub sample_rate: u32,
    pub spy_name: String,
    pub now_ns: i64,
}

impl IngestParams {
    pub fn parse(query: &str, now_ns: i64) -> Result<Self> {
        let (mut name, mut from, mut until, mut format, mut sample_rate, mut spy) =
            (None, None, None, None, None, None);
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            let slot = match key.as_ref() {
                "name" => &mut name,
                "from" => &mut from,
                "until" => &mut until,
                "format" => &mut format,
                "sampleRate" => &mut sample_rate,
                "spyName" => &mut spy,
                // `units` and `aggregationType` describe trie/tree uploads; folded text needs neither.
                _ => continue,
            };
            *slot = Some(value);
        }
        let name = name.ok_or(Error::MissingName)?;
        let (app, tags) = labels::parse_app_name(&name)?;
        let time = |param: &'static str, value: Option<Cow<'_, str>>| match value {
            None => Ok(now_ns),
            Some(v) => parse_time(&v, now_ns).ok_or_else(|| Error::Time {
                param,
                value: v.into_owned(),
            }),
        };
        let from_ns = time("from", from)?;
        let until_ns = time("until", until)?;
        let format = match format.as_deref() {
            None | Some("") => Format::Sniff,
            Some("pprof") => Format::Pprof,
            Some("folded") => Format::Folded,
            Some("lines") => Format::Lines,
            Some("speedscope") => Format::Speedscope,
            Some(other) => return Err(Error::Format(other.to_string())),
        };
        let sample_rate = match sample_rate.as_deref() {
            None | Some("") => DEFAULT_SAMPLE_RATE,
            Some(v) => v.parse().map_err(|_| {
                Error::bad_request(format!("invalid sampleRate {v:?}: expected a whole number of hertz"))
            })?,
        };
        let spy_name = spy
            .filter(|s| !s.is_empty())
            .map_or_else(|| "unknown".to_string(), Cow::into_owned);
        Ok(IngestParams {
            app,
            tags,
            from_ns,
            until_ns,
            format,
            sample_rate,
            spy_name,
            now_ns,
        })
    }

    fn duration_ns(&self) -> i64 {
        self.until_ns.saturating_sub(self.from_ns).max(0)
    }

    /// Series labels for the profiles of this upload, `service_name` being `service_name`.
    fn series(&self, service_name: &str) -> Labels {
        let mut series = Labels::new();
        series.set(SERVICE_NAME, service_name);
        series.set(SPY_LABEL, self.spy_name.as_str());
        for (name, value) in &self.tags {
            if name.starts_with("__") {
                continue;
            }
            series.set(sanitize_label_name(name), value.as_str());
        }
        series
    }
}

pub(crate) use flamepipe_core::time::parse_time;

/// An `/ingest` body: raw, or the parts of a multipart/form-data upload.
#[derive(Debug)]
pub(crate) enum IngestBody {
    Raw(Bytes),
    Multipart {
        profile: Bytes,
        /// pprof sample type -> display name, from the `sample_type_config` part.
        display_names: Option<HashMap<String, String>>,
    },
}

impl IngestBody {
    /// The profile's bytes, as sent.
    pub(crate) fn profile(&self) -> &Bytes {
        match self {
            IngestBody::Raw(profile) | IngestBody::Multipart { profile, .. } => profile,
        }
    }
}

/// One entry of the `sample_type_config` part; the other keys (`units`, `aggregation`,
/// `cumulative`, `sampled`) describe rendering and are ignored.
#[derive(Deserialize)]
struct SampleTypeConfig {
    #[serde(rename = "display-name")]
    display_name: Option<String>,
}

impl IngestBody {
    pub async fn from_request(content_type: &str, bytes: Bytes) -> Result<Self> {
        let is_multipart = content_type
            .split(';')
            .next()
            .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("multipart/form-data"));
        if !is_multipart {
            return Ok(IngestBody::Raw(bytes));
        }
        let multipart_error = |e: multer::Error| Error::bad_request(format!("invalid multipart body: {e}"));
        let boundary = multer::parse_boundary(content_type).map_err(multipart_error)?;
        let stream = futures::stream::once(async move { Ok::<_, std::convert::Infallible>(bytes) });
        let mut multipart = multer::Multipart::new(stream, boundary);
        let (mut profile, mut display_names) = (None, None);
        while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
            match field.name() {
                Some("profile") => profile = Some(field.bytes().await.map_err(multipart_error)?),
                Some("prev_profile") => {
                    // Cumulative senders diff against it; we only store deltas.
                    let previous = field.bytes().await.map_err(multipart_error)?;
                    if !previous.is_empty() {
                        return Err(Error::bad_request(
                            "multipart part prev_profile is not supported: send delta profiles",
                        ));
                    }
                }
                Some("sample_type_config") => {
                    let json = field.bytes().await.map_err(multipart_error)?;
                    let config: HashMap<String, SampleTypeConfig> = serde_json::from_slice(&json)
                        .map_err(|e| Error::bad_request(format!("invalid sample_type_config: {e}")))?;
                    display_names = Some(
                        config
                            .into_iter()
                            .filter_map(|(st, c)| c.display_name.map(|name| (st, name)))
                            .collect(),
                    );
                }
                _ => {}
            }
        }
        let profile = profile.ok_or_else(|| Error::bad_request("multipart body has no part named profile"))?;
        Ok(IngestBody::Multipart { profile, display_names })
    }
}

/// Decodes an `/ingest` body into profiles (CPU-bound: run it on the blocking pool).
pub(crate) fn decode(params: &IngestParams, body: IngestBody, limits: &Limits) -> Result<Vec<Profile>> {
    let (bytes, display_names) = match body {
        IngestBody::Multipart { .. }
            if matches!(params.format, Format::Folded | Format::Lines | Format::Speedscope) =>
        {
            return Err(Error::bad_request("multipart uploads must hold a pprof profile"));
        }
        IngestBody::Multipart { profile, display_names } => {
            return pprof_profiles(params, &profile, display_names.as_ref(), limits);
        }
        IngestBody::Raw(bytes) => (bytes, None::<HashMap<String, String>>),
    };
    if bytes.is_empty() {
        return Err(BodyError::Empty.into());
    }
    match params.format {
        Format::Pprof => pprof_profiles(params, &bytes, display_names.as_ref(), limits),
        Format::Folded => folded_profiles(params, &bytes, Mode::Folded, limits),
        Format::Lines => folded_profiles(params, &bytes, Mode::Lines, limits),
        Format::Speedscope => speedscope_profiles(params, &bytes, limits),
        Format::Sniff => {
            match formats::detect(&bytes) {
                Some(Detected::Speedscope) => return speedscope_profiles(params, &bytes, limits),
                Some(Detected::Folded) => return folded_profiles(params, &bytes, Mode::Folded, limits),
                _ => {}
            }
            if body::is_gzip(&bytes) {
                return pprof_profiles(params, &bytes, None, limits);
            }
            // Text rarely decodes as protobuf at all, and never with sample types; a body that
            // is neither pprof nor UTF-8 text is taken for broken pprof.
            let error = match pprof_profiles(params, &bytes, None, limits) {
                Ok(profiles) => return Ok(profiles),
                Err(e) => e,
            };
            match std::str::from_utf8(&bytes) {
                Ok(_) => folded_profiles(params, &bytes, Mode::Folded, limits),
                Err(_) => Err(error),
            }
        }
    }
}

fn pprof_profiles(
    params: &IngestParams,
    bytes: &[u8],
    display_names: Option<&HashMap<String, String>>,
    limits: &Limits,
) -> Result<Vec<Profile>> {
    let series = params.series(&params.app);
    let opts = ConvertOptions {
        series: &series,
        name: None,
        // The profile's own start wins; `from` only fills in for senders that leave it out.
        timestamp_ns: None,
        default_timestamp_ns: params.from_ns,
        // A request without `from`/`until` says nothing of the duration: keep the pprof's.
        duration_ns: Some(params.duration_ns()).filter(|&d| d > 0),
        display_names,
    };
    Ok(pprof::decode_profiles(bytes, limits, &opts)?)
}

/// A speedscope file: one profile per profile of the file, told apart by `thread_name`. The
/// service is the whole application name, as for pprof bodies.
fn speedscope_profiles(params: &IngestParams, bytes: &[u8], limits: &Limits) -> Result<Vec<Profile>> {
    let raw = body::maybe_gunzip(bytes, limits.max_decompressed_bytes)?;
    let series = params.series(&params.app);
    let opts = SpeedscopeOptions {
        series: &series,
        timestamp_ns: params.from_ns,
        duration_ns: params.duration_ns(),
        max_samples: limits.max_samples,
    };
    Ok(speedscope::to_profiles(&raw, &opts)?)
}

fn folded_profiles(params: &IngestParams, bytes: &[u8], mode: Mode, limits: &Limits) -> Result<Vec<Profile>> {
    let raw = body::maybe_gunzip(bytes, limits.max_decompressed_bytes)?;
    // Stack frames named in another encoding are kept with U+FFFD, as in pprof string tables.
    let text = flamepipe_core::validate::lossy_utf8(&raw);
    // `app.cpu` is a CPU profile of `app`. Pyroscope refuses an unknown suffix (so `my.app`
    // fails there); we take it, and a missing one, as a CPU profile of the whole name.
    let (service, kind) = match params.app.rsplit_once('.') {
        Some((service, suffix)) if !service.is_empty() => match folded_profile_kind(suffix) {
            Some(kind) => (service, kind),
            None => (params.app.as_str(), CPU_KIND),
        },
        _ => (params.app.as_str(), CPU_KIND),
    };
    let series = params.series(service);
    let profile = folded::to_profile(
        &text,
        &FoldedOptions {
            mode,
            series,
            kind,
            sample_rate: params.sample_rate,
            timestamp_ns: params.from_ns,
            duration_ns: params.duration_ns(),
            max_samples: limits.max_samples,
        },
    )?;
    Ok(vec![profile])
}

#[cfg(test)]
mod kind_tests {
    #[test]
    fn the_default_kind_is_the_cpu_suffix_kind() {
        assert_eq!(
            flamepipe_core::profile_type::folded_profile_kind("cpu"),
            Some(super::CPU_KIND)
        );
    }
}
