//! One definition of a valid profile, shared by ingest and the block reader.
//!
//! Every receiver's profiles pass [`check_batch`] before they enter a pipeline (the shared
//! [`deliver`](crate::component::deliver) step calls it), and the block reader applies the
//! same checks to what it reads back: profile type ids, series labels, times, symbol
//! references and sample references. So whatever ingest accepts, a query can read, and a
//! block that fails these checks was not written by flamepipe (or was damaged since).
//!
//! Where real profilers send something these rules refuse, the decoders normalize it in a
//! documented way instead (docs/profile-types.md): an empty sample type or unit becomes
//! [`PLACEHOLDER`] ([`crate::ProfileType::new`]), invalid UTF-8 in a pprof string table
//! becomes U+FFFD ([`lossy_utf8`]). Everything else that fails is refused with a message
//! naming the field.

use std::borrow::Cow;
use std::sync::Arc;

use crate::model::{Profile, Sample};
use crate::profile_type::ProfileType;
use crate::symbols::Symbols;

/// What an empty profile type name, sample type or sample unit is stored as.
pub const PLACEHOLDER: &str = "unknown";

/// Why a profile (or what a block says of one) is not valid. Messages name the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("profile type {field} {value:?} {problem}")]
    ProfileType {
        field: &'static str,
        value: String,
        problem: &'static str,
    },
    #[error("label name {0:?} is not valid: it must match [a-zA-Z_][a-zA-Z0-9_]*")]
    LabelName(String),
    #[error("label {0:?} has an empty value")]
    EmptyLabelValue(String),
    #[error("label {0:?} is out of order or repeated")]
    LabelOrder(String),
    #[error("{field} {value} {problem}")]
    Time {
        field: &'static str,
        value: i64,
        problem: &'static str,
    },
    #[error("symbols: {0}")]
    Symbols(String),
    #[error("sample {index}: {what} id {id} is out of range (the table has {len})")]
    SampleRef {
        index: usize,
        what: &'static str,
        id: u32,
        len: usize,
    },
}

/// The parts of a profile type id, in id order, with the names errors give them.
const TYPE_PARTS: [&str; 5] = ["name", "sample type", "sample unit", "period type", "period unit"];

/// Checks a profile type: no part may contain `:` (it separates the parts of the id), and
/// the name, sample type and sample unit must not be empty (they say what the values are;
/// the period type and unit are optional, as in pprof).
pub fn check_profile_type(t: &ProfileType) -> Result<(), Invalid> {
    let parts = [&t.name, &t.sample_type, &t.sample_unit, &t.period_type, &t.period_unit];
    for (i, (value, field)) in parts.into_iter().zip(TYPE_PARTS).enumerate() {
        let problem = if value.contains(':') {
            "contains ':', which separates the parts of a profile type id"
        } else if i < 3 && value.is_empty() {
            "is empty"
        } else {
            continue;
        };
        return Err(Invalid::ProfileType {
            field,
            value: value.to_string(),
            problem,
        });
    }
    Ok(())
}

/// Label names as Prometheus allows them: `[a-zA-Z_][a-zA-Z0-9_]*`. Senders' dotted names
/// (`service.name`) are sanitized before they get here.
pub fn is_valid_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Checks series labels given in stored order: valid names, strictly ascending (so unique),
/// non-empty values.
pub fn check_labels<'a>(labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<(), Invalid> {
    let mut previous: Option<&str> = None;
    for (name, value) in labels {
        if !is_valid_label_name(name) {
            return Err(Invalid::LabelName(name.to_string()));
        }
        if previous.is_some_and(|p| p >= name) {
            return Err(Invalid::LabelOrder(name.to_string()));
        }
        if value.is_empty() {
            return Err(Invalid::EmptyLabelValue(name.to_string()));
        }
        previous = Some(name);
    }
    Ok(())
}

/// Checks a profile's time: unix nanoseconds from 1970 on, a duration that is not negative,
/// and an end (`timestamp + duration`) that an `i64` holds.
pub fn check_time(timestamp_ns: i64, duration_ns: i64) -> Result<(), Invalid> {
    let problem = if timestamp_ns < 0 {
        ("timestamp", timestamp_ns, "is before 1970")
    } else if duration_ns < 0 {
        ("duration", duration_ns, "is negative")
    } else if timestamp_ns.checked_add(duration_ns).is_none() {
        ("duration", duration_ns, "ends the profile past the year 2262")
    } else {
        return Ok(());
    };
    Err(Invalid::Time {
        field: problem.0,
        value: problem.1,
        problem: problem.2,
    })
}

/// Checks one sample's references into its symbol table (`stacks` and `label_sets` rows).
#[inline]
pub fn check_sample_refs(index: usize, sample: &Sample, stacks: usize, label_sets: usize) -> Result<(), Invalid> {
    if sample.stack as usize >= stacks {
        return Err(Invalid::SampleRef {
            index,
            what: "stack",
            id: sample.stack,
            len: stacks,
        });
    }
    if sample.labels as usize >= label_sets {
        return Err(Invalid::SampleRef {
            index,
            what: "label set",
            id: sample.labels,
            len: label_sets,
        });
    }
    Ok(())
}

