//! The query API's messages: Pyroscope's `querier.v1` / `types.v1` (field numbers as
//! published in its `api/` protos) and flamepipe's streaming events (docs/query-api.md).
//!
//! Each struct is both a prost message (Connect `application/proto`) and a serde type for
//! protobuf JSON (`application/json`): lowerCamelCase names, 64-bit integers written as
//! strings and read from strings or numbers, unknown fields ignored.

use serde::{Deserialize, Serialize};

/// Serde for protobuf JSON's 64-bit integers: written as strings, read from either form.
pub mod int64 {
    use serde::de::{self, Deserializer};
    use serde::{Deserialize, Serializer};
    use std::str::FromStr;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either<T> {
        Number(T),
        Text(String),
    }

    impl<T: FromStr> Either<T> {
        fn value<E: de::Error>(self) -> Result<T, E> {
            match self {
                Either::Number(n) => Ok(n),
                Either::Text(s) => s
                    .trim()
                    .parse()
                    .map_err(|_| E::custom(format!("invalid 64-bit integer {s:?}"))),
            }
        }
    }

    pub fn serialize<T: ToString, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, T: FromStr + Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        Either::<T>::deserialize(d)?.value()
    }

    pub mod option {
        use super::*;

        pub fn serialize<T: ToString, S: Serializer>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
            match v {
                Some(v) => s.serialize_str(&v.to_string()),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, T: FromStr + Deserialize<'de>, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<T>, D::Error> {
            Option::<Either<T>>::deserialize(d)?.map(Either::value).transpose()
        }
    }

    pub mod vec {
        use super::*;
        use serde::ser::SerializeSeq;

        pub fn serialize<T: ToString, S: Serializer>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(v.len()))?;
            for x in v {
                seq.serialize_element(&x.to_string())?;
            }
            seq.end()
        }

        pub fn deserialize<'de, T: FromStr + Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<Vec<T>, D::Error> {
            Vec::<Either<T>>::deserialize(d)?
                .into_iter()
                .map(Either::value)
                .collect()
        }
    }
}

/// Protobuf JSON enums: the value's name or its number.
macro_rules! json_enum {
    ($module:ident, $($name:literal => $value:literal),+ $(,)?) => {
        pub mod $module {
            use serde::de::{self, Deserializer};
            use serde::{Deserialize, Serializer};

            pub fn serialize<S: Serializer>(v: &i32, s: S) -> Result<S::Ok, S::Error> {
                match *v {
                    $($value => s.serialize_str($name),)+
                    other => s.serialize_i32(other),
                }
            }

            #[derive(Deserialize)]
            #[serde(untagged)]
            enum Either {
                Number(i32),
                Name(String),
            }

            pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
                match Either::deserialize(d)? {
                    Either::Number(n) => Ok(n),
                    $(Either::Name(n) if n == $name => Ok($value),)+
                    Either::Name(n) => Err(de::Error::custom(format!("unknown enum value {n:?}"))),
                }
            }

            #[allow(dead_code)]
            pub mod option {
                use super::*;

                pub fn serialize<S: Serializer>(v: &Option<i32>, s: S) -> Result<S::Ok, S::Error> {
                    match v {
                        Some(v) => super::serialize(v, s),
                        None => s.serialize_none(),
                    }
                }

                pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i32>, D::Error> {
                    #[derive(Deserialize)]
                    struct Wrap(#[serde(deserialize_with = "super::deserialize")] i32);
                    Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
                }
            }
        }
    };
}

json_enum!(profile_format,
    "PROFILE_FORMAT_UNSPECIFIED" => 0,
    "PROFILE_FORMAT_FLAMEGRAPH" => 1,
    "PROFILE_FORMAT_TREE" => 2,
    "PROFILE_FORMAT_DOT" => 3,
    "PROFILE_FORMAT_PPROF" => 4,
);
json_enum!(aggregation,
    "TIME_SERIES_AGGREGATION_TYPE_SUM" => 0,
    "TIME_SERIES_AGGREGATION_TYPE_AVERAGE" => 1,
);

