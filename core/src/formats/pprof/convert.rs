//! pprof -> model: one [`Profile`] per sample type, all sharing one interned symbol table.
//!
//! Every id a pprof message uses is checked (strings, functions, locations, mappings): a
//! profile whose ids point nowhere is refused whole rather than stored half-right.

use std::collections::HashMap;
use std::sync::Arc;

use super::PprofError;
use super::flat::FlatProfile;
use crate::labels::{Labels, METRIC_NAME, PROFILE_TYPE};
use crate::model::{Profile, Sample};
use crate::profile_type::{ProfileType, pprof_profile_name};
use crate::symbols::{FlatInterner, Function, Line, Location, Mapping, SampleLabel, Symbols};

/// What the sender said about the profile besides its bytes.
#[derive(Clone, Debug)]
pub struct ConvertOptions<'a> {
    /// Series labels (at least `service_name`); `__name__` and `__profile_type__` are added.
    pub series: &'a Labels,
    /// Profile name the sender gave (`__name__` on the Push API); derived when absent.
    pub name: Option<&'a str>,
    /// A start time that overrides the pprof's own `time_nanos`.
    pub timestamp_ns: Option<i64>,
    /// Duration from the request (`until - from`); else the pprof's `duration_nanos`.
    pub duration_ns: Option<i64>,
    /// The start time when neither `timestamp_ns` nor the pprof gives one (pprof's 0).
    pub default_timestamp_ns: i64,
    /// Display names from `sample_type_config` on `/ingest` (pprof type -> display name);
    /// they only decide the derived profile name, as in Pyroscope.
    pub display_names: Option<&'a HashMap<String, String>>,
}

/// Dense index from pprof ids (usually 1..=n in order) to positions.
struct IdIndex {
    dense: bool,
    map: HashMap<u64, u32>,
    len: usize,
}

impl IdIndex {
    fn new(ids: impl ExactSizeIterator<Item = u64> + Clone) -> Self {
        let len = ids.len();
        let dense = ids.clone().enumerate().all(|(i, id)| id == i as u64 + 1);
        let map = if dense {
            HashMap::new()
        } else {
            ids.enumerate().map(|(i, id)| (id, i as u32)).collect()
        };
        IdIndex { dense, map, len }
    }

    fn get(&self, id: u64) -> Option<u32> {
        if self.dense {
            (id >= 1 && id <= self.len as u64).then(|| (id - 1) as u32)
        } else {
            self.map.get(&id).copied()
        }
    }
}

