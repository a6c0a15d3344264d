//! speedscope JSON files (https://www.speedscope.app/file-format-schema.json) into profiles:
//! what py-spy, pyinstrument, rbspy, austin and speedscope itself write.
//!
//! A file holds `shared.frames` (name, file, line, col) and one or more profiles, each
//! `sampled` (root-first stacks of frame indices, with `weights`) or `evented` (balanced
//! open/close events at non-decreasing times; each interval between two events counts for
//! the stack open during it). Every profile of a file becomes its own [`Profile`] with a
//! `thread_name` series label (its name; names that repeat get ` (<index>)` appended), so
//! that threads and processes stay apart.
//!
//! Units: `nanoseconds`, `microseconds`, `milliseconds` and `seconds` become wall time in
//! nanoseconds (`wall:wall:nanoseconds:wall:nanoseconds`), each weight or interval rounded to
//! the nearest nanosecond; `bytes` a memory profile (`memory:samples:bytes::`, as Pyroscope
//! names it); `none` a count (`samples:samples:count::`). docs/profile-types.md has the table. Anything the format
//! forbids (a frame index out of range, weights that do not match the samples, unbalanced or
//! time-reversed events, negative or non-finite values) refuses the whole file with the
//! profile index and field named.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};

use crate::labels::{Labels, METRIC_NAME, PROFILE_TYPE};
use crate::symbols::{Function, Line, Location, SymbolsBuilder};
use crate::{Profile, ProfileType, Sample};

/// The series label that tells the profiles of one file apart.
pub const THREAD_NAME: &str = "thread_name";

/// Why a speedscope file was refused. Every variant is the sender's fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpeedscopeError {
    #[error("invalid speedscope JSON at {path}: {message}")]
    Json { path: String, message: String },
    #[error("invalid speedscope file: profiles[{profile}].{field}: {problem}")]
    Profile {
        profile: usize,
        field: &'static str,
        problem: String,
    },
    #[error("invalid speedscope file: {0}")]
    File(String),
    #[error("speedscope file has more than {limit} samples")]
    TooManySamples { limit: usize },
}

impl SpeedscopeError {
    /// A short stable name for metrics (`reason` label).
    pub fn reason(&self) -> &'static str {
        match self {
            SpeedscopeError::TooManySamples { .. } => "too_large",
            _ => "bad_speedscope",
        }
    }
}

type Result<T> = std::result::Result<T, SpeedscopeError>;

/// What the sender said besides the file.
#[derive(Clone, Debug)]
pub struct SpeedscopeOptions<'a> {
    /// Series labels (at least `service_name`); `thread_name`, `__name__` and
    /// `__profile_type__` are added per profile.
    pub series: &'a Labels,
    pub timestamp_ns: i64,
    /// The request's duration; when 0, each profile's own `endValue - startValue` (time units).
    pub duration_ns: i64,
    /// Samples (sampled) plus events (evented) over all profiles of the file.
    pub max_samples: usize,
}

#[derive(Deserialize)]
struct File {
    shared: Shared,
    profiles: Vec<RawProfile>,
}

#[derive(Deserialize)]
struct Shared {
    frames: Vec<Frame>,
}

#[derive(Deserialize)]
struct Frame {
    name: String,
    #[serde(default)]
    file: Option<String>,
    #[serde(default)]
    line: Option<f64>,
}

#[derive(Deserialize)]
#[serde(tag = "type")]
enum RawProfile {
    #[serde(rename = "sampled")]
    Sampled {
        #[serde(default)]
        name: String,
        unit: Unit,
        #[serde(rename = "startValue")]
        start_value: f64,
        #[serde(rename = "endValue")]
        end_value: f64,
        samples: Stacks,
        weights: Weights,
    },
    #[serde(rename = "evented")]
    Evented {
        #[serde(default)]
        name: String,
        unit: Unit,
        #[serde(rename = "startValue")]
        start_value: f64,
        #[serde(rename = "endValue")]
        end_value: f64,
        events: Events,
    },
}

