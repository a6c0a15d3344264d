//! Whatever ingest accepts, a block holds and the block reader reads back with the same
//! totals: property tests over arbitrary profiles and over arbitrary input to every decoder
//! (pprof, speedscope and folded on `/ingest`, the Push API in protobuf and JSON, OTLP protobuf
//! and JSON).
//!
//! "Accepts" is what a request goes through before it is acknowledged: the receiver's decoder
//! (`decode_ingest`, `decode_push`, `decode_export`, the functions its handlers run), then what
//! the shared `deliver` step does (`validate::check_batch`, the checks). Whatever passes both is
//! written with the block builder (which splits profiles into series by their sample labels),
//! read back with `decode_block`, and compared profile by profile with the reference split
//! (`split::split_by_sample_labels`) of the accepted profiles: series, type, time, total and
//! per-function flat and cumulative totals, and sample labels, summed in 128 bits so that the
//! order samples are stored in cannot matter. The split itself must keep the grand total.
//!
//! Bounded for CI: `PROPTEST_CASES` cases per property (default 96); set it higher for a longer
//! run. A decoder that panics fails the test as well.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use flamepipe_core::block::{BlockBuilder, decode_block};
use flamepipe_core::formats::pprof::{Limits, proto};
use flamepipe_core::labels::Labels;
use flamepipe_core::profile_type::ProfileType;
use flamepipe_core::split::split_by_sample_labels;
use flamepipe_core::symbols::{Function, Line, Location, SampleLabel, Symbols, SymbolsBuilder};
use flamepipe_core::{Profile, validate};
use flamepipe_integration::fixture;
use flamepipe_receiver_otlp::{BodyFormat, decode_export};
use flamepipe_receiver_pyroscope::{LabelPair, PushRequest, RawProfileSeries, RawSample, decode_ingest, decode_push};
use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::profiles::v1development as otlp;
use opentelemetry_proto::tonic::resource::v1::Resource;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use prost::Message;
use serde_json::json;
use ulid::Ulid;

const NOW_NS: i64 = 1_800_000_000_000_000_000;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(96);
    ProptestConfig {
        cases,
        max_shrink_iters: 256,
        ..ProptestConfig::default()
    }
}

fn limits() -> Limits {
    Limits {
        max_decompressed_bytes: 8 << 20,
        max_samples: 100_000,
    }
}

fn otlp_limits() -> flamepipe_receiver_otlp::convert::Limits {
    flamepipe_receiver_otlp::convert::Limits {
        max_samples: 100_000,
        max_stack_depth: 1024,
    }
}

// ---- the property ----

/// What must survive storage, for one profile: series, type id, time, duration, period,
/// total, per-function (flat, cum) and the sample labels with their values.
type Fingerprint = (
    String,
    String,
    i64,
    i64,
    i64,
    i128,
    Vec<(String, i128, i128)>,
    Vec<String>,
);

fn fingerprint(p: &Profile) -> Fingerprint {
    let mut per_stack: BTreeMap<u32, i128> = BTreeMap::new();
    let mut labels = Vec::new();
    let mut total = 0i128;
    for s in &p.samples {
        *per_stack.entry(s.stack).or_default() += i128::from(s.value);
        total += i128::from(s.value);
        let set: Vec<String> = p
            .symbols
            .label_set(s.labels)
            .iter()
            .map(|l| {
                format!(
                    "{}={}/{}{}",
                    p.symbols.str(l.key),
                    p.symbols.str(l.str),
                    l.num,
                    p.symbols.str(l.num_unit)
                )
            })
            .collect();
        labels.push(format!("{}:{}", s.value, set.join(",")));
    }
    labels.sort();
    let mut functions: BTreeMap<String, (i128, i128)> = BTreeMap::new();
    for (&stack, &value) in &per_stack {
        let mut seen: Vec<String> = Vec::new();
        for (depth, &loc) in p.symbols.stack(stack).iter().enumerate() {
            for (i, frame) in p.symbols.frame_names(loc).enumerate() {
                let name = frame.to_string();
                if depth == 0 && i == 0 {
                    functions.entry(name.clone()).or_default().0 += value;
                }
                if !seen.contains(&name) {
                    functions.entry(name.clone()).or_default().1 += value;
                    seen.push(name);
                }
            }
        }
    }
    (
        p.series.to_string(),
        p.profile_type.id(),
        p.timestamp_ns,
        p.duration_ns,
        p.period,
        total,
        functions.into_iter().map(|(n, (f, c))| (n, f, c)).collect(),
        labels,
    )
}