pub const PROFILE_FORMAT_FLAMEGRAPH: i32 = 1;
pub const AGGREGATION_AVERAGE: i32 = 1;

// ---- types.v1 ----

#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LabelPair {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProfileType {
    #[prost(string, tag = "1")]
    #[serde(rename = "ID")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(string, tag = "4")]
    pub sample_type: String,
    #[prost(string, tag = "5")]
    pub sample_unit: String,
    #[prost(string, tag = "6")]
    pub period_type: String,
    #[prost(string, tag = "7")]
    pub period_unit: String,
}

#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Labels {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<LabelPair>,
}

#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Series {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<LabelPair>,
    #[prost(message, repeated, tag = "2")]
    pub points: Vec<Point>,
}

#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Point {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    #[serde(with = "int64")]
    pub timestamp: i64,
}

#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LabelValuesRequest {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, repeated, tag = "2")]
    pub matchers: Vec<String>,
    #[prost(int64, tag = "3")]
    #[serde(with = "int64")]
    pub start: i64,
    #[prost(int64, tag = "4")]
    #[serde(with = "int64")]
    pub end: i64,
}

#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LabelValuesResponse {
    #[prost(string, repeated, tag = "1")]
    pub names: Vec<String>,
}

#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LabelNamesRequest {
    #[prost(string, repeated, tag = "1")]
    pub matchers: Vec<String>,
    #[prost(int64, tag = "2")]
    #[serde(with = "int64")]
    pub start: i64,
    #[prost(int64, tag = "3")]
    #[serde(with = "int64")]
    pub end: i64,
}

#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LabelNamesResponse {
    #[prost(string, repeated, tag = "1")]
    pub names: Vec<String>,
}

/// Pyroscope's stack trace selector; flamepipe does not apply one and refuses it when set.
#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StackTraceSelector {
    #[prost(message, repeated, tag = "1")]
    pub call_site: Vec<LocationName>,
    #[prost(message, optional, tag = "2")]
    pub go_pgo: Option<GoPgo>,
}

#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LocationName {
    #[prost(string, tag = "1")]
    pub name: String,
}

#[derive(Clone, Copy, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GoPgo {
    #[prost(uint32, tag = "1")]
    pub keep_locations: u32,
    #[prost(bool, tag = "2")]
    pub aggregate_callees: bool,
}

#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GetProfileStatsRequest {}

#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GetProfileStatsResponse {
    #[prost(bool, tag = "1")]
    pub data_ingested: bool,
    #[prost(int64, tag = "2")]
    #[serde(with = "int64")]
    pub oldest_profile_time: i64,
    #[prost(int64, tag = "3")]
    #[serde(with = "int64")]
    pub newest_profile_time: i64,
}

// ---- querier.v1 ----

#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProfileTypesRequest {
    #[prost(int64, tag = "1")]
    #[serde(with = "int64")]
    pub start: i64,
    #[prost(int64, tag = "2")]
    #[serde(with = "int64")]
    pub end: i64,
}

#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProfileTypesResponse {
    #[prost(message, repeated, tag = "1")]
    pub profile_types: Vec<ProfileType>,
}

#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SeriesRequest {
    #[prost(string, repeated, tag = "1")]
    pub matchers: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub label_names: Vec<String>,
    #[prost(int64, tag = "3")]
    #[serde(with = "int64")]
    pub start: i64,
    #[prost(int64, tag = "4")]
    #[serde(with = "int64")]
    pub end: i64,
}

#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SeriesResponse {
    #[prost(message, repeated, tag = "2")]
    pub labels_set: Vec<Labels>,
}

