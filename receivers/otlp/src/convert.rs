//! OTLP profiles (`profiles/v1development`, proto v1.10) -> the core model.
//!
//! The request-wide dictionary (strings, mappings, locations, functions, stacks, attributes)
//! is interned into one symbol table per request; each OTLP `Profile` becomes one model
//! profile. Resource, scope and profile attributes become series labels (`service.name` ->
//! `service_name`, other names as Prometheus' OTLP translation makes them: `k8s.pod.name` ->
//! `k8s_pod_name`); sample attributes become sample labels.
//! Every index is checked: a profile that points outside the dictionary is rejected on its own
//! (the request's other profiles are kept and the answer reports a partial success).
//! The profile type mapping is documented in docs/otlp.md.

use std::sync::Arc;

use flamepipe_core::labels::{METRIC_NAME, PROFILE_TYPE, SERVICE_NAME, UNKNOWN_SERVICE, otel_label_name};
use flamepipe_core::profile_type::{
    DEFAULT_DISPLAY_NAMES, OTLP_PROFILE_NAME_ATTRIBUTE as PROFILE_NAME_ATTRIBUTE, ProfileType, pprof_profile_name,
};
use flamepipe_core::symbols::{Function, Line, Location, Mapping, SampleLabel};
use flamepipe_core::validate;
use flamepipe_core::{Labels, Profile, Sample, SymbolsBuilder};
use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::profiles::v1development as otlp;

/// Limits applied while converting.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Samples in one request.
    pub max_samples: usize,
    /// Frames in one stack.
    pub max_stack_depth: usize,
}

/// A converted request: the profiles kept and why others were rejected.
#[derive(Debug, Default)]
pub struct Converted {
    pub profiles: Vec<Profile>,
    pub rejected: u64,
    /// One message per rejected profile (the first few go into the answer).
    pub errors: Vec<String>,
}

/// Why a whole request was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConvertError {
    #[error("the request holds {count} samples, more than max_samples ({limit})")]
    TooManySamples { count: usize, limit: usize },
}

/// A profile rejected on its own.
struct Reject(String);

/// Converts a decoded request; `now_ns` stands in for a zero `time_unix_nano`.
pub fn convert(
    request: &ExportProfilesServiceRequest,
    limits: &Limits,
    now_ns: i64,
) -> Result<Converted, ConvertError> {
    let samples: usize = request
        .resource_profiles
        .iter()
        .flat_map(|r| &r.scope_profiles)
        .flat_map(|s| &s.profiles)
        .map(|p| p.samples.len())
        .sum();
    if samples > limits.max_samples {
        return Err(ConvertError::TooManySamples {
            count: samples,
            limit: limits.max_samples,
        });
    }
    let empty = otlp::ProfilesDictionary::default();
    let dict = request.dictionary.as_ref().unwrap_or(&empty);
    let mut ctx = Context {
        dict,
        builder: SymbolsBuilder::new(),
        strings: vec![UNSET; dict.string_table.len()],
        locations: vec![UNSET; dict.location_table.len()],
        stacks: vec![UNSET; dict.stack_table.len()],
        limits: *limits,
    };
    // Profiles share the request's symbols; they are frozen once all are interned.
    let mut pending: Vec<(usize, Pending)> = Vec::new();
    let mut out = Converted::default();
    let mut index = 0usize;
    for resource in &request.resource_profiles {
        let mut base = Labels::new();
        if let Some(r) = &resource.resource {
            add_attributes(&mut base, &r.attributes, dict);
        }
        for scope in &resource.scope_profiles {
            let mut labels = base.clone();
            if let Some(s) = &scope.scope {
                add_attributes(&mut labels, &s.attributes, dict);
            }
            // A scope that also holds CPU time as nanoseconds (a Go pprof forwarded as OTLP)
            // keeps its sample counts as counts rather than turning them into CPU time twice.
            let has_cpu_time = scope.profiles.iter().any(|p| {
                let vt = p.sample_type.unwrap_or_default();
                let s = |i| {
                    dict.string_table
                        .get(usize::try_from(i).unwrap_or(usize::MAX))
                        .map(String::as_str)
                };
                s(vt.type_strindex) == Some("cpu") && s(vt.unit_strindex) == Some("nanoseconds")
            });
            for profile in &scope.profiles {
                match ctx.profile(profile, &labels, now_ns, !has_cpu_time) {
                    Ok(p) => pending.push((index, p)),
                    Err(Reject(why)) => {
                        out.rejected += 1;
                        out.errors.push(format!("profile {index}: {why}"));
                    }
                }
                index += 1;
            }
        }
    }
    let symbols = Arc::new(ctx.builder.finish());
    // The table is built here, so it holds only ids it handed out; checked in debug builds.
    debug_assert_eq!(validate::check_symbols(&symbols), Ok(()));
    for (index, (series, profile_type, timestamp_ns, duration_ns, period, samples)) in pending {
        let profile = Profile {
            series,
            profile_type,
            timestamp_ns,
            duration_ns,
            period,
            samples,
            symbols: Arc::clone(&symbols),
        };
        // The checks every stored profile passes, applied here profile by profile so that one
        // bad profile is a partial success rather than a refused request.
        match validate::check_profile(&profile) {
            Ok(()) => out.profiles.push(profile),
            Err(why) => {
                out.rejected += 1;
                out.errors.push(format!("profile {index}: {why}"));
            }
        }
    }
    Ok(out)
}