/// What a receiver decoded, taken through the rest of ingest and storage.
fn stored_as_accepted(decoded: Result<Vec<Profile>, impl std::fmt::Display>) -> Result<(), TestCaseError> {
    match decoded {
        Ok(profiles) => round_trip(&profiles),
        // Refused with an error: nothing was acknowledged, nothing to store.
        Err(_) => Ok(()),
    }
}

/// If `deliver`'s checks accept `profiles`, a block of them (split into series by their
/// sample labels as it is written) reads back with the same fingerprints.
fn round_trip(profiles: &[Profile]) -> Result<(), TestCaseError> {
    let total = |ps: &[Profile]| -> i128 { ps.iter().flat_map(|p| &p.samples).map(|s| i128::from(s.value)).sum() };
    let decoded_total = total(profiles);
    let types =
        |ps: &[Profile]| -> std::collections::BTreeSet<String> { ps.iter().map(|p| p.profile_type.id()).collect() };
    let decoded_types = types(profiles);
    if validate::check_batch(profiles).is_err() {
        return Ok(());
    }
    let accepted = profiles.to_vec();
    let mut builder = BlockBuilder::new("tenant", 0);
    for p in &accepted {
        builder.add(p);
    }
    let split = split_by_sample_labels(accepted);
    let profiles = split.as_slice();
    prop_assert_eq!(total(profiles), decoded_total);
    prop_assert_eq!(types(profiles), decoded_types, "a profile type was lost");
    let block = builder
        .finish(Ulid::new())
        .map_err(|e| TestCaseError::fail(format!("cannot encode accepted profiles: {e}")))?;
    let (meta, datasets) = decode_block("prop", &block.bytes)
        .map_err(|e| TestCaseError::fail(format!("the reader refused what ingest accepted: {e}")))?;
    prop_assert_eq!(meta.profile_count, profiles.len() as u64);
    let mut want: Vec<Fingerprint> = profiles.iter().map(fingerprint).collect();
    let mut got: Vec<Fingerprint> = datasets.iter().flatten().map(fingerprint).collect();
    want.sort();
    got.sort();
    prop_assert_eq!(got, want);
    Ok(())
}

// ---- strings senders send ----

/// Names, values and type parts as senders write them: ordinary, empty, with `:`, dotted,
/// dashed, non-ASCII.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z_]{1,8}",
        1 => Just(String::new()),
        1 => "[a-z]{1,3}:[a-z]{1,3}",
        1 => "[a-z]{1,4}[.-][a-z]{1,4}",
        1 => "\\PC{1,6}",
    ]
}

/// Mostly what real senders send (a word), sometimes anything [`text`] gives.
fn word() -> impl Strategy<Value = String> {
    prop_oneof![8 => "[a-z_][a-z0-9_]{0,7}", 1 => text()]
}

/// Resource and scope attribute keys as OpenTelemetry senders write them, and odd ones.
fn attribute_key() -> impl Strategy<Value = String> {
    prop_oneof![6 => "[a-z]{1,6}(\\.[a-z]{1,6}){0,2}", 1 => text()]
}

fn timestamp() -> impl Strategy<Value = i64> {
    prop_oneof![4 => 0i64..2_000_000_000_000_000_000, 1 => any::<i64>()]
}

fn value() -> impl Strategy<Value = i64> {
    prop_oneof![8 => -1_000i64..1_000_000, 1 => any::<i64>()]
}

// ---- arbitrary profiles ----