#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SelectMergeStacktracesRequest {
    #[prost(string, tag = "1")]
    #[serde(rename = "profileTypeID")]
    pub profile_type_id: String,
    #[prost(string, tag = "2")]
    pub label_selector: String,
    #[prost(int64, tag = "3")]
    #[serde(with = "int64")]
    pub start: i64,
    #[prost(int64, tag = "4")]
    #[serde(with = "int64")]
    pub end: i64,
    #[prost(int64, optional, tag = "5")]
    #[serde(with = "int64::option", skip_serializing_if = "Option::is_none")]
    pub max_nodes: Option<i64>,
    #[prost(int32, tag = "6")]
    #[serde(with = "profile_format")]
    pub format: i32,
    #[prost(message, optional, tag = "7")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stack_trace_selector: Option<StackTraceSelector>,
    #[prost(string, repeated, tag = "8")]
    pub profile_id_selector: Vec<String>,
    #[prost(string, repeated, tag = "10")]
    pub trace_id_selector: Vec<String>,
    #[prost(string, repeated, tag = "11")]
    pub span_selector: Vec<String>,
}

#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SelectMergeStacktracesResponse {
    #[prost(message, optional, tag = "1")]
    pub flamegraph: Option<FlameGraph>,
}

#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FlameGraph {
    #[prost(string, repeated, tag = "1")]
    pub names: Vec<String>,
    #[prost(message, repeated, tag = "2")]
    pub levels: Vec<Level>,
    #[prost(int64, tag = "3")]
    #[serde(with = "int64")]
    pub total: i64,
    #[prost(int64, tag = "4")]
    #[serde(with = "int64")]
    pub max_self: i64,
}

#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Level {
    #[prost(int64, repeated, tag = "1")]
    #[serde(with = "int64::vec")]
    pub values: Vec<i64>,
}

#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SelectMergeProfileRequest {
    #[prost(string, tag = "1")]
    #[serde(rename = "profileTypeID")]
    pub profile_type_id: String,
    #[prost(string, tag = "2")]
    pub label_selector: String,
    #[prost(int64, tag = "3")]
    #[serde(with = "int64")]
    pub start: i64,
    #[prost(int64, tag = "4")]
    #[serde(with = "int64")]
    pub end: i64,
    #[prost(int64, optional, tag = "5")]
    #[serde(with = "int64::option", skip_serializing_if = "Option::is_none")]
    pub max_nodes: Option<i64>,
    #[prost(message, optional, tag = "6")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stack_trace_selector: Option<StackTraceSelector>,
    #[prost(string, repeated, tag = "7")]
    pub profile_id_selector: Vec<String>,
    #[prost(string, repeated, tag = "8")]
    pub trace_id_selector: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SelectSeriesRequest {
    #[prost(string, tag = "1")]
    #[serde(rename = "profileTypeID")]
    pub profile_type_id: String,
    #[prost(string, tag = "2")]
    pub label_selector: String,
    #[prost(int64, tag = "3")]
    #[serde(with = "int64")]
    pub start: i64,
    #[prost(int64, tag = "4")]
    #[serde(with = "int64")]
    pub end: i64,
    #[prost(string, repeated, tag = "5")]
    pub group_by: Vec<String>,
    #[prost(double, tag = "6")]
    pub step: f64,
    #[prost(int32, optional, tag = "7")]
    #[serde(with = "aggregation::option", skip_serializing_if = "Option::is_none")]
    pub aggregation: Option<i32>,
    #[prost(message, optional, tag = "8")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stack_trace_selector: Option<StackTraceSelector>,
    #[prost(int64, optional, tag = "9")]
    #[serde(with = "int64::option", skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
}

#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SelectSeriesResponse {
    #[prost(message, repeated, tag = "1")]
    pub series: Vec<Series>,
}

// ---- flamepipe's streaming events (querier.v1.QuerierStreamService) ----

