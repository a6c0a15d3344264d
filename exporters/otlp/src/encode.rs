//! The core model -> an OTLP `ExportProfilesServiceRequest` (profiles/v1development, v1.10).
//!
//! One request per batch, with one dictionary: index 0 of every table is the null entry, as
//! the spec asks. Series labels become resource attributes (`service_name` -> `service.name`),
//! except the derived `__name__` and `__profile_type__`: the profile type travels as sample
//! and period types, and its name part (which a receiver cannot always derive, e.g. Go's
//! mutex vs block profiles) as the profile attribute `flamepipe.profile.name`. Sample labels
//! become sample attributes; symbols keep their functions, lines and mappings, so a pprof that
//! came in through the Pyroscope receiver keeps its totals, labels and names when it leaves.

use std::collections::HashMap;
use std::sync::Arc;

use flamepipe_core::Profile;
use flamepipe_core::labels::{METRIC_NAME, PROFILE_TYPE, SERVICE_NAME};
use flamepipe_core::profile_type::OTLP_PROFILE_NAME_ATTRIBUTE as PROFILE_NAME_ATTRIBUTE;
use flamepipe_core::symbols::Symbols;
use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::profiles::v1development as otlp;
use opentelemetry_proto::tonic::resource::v1::Resource;

#[derive(Default)]
struct Dictionary {
    dict: otlp::ProfilesDictionary,
    strings: HashMap<String, i32>,
    /// (symbols table, our id) -> dictionary index.
    locations: HashMap<(usize, u32), i32>,
    functions: HashMap<(usize, u32), i32>,
    mappings: HashMap<(usize, u32), i32>,
    stacks: HashMap<(usize, u32), i32>,
    attributes: HashMap<(i32, String, i32), i32>,
}

impl Dictionary {
    fn new() -> Self {
        let mut d = Dictionary::default();
        d.string("");
        d.dict.mapping_table.push(otlp::Mapping::default());
        d.dict.location_table.push(otlp::Location::default());
        d.dict.function_table.push(otlp::Function::default());
        d.dict.link_table.push(otlp::Link::default());
        d.dict.attribute_table.push(otlp::KeyValueAndUnit::default());
        d.dict.stack_table.push(otlp::Stack::default());
        d
    }

    fn string(&mut self, s: &str) -> i32 {
        if let Some(&i) = self.strings.get(s) {
            return i;
        }
        let i = self.dict.string_table.len() as i32;
        self.dict.string_table.push(s.to_string());
        self.strings.insert(s.to_string(), i);
        i
    }

    fn mapping(&mut self, table: usize, symbols: &Symbols, id: u32) -> i32 {
        if id == 0 {
            return 0;
        }
        if let Some(&i) = self.mappings.get(&(table, id)) {
            return i;
        }
        let m = &symbols.mappings[id as usize];
        let mapping = otlp::Mapping {
            memory_start: m.memory_start,
            memory_limit: m.memory_limit,
            file_offset: m.file_offset,
            filename_strindex: self.string(symbols.str(m.filename)),
            attribute_indices: Vec::new(),
        };
        let i = self.dict.mapping_table.len() as i32;
        self.dict.mapping_table.push(mapping);
        self.mappings.insert((table, id), i);
        i
    }

    fn function(&mut self, table: usize, symbols: &Symbols, id: u32) -> i32 {
        if let Some(&i) = self.functions.get(&(table, id)) {
            return i;
        }
        let f = &symbols.functions[id as usize];
        let function = otlp::Function {
            name_strindex: self.string(symbols.str(f.name)),
            system_name_strindex: self.string(symbols.str(f.system_name)),
            filename_strindex: self.string(symbols.str(f.filename)),
            start_line: f.start_line,
        };
        let i = self.dict.function_table.len() as i32;
        self.dict.function_table.push(function);
        self.functions.insert((table, id), i);
        i
    }