/// A symbol table with `functions` named from `names`, one location per function and stacks
/// over them; label sets from `names` too.
fn symbols(names: &[String], stacks: &[Vec<usize>], label_sets: &[Vec<(usize, usize, i64)>]) -> Symbols {
    let mut b = SymbolsBuilder::new();
    let locations: Vec<u32> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let name = b.string(name);
            let function = b.function(Function {
                name,
                ..Default::default()
            });
            b.location(Location {
                mapping: 0,
                address: i as u64,
                lines: vec![Line {
                    function,
                    line: i as i64,
                }],
            })
        })
        .collect();
    for stack in stacks {
        let ids: Vec<u32> = stack.iter().map(|&i| locations[i % locations.len()]).collect();
        b.stack(&ids);
    }
    for set in label_sets {
        let mut labels: Vec<SampleLabel> = set
            .iter()
            .map(|&(k, v, num)| SampleLabel {
                key: b.string(&names[k % names.len()]),
                str: b.string(&names[v % names.len()]),
                num,
                num_unit: 0,
            })
            .collect();
        labels.sort_unstable();
        b.label_set(&labels);
    }
    b.finish()
}

prop_compose! {
    fn arbitrary_profiles()(
        names in proptest::collection::vec(text(), 1..8),
        stacks in proptest::collection::vec(proptest::collection::vec(0usize..16, 0..6), 1..6),
        label_sets in proptest::collection::vec(proptest::collection::vec((0usize..8, 0usize..8, -5i64..5), 1..3), 0..3),
        profiles in proptest::collection::vec((
            proptest::collection::vec((word(), text()), 0..4),
            [word(), word(), word(), word(), word()],
            timestamp(),
            prop_oneof![4 => 0i64..100_000_000_000, 1 => any::<i64>()],
            proptest::collection::vec((any::<u32>(), value(), any::<u32>()), 0..12),
        ), 1..4),
        corrupt_symbols in proptest::bool::weighted(0.05),
        corrupt_sample in proptest::bool::weighted(0.05),
    ) -> Vec<Profile> {
        let mut table = symbols(&names, &stacks, &label_sets);
        if corrupt_symbols {
            table.functions[0].name = table.strings.len() as u32 + 3;
        }
        let (stack_count, label_set_count) = (table.stack_count() as u32, table.label_set_count() as u32);
        let table = Arc::new(table);
        profiles
            .into_iter()
            .map(|(labels, [name, st, su, pt, pu], timestamp_ns, duration_ns, samples)| Profile {
                series: labels.into_iter().collect::<Labels>(),
                profile_type: ProfileType {
                    name,
                    sample_type: st,
                    sample_unit: su,
                    period_type: pt,
                    period_unit: pu,
                },
                timestamp_ns,
                duration_ns,
                period: 10,
                samples: samples
                    .into_iter()
                    .enumerate()
                    .map(|(i, (stack, value, labels))| {
                        // Ids in range, but for the first sample of a corrupt case.
                        let (stack, labels) = if corrupt_sample && i == 0 {
                            (stack_count + stack % 4, labels)
                        } else {
                            (stack % stack_count, labels % label_set_count)
                        };
                        flamepipe_core::Sample { stack, value, labels }
                    })
                    .collect(),
                symbols: Arc::clone(&table),
            })
            .collect()
    }
}

// ---- pprof ----

/// Ways a pprof can be broken beyond the decoder's tolerance (or not at all).
#[derive(Clone, Copy, Debug)]
enum PprofFault {
    None,
    FirstStringNotEmpty,
    ReservedFunctionId,
    StringOutOfRange,
    UnknownLocation,
    WrongValueCount,
}

fn pprof_fault() -> impl Strategy<Value = PprofFault> {
    prop_oneof![
        10 => Just(PprofFault::None),
        1 => Just(PprofFault::FirstStringNotEmpty),
        1 => Just(PprofFault::ReservedFunctionId),
        1 => Just(PprofFault::StringOutOfRange),
        1 => Just(PprofFault::UnknownLocation),
        1 => Just(PprofFault::WrongValueCount),
    ]
}