/// Converts a decoded pprof.
///
/// The request's tables are taken as they are, in order: pprof ids are already unique per
/// table, and the block builder dedups across requests when it imports them. Only stacks and
/// sample label sets are interned here, since samples name them by content.
pub fn to_profiles(p: &FlatProfile<'_>, opts: &ConvertOptions<'_>) -> Result<Vec<Profile>, PprofError> {
    let FlatProfile {
        sample_types: sample_type,
        samples,
        mappings: pprof_mappings,
        locations: pprof_locations,
        functions: pprof_functions,
        time_nanos,
        duration_nanos,
        period_type,
        period,
        ..
    } = p;
    let (time_nanos, duration_nanos, period) = (*time_nanos, *duration_nanos, *period);
    if sample_type.is_empty() {
        return Err(PprofError::NoSampleTypes);
    }
    let strings: Vec<String> = match p.strings.first() {
        None => vec![String::new()],
        Some(first) if !first.is_empty() => return Err(PprofError::FirstStringNotEmpty),
        Some(_) => p.strings.iter().map(|s| s.to_string()).collect(),
    };
    let string_count = strings.len();
    let string = |what: &'static str, index: i64| -> Result<u32, PprofError> {
        u32::try_from(index)
            .ok()
            .filter(|&i| (i as usize) < string_count)
            .ok_or(PprofError::StringIndex {
                what,
                index,
                len: string_count,
            })
    };

    // Mapping 0 is "no mapping"; pprof mapping i lands at i + 1.
    let mut mappings = Vec::with_capacity(pprof_mappings.len() + 1);
    mappings.push(Mapping::default());
    for m in pprof_mappings {
        if m.id == 0 {
            return Err(PprofError::ReservedId { what: "mapping" });
        }
        mappings.push(Mapping {
            memory_start: m.memory_start,
            memory_limit: m.memory_limit,
            file_offset: m.file_offset,
            filename: string("mapping filename", m.filename)?,
            build_id: string("mapping build id", m.build_id)?,
        });
    }
    let mapping_index = IdIndex::new(pprof_mappings.iter().map(|m| m.id));

    let mut functions = Vec::with_capacity(pprof_functions.len());
    for f in pprof_functions {
        if f.id == 0 {
            return Err(PprofError::ReservedId { what: "function" });
        }
        functions.push(Function {
            name: string("function name", f.name)?,
            system_name: string("function system name", f.system_name)?,
            filename: string("function filename", f.filename)?,
            start_line: f.start_line,
        });
    }
    let function_index = IdIndex::new(pprof_functions.iter().map(|f| f.id));

    let mut locations = Vec::with_capacity(pprof_locations.len());
    for l in pprof_locations {
        if l.id == 0 {
            return Err(PprofError::ReservedId { what: "location" });
        }
        let mapping = match l.mapping_id {
            0 => 0,
            id => {
                mapping_index.get(id).ok_or(PprofError::UnknownId {
                    from: "location",
                    what: "mapping",
                    id,
                })? + 1
            }
        };
        let lines = p
            .location_lines(l)
            .iter()
            .map(|line| {
                let function = function_index.get(line.function_id).ok_or(PprofError::UnknownId {
                    from: "location line",
                    what: "function",
                    id: line.function_id,
                })?;
                Ok(Line {
                    function,
                    line: line.line,
                })
            })
            .collect::<Result<Vec<_>, PprofError>>()?;
        locations.push(Location {
            mapping,
            address: l.address,
            lines,
        });
    }
    let location_index = IdIndex::new(pprof_locations.iter().map(|l| l.id));

    let types = sample_type.len();
    let mut per_type: Vec<Vec<Sample>> = (0..types).map(|_| Vec::with_capacity(samples.len())).collect();
    let mut stacks = FlatInterner::default();
    let mut label_sets = FlatInterner::default();
    label_sets.intern(&[]);
    let mut stack = Vec::new();
    let mut label_set = Vec::new();
    for s in samples {
        let values = p.sample_values(s);
        if values.len() != types {
            return Err(PprofError::ValueCount {
                expected: types,
                got: values.len(),
            });
        }
        stack.clear();
        for &id in p.sample_locations(s) {
            stack.push(location_index.get(id).ok_or(PprofError::UnknownId {
                from: "sample",
                what: "location",
                id,
            })?);
        }
        let stack_id = stacks.intern(&stack);
        let sample_labels = p.sample_labels(s);
        let labels = if sample_labels.is_empty() {
            0
        } else {
            label_set.clear();
            for l in sample_labels {
                label_set.push(SampleLabel {
                    key: string("label key", l.key)?,
                    str: string("label value", l.str)?,
                    num: l.num,
                    num_unit: string("label unit", l.num_unit)?,
                });
            }
            label_set.sort_unstable();
            label_sets.intern(&label_set)
        };
        for (samples, &value) in per_type.iter_mut().zip(values) {
            if value != 0 {
                samples.push(Sample {
                    stack: stack_id,
                    value,
                    labels,
                });
            }
        }
    }

    let str_of = |index: i64| -> Result<&str, PprofError> { Ok(&strings[string("value type", index)? as usize]) };
    let (period_type, period_unit) = match period_type {
        Some(vt) => (str_of(vt.r#type)?.to_string(), str_of(vt.unit)?.to_string()),
        None => (String::new(), String::new()),
    };
    let timestamp_ns = opts
        .timestamp_ns
        .or((time_nanos > 0).then_some(time_nanos))
        .unwrap_or(opts.default_timestamp_ns);
    let duration_ns = opts.duration_ns.unwrap_or(duration_nanos).max(0);
    let type_names = sample_type
        .iter()
        .map(|vt| Ok((str_of(vt.r#type)?.to_string(), str_of(vt.unit)?.to_string())))
        .collect::<Result<Vec<_>, PprofError>>()?;
    let name = match opts.name {
        Some(name) => name.to_string(),
        None => {
            let sample_types: Vec<&str> = type_names.iter().map(|(t, _)| t.as_str()).collect();
            pprof_profile_name(&sample_types, |st| {
                opts.display_names.and_then(|names| names.get(st)).map(String::as_str)
            })
        }
    };

    let (stack_offsets, stack_locations) = stacks.into_parts();
    let (label_set_offsets, label_set_labels) = label_sets.into_parts();
    let symbols = Arc::new(Symbols {
        strings,
        mappings,
        functions,
        locations,
        stack_offsets,
        stack_locations,
        label_set_offsets,
        label_set_labels,
    });
    let mut out = Vec::with_capacity(types);
    for ((sample_type, sample_unit), samples) in type_names.into_iter().zip(per_type) {
        let profile_type = ProfileType::new(
            name.as_str(),
            sample_type,
            sample_unit,
            period_type.as_str(),
            period_unit.as_str(),
        );
        let mut series = opts.series.clone();
        series.set(METRIC_NAME, profile_type.name.clone());
        series.set(PROFILE_TYPE, profile_type.id());
        out.push(Profile {
            series,
            profile_type,
            timestamp_ns,
            duration_ns,
            period,
            samples,
            symbols: Arc::clone(&symbols),
        });
    }
    Ok(out)
}