    fn location(&mut self, table: usize, symbols: &Symbols, id: u32) -> i32 {
        if let Some(&i) = self.locations.get(&(table, id)) {
            return i;
        }
        let l = &symbols.locations[id as usize];
        let mapping_index = self.mapping(table, symbols, l.mapping);
        let lines = l
            .lines
            .iter()
            .map(|line| otlp::Line {
                function_index: self.function(table, symbols, line.function),
                line: line.line,
                column: 0,
            })
            .collect();
        let location = otlp::Location {
            mapping_index,
            address: l.address,
            lines,
            attribute_indices: Vec::new(),
        };
        let i = self.dict.location_table.len() as i32;
        self.dict.location_table.push(location);
        self.locations.insert((table, id), i);
        i
    }

    fn stack(&mut self, table: usize, symbols: &Symbols, id: u32) -> i32 {
        if let Some(&i) = self.stacks.get(&(table, id)) {
            return i;
        }
        let location_indices = symbols
            .stack(id)
            .iter()
            .map(|&l| self.location(table, symbols, l))
            .collect();
        let i = self.dict.stack_table.len() as i32;
        self.dict.stack_table.push(otlp::Stack { location_indices });
        self.stacks.insert((table, id), i);
        i
    }

    fn attribute(&mut self, key: &str, value: any_value::Value, unit: &str) -> i32 {
        let key_strindex = self.string(key);
        let unit_strindex = self.string(unit);
        let text = match &value {
            any_value::Value::StringValue(s) => format!("s{s}"),
            any_value::Value::IntValue(n) => format!("i{n}"),
            other => format!("{other:?}"),
        };
        if let Some(&i) = self.attributes.get(&(key_strindex, text.clone(), unit_strindex)) {
            return i;
        }
        let i = self.dict.attribute_table.len() as i32;
        self.dict.attribute_table.push(otlp::KeyValueAndUnit {
            key_strindex,
            value: Some(AnyValue { value: Some(value) }),
            unit_strindex,
        });
        self.attributes.insert((key_strindex, text, unit_strindex), i);
        i
    }
}

fn resource_attributes(profile: &Profile) -> Vec<KeyValue> {
    profile
        .series
        .iter()
        .filter(|(name, _)| *name != METRIC_NAME && *name != PROFILE_TYPE)
        .map(|(name, value)| KeyValue {
            key: if name == SERVICE_NAME { "service.name" } else { name }.to_string(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.to_string())),
            }),
            key_strindex: 0,
        })
        .collect()
}

/// Encodes a batch's profiles as one request: one `ResourceProfiles` per distinct series.
pub fn encode(profiles: &[Profile]) -> ExportProfilesServiceRequest {
    let mut d = Dictionary::new();
    let mut resources: Vec<otlp::ResourceProfiles> = Vec::new();
    let mut by_series: HashMap<Vec<KeyValueKey>, usize> = HashMap::new();
    for profile in profiles {
        let table = Arc::as_ptr(&profile.symbols) as usize;
        let symbols = &profile.symbols;
        let t = &profile.profile_type;
        let sample_type = otlp::ValueType {
            type_strindex: d.string(&t.sample_type),
            unit_strindex: d.string(&t.sample_unit),
        };
        let period_type = otlp::ValueType {
            type_strindex: d.string(&t.period_type),
            unit_strindex: d.string(&t.period_unit),
        };
        let samples = profile
            .samples
            .iter()
            .map(|s| {
                let attribute_indices = symbols
                    .label_set(s.labels)
                    .iter()
                    .map(|l| {
                        let key = symbols.str(l.key).to_string();
                        if l.str != 0 {
                            d.attribute(&key, any_value::Value::StringValue(symbols.str(l.str).to_string()), "")
                        } else {
                            d.attribute(&key, any_value::Value::IntValue(l.num), symbols.str(l.num_unit))
                        }
                    })
                    .collect();
                otlp::Sample {
                    stack_index: d.stack(table, symbols, s.stack),
                    attribute_indices,
                    link_index: 0,
                    values: vec![s.value],
                    timestamps_unix_nano: Vec::new(),
                }
            })
            .collect();
        let name = d.attribute(
            PROFILE_NAME_ATTRIBUTE,
            any_value::Value::StringValue(t.name.clone()),
            "",
        );
        let otlp_profile = otlp::Profile {
            sample_type: Some(sample_type),
            samples,
            time_unix_nano: u64::try_from(profile.timestamp_ns).unwrap_or(0),
            duration_nano: u64::try_from(profile.duration_ns).unwrap_or(0),
            period_type: Some(period_type),
            period: profile.period,
            attribute_indices: vec![name],
            ..Default::default()
        };
        let attributes = resource_attributes(profile);
        let key: Vec<KeyValueKey> = attributes.iter().map(KeyValueKey::of).collect();
        let index = *by_series.entry(key).or_insert_with(|| {
            resources.push(otlp::ResourceProfiles {
                resource: Some(Resource {
                    attributes,
                    ..Default::default()
                }),
                scope_profiles: vec![otlp::ScopeProfiles::default()],
                schema_url: String::new(),
            });
            resources.len() - 1
        });
        resources[index].scope_profiles[0].profiles.push(otlp_profile);
    }
    ExportProfilesServiceRequest {
        resource_profiles: resources,
        dictionary: Some(d.dict),
    }
}