// ---- reading within the sample limit ----
//
// The limit on samples is enforced while the JSON is read, not after: a 16 MiB body of
// `[0],` is four million samples, and holding them as they are written (a vector each)
// before counting would take hundreds of MiB. Samples, weights and events count against the
// limit one by one as they are read (a budget for this thread's read), and stacks are kept
// flat, four bytes per frame index.

thread_local! {
    /// Samples and events (one budget), and weights (another), that the file being read on
    /// this thread may still hold.
    static ENTRIES_LEFT: Cell<(usize, usize)> = const { Cell::new((usize::MAX, usize::MAX)) };
    /// Set when a read ran out of budget: the error is then the limit, not the JSON.
    static OVER_LIMIT: Cell<bool> = const { Cell::new(false) };
}

/// Takes one sample or event (`weight: false`) or one weight from the budget.
fn take_one<E: de::Error>(weight: bool) -> std::result::Result<(), E> {
    let (entries, weights) = ENTRIES_LEFT.get();
    let left = if weight { weights } else { entries };
    if left == 0 {
        OVER_LIMIT.set(true);
        return Err(E::custom("more entries than the sample limit"));
    }
    ENTRIES_LEFT.set(if weight {
        (entries, weights - 1)
    } else {
        (entries - 1, weights)
    });
    Ok(())
}

/// A sampled profile's stacks, flat: `offsets[i]..offsets[i + 1]` indexes `frames` for
/// sample `i`, root first as sent.
struct Stacks {
    offsets: Vec<u32>,
    frames: Vec<u32>,
}

impl Stacks {
    fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    fn iter(&self) -> impl Iterator<Item = &[u32]> {
        self.offsets
            .windows(2)
            .map(|w| &self.frames[w[0] as usize..w[1] as usize])
    }
}

impl<'de> Deserialize<'de> for Stacks {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Outer;
        impl<'de> Visitor<'de> for Outer {
            type Value = Stacks;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of arrays of frame indices")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Stacks, A::Error> {
                let mut stacks = Stacks {
                    offsets: vec![0],
                    frames: Vec::new(),
                };
                while seq.next_element_seed(Inner(&mut stacks.frames))?.is_some() {
                    take_one(false)?;
                    let end = u32::try_from(stacks.frames.len())
                        .map_err(|_| de::Error::custom("more than 2^32 frame indices"))?;
                    stacks.offsets.push(end);
                }
                Ok(stacks)
            }
        }
        /// One stack, appended to the shared frame list.
        struct Inner<'a>(&'a mut Vec<u32>);
        impl<'de> DeserializeSeed<'de> for Inner<'_> {
            type Value = ();
            fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
                d.deserialize_seq(self)
            }
        }
        impl<'de> Visitor<'de> for Inner<'_> {
            type Value = ();
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of frame indices")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
                while let Some(frame) = seq.next_element::<u32>()? {
                    self.0.push(frame);
                }
                Ok(())
            }
        }
        d.deserialize_seq(Outer)
    }
}

/// A JSON array whose elements count against the budget as they are read.
struct Budgeted<T, const WEIGHT: bool>(Vec<T>);

type Weights = Budgeted<f64, true>;
type Events = Budgeted<Event, false>;

impl<'de, T: Deserialize<'de>, const WEIGHT: bool> Deserialize<'de> for Budgeted<T, WEIGHT> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Elements<T, const WEIGHT: bool>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>, const WEIGHT: bool> Visitor<'de> for Elements<T, WEIGHT> {
            type Value = Budgeted<T, WEIGHT>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(x) = seq.next_element()? {
                    take_one(WEIGHT)?;
                    out.push(x);
                }
                Ok(Budgeted(out))
            }
        }
        d.deserialize_seq(Elements(std::marker::PhantomData))
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Unit {
    None,
    Nanoseconds,
    Microseconds,
    Milliseconds,
    Seconds,
    Bytes,
}

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: EventKind,
    frame: u64,
    at: f64,
}