prop_compose! {
    /// A pprof message: arbitrary strings (empty sample types, `:` in them, non-ASCII names),
    /// values and times, with ids that point where they should unless `fault` says otherwise.
    fn pprof()(
        strings in proptest::collection::vec(text(), 1..10),
        types in proptest::collection::vec((any::<usize>(), any::<usize>()), 1..4),
        functions in proptest::collection::vec(any::<usize>(), 1..6),
        locations in proptest::collection::vec(proptest::collection::vec(any::<u64>(), 0..3), 1..6),
        samples in proptest::collection::vec((
            proptest::collection::vec(any::<u64>(), 0..5),
            proptest::collection::vec(value(), 4),
            proptest::collection::vec((any::<usize>(), any::<usize>(), -3i64..3), 0..2),
        ), 0..10),
        time_nanos in prop_oneof![3 => 1_600_000_000_000_000_000i64..1_700_000_000_000_000_000, 1 => any::<i64>()],
        duration_nanos in prop_oneof![3 => 0i64..100_000_000_000, 1 => any::<i64>()],
        period_type in proptest::option::of((any::<usize>(), any::<usize>())),
        fault in pprof_fault(),
    ) -> proto::Profile {
        let mut string_table = vec![String::new()];
        string_table.extend(strings);
        if let PprofFault::FirstStringNotEmpty = fault {
            string_table[0] = "x".into();
        }
        let n = string_table.len();
        let index = |i: usize| (i % n) as i64;
        let vt = |(t, u): (usize, usize)| proto::ValueType { r#type: index(t), unit: index(u) };
        let n_types = types.len();
        let (n_functions, n_locations) = (functions.len() as u64, locations.len() as u64);
        let mut profile = proto::Profile {
            sample_type: types.into_iter().map(vt).collect(),
            sample: samples
                .into_iter()
                .map(|(location_id, mut value, label)| {
                    value.truncate(n_types);
                    proto::Sample {
                        location_id: location_id.into_iter().map(|l| l % n_locations + 1).collect(),
                        value,
                        label: label
                            .into_iter()
                            .map(|(key, s, num)| proto::Label { key: index(key), str: index(s), num, num_unit: 0 })
                            .collect(),
                    }
                })
                .collect(),
            function: functions
                .into_iter()
                .enumerate()
                .map(|(i, name)| proto::Function {
                    id: i as u64 + 1,
                    name: index(name),
                    system_name: index(name),
                    filename: 0,
                    start_line: 0,
                })
                .collect(),
            location: locations
                .into_iter()
                .enumerate()
                .map(|(i, lines)| proto::Location {
                    id: i as u64 + 1,
                    line: lines
                        .into_iter()
                        .map(|f| proto::Line { function_id: f % n_functions + 1, line: 1, column: 0 })
                        .collect(),
                    ..Default::default()
                })
                .collect(),
            string_table,
            time_nanos,
            duration_nanos,
            period_type: period_type.map(vt),
            period: 10,
            ..Default::default()
        };
        match fault {
            PprofFault::ReservedFunctionId => profile.function[0].id = 0,
            PprofFault::StringOutOfRange => profile.function[0].name = n as i64 + 2,
            PprofFault::UnknownLocation => profile.sample.push(proto::Sample {
                location_id: vec![n_locations + 5],
                value: vec![1; n_types],
                label: vec![],
            }),
            PprofFault::WrongValueCount => profile.sample.push(proto::Sample {
                location_id: vec![1],
                value: vec![1; n_types + 1],
                label: vec![],
            }),
            PprofFault::None | PprofFault::FirstStringNotEmpty => {}
        }
        profile
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).expect("gzip");
    gz.finish().expect("gzip")
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// An `/ingest` query string: an application name (with tags) and times senders send.
fn ingest_query() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            Just("app"),
            Just("app.cpu"),
            Just("app.alloc_space"),
            Just("svc{env=prod}"),
            Just("x.wall")
        ],
        prop_oneof![
            Just(""),
            Just("&from=1700000000&until=1700000010"),
            Just("&from=now-100y&until=now"),
            Just("&from=1700000010&until=1700000000")
        ],
    )
        .prop_map(|(name, times)| format!("name={name}{times}"))
}