/// A resource attribute as a hashable key (all values we write are strings).
#[derive(Clone, PartialEq, Eq, Hash)]
struct KeyValueKey(String, String);

impl KeyValueKey {
    fn of(kv: &KeyValue) -> Self {
        let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(any_value::Value::StringValue(s)) => s.clone(),
            _ => String::new(),
        };
        KeyValueKey(kv.key.clone(), value)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use flamepipe_core::Labels;
    use flamepipe_core::formats::pprof::{self, ConvertOptions, Limits};
    use flamepipe_receiver_otlp::convert::{self, Limits as OtlpLimits};
    use prost::Message;

    use super::*;

    /// Every pprof fixture, through encode -> protobuf -> the `otlp` receiver's conversion,
    /// comes back with the same profile type, series labels, times and per-function totals.
    #[test]
    fn pprof_fixtures_survive_a_round_trip_through_otlp() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../integration/testdata/fixtures/pprof");
        let mut files: Vec<_> = std::fs::read_dir(&root)
            .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(files.len() >= 50);
        for path in files {
            let series: Labels = [("service_name", "round-trip"), ("region", "eu-1")]
                .into_iter()
                .collect();
            let opts = ConvertOptions {
                series: &series,
                name: None,
                timestamp_ns: Some(1_700_000_000_000_000_000),
                duration_ns: Some(10_000_000_000),
                default_timestamp_ns: 0,
                display_names: None,
            };
            let bytes = std::fs::read(&path).unwrap();
            let input = pprof::decode_profiles(&bytes, &Limits::default(), &opts).unwrap();
            let wire = encode(&input).encode_to_vec();
            let request = ExportProfilesServiceRequest::decode(wire.as_slice()).unwrap();
            let limits = OtlpLimits {
                max_samples: usize::MAX,
                max_stack_depth: usize::MAX,
            };
            let out = convert::convert(&request, &limits, 0).unwrap();
            assert_eq!(out.rejected, 0, "{}: {:?}", path.display(), out.errors);
            assert_eq!(out.profiles.len(), input.len(), "{}", path.display());
            for (a, b) in input.iter().zip(&out.profiles) {
                let what = format!("{} {}", path.display(), a.profile_type);
                assert_eq!(a.profile_type, b.profile_type, "{what}");
                assert_eq!(a.series, b.series, "{what}");
                assert_eq!(
                    (a.timestamp_ns, a.duration_ns, a.period),
                    (b.timestamp_ns, b.duration_ns, b.period)
                );
                assert_eq!(a.total(), b.total(), "{what}");
                assert_eq!(a.function_totals(), b.function_totals(), "{what}");
                let labels = |p: &Profile| {
                    let mut l: Vec<Vec<(String, String, i64)>> = p
                        .samples
                        .iter()
                        .map(|s| {
                            p.symbols
                                .label_set(s.labels)
                                .iter()
                                .map(|l| {
                                    (
                                        p.symbols.str(l.key).to_string(),
                                        p.symbols.str(l.str).to_string(),
                                        l.num,
                                    )
                                })
                                .collect()
                        })
                        .collect();
                    l.sort();
                    l
                };
                assert_eq!(labels(a), labels(b), "{what}");
            }
        }
    }
}