#[derive(Clone, Copy, Deserialize, PartialEq, Eq)]
enum EventKind {
    #[serde(rename = "O")]
    Open,
    #[serde(rename = "C")]
    Close,
}

impl Unit {
    /// Nanoseconds per unit for time units.
    fn ns_per_unit(self) -> Option<f64> {
        match self {
            Unit::Nanoseconds => Some(1.0),
            Unit::Microseconds => Some(1e3),
            Unit::Milliseconds => Some(1e6),
            Unit::Seconds => Some(1e9),
            Unit::None | Unit::Bytes => None,
        }
    }

    /// The profile type a profile of this unit is stored as.
    fn profile_type(self) -> ProfileType {
        match self {
            Unit::None => ProfileType::new("samples", "samples", "count", "", ""),
            Unit::Bytes => ProfileType::new("memory", "samples", "bytes", "", ""),
            _ => ProfileType::new("wall", "wall", "nanoseconds", "wall", "nanoseconds"),
        }
    }

    /// A weight (or an interval) in this unit as the stored integer value.
    fn value(self, v: f64) -> Option<i64> {
        let scaled = v * self.ns_per_unit().unwrap_or(1.0);
        // i64::MAX as f64 rounds up to 2^63, which does not fit: compare below it.
        (0.0..9.2e18).contains(&scaled).then(|| scaled.round() as i64)
    }
}