#[derive(Clone, Copy, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct QueryPlan {
    #[prost(uint64, tag = "1")]
    #[serde(with = "int64")]
    pub blocks_total: u64,
    #[prost(uint64, tag = "2")]
    #[serde(with = "int64")]
    pub datasets_total: u64,
    #[prost(uint64, tag = "3")]
    #[serde(with = "int64")]
    pub bytes_total: u64,
    #[prost(bool, tag = "4")]
    pub complete: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct QueryProgress {
    #[prost(uint64, tag = "1")]
    #[serde(with = "int64")]
    pub blocks_done: u64,
    #[prost(uint64, tag = "2")]
    #[serde(with = "int64")]
    pub blocks_total: u64,
    #[prost(uint64, tag = "3")]
    #[serde(with = "int64")]
    pub datasets_done: u64,
    #[prost(uint64, tag = "4")]
    #[serde(with = "int64")]
    pub datasets_total: u64,
    #[prost(uint64, tag = "5")]
    #[serde(with = "int64")]
    pub bytes_done: u64,
    #[prost(uint64, tag = "6")]
    #[serde(with = "int64")]
    pub bytes_total: u64,
    #[prost(uint64, tag = "7")]
    #[serde(with = "int64")]
    pub profiles_merged: u64,
}

#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StageTiming {
    #[prost(string, tag = "1")]
    pub stage: String,
    #[prost(int64, tag = "2")]
    #[serde(with = "int64")]
    pub duration_ns: i64,
}

#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct QueryDiagnostics {
    #[prost(uint64, tag = "1")]
    #[serde(with = "int64")]
    pub blocks_read: u64,
    #[prost(uint64, tag = "2")]
    #[serde(with = "int64")]
    pub datasets_read: u64,
    #[prost(uint64, tag = "3")]
    #[serde(with = "int64")]
    pub bytes_read: u64,
    #[prost(uint64, tag = "4")]
    #[serde(with = "int64")]
    pub profiles_merged: u64,
    #[prost(int64, tag = "5")]
    #[serde(with = "int64")]
    pub duration_ns: i64,
    #[prost(message, repeated, tag = "6")]
    pub stages: Vec<StageTiming>,
    /// Blocks the query could not read (all or some of their datasets) and left out.
    #[prost(message, repeated, tag = "7")]
    pub skipped_blocks: Vec<SkippedBlock>,
}

#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SkippedBlock {
    #[prost(string, tag = "1")]
    pub block_id: String,
    /// `checksum`, `corrupt`, `bad_magic`, `unsupported_version` or `missing`.
    #[prost(string, tag = "2")]
    pub reason: String,
    #[prost(string, tag = "3")]
    pub message: String,
}

#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FlameGraphSnapshot {
    #[prost(message, optional, tag = "1")]
    pub progress: Option<QueryProgress>,
    #[prost(message, optional, tag = "2")]
    pub flamegraph: Option<FlameGraph>,
}

#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FlameGraphResult {
    #[prost(message, optional, tag = "1")]
    pub flamegraph: Option<FlameGraph>,
    #[prost(message, optional, tag = "2")]
    pub diagnostics: Option<QueryDiagnostics>,
}

/// One event; exactly one field is set (wire-compatible with a `oneof`).
#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SelectMergeStacktracesStreamResponse {
    #[prost(message, optional, tag = "1")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<QueryPlan>,
    #[prost(message, optional, tag = "2")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<FlameGraphSnapshot>,
    #[prost(message, optional, tag = "3")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<FlameGraphResult>,
}

#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SeriesSnapshot {
    #[prost(message, optional, tag = "1")]
    pub progress: Option<QueryProgress>,
    #[prost(message, repeated, tag = "2")]
    pub series: Vec<Series>,
}

#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SeriesResult {
    #[prost(message, repeated, tag = "1")]
    pub series: Vec<Series>,
    #[prost(message, optional, tag = "2")]
    pub diagnostics: Option<QueryDiagnostics>,
}

#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SelectSeriesStreamResponse {
    #[prost(message, optional, tag = "1")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<QueryPlan>,
    #[prost(message, optional, tag = "2")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SeriesSnapshot>,
    #[prost(message, optional, tag = "3")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<SeriesResult>,
}