/// A converted profile before the request's symbols are frozen:
/// (series, type, time, duration, period, samples).
type Pending = (Labels, ProfileType, i64, i64, i64, Vec<Sample>);

/// Adds OTLP attributes as series labels: names made label names, values as text. Keys and string
/// values may be references into the dictionary's string table (`key_strindex`,
/// `string_value_strindex`); an unresolvable one is skipped.
fn add_attributes(labels: &mut Labels, attributes: &[KeyValue], dict: &otlp::ProfilesDictionary) {
    for kv in attributes {
        let key = if kv.key.is_empty() {
            match get(&dict.string_table, kv.key_strindex, "attribute key_strindex") {
                Ok(key) => key.as_str(),
                Err(_) => continue,
            }
        } else {
            kv.key.as_str()
        };
        if let Some(value) = kv.value.as_ref().and_then(|v| any_value_text(v, dict)) {
            set_label(labels, key, value);
        }
    }
}

fn set_label(labels: &mut Labels, key: &str, value: String) {
    let name = match key {
        "service.name" => SERVICE_NAME.to_string(),
        other => otel_label_name(other).into_owned(),
    };
    // Reserved names come from the profile itself, never from a sender's attribute.
    if name == PROFILE_TYPE || name == METRIC_NAME || name.is_empty() {
        return;
    }
    labels.set(name, value);
}

fn any_value_text(v: &AnyValue, dict: &otlp::ProfilesDictionary) -> Option<String> {
    match v.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::StringValueStrindex(i) => get(&dict.string_table, *i, "string_value_strindex").ok().cloned(),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        any_value::Value::DoubleValue(d) => Some(d.to_string()),
        _ => None,
    }
}

/// Not converted yet, in the dictionary index caches.
const UNSET: u32 = u32::MAX;

struct Context<'a> {
    dict: &'a otlp::ProfilesDictionary,
    builder: SymbolsBuilder,
    /// Dictionary string index -> our string id.
    strings: Vec<u32>,
    /// Dictionary location index -> our location id.
    locations: Vec<u32>,
    /// Dictionary stack index -> our stack id (profiles of one request share stacks: a Go
    /// pprof forwarded as OTLP has two profiles with the same ones).
    stacks: Vec<u32>,
    limits: Limits,
}

fn get<'t, T>(table: &'t [T], index: i32, what: &str) -> Result<&'t T, Reject> {
    usize::try_from(index).ok().and_then(|i| table.get(i)).ok_or_else(|| {
        Reject(format!(
            "{what} {index} is out of range (the table has {})",
            table.len()
        ))
    })
}