/// Checks a symbol table: its reserved rows (string 0 is `""`, mapping 0 and label set 0
/// exist), row offsets, and that every id points inside the table it names.
pub fn check_symbols(s: &Symbols) -> Result<(), Invalid> {
    let bad = |what: String| Err(Invalid::Symbols(what));
    if s.strings.first().is_none_or(|first| !first.is_empty()) {
        return bad("string 0 must be the empty string".into());
    }
    if s.mappings.is_empty() {
        return bad("mapping 0 (no mapping) is missing".into());
    }
    check_offsets("stack", &s.stack_offsets, s.stack_locations.len())?;
    check_offsets("label set", &s.label_set_offsets, s.label_set_labels.len())?;
    if s.label_set_offsets.len() < 2 || s.label_set_offsets[1] != 0 {
        return bad("label set 0 must be the empty set".into());
    }
    // Each column's largest id against its table: one branch-free pass per column, which is
    // what keeps these checks cheap next to decoding (the ingest bench prints their share).
    let strings = s.strings.len();
    let max = |ids: &mut dyn Iterator<Item = u32>| ids.max();
    let columns: [(&str, Option<u32>, usize); 5] = [
        (
            "mapping string",
            max(&mut s.mappings.iter().map(|m| m.filename.max(m.build_id))),
            strings,
        ),
        (
            "function string",
            max(&mut s.functions.iter().map(|f| f.name.max(f.system_name).max(f.filename))),
            strings,
        ),
        (
            "location mapping",
            max(&mut s.locations.iter().map(|l| l.mapping)),
            s.mappings.len(),
        ),
        (
            "line function",
            max(&mut s
                .locations
                .iter()
                .flat_map(|l| l.lines.iter().map(|line| line.function))),
            s.functions.len(),
        ),
        (
            "sample label string",
            max(&mut s.label_set_labels.iter().map(|l| l.key.max(l.str).max(l.num_unit))),
            strings,
        ),
    ];
    let stack_locations = (
        "stack location",
        s.stack_locations.iter().copied().max(),
        s.locations.len(),
    );
    for (what, largest, len) in columns.into_iter().chain([stack_locations]) {
        if let Some(id) = largest.filter(|&id| id as usize >= len) {
            return Err(Invalid::Symbols(format!(
                "{what} id {id} is out of range (the table has {len})"
            )));
        }
    }
    Ok(())
}

/// Row offsets: start at 0, never decrease, end at the flattened column's length.
fn check_offsets(what: &str, offsets: &[u32], items: usize) -> Result<(), Invalid> {
    let ok = offsets.first() == Some(&0)
        && offsets.windows(2).all(|w| w[0] <= w[1])
        && offsets.last().is_some_and(|&end| end as usize == items);
    if ok {
        Ok(())
    } else {
        Err(Invalid::Symbols(format!("{what} offsets do not cover their rows")))
    }
}

/// Checks everything of one profile but its symbol table itself ([`check_symbols`], which
/// profiles sharing a table need to pass only once).
pub fn check_profile(p: &Profile) -> Result<(), Invalid> {
    check_profile_type(&p.profile_type)?;
    check_labels(p.series.iter())?;
    check_time(p.timestamp_ns, p.duration_ns)?;
    let (stacks, label_sets) = (p.symbols.stack_count(), p.symbols.label_set_count());
    // The common case in one pass without branches; the failing sample is found only on failure.
    let (max_stack, max_labels) = p.samples.iter().fold((0u32, 0u32), |(s, l), sample| {
        (s.max(sample.stack), l.max(sample.labels))
    });
    if p.samples.is_empty() || ((max_stack as usize) < stacks && (max_labels as usize) < label_sets) {
        return Ok(());
    }
    for (i, s) in p.samples.iter().enumerate() {
        check_sample_refs(i, s, stacks, label_sets)?;
    }
    Ok(())
}

/// A profile of a batch that is not valid: its position and the reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("profile {index} ({profile_type}): {reason}")]
pub struct InvalidProfile {
    pub index: usize,
    pub profile_type: String,
    pub reason: Invalid,
}

/// Checks every profile of a batch, and each distinct symbol table once.
pub fn check_batch(profiles: &[Profile]) -> Result<(), InvalidProfile> {
    let mut tables_checked: Vec<*const Symbols> = Vec::new();
    for (index, p) in profiles.iter().enumerate() {
        let invalid = |reason| InvalidProfile {
            index,
            profile_type: p.profile_type.to_string(),
            reason,
        };
        let table = Arc::as_ptr(&p.symbols);
        if !tables_checked.contains(&table) {
            check_symbols(&p.symbols).map_err(invalid)?;
            tables_checked.push(table);
        }
        check_profile(p).map_err(invalid)?;
    }
    Ok(())
}