/// Real pprof files, gunzipped: the seeds of byte-level mutations.
fn real_pprofs() -> &'static [Vec<u8>] {
    static FILES: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    FILES.get_or_init(|| {
        [
            "pprof/go-mutex.pb.gz",
            "pprof/pyroscope-go-goroutine-labels.pb.gz",
            "pprof/parca-two-stacks.pb.gz",
            "pprof/made-empty-sample-type.pb.gz",
            "pprof/pyroscope-pyspy-labels.pb",
        ]
        .iter()
        .map(|f| {
            let bytes = std::fs::read(fixture(f)).expect("fixture");
            flamepipe_core::body::maybe_gunzip(&bytes, 64 << 20)
                .expect("gunzip")
                .into_owned()
        })
        .collect()
    })
}

// ---- folded ----

/// Folded text: lines of frames (some not UTF-8) and a count, and some broken lines.
fn folded() -> impl Strategy<Value = Vec<u8>> {
    let frame = prop_oneof![
        4 => "[a-z_.]{1,8}".prop_map(String::into_bytes),
        1 => Just(b"caf\xe9".to_vec()),
        1 => "\\PC{1,4}".prop_map(String::into_bytes),
        1 => Just(Vec::new()),
    ];
    let count =
        prop_oneof![8 => "[0-9]{1,6}", 1 => "[0-9]{13,19}", 1 => Just("-3".to_string()), 1 => Just("x".to_string())];
    let line = (proptest::collection::vec(frame, 0..5), count).prop_map(|(frames, count)| {
        let mut line = frames.join(&b';');
        line.push(b' ');
        line.extend_from_slice(count.as_bytes());
        line
    });
    proptest::collection::vec(line, 1..8).prop_map(|lines| lines.join(&b'\n'))
}

// ---- speedscope ----

/// A speedscope file: frames with names senders write, and sampled or evented profiles whose
/// frame indices and weights are mostly right.
fn speedscope() -> impl Strategy<Value = Vec<u8>> {
    // Seven frames; an index past them is rare, so most files are valid.
    let frames = proptest::collection::vec(text(), 7);
    let frame = || prop_oneof![30 => 0usize..7, 1 => 7usize..9];
    let unit = prop_oneof![
        Just("none"),
        Just("nanoseconds"),
        Just("microseconds"),
        Just("milliseconds"),
        Just("seconds"),
        Just("bytes"),
    ];
    let sampled = (
        word(),
        unit.clone(),
        proptest::collection::vec(
            (
                proptest::collection::vec(frame(), 0..5),
                prop_oneof![20 => 0.0f64..100.0, 1 => -1.0f64..1e19],
            ),
            0..8,
        ),
    )
        .prop_map(|(name, unit, samples)| {
            let (stacks, weights): (Vec<_>, Vec<_>) = samples.into_iter().unzip();
            json!({"type": "sampled", "name": name, "unit": unit, "startValue": 0, "endValue": 10,
                   "samples": stacks, "weights": weights})
        });
    let evented = (
        word(),
        unit,
        proptest::collection::vec((frame(), 0.0f64..5.0, any::<bool>()), 0..8),
    )
        .prop_map(|(name, unit, steps)| {
            // Mostly balanced: each step opens a frame and sometimes closes the innermost one.
            let (mut events, mut open, mut at) = (Vec::new(), Vec::new(), 0.0);
            for (frame, dt, close) in steps {
                at += dt;
                if close && !open.is_empty() {
                    let f = open.pop().unwrap();
                    events.push(json!({"type": "C", "frame": f, "at": at}));
                } else {
                    open.push(frame);
                    events.push(json!({"type": "O", "frame": frame, "at": at}));
                }
            }
            while let Some(f) = open.pop() {
                at += 1.0;
                events.push(json!({"type": "C", "frame": f, "at": at}));
            }
            json!({"type": "evented", "name": name, "unit": unit, "startValue": 0, "endValue": at, "events": events})
        });
    (frames, proptest::collection::vec(prop_oneof![sampled, evented], 1..4)).prop_map(|(frames, profiles)| {
        let frames: Vec<_> = frames.into_iter().map(|name| json!({"name": name})).collect();
        json!({"shared": {"frames": frames}, "profiles": profiles})
            .to_string()
            .into_bytes()
    })
}