impl Context<'_> {
    fn str(&self, index: i32, what: &str) -> Result<&str, Reject> {
        get(&self.dict.string_table, index, what).map(String::as_str)
    }

    fn string(&mut self, index: i32, what: &str) -> Result<u32, Reject> {
        if let Some(&id) = usize::try_from(index).ok().and_then(|i| self.strings.get(i))
            && id != UNSET
        {
            return Ok(id);
        }
        let s = get(&self.dict.string_table, index, what)?;
        let id = self.builder.string(s);
        self.strings[index as usize] = id;
        Ok(id)
    }

    fn location(&mut self, index: i32) -> Result<u32, Reject> {
        if let Some(&id) = usize::try_from(index).ok().and_then(|i| self.locations.get(i))
            && id != UNSET
        {
            return Ok(id);
        }
        let dict = self.dict;
        let loc = get(&dict.location_table, index, "location index")?;
        // Mapping 0 of the dictionary is the "no mapping" entry, as our mapping 0 is.
        let mapping = if loc.mapping_index <= 0 {
            0
        } else {
            let m = get(&dict.mapping_table, loc.mapping_index, "mapping index")?;
            let filename = self.string(m.filename_strindex, "mapping filename_strindex")?;
            self.builder.mapping(Mapping {
                memory_start: m.memory_start,
                memory_limit: m.memory_limit,
                file_offset: m.file_offset,
                filename,
                build_id: 0,
            })
        };
        let mut lines = Vec::with_capacity(loc.lines.len());
        // OTLP lists a location's lines innermost first, as pprof and our model do.
        for line in &loc.lines {
            let f = get(&dict.function_table, line.function_index, "function index")?;
            let function = Function {
                name: self.string(f.name_strindex, "function name_strindex")?,
                system_name: self.string(f.system_name_strindex, "function system_name_strindex")?,
                filename: self.string(f.filename_strindex, "function filename_strindex")?,
                start_line: f.start_line,
            };
            lines.push(Line {
                function: self.builder.function(function),
                line: line.line,
            });
        }
        let id = self.builder.location(Location {
            mapping,
            address: loc.address,
            lines,
        });
        self.locations[index as usize] = id;
        Ok(id)
    }

    /// Our stack id for a dictionary stack, converted once per request.
    fn stack(&mut self, index: i32, scratch: &mut Vec<u32>) -> Result<u32, Reject> {
        let dict = self.dict;
        let st = get(&dict.stack_table, index, "stack index")?;
        let cached = self.stacks[index as usize];
        if cached != UNSET {
            return Ok(cached);
        }
        if st.location_indices.len() > self.limits.max_stack_depth {
            return Err(Reject(format!(
                "a stack of {} frames is deeper than max_stack_depth ({})",
                st.location_indices.len(),
                self.limits.max_stack_depth
            )));
        }
        scratch.clear();
        for &l in &st.location_indices {
            scratch.push(self.location(l)?);
        }
        let id = self.builder.stack(scratch);
        self.stacks[index as usize] = id;
        Ok(id)
    }

    /// One OTLP profile.
    fn profile(
        &mut self,
        p: &otlp::Profile,
        scope_labels: &Labels,
        now_ns: i64,
        counts_as_cpu: bool,
    ) -> Result<Pending, Reject> {
        let dict = self.dict;
        let mut series = scope_labels.clone();
        let mut name_override = None;
        for &i in &p.attribute_indices {
            let attr = get(&dict.attribute_table, i, "profile attribute index")?;
            if let Some(value) = attr.value.as_ref().and_then(|v| any_value_text(v, dict)) {
                let key = self.str(attr.key_strindex, "attribute key_strindex")?.to_string();
                if key == PROFILE_NAME_ATTRIBUTE {
                    name_override = Some(value);
                } else {
                    set_label(&mut series, &key, value);
                }
            }
        }
        if series.get(SERVICE_NAME).is_none_or(str::is_empty) {
            series.set(SERVICE_NAME, UNKNOWN_SERVICE);
        }
        let vt = p.sample_type.unwrap_or_default();
        let sample_type = self.str(vt.type_strindex, "sample_type type_strindex")?.to_string();
        let sample_unit = self.str(vt.unit_strindex, "sample_type unit_strindex")?.to_string();
        let pt = p.period_type.unwrap_or_default();
        let period_type = self.str(pt.type_strindex, "period_type type_strindex")?.to_string();
        let period_unit = self.str(pt.unit_strindex, "period_type unit_strindex")?.to_string();
        // A sender that names the type (flamepipe's exporter) sent it exactly as stored.
        let counts_as_cpu = counts_as_cpu && name_override.is_none();
        let (mut profile_type, scale) = profile_type(
            [&sample_type, &sample_unit, &period_type, &period_unit],
            p.period,
            counts_as_cpu,
        );
        if let Some(name) = name_override.filter(|n| !n.is_empty() && !n.contains(':')) {
            profile_type.name = name;
        }
        series.set(METRIC_NAME, profile_type.name.clone());
        series.set(PROFILE_TYPE, profile_type.id());

        let mut samples = Vec::with_capacity(p.samples.len());
        let mut stack = Vec::new();
        let mut labels = Vec::new();
        for s in &p.samples {
            let value: i64 = if s.values.is_empty() {
                // Timestamps only: each one is one event.
                s.timestamps_unix_nano.len() as i64
            } else {
                s.values.iter().fold(0i64, |a, &v| a.saturating_add(v))
            };
            let value = value.saturating_mul(scale);
            let stack_id = self.stack(s.stack_index, &mut stack)?;
            labels.clear();
            for &a in &s.attribute_indices {
                let attr = get(&dict.attribute_table, a, "sample attribute index")?;
                let key = self.string(attr.key_strindex, "attribute key_strindex")?;
                let label = match attr.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(any_value::Value::IntValue(n)) => SampleLabel {
                        key,
                        num: *n,
                        num_unit: self.string(attr.unit_strindex, "attribute unit_strindex")?,
                        ..SampleLabel::default()
                    },
                    Some(_) => {
                        let text = attr
                            .value
                            .as_ref()
                            .and_then(|v| any_value_text(v, dict))
                            .unwrap_or_default();
                        SampleLabel {
                            key,
                            str: self.builder.string(&text),
                            ..SampleLabel::default()
                        }
                    }
                    None => continue,
                };
                labels.push(label);
            }
            labels.sort_unstable();
            samples.push(Sample {
                stack: stack_id,
                value,
                labels: self.builder.label_set(&labels),
            });
        }
        let timestamp_ns = match i64::try_from(p.time_unix_nano) {
            Ok(0) | Err(_) => now_ns,
            Ok(t) => t,
        };
        let duration_ns = i64::try_from(p.duration_nano).unwrap_or(i64::MAX);
        Ok((series, profile_type, timestamp_ns, duration_ns, p.period, samples))
    }
}