/// Decodes a speedscope file into one profile per profile of the file.
pub fn to_profiles(bytes: &[u8], opts: &SpeedscopeOptions<'_>) -> Result<Vec<Profile>> {
    let file = read_within_limit(bytes, opts.max_samples)?;
    if file.profiles.is_empty() {
        return Err(SpeedscopeError::File("the file holds no profiles".into()));
    }

    // Every profile of the file shares one symbol table: one location per frame.
    let mut b = SymbolsBuilder::new();
    let locations: Vec<u32> = file
        .shared
        .frames
        .iter()
        .map(|f| {
            let name = b.string(&f.name);
            let filename = b.string(f.file.as_deref().unwrap_or(""));
            let line = f.line.filter(|l| l.is_finite()).map_or(0, |l| l as i64);
            let function = b.function(Function {
                name,
                system_name: name,
                filename,
                start_line: 0,
            });
            b.location(Location {
                mapping: 0,
                address: 0,
                lines: vec![Line { function, line }],
            })
        })
        .collect();

    let names = thread_names(&file.profiles);
    let mut pending = Vec::with_capacity(file.profiles.len());
    let mut stack = Vec::new();
    for (index, profile) in file.profiles.iter().enumerate() {
        let bad = |field, problem: String| SpeedscopeError::Profile {
            profile: index,
            field,
            problem,
        };
        // The location of frame `i`, which entry `at` of `field` refers to.
        let frame = |i: u64, field, at: usize| {
            usize::try_from(i)
                .ok()
                .and_then(|i| locations.get(i).copied())
                .ok_or_else(|| {
                    bad(
                        field,
                        format!("{field}[{at}]: frame {i} does not exist ({} frames)", locations.len()),
                    )
                })
        };
        let (unit, start, end) = match profile {
            RawProfile::Sampled {
                unit,
                start_value,
                end_value,
                ..
            }
            | RawProfile::Evented {
                unit,
                start_value,
                end_value,
                ..
            } => (*unit, *start_value, *end_value),
        };
        if !start.is_finite() || !end.is_finite() || end < start {
            return Err(bad(
                "endValue",
                format!("the range {start}..{end} is not a forward range of numbers"),
            ));
        }
        // Stack (leaf first) -> summed value.
        let mut values: HashMap<u32, i64> = HashMap::new();
        let mut add = |stack: &[u32], value: i64, field| -> Result<()> {
            let id = b.stack(stack);
            let sum = values.entry(id).or_default();
            *sum = sum
                .checked_add(value)
                .ok_or_else(|| bad(field, "the values add up past 2^63".into()))?;
            Ok(())
        };
        match profile {
            RawProfile::Sampled { samples, weights, .. } => {
                if samples.len() != weights.0.len() {
                    return Err(bad(
                        "weights",
                        format!("{} weights for {} samples", weights.0.len(), samples.len()),
                    ));
                }
                for (i, (sample, &weight)) in samples.iter().zip(&weights.0).enumerate() {
                    let value = unit.value(weight).ok_or_else(|| {
                        bad(
                            "weights",
                            format!("weights[{i}] = {weight:?} is negative, not finite or too large"),
                        )
                    })?;
                    stack.clear();
                    for &f in sample.iter().rev() {
                        stack.push(frame(u64::from(f), "samples", i)?);
                    }
                    if value > 0 {
                        add(&stack, value, "weights")?;
                    }
                }
            }
            RawProfile::Evented { events, .. } => {
                // Open frames, root first; each interval counts for the stack open during it.
                let mut open: Vec<(u64, u32)> = Vec::new();
                let mut last_at = start;
                for (i, event) in events.0.iter().enumerate() {
                    if !event.at.is_finite() || event.at < last_at {
                        return Err(bad(
                            "events",
                            format!(
                                "events[{i}] at {} is before the event or start before it ({last_at})",
                                event.at
                            ),
                        ));
                    }
                    if !open.is_empty() && event.at > last_at {
                        let value = unit.value(event.at - last_at).ok_or_else(|| {
                            bad("events", format!("events[{i}]: the interval before it is too large"))
                        })?;
                        stack.clear();
                        stack.extend(open.iter().rev().map(|&(_, location)| location));
                        if value > 0 {
                            add(&stack, value, "events")?;
                        }
                    }
                    last_at = event.at;
                    match event.kind {
                        EventKind::Open => open.push((event.frame, frame(event.frame, "events", i)?)),
                        EventKind::Close => match open.pop() {
                            Some((f, _)) if f == event.frame => {}
                            Some((f, _)) => {
                                return Err(bad(
                                    "events",
                                    format!("events[{i}] closes frame {} while frame {f} is open", event.frame),
                                ));
                            }
                            None => {
                                return Err(bad(
                                    "events",
                                    format!("events[{i}] closes frame {} with no frame open", event.frame),
                                ));
                            }
                        },
                    }
                }
                if let Some(&(f, _)) = open.last() {
                    return Err(bad(
                        "events",
                        format!("frame {f} is opened and never closed ({} frames left open)", open.len()),
                    ));
                }
            }
        }
        let duration_ns = match (opts.duration_ns, unit.ns_per_unit()) {
            (0, Some(_)) => unit.value(end - start).unwrap_or(0),
            (d, _) => d,
        };
        pending.push((names[index].clone(), unit, duration_ns, values));
    }

    let symbols = Arc::new(b.finish());
    Ok(pending
        .into_iter()
        .map(|(thread, unit, duration_ns, values)| {
            let profile_type = unit.profile_type();
            let mut series = opts.series.clone();
            series.set(THREAD_NAME, thread);
            series.set(METRIC_NAME, profile_type.name.as_str());
            series.set(PROFILE_TYPE, profile_type.id());
            let mut samples: Vec<Sample> = values
                .into_iter()
                .map(|(stack, value)| Sample {
                    stack,
                    value,
                    labels: 0,
                })
                .collect();
            samples.sort_unstable_by_key(|s| s.stack);
            Profile {
                series,
                profile_type,
                timestamp_ns: opts.timestamp_ns,
                duration_ns,
                period: 0,
                samples,
                symbols: Arc::clone(&symbols),
            }
        })
        .collect())
}