// ---- OTLP ----

fn string_value(s: String) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(s)),
    }
}

prop_compose! {
    /// An OTLP request with arbitrary dictionary entries, attributes and times.
    fn otlp_request()(
        strings in proptest::collection::vec(text(), 1..8),
        functions in proptest::collection::vec(0i32..10, 1..5),
        locations in proptest::collection::vec(proptest::collection::vec(1i32..6, 0..3), 1..5),
        stacks in proptest::collection::vec(proptest::collection::vec(1i32..6, 0..4), 1..5),
        attributes in proptest::collection::vec((0i32..10, text()), 0..3),
        resource_keys in proptest::collection::vec((attribute_key(), text()), 0..3),
        profiles in proptest::collection::vec((
            (0i32..10, 0i32..10),
            proptest::collection::vec((0i32..6, proptest::collection::vec(value(), 0..2), proptest::collection::vec(0i32..4, 0..2), 0usize..3), 0..8),
            prop_oneof![3 => 1_600_000_000_000_000_000u64..1_700_000_000_000_000_000, 1 => any::<u64>()],
            prop_oneof![3 => 0u64..100_000_000_000, 1 => any::<u64>()],
            proptest::option::of((0i32..10, 0i32..10)),
        ), 1..4),
    ) -> ExportProfilesServiceRequest {
        let mut string_table = vec![String::new()];
        string_table.extend(strings);
        // Indices mostly within their tables (the modulo), sometimes one past (a reject).
        let (n_strings, n_functions, n_locations, n_stacks) =
            (string_table.len() as i32, functions.len() as i32 + 1, locations.len() as i32 + 1, stacks.len() as i32);
        let within = |i: i32, n: i32| if i % 11 == 10 { n } else { i % n };
        let vt = |(t, u): (i32, i32)| otlp::ValueType { type_strindex: within(t, n_strings), unit_strindex: within(u, n_strings) };
        let dictionary = otlp::ProfilesDictionary {
            mapping_table: vec![otlp::Mapping::default()],
            location_table: std::iter::once(otlp::Location::default())
                .chain(locations.into_iter().map(|lines| otlp::Location {
                    lines: lines
                        .into_iter()
                        .map(|f| otlp::Line { function_index: within(f, n_functions), line: 1, column: 0 })
                        .collect(),
                    ..Default::default()
                }))
                .collect(),
            function_table: std::iter::once(otlp::Function::default())
                .chain(functions.into_iter().map(|name| otlp::Function {
                    name_strindex: within(name, n_strings),
                    system_name_strindex: within(name, n_strings),
                    filename_strindex: 0,
                    start_line: 0,
                }))
                .collect(),
            link_table: vec![otlp::Link::default()],
            string_table,
            attribute_table: std::iter::once(otlp::KeyValueAndUnit::default())
                .chain(attributes.into_iter().map(|(key, value)| otlp::KeyValueAndUnit {
                    key_strindex: within(key, n_strings),
                    value: Some(string_value(value)),
                    unit_strindex: 0,
                }))
                .collect(),
            stack_table: stacks
                .into_iter()
                .map(|locations| otlp::Stack { location_indices: locations.into_iter().map(|l| within(l, n_locations)).collect() })
                .collect(),
        };
        let n_attributes = dictionary.attribute_table.len() as i32;
        let profiles = profiles
            .into_iter()
            .map(|(sample_type, samples, time_unix_nano, duration_nano, period_type)| otlp::Profile {
                sample_type: Some(vt(sample_type)),
                samples: samples
                    .into_iter()
                    .map(|(stack_index, values, attribute_indices, timestamps)| otlp::Sample {
                        stack_index: within(stack_index, n_stacks),
                        attribute_indices: attribute_indices.into_iter().map(|a| within(a, n_attributes)).collect(),
                        link_index: 0,
                        values,
                        timestamps_unix_nano: vec![time_unix_nano; timestamps],
                    })
                    .collect(),
                time_unix_nano,
                duration_nano,
                period_type: period_type.map(vt),
                period: 1_000_000,
                ..Default::default()
            })
            .collect();
        ExportProfilesServiceRequest {
            resource_profiles: vec![otlp::ResourceProfiles {
                resource: Some(Resource {
                    attributes: resource_keys
                        .into_iter()
                        .map(|(key, value)| KeyValue { key, value: Some(string_value(value)), ..Default::default() })
                        .collect(),
                    ..Default::default()
                }),
                scope_profiles: vec![otlp::ScopeProfiles {
                    scope: Some(InstrumentationScope::default()),
                    profiles,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            dictionary: Some(dictionary),
        }
    }
}

fn otlp_decoded(body: Vec<u8>, json: bool, gzipped: bool) -> Result<Vec<Profile>, String> {
    decode_export(
        Bytes::from(body),
        BodyFormat { gzipped, json },
        &otlp_limits(),
        8 << 20,
        NOW_NS,
    )
    .map(|c| c.profiles)
    .map_err(|e| e.to_string())
}

/// JSON pointers to every leaf (string, number, bool, null) of a document.
fn leaves(v: &serde_json::Value, path: String, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, item) in map {
                leaves(item, format!("{path}/{k}"), out);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                leaves(item, format!("{path}/{i}"), out);
            }
        }
        _ => out.push(path),
    }
}

/// Changes one leaf the way a broken or unusual sender might: an empty, huge, negative or
/// odd string, or a number, or null.
fn mutate_leaf(leaf: &mut serde_json::Value, how: u8) {
    let text = leaf.as_str().map(str::to_string).unwrap_or_else(|| leaf.to_string());
    *leaf = match how % 7 {
        0 => serde_json::Value::Null,
        1 => json!(""),
        2 => json!("18446744073709551615"),
        3 => json!("-1"),
        4 => json!(format!("{text}:x")),
        5 => json!(format!("{text}.é-1")),
        _ => json!(-7),
    };
}

/// The OTLP/JSON fixture and the pointers to its leaves.
fn otlp_json_fixture() -> &'static (serde_json::Value, Vec<String>) {
    static JSON: std::sync::OnceLock<(serde_json::Value, Vec<String>)> = std::sync::OnceLock::new();
    JSON.get_or_init(|| {
        let text = std::fs::read(fixture("otlp/otlp-v1.10.0-ebpf-profiler.json")).expect("fixture");
        let document: serde_json::Value = serde_json::from_slice(&text).expect("fixture JSON");
        let mut pointers = Vec::new();
        leaves(&document, String::new(), &mut pointers);
        (document, pointers)
    })
}

