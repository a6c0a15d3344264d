//! OTLP/JSON for profiles: JSON bodies -> `ExportProfilesServiceRequest`.
//!
//! Written by hand because the `opentelemetry-proto` crate's serde support does not follow
//! the OTLP JSON rules (it refuses 64-bit integers written as strings). The rules applied,
//! from the OTLP specification's JSON encoding: field names in lowerCamelCase (the proto
//! names in snake_case are accepted too), 64-bit integers as strings or numbers, enums as
//! numbers, `traceId`/`spanId`/`profileId` as hex (not base64), other bytes as base64.
//! Unknown fields are refused with their path, not ignored: the field names of older
//! `v1development` layouts (`locationsStartIndex`, `locationTable` in a profile ...) would
//! otherwise be dropped and the profile silently misread.

use base64::Engine;
use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::profiles::v1development as otlp;
use opentelemetry_proto::tonic::resource::v1::Resource;
use serde_json::{Map, Value};

/// Why a JSON body is not an OTLP profiles request, with the path of the problem.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid OTLP/JSON at {path}: {message}")]
pub struct JsonError {
    pub path: String,
    pub message: String,
}

type Result<T> = std::result::Result<T, JsonError>;

fn error(path: &str, message: impl Into<String>) -> JsonError {
    JsonError {
        path: path.to_string(),
        message: message.into(),
    }
}

/// Parses a JSON body.
pub fn decode(body: &[u8]) -> Result<ExportProfilesServiceRequest> {
    let value: Value = serde_json::from_slice(body).map_err(|e| error("", e.to_string()))?;
    let o = Obj::new(&value, "$", &["resourceProfiles", "dictionary"])?;
    Ok(ExportProfilesServiceRequest {
        resource_profiles: o.messages("resourceProfiles", resource_profiles)?,
        dictionary: o.message("dictionary", dictionary)?,
    })
}

/// A JSON object being read as one message: knows its path and its allowed fields.
struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