/// How long the file's recording lasted: the longest `endValue - startValue` of its
/// profiles in time units, in nanoseconds (`None` when no profile is in time units or the
/// file does not parse). What a sender that knows only when the file was written (its
/// modification time) needs to place the recording's start.
pub fn recording_duration_ns(bytes: &[u8]) -> Option<i64> {
    #[derive(Deserialize)]
    struct Outline {
        profiles: Vec<ProfileOutline>,
    }
    #[derive(Deserialize)]
    struct ProfileOutline {
        unit: Unit,
        #[serde(rename = "startValue")]
        start_value: f64,
        #[serde(rename = "endValue")]
        end_value: f64,
    }
    let outline: Outline = serde_json::from_slice(bytes).ok()?;
    outline
        .profiles
        .iter()
        .filter(|p| p.unit.ns_per_unit().is_some())
        .filter_map(|p| p.unit.value(p.end_value - p.start_value))
        .max()
}

/// Reads the file, refusing it as soon as it holds more than `max_samples` samples and
/// events together, or more than `max_samples` weights.
fn read_within_limit(bytes: &[u8], max_samples: usize) -> Result<File> {
    ENTRIES_LEFT.set((max_samples, max_samples));
    OVER_LIMIT.set(false);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let read = serde_path_to_error::deserialize(&mut de);
    ENTRIES_LEFT.set((usize::MAX, usize::MAX));
    if OVER_LIMIT.replace(false) {
        return Err(SpeedscopeError::TooManySamples { limit: max_samples });
    }
    let file: File = read.map_err(|e| SpeedscopeError::Json {
        path: e.path().to_string(),
        message: e.inner().to_string(),
    })?;
    de.end().map_err(|e| SpeedscopeError::Json {
        path: ".".into(),
        message: e.to_string(),
    })?;
    Ok(file)
}