proptest! {
    #![proptest_config(config())]

    /// The tie itself: what the shared checks accept, the block reader reads back intact.
    #[test]
    fn accepted_profiles_read_back_intact(profiles in arbitrary_profiles()) {
        round_trip(&profiles)?;
    }

    #[test]
    fn pprof_on_ingest(profile in pprof(), gzipped in any::<bool>(), query in ingest_query()) {
        let raw = profile.encode_to_vec();
        let body = if gzipped { gzip(&raw) } else { raw };
        let decoded = block_on(decode_ingest(&query, "application/octet-stream", Bytes::from(body), &limits(), NOW_NS));
        stored_as_accepted(decoded)?;
    }

    #[test]
    fn mutated_real_pprofs_on_ingest(
        file in 0usize..5,
        flips in proptest::collection::vec((any::<usize>(), 1u8..=255), 0..4),
        keep in 0.8f64..=1.0,
        query in ingest_query(),
    ) {
        let mut bytes = real_pprofs()[file].clone();
        let len = bytes.len();
        for (at, xor) in flips {
            bytes[at % len] ^= xor;
        }
        bytes.truncate((len as f64 * keep) as usize);
        let decoded = block_on(decode_ingest(&query, "", Bytes::from(bytes), &limits(), NOW_NS));
        stored_as_accepted(decoded)?;
    }

    #[test]
    fn folded_on_ingest(body in folded(), query in ingest_query(), explicit in any::<bool>()) {
        let query = if explicit { format!("{query}&format=folded") } else { query };
        let decoded = block_on(decode_ingest(&query, "text/plain", Bytes::from(body), &limits(), NOW_NS));
        stored_as_accepted(decoded)?;
    }

    #[test]
    fn push_in_protobuf_and_json(
        series in proptest::collection::vec((proptest::collection::vec((prop_oneof![1 => Just("__name__".to_string()), 1 => Just("service_name".to_string()), 3 => word()], text()), 0..4), pprof()), 1..3),
        json in any::<bool>(),
        gzipped in any::<bool>(),
    ) {
        let request = PushRequest {
            series: series
                .into_iter()
                .map(|(labels, profile)| RawProfileSeries {
                    labels: labels.into_iter().map(|(name, value)| LabelPair { name, value }).collect(),
                    samples: vec![RawSample { raw_profile: Bytes::from(gzip(&profile.encode_to_vec())), id: String::new() }],
                })
                .collect(),
        };
        let (content_type, body) = if json {
            let series: Vec<serde_json::Value> = request.series.iter().map(|s| json!({
                "labels": s.labels.iter().map(|l| json!({"name": l.name, "value": l.value})).collect::<Vec<_>>(),
                "samples": s.samples.iter().map(|r| json!({
                    "rawProfile": base64::engine::general_purpose::STANDARD.encode(&r.raw_profile),
                })).collect::<Vec<_>>(),
            })).collect();
            ("application/json", json!({ "series": series }).to_string().into_bytes())
        } else {
            ("application/proto", request.encode_to_vec())
        };
        let (encoding, body) = if gzipped { (Some("gzip"), gzip(&body)) } else { (None, body) };
        stored_as_accepted(decode_push(content_type, encoding, Bytes::from(body), &limits()))?;
    }

    #[test]
    fn speedscope_on_ingest(body in speedscope(), query in ingest_query(), explicit in any::<bool>()) {
        let query = if explicit { format!("{query}&format=speedscope") } else { query };
        let decoded = block_on(decode_ingest(&query, "application/json", Bytes::from(body), &limits(), NOW_NS));
        stored_as_accepted(decoded)?;
    }

    #[test]
    fn otlp_protobuf(request in otlp_request(), gzipped in any::<bool>()) {
        let raw = request.encode_to_vec();
        let body = if gzipped { gzip(&raw) } else { raw };
        stored_as_accepted(otlp_decoded(body, false, gzipped))?;
    }

    #[test]
    fn otlp_json(changes in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 0..4)) {
        let (document, pointers) = otlp_json_fixture();
        let mut document = document.clone();
        for (at, how) in changes {
            let leaf = document.pointer_mut(&pointers[at.index(pointers.len())]).expect("a leaf");
            mutate_leaf(leaf, how);
        }
        stored_as_accepted(otlp_decoded(document.to_string().into_bytes(), true, false))?;
    }

    /// Bytes that are nothing in particular, through every decoder: refused or stored intact.
    #[test]
    fn arbitrary_bytes_through_every_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let body = Bytes::from(bytes.clone());
        stored_as_accepted(block_on(decode_ingest("name=app", "", body.clone(), &limits(), NOW_NS)))?;
        stored_as_accepted(block_on(decode_ingest("name=app&format=folded", "", body.clone(), &limits(), NOW_NS)))?;
        stored_as_accepted(block_on(decode_ingest("name=app&format=speedscope", "", body.clone(), &limits(), NOW_NS)))?;
        stored_as_accepted(decode_push("application/proto", None, body.clone(), &limits()))?;
        stored_as_accepted(decode_push("application/json", None, body.clone(), &limits()))?;
        stored_as_accepted(otlp_decoded(bytes.clone(), false, false))?;
        stored_as_accepted(otlp_decoded(bytes, true, false))?;
    }
}
