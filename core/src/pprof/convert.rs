//! pprof -> model: one [`Profile`] per sample type, all sharing one interned symbol table.
//!
//! Every id a pprof message uses is checked (strings, functions, locations, mappings): a
//! profile whose ids point nowhere is refused whole rather than stored half-right.

use std::collections::HashMap;
use std::sync::Arc;

use super::{PprofError, proto};
use crate::labels::{Labels, METRIC_NAME, PROFILE_TYPE};
use crate::model::{Profile, Sample};
use crate::profile_type::{ProfileType, pprof_profile_name};
use crate::symbols::{Function, Line, Location, Mapping, SampleLabel, SymbolsBuilder};

/// What the sender said about the profile besides its bytes.
#[derive(Clone, Debug)]
pub struct ConvertOptions<'a> {
    /// Series labels (at least `service_name`); `__name__` and `__profile_type__` are added.
    pub series: &'a Labels,
    /// Profile name the sender gave (`__name__` on the Push API); derived when absent.
    pub name: Option<&'a str>,
    /// Start time from the request (`from`); else the pprof's `time_nanos`; else `now_ns`.
    pub timestamp_ns: Option<i64>,
    /// Duration from the request (`until - from`); else the pprof's `duration_nanos`.
    pub duration_ns: Option<i64>,
    pub now_ns: i64,
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

pub fn to_profiles(p: &proto::Profile, opts: &ConvertOptions<'_>) -> Result<Vec<Profile>, PprofError> {
    if p.sample_type.is_empty() {
        return Err(PprofError::NoSampleTypes);
    }
    let mut b = SymbolsBuilder::new();
    let strings: Vec<u32> = p.string_table.iter().map(|s| b.string(s)).collect();
    let string = |what: &'static str, index: i64| -> Result<u32, PprofError> {
        usize::try_from(index)
            .ok()
            .and_then(|i| strings.get(i).copied())
            .ok_or(PprofError::StringIndex {
                what,
                index,
                len: strings.len(),
            })
    };

    let mut mappings = Vec::with_capacity(p.mapping.len());
    for m in &p.mapping {
        if m.id == 0 {
            return Err(PprofError::ReservedId { what: "mapping" });
        }
        mappings.push(b.mapping(Mapping {
            memory_start: m.memory_start,
            memory_limit: m.memory_limit,
            file_offset: m.file_offset,
            filename: string("mapping filename", m.filename)?,
            build_id: string("mapping build id", m.build_id)?,
        }));
    }
    let mapping_index = IdIndex::new(p.mapping.iter().map(|m| m.id));

    let mut functions = Vec::with_capacity(p.function.len());
    for f in &p.function {
        if f.id == 0 {
            return Err(PprofError::ReservedId { what: "function" });
        }
        functions.push(b.function(Function {
            name: string("function name", f.name)?,
            system_name: string("function system name", f.system_name)?,
            filename: string("function filename", f.filename)?,
            start_line: f.start_line,
        }));
    }
    let function_index = IdIndex::new(p.function.iter().map(|f| f.id));

    let mut locations = Vec::with_capacity(p.location.len());
    for l in &p.location {
        if l.id == 0 {
            return Err(PprofError::ReservedId { what: "location" });
        }
        let mapping = match l.mapping_id {
            0 => 0,
            id => {
                mappings[mapping_index.get(id).ok_or(PprofError::UnknownId {
                    from: "location",
                    what: "mapping",
                    id,
                })? as usize]
            }
        };
        let mut lines = Vec::with_capacity(l.line.len());
        for line in &l.line {
            let f = function_index.get(line.function_id).ok_or(PprofError::UnknownId {
                from: "location line",
                what: "function",
                id: line.function_id,
            })?;
            lines.push(Line {
                function: functions[f as usize],
                line: line.line,
            });
        }
        locations.push(b.location(Location {
            mapping,
            address: l.address,
            lines,
        }));
    }
    let location_index = IdIndex::new(p.location.iter().map(|l| l.id));

    let types = p.sample_type.len();
    let mut per_type: Vec<Vec<Sample>> = (0..types).map(|_| Vec::with_capacity(p.sample.len())).collect();
    let mut stack = Vec::new();
    let mut label_set = Vec::new();
    for s in &p.sample {
        if s.value.len() != types {
            return Err(PprofError::ValueCount {
                expected: types,
                got: s.value.len(),
            });
        }
        stack.clear();
        for &id in &s.location_id {
            let l = location_index.get(id).ok_or(PprofError::UnknownId {
                from: "sample",
                what: "location",
                id,
            })?;
            stack.push(locations[l as usize]);
        }
        let stack_id = b.stack(&stack);
        let labels = if s.label.is_empty() {
            0
        } else {
            label_set.clear();
            for l in &s.label {
                label_set.push(SampleLabel {
                    key: string("label key", l.key)?,
                    str: string("label value", l.str)?,
                    num: l.num,
                    num_unit: string("label unit", l.num_unit)?,
                });
            }
            label_set.sort_unstable();
            b.label_set(&label_set)
        };
        for (samples, &value) in per_type.iter_mut().zip(&s.value) {
            if value != 0 {
                samples.push(Sample {
                    stack: stack_id,
                    value,
                    labels,
                });
            }
        }
    }

    let symbols = Arc::new(b.finish());
    let str_of = |index: i64| -> Result<&str, PprofError> {
        let id = string("value type", index)?;
        Ok(symbols.str(id))
    };
    let (period_type, period_unit) = match &p.period_type {
        Some(vt) => (str_of(vt.r#type)?.to_string(), str_of(vt.unit)?.to_string()),
        None => (String::new(), String::new()),
    };
    let timestamp_ns = opts
        .timestamp_ns
        .or((p.time_nanos > 0).then_some(p.time_nanos))
        .unwrap_or(opts.now_ns);
    let duration_ns = opts.duration_ns.unwrap_or(p.duration_nanos).max(0);

    let sample_types = p
        .sample_type
        .iter()
        .map(|vt| str_of(vt.r#type))
        .collect::<Result<Vec<_>, _>>()?;
    let name = match opts.name {
        Some(name) => name.to_string(),
        None => pprof_profile_name(&sample_types, |st| {
            opts.display_names.and_then(|names| names.get(st)).map(String::as_str)
        }),
    };

    let mut out = Vec::with_capacity(types);
    for ((vt, samples), sample_type) in p.sample_type.iter().zip(per_type).zip(sample_types) {
        let profile_type = ProfileType {
            name: name.clone(),
            sample_type: sample_type.to_string(),
            sample_unit: str_of(vt.unit)?.to_string(),
            period_type: period_type.clone(),
            period_unit: period_unit.clone(),
        };
        let mut series = opts.series.clone();
        series.set(METRIC_NAME, profile_type.name.clone());
        series.set(PROFILE_TYPE, profile_type.id());
        out.push(Profile {
            series,
            profile_type,
            timestamp_ns,
            duration_ns,
            period: p.period,
            samples,
            symbols: Arc::clone(&symbols),
        });
    }
    Ok(out)
}