fn snake(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

impl<'a> Obj<'a> {
    fn new(value: &'a Value, path: &str, fields: &[&str]) -> Result<Self> {
        let map = value
            .as_object()
            .ok_or_else(|| error(path, format!("expected an object, found {}", kind(value))))?;
        for key in map.keys() {
            if !fields.iter().any(|f| f == key || snake(f) == *key) {
                return Err(error(
                    &format!("{path}.{key}"),
                    format!(
                        "unknown field (expected one of {}); a field of an older OTLP profiles layout?",
                        fields.join(", ")
                    ),
                ));
            }
        }
        Ok(Obj {
            map,
            path: path.to_string(),
        })
    }

    fn get(&self, name: &str) -> Option<(&'a Value, String)> {
        let value = self.map.get(name).or_else(|| self.map.get(&snake(name)))?;
        if value.is_null() {
            return None;
        }
        Some((value, format!("{}.{name}", self.path)))
    }

    fn int<T: TryFrom<i128> + Default>(&self, name: &str) -> Result<T> {
        match self.get(name) {
            None => Ok(T::default()),
            Some((v, path)) => integer(v, &path),
        }
    }

    fn string(&self, name: &str) -> Result<String> {
        match self.get(name) {
            None => Ok(String::new()),
            Some((Value::String(s), _)) => Ok(s.clone()),
            Some((v, path)) => Err(error(&path, format!("expected a string, found {}", kind(v)))),
        }
    }

    fn bool(&self, name: &str) -> Result<bool> {
        match self.get(name) {
            None => Ok(false),
            Some((Value::Bool(b), _)) => Ok(*b),
            Some((v, path)) => Err(error(&path, format!("expected true or false, found {}", kind(v)))),
        }
    }

    fn array(&self, name: &str) -> Result<(&'a [Value], String)> {
        match self.get(name) {
            None => Ok((&[], String::new())),
            Some((Value::Array(a), path)) => Ok((a.as_slice(), path)),
            Some((v, path)) => Err(error(&path, format!("expected an array, found {}", kind(v)))),
        }
    }

    fn ints<T: TryFrom<i128>>(&self, name: &str) -> Result<Vec<T>> {
        let (items, path) = self.array(name)?;
        items
            .iter()
            .enumerate()
            .map(|(i, v)| integer(v, &format!("{path}[{i}]")))
            .collect()
    }

    fn strings(&self, name: &str) -> Result<Vec<String>> {
        let (items, path) = self.array(name)?;
        items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.clone()),
                v => Err(error(
                    &format!("{path}[{i}]"),
                    format!("expected a string, found {}", kind(v)),
                )),
            })
            .collect()
    }

    fn message<T>(&self, name: &str, parse: fn(&Value, &str) -> Result<T>) -> Result<Option<T>> {
        self.get(name).map(|(v, path)| parse(v, &path)).transpose()
    }

    fn messages<T>(&self, name: &str, parse: fn(&Value, &str) -> Result<T>) -> Result<Vec<T>> {
        let (items, path) = self.array(name)?;
        items
            .iter()
            .enumerate()
            .map(|(i, v)| parse(v, &format!("{path}[{i}]")))
            .collect()
    }

    /// Ids (`traceId`, `spanId`, `profileId`): hex, as OTLP/JSON writes them.
    fn hex(&self, name: &str) -> Result<Vec<u8>> {
        let text = self.string(name)?;
        if text.len() % 2 != 0 {
            return Err(error(&format!("{}.{name}", self.path), "expected hex digits"));
        }
        (0..text.len())
            .step_by(2)
            .map(|i| {
                u8::from_str_radix(&text[i..i + 2], 16)
                    .map_err(|_| error(&format!("{}.{name}", self.path), "expected hex digits"))
            })
            .collect()
    }

    fn base64(&self, name: &str) -> Result<Vec<u8>> {
        let text = self.string(name)?;
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(|e| error(&format!("{}.{name}", self.path), format!("expected base64: {e}")))
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// An integer written as a JSON number or a decimal string, in `T`'s range.
fn integer<T: TryFrom<i128>>(v: &Value, path: &str) -> Result<T> {
    let n: Option<i128> = match v {
        Value::Number(n) => n.as_i64().map(i128::from).or_else(|| n.as_u64().map(i128::from)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    let n = n.ok_or_else(|| error(path, format!("expected an integer, found {}", kind(v))))?;
    T::try_from(n).map_err(|_| error(path, format!("{n} is out of range")))
}

fn resource_profiles(v: &Value, path: &str) -> Result<otlp::ResourceProfiles> {
    let o = Obj::new(v, path, &["resource", "scopeProfiles", "schemaUrl"])?;
    Ok(otlp::ResourceProfiles {
        resource: o.message("resource", resource)?,
        scope_profiles: o.messages("scopeProfiles", scope_profiles)?,
        schema_url: o.string("schemaUrl")?,
    })
}

fn resource(v: &Value, path: &str) -> Result<Resource> {
    let o = Obj::new(v, path, &["attributes", "droppedAttributesCount", "entityRefs"])?;
    Ok(Resource {
        attributes: o.messages("attributes", key_value)?,
        dropped_attributes_count: o.int("droppedAttributesCount")?,
        entity_refs: Vec::new(),
    })
}

fn scope_profiles(v: &Value, path: &str) -> Result<otlp::ScopeProfiles> {
    let o = Obj::new(v, path, &["scope", "profiles", "schemaUrl"])?;
    Ok(otlp::ScopeProfiles {
        scope: o.message("scope", scope)?,
        profiles: o.messages("profiles", profile)?,
        schema_url: o.string("schemaUrl")?,
    })
}

fn scope(v: &Value, path: &str) -> Result<InstrumentationScope> {
    let o = Obj::new(v, path, &["name", "version", "attributes", "droppedAttributesCount"])?;
    Ok(InstrumentationScope {
        name: o.string("name")?,
        version: o.string("version")?,
        attributes: o.messages("attributes", key_value)?,
        dropped_attributes_count: o.int("droppedAttributesCount")?,
    })
}

fn key_value(v: &Value, path: &str) -> Result<KeyValue> {
    let o = Obj::new(v, path, &["key", "value", "keyStrindex"])?;
    Ok(KeyValue {
        key: o.string("key")?,
        value: o.message("value", any_value)?,
        key_strindex: o.int("keyStrindex")?,
    })
}

fn any_value(v: &Value, path: &str) -> Result<AnyValue> {
    let o = Obj::new(
        v,
        path,
        &[
            "stringValue",
            "boolValue",
            "intValue",
            "doubleValue",
            "arrayValue",
            "kvlistValue",
            "bytesValue",
            "stringValueStrindex",
        ],
    )?;
    let value = if o.get("stringValue").is_some() {
        Some(any_value::Value::StringValue(o.string("stringValue")?))
    } else if o.get("boolValue").is_some() {
        Some(any_value::Value::BoolValue(o.bool("boolValue")?))
    } else if o.get("intValue").is_some() {
        Some(any_value::Value::IntValue(o.int("intValue")?))
    } else if let Some((d, p)) = o.get("doubleValue") {
        let d = match d {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => match s.as_str() {
                "NaN" => Some(f64::NAN),
                "Infinity" => Some(f64::INFINITY),
                "-Infinity" => Some(f64::NEG_INFINITY),
                s => s.parse().ok(),
            },
            _ => None,
        };
        Some(any_value::Value::DoubleValue(
            d.ok_or_else(|| error(&p, "expected a number"))?,
        ))
    } else if o.get("arrayValue").is_some() {
        let array = o.message("arrayValue", |v, path| {
            let o = Obj::new(v, path, &["values"])?;
            Ok(ArrayValue {
                values: o.messages("values", any_value)?,
            })
        })?;
        array.map(any_value::Value::ArrayValue)
    } else if o.get("kvlistValue").is_some() {
        let list = o.message("kvlistValue", |v, path| {
            let o = Obj::new(v, path, &["values"])?;
            Ok(KeyValueList {
                values: o.messages("values", key_value)?,
            })
        })?;
        list.map(any_value::Value::KvlistValue)
    } else if o.get("bytesValue").is_some() {
        Some(any_value::Value::BytesValue(o.base64("bytesValue")?))
    } else if o.get("stringValueStrindex").is_some() {
        Some(any_value::Value::StringValueStrindex(o.int("stringValueStrindex")?))
    } else {
        None
    };
    Ok(AnyValue { value })
}

fn value_type(v: &Value, path: &str) -> Result<otlp::ValueType> {
    let o = Obj::new(v, path, &["typeStrindex", "unitStrindex"])?;
    Ok(otlp::ValueType {
        type_strindex: o.int("typeStrindex")?,
        unit_strindex: o.int("unitStrindex")?,
    })
}

fn profile(v: &Value, path: &str) -> Result<otlp::Profile> {
    let o = Obj::new(
        v,
        path,
        &[
            "sampleType",
            "samples",
            "timeUnixNano",
            "durationNano",
            "periodType",
            "period",
            "profileId",
            "droppedAttributesCount",
            "originalPayloadFormat",
            "originalPayload",
            "attributeIndices",
        ],
    )?;
    Ok(otlp::Profile {
        sample_type: o.message("sampleType", value_type)?,
        samples: o.messages("samples", sample)?,
        time_unix_nano: o.int("timeUnixNano")?,
        duration_nano: o.int("durationNano")?,
        period_type: o.message("periodType", value_type)?,
        period: o.int("period")?,
        profile_id: o.hex("profileId")?,
        dropped_attributes_count: o.int("droppedAttributesCount")?,
        original_payload_format: o.string("originalPayloadFormat")?,
        original_payload: o.base64("originalPayload")?,
        attribute_indices: o.ints("attributeIndices")?,
    })
}

fn sample(v: &Value, path: &str) -> Result<otlp::Sample> {
    let o = Obj::new(
        v,
        path,
        &[
            "stackIndex",
            "attributeIndices",
            "linkIndex",
            "values",
            "timestampsUnixNano",
        ],
    )?;
    Ok(otlp::Sample {
        stack_index: o.int("stackIndex")?,
        attribute_indices: o.ints("attributeIndices")?,
        link_index: o.int("linkIndex")?,
        values: o.ints("values")?,
        timestamps_unix_nano: o.ints("timestampsUnixNano")?,
    })
}

fn dictionary(v: &Value, path: &str) -> Result<otlp::ProfilesDictionary> {
    let o = Obj::new(
        v,
        path,
        &[
            "mappingTable",
            "locationTable",
            "functionTable",
            "linkTable",
            "stringTable",
            "attributeTable",
            "stackTable",
        ],
    )?;
    Ok(otlp::ProfilesDictionary {
        mapping_table: o.messages("mappingTable", |v, path| {
            let o = Obj::new(
                v,
                path,
                &[
                    "memoryStart",
                    "memoryLimit",
                    "fileOffset",
                    "filenameStrindex",
                    "attributeIndices",
                ],
            )?;
            Ok(otlp::Mapping {
                memory_start: o.int("memoryStart")?,
                memory_limit: o.int("memoryLimit")?,
                file_offset: o.int("fileOffset")?,
                filename_strindex: o.int("filenameStrindex")?,
                attribute_indices: o.ints("attributeIndices")?,
            })
        })?,
        location_table: o.messages("locationTable", |v, path| {
            let o = Obj::new(v, path, &["mappingIndex", "address", "lines", "attributeIndices"])?;
            Ok(otlp::Location {
                mapping_index: o.int("mappingIndex")?,
                address: o.int("address")?,
                lines: o.messages("lines", |v, path| {
                    let o = Obj::new(v, path, &["functionIndex", "line", "column"])?;
                    Ok(otlp::Line {
                        function_index: o.int("functionIndex")?,
                        line: o.int("line")?,
                        column: o.int("column")?,
                    })
                })?,
                attribute_indices: o.ints("attributeIndices")?,
            })
        })?,
        function_table: o.messages("functionTable", |v, path| {
            let o = Obj::new(
                v,
                path,
                &["nameStrindex", "systemNameStrindex", "filenameStrindex", "startLine"],
            )?;
            Ok(otlp::Function {
                name_strindex: o.int("nameStrindex")?,
                system_name_strindex: o.int("systemNameStrindex")?,
                filename_strindex: o.int("filenameStrindex")?,
                start_line: o.int("startLine")?,
            })
        })?,
        link_table: o.messages("linkTable", |v, path| {
            let o = Obj::new(v, path, &["traceId", "spanId"])?;
            Ok(otlp::Link {
                trace_id: o.hex("traceId")?,
                span_id: o.hex("spanId")?,
            })
        })?,
        string_table: o.strings("stringTable")?,
        attribute_table: o.messages("attributeTable", |v, path| {
            let o = Obj::new(v, path, &["keyStrindex", "value", "unitStrindex"])?;
            Ok(otlp::KeyValueAndUnit {
                key_strindex: o.int("keyStrindex")?,
                value: o.message("value", any_value)?,
                unit_strindex: o.int("unitStrindex")?,
            })
        })?,
        stack_table: o.messages("stackTable", |v, path| {
            let o = Obj::new(v, path, &["locationIndices"])?;
            Ok(otlp::Stack {
                location_indices: o.ints("locationIndices")?,
            })
        })?,
    })
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../integration/testdata/fixtures/otlp/");
        std::fs::read(format!("{path}{name}")).unwrap()
    }

    #[test]
    fn the_json_fixture_reads_as_its_protobuf_twin() {
        let from_json = decode(&fixture("otlp-v1.10.0-ebpf-profiler.json")).unwrap();
        let from_proto =
            ExportProfilesServiceRequest::decode(fixture("otlp-v1.10.0-ebpf-profiler.pb").as_slice()).unwrap();
        assert_eq!(from_json, from_proto);
    }

    #[test]
    fn problems_are_named_with_their_path() {
        let e = decode(
            br#"{"resourceProfiles":[{"scopeProfiles":[{"profiles":[{"samples":[{"locationsStartIndex":1}]}]}]}]}"#,
        )
        .unwrap_err();
        assert_eq!(
            e.path,
            "$.resourceProfiles[0].scopeProfiles[0].profiles[0].samples[0].locationsStartIndex"
        );
        assert!(e.message.contains("older OTLP profiles layout"), "{e}");
        let e = decode(br#"{"dictionary":{"stringTable":["", 3]}}"#).unwrap_err();
        assert_eq!(e.path, "$.dictionary.stringTable[1]");
        let e =
            decode(br#"{"resourceProfiles":[{"scopeProfiles":[{"profiles":[{"timeUnixNano":"x"}]}]}]}"#).unwrap_err();
        assert!(e.message.contains("expected an integer"), "{e}");
        let ok = decode(br#"{"resource_profiles":[],"dictionary":{"string_table":[""]}}"#).unwrap();
        assert_eq!(ok.dictionary.unwrap().string_table, [""]);
        assert!(decode(b"[1]").is_err());
        assert!(decode(b"{").is_err());
    }
}