/// Text from a sender that should be UTF-8: invalid sequences become U+FFFD, as `go tool
/// pprof` shows them; valid text is borrowed as is.
pub fn lossy_utf8(bytes: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::Labels;
    use crate::symbols::{Function, Line, Location, SymbolsBuilder};

    fn profile_type(parts: [&str; 5]) -> ProfileType {
        ProfileType {
            name: parts[0].into(),
            sample_type: parts[1].into(),
            sample_unit: parts[2].into(),
            period_type: parts[3].into(),
            period_unit: parts[4].into(),
        }
    }

    #[test]
    fn profile_types_name_the_bad_part() {
        assert_eq!(check_profile_type(&profile_type(["cpu", "cpu", "ns", "", ""])), Ok(()));
        let err = check_profile_type(&profile_type(["cpu", "", "ns", "", ""])).unwrap_err();
        assert_eq!(err.to_string(), "profile type sample type \"\" is empty");
        let err = check_profile_type(&profile_type(["cpu", "a:b", "ns", "", ""])).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("profile type sample type \"a:b\" contains ':'")
        );
        assert!(check_profile_type(&profile_type(["", "cpu", "ns", "", ""])).is_err());
        assert!(check_profile_type(&profile_type(["cpu", "cpu", "ns", "x:y", ""])).is_err());
    }

    #[test]
    fn labels_need_valid_sorted_names_and_values() {
        assert_eq!(check_labels([("__name__", "cpu"), ("a", "1"), ("b_2", "x")]), Ok(()));
        assert_eq!(check_labels([("a-b", "1")]), Err(Invalid::LabelName("a-b".into())));
        assert_eq!(check_labels([("1a", "1")]), Err(Invalid::LabelName("1a".into())));
        assert_eq!(check_labels([("a.b", "1")]), Err(Invalid::LabelName("a.b".into())));
        assert_eq!(
            check_labels([("b", "1"), ("a", "1")]),
            Err(Invalid::LabelOrder("a".into()))
        );
        assert_eq!(
            check_labels([("a", "1"), ("a", "2")]),
            Err(Invalid::LabelOrder("a".into()))
        );
        assert_eq!(check_labels([("a", "")]), Err(Invalid::EmptyLabelValue("a".into())));
    }

    #[test]
    fn times_must_fit() {
        assert_eq!(check_time(0, 0), Ok(()));
        assert_eq!(check_time(i64::MAX - 5, 5), Ok(()));
        assert!(check_time(-1, 0).is_err());
        assert!(check_time(1, -1).is_err());
        assert!(check_time(i64::MAX - 5, 6).is_err());
    }

    #[test]
    fn symbol_references_are_checked() {
        let mut b = SymbolsBuilder::new();
        let name = b.string("main");
        let function = b.function(Function {
            name,
            ..Default::default()
        });
        let loc = b.location(Location {
            mapping: 0,
            address: 1,
            lines: vec![Line { function, line: 3 }],
        });
        b.stack(&[loc]);
        let good = b.finish();
        assert_eq!(check_symbols(&good), Ok(()));

        let mut bad = good.clone();
        bad.functions[0].name = 99;
        assert_eq!(
            check_symbols(&bad).unwrap_err().to_string(),
            "symbols: function string id 99 is out of range (the table has 2)"
        );
        let mut bad = good.clone();
        bad.stack_locations[0] = 7;
        assert!(check_symbols(&bad).is_err());
        let mut bad = good.clone();
        bad.stack_offsets.push(5);
        assert!(check_symbols(&bad).is_err());
        let mut bad = good.clone();
        bad.strings[0] = "x".into();
        assert!(check_symbols(&bad).is_err());
        let mut bad = good;
        bad.locations[0].lines[0].function = 1;
        assert!(check_symbols(&bad).is_err());
    }

    #[test]
    fn batches_name_the_profile() {
        let mut b = SymbolsBuilder::new();
        let stack = b.stack(&[]);
        let symbols = Arc::new(b.finish());
        let good = Profile {
            series: Labels::from_iter([("service_name", "app")]),
            profile_type: profile_type(["cpu", "cpu", "nanoseconds", "cpu", "nanoseconds"]),
            timestamp_ns: 1,
            duration_ns: 1,
            period: 1,
            samples: vec![Sample {
                stack,
                value: 1,
                labels: 0,
            }],
            symbols,
        };
        assert_eq!(check_batch(std::slice::from_ref(&good)), Ok(()));
        let mut bad = good.clone();
        bad.samples[0].stack = 9;
        let err = check_batch(&[good.clone(), bad]).unwrap_err();
        assert_eq!(err.index, 1);
        assert_eq!(
            err.to_string(),
            "profile 1 (cpu:cpu:nanoseconds:cpu:nanoseconds): sample 0: stack id 9 is out of range (the table has 1)"
        );
        let mut bad = good;
        bad.series.set("bad-name", "x");
        assert!(matches!(check_batch(&[bad]).unwrap_err().reason, Invalid::LabelName(_)));
    }

    #[test]
    fn invalid_utf8_becomes_replacement_characters() {
        assert_eq!(lossy_utf8(b"caf\xe9"), "caf\u{FFFD}");
        assert!(matches!(lossy_utf8(b"fine"), Cow::Borrowed("fine")));
    }
}