/// The Pyroscope profile type of an OTLP profile, and the factor its values are scaled by.
///
/// Sample counts with a `cpu`/`nanoseconds` period (the OTel eBPF profiler, the Python SDK's
/// CPU profile) become `process_cpu:cpu:nanoseconds:cpu:nanoseconds`, and with a
/// `wall`/`nanoseconds` period (the Python SDK's wall-clock profile, which samples idle
/// threads too) `wall:wall:nanoseconds:wall:nanoseconds`, each count multiplied by the period,
/// as Pyroscope stores them. `off_cpu` stays apart from CPU time. Other types are named by
/// Pyroscope's pprof rules. `scale_counts` false turns the conversion off (the sender also sent
/// CPU time, or named the type itself).
pub fn profile_type(
    [sample_type, sample_unit, period_type, period_unit]: [&str; 4],
    period: i64,
    scale_counts: bool,
) -> (ProfileType, i64) {
    let counts = matches!(sample_type, "samples" | "sample" | "cpu") && matches!(sample_unit, "count" | "");
    if scale_counts && counts && period_unit == "nanoseconds" && period > 0 {
        let kind = match period_type {
            "cpu" => Some(("process_cpu", "cpu")),
            "wall" => Some(("wall", "wall")),
            _ => None,
        };
        if let Some((name, kind)) = kind {
            let t = ProfileType::new(name, kind, "nanoseconds", kind, "nanoseconds");
            return (t, period);
        }
    }
    let name = if sample_type == "off_cpu" {
        "off_cpu".to_string()
    } else {
        let display = |t: &str| DEFAULT_DISPLAY_NAMES.iter().find(|(s, _)| *s == t).map(|(_, d)| *d);
        pprof_profile_name(&[sample_type], display)
    };
    let t = ProfileType::new(name, sample_type, sample_unit, period_type, period_unit);
    (t, 1)
}