/// Each profile's `thread_name`: its name, with ` (<index>)` appended when the name repeats
/// in the file (or `profile <index>` when it has none), so that every profile is its own series.
fn thread_names(profiles: &[RawProfile]) -> Vec<String> {
    let name = |p: &RawProfile| match p {
        RawProfile::Sampled { name, .. } | RawProfile::Evented { name, .. } => name.trim().to_string(),
    };
    let mut counts: HashMap<String, usize> = HashMap::new();
    for p in profiles {
        *counts.entry(name(p)).or_default() += 1;
    }
    profiles
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let n = name(p);
            if n.is_empty() {
                format!("profile {i}")
            } else if counts[&n] > 1 {
                format!("{n} ({i})")
            } else {
                n
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(series: &Labels) -> SpeedscopeOptions<'_> {
        SpeedscopeOptions {
            series,
            timestamp_ns: 1_700_000_000_000_000_000,
            duration_ns: 0,
            max_samples: 1 << 20,
        }
    }

    fn decode(json: &str) -> Result<Vec<Profile>> {
        let series: Labels = [("service_name", "app")].into_iter().collect();
        to_profiles(json.as_bytes(), &opts(&series))
    }

    const FRAMES: &str =
        r#""shared":{"frames":[{"name":"main"},{"name":"work","file":"w.py","line":3},{"name":"leaf"}]}"#;

    #[test]
    fn sampled_profiles_sum_weights_per_stack() {
        let json = format!(
            r#"{{{FRAMES},"profiles":[{{"type":"sampled","name":"T1","unit":"milliseconds","startValue":0,"endValue":30,
            "samples":[[0,1],[0,1],[0,1,2]],"weights":[10,5,15]}}]}}"#
        );
        let profiles = decode(&json).unwrap();
        assert_eq!(profiles.len(), 1);
        let p = &profiles[0];
        assert_eq!(p.profile_type.id(), "wall:wall:nanoseconds:wall:nanoseconds");
        assert_eq!(p.series.get(THREAD_NAME), Some("T1"));
        assert_eq!(p.duration_ns, 30_000_000);
        assert_eq!(p.total(), 30_000_000);
        let totals = p.function_totals();
        assert_eq!((totals["work"].flat, totals["work"].cum), (15_000_000, 30_000_000));
        assert_eq!((totals["leaf"].flat, totals["main"].cum), (15_000_000, 30_000_000));
    }

    #[test]
    fn evented_profiles_count_each_interval_for_the_open_stack() {
        let json = format!(
            r#"{{{FRAMES},"profiles":[{{"type":"evented","name":"E","unit":"none","startValue":0,"endValue":14,"events":[
            {{"type":"O","frame":0,"at":0}},{{"type":"O","frame":1,"at":2}},{{"type":"C","frame":1,"at":6}},
            {{"type":"O","frame":2,"at":9}},{{"type":"C","frame":2,"at":10}},{{"type":"C","frame":0,"at":14}}]}}]}}"#
        );
        let p = &decode(&json).unwrap()[0];
        assert_eq!(p.profile_type.id(), "samples:samples:count::");
        let totals = p.function_totals();
        assert_eq!(totals["main"].flat, 2 + 3 + 4);
        assert_eq!(totals["main"].cum, 14);
        assert_eq!(totals["work"].flat, 4);
        assert_eq!(totals["leaf"].flat, 1);
    }

    #[test]
    fn repeated_names_are_told_apart() {
        let one = r#"{"type":"sampled","name":"worker","unit":"bytes","startValue":0,"endValue":1,"samples":[[0]],"weights":[8]}"#;
        let json = format!(
            r#"{{{FRAMES},"profiles":[{one},{one},{{"type":"sampled","name":"","unit":"bytes","startValue":0,"endValue":1,"samples":[[0]],"weights":[1]}}]}}"#
        );
        let profiles = decode(&json).unwrap();
        let names: Vec<_> = profiles.iter().map(|p| p.series.get(THREAD_NAME).unwrap()).collect();
        assert_eq!(names, ["worker (0)", "worker (1)", "profile 2"]);
        assert_eq!(profiles[0].profile_type.id(), "memory:samples:bytes::");
    }

    #[test]
    fn broken_files_name_the_profile_and_field() {
        let cases = [
            (
                r#"{"type":"sampled","name":"a","unit":"seconds","startValue":0,"endValue":1,"samples":[[7]],"weights":[1]}"#,
                "profiles[0].samples: samples[0]: frame 7 does not exist",
            ),
            (
                r#"{"type":"sampled","name":"a","unit":"seconds","startValue":0,"endValue":1,"samples":[[0],[0]],"weights":[1]}"#,
                "profiles[0].weights: 1 weights for 2 samples",
            ),
            (
                r#"{"type":"sampled","name":"a","unit":"seconds","startValue":0,"endValue":1,"samples":[[0]],"weights":[-1]}"#,
                "profiles[0].weights: weights[0] = -1.0 is negative",
            ),
            (
                r#"{"type":"sampled","name":"a","unit":"seconds","startValue":0,"endValue":1,"samples":[[0]],"weights":[1e300]}"#,
                "too large",
            ),
            (
                r#"{"type":"evented","name":"a","unit":"none","startValue":0,"endValue":1,"events":[{"type":"O","frame":0,"at":0}]}"#,
                "profiles[0].events: frame 0 is opened and never closed",
            ),
            (
                r#"{"type":"evented","name":"a","unit":"none","startValue":0,"endValue":1,"events":[{"type":"O","frame":0,"at":5},{"type":"C","frame":0,"at":4}]}"#,
                "profiles[0].events: events[1] at 4",
            ),
            (
                r#"{"type":"evented","name":"a","unit":"none","startValue":0,"endValue":1,"events":[{"type":"O","frame":0,"at":0},{"type":"C","frame":1,"at":1}]}"#,
                "closes frame 1 while frame 0 is open",
            ),
            (
                r#"{"type":"sampled","name":"a","unit":"parsecs","startValue":0,"endValue":1,"samples":[],"weights":[]}"#,
                "invalid speedscope JSON at profiles[0]",
            ),
        ];
        for (profile, expected) in cases {
            let json = format!(r#"{{{FRAMES},"profiles":[{profile}]}}"#);
            let e = decode(&json).unwrap_err().to_string();
            assert!(e.contains(expected), "{e} should contain {expected:?}");
        }
        assert!(decode("{").is_err());
        assert!(decode(&format!(r#"{{{FRAMES},"profiles":[]}}"#)).is_err());
        let huge = format!(
            r#"{{{FRAMES},"profiles":[{{"type":"sampled","name":"a","unit":"none","startValue":0,"endValue":1,"samples":[[0],[0]],"weights":[9e18,9e18]}}]}}"#
        );
        assert!(decode(&huge).unwrap_err().to_string().contains("past 2^63"));
    }

    #[test]
    fn the_sample_limit_holds_over_the_whole_file() {
        let series: Labels = [("service_name", "app")].into_iter().collect();
        let json = format!(
            r#"{{{FRAMES},"profiles":[{{"type":"sampled","name":"a","unit":"none","startValue":0,"endValue":1,"samples":[[0],[0],[0]],"weights":[1,1,1]}}]}}"#
        );
        let limited = SpeedscopeOptions {
            max_samples: 2,
            ..opts(&series)
        };
        assert_eq!(
            to_profiles(json.as_bytes(), &limited).unwrap_err(),
            SpeedscopeError::TooManySamples { limit: 2 }
        );
        // Weights and events count too, before anything else of the file is checked.
        let weights = format!(
            r#"{{{FRAMES},"profiles":[{{"type":"sampled","name":"a","unit":"none","startValue":0,"endValue":1,"samples":[],"weights":[1,1,1]}}]}}"#
        );
        assert_eq!(
            to_profiles(weights.as_bytes(), &limited).unwrap_err(),
            SpeedscopeError::TooManySamples { limit: 2 }
        );
        let events = r#"{"type":"O","frame":0,"at":0},{"type":"C","frame":0,"at":1}"#;
        let evented = format!(
            r#"{{{FRAMES},"profiles":[{{"type":"evented","name":"a","unit":"none","startValue":0,"endValue":1,"events":[{events},{events}]}}]}}"#
        );
        assert_eq!(
            to_profiles(evented.as_bytes(), &limited).unwrap_err(),
            SpeedscopeError::TooManySamples { limit: 2 }
        );
        // Within the limit, the same budget is fresh for the next file on this thread.
        assert!(to_profiles(json.as_bytes(), &opts(&series)).is_ok());
    }

    #[test]
    fn the_recording_lasts_as_long_as_its_longest_timed_profile() {
        let json = format!(
            r#"{{{FRAMES},"profiles":[{{"type":"sampled","name":"a","unit":"milliseconds","startValue":10,"endValue":2510,"samples":[],"weights":[]}},{{"type":"sampled","name":"b","unit":"seconds","startValue":0,"endValue":1,"samples":[],"weights":[]}},{{"type":"sampled","name":"c","unit":"bytes","startValue":0,"endValue":1e12,"samples":[],"weights":[]}}]}}"#
        );
        assert_eq!(recording_duration_ns(json.as_bytes()), Some(2_500_000_000));
        assert_eq!(recording_duration_ns(b"main;work 1"), None);
    }

    #[test]
    fn a_flood_of_samples_is_refused_as_it_is_read() {
        // Four million one-frame samples in 16 MB: refused when the limit is reached.
        let samples = "[0],".repeat(4 << 20);
        let json = format!(
            r#"{{{FRAMES},"profiles":[{{"type":"sampled","name":"a","unit":"none","startValue":0,"endValue":1,"samples":[{samples}[0]],"weights":[]}}]}}"#
        );
        let series: Labels = [("service_name", "app")].into_iter().collect();
        assert_eq!(
            to_profiles(json.as_bytes(), &opts(&series)).unwrap_err(),
            SpeedscopeError::TooManySamples { limit: 1 << 20 }
        );
    }
}
