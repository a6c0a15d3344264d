//! Profile type ids in Pyroscope's format: `<name>:<sample type>:<unit>:<period type>:<period unit>`.
//!
//! Grafana's Pyroscope data source and profilecli list and select profiles by these ids, so we
//! name types exactly as Pyroscope does (see docs/profile-types.md for the table). The name part
//! comes from the sender when it says one (the Push API's `__name__` label) and otherwise from
//! the pprof sample and period types, as Pyroscope's legacy ingest path derives it.

use std::fmt;

use crate::validate::{PLACEHOLDER, check_profile_type};

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProfileType {
    pub name: String,
    pub sample_type: String,
    pub sample_unit: String,
    pub period_type: String,
    pub period_unit: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid profile type {0:?}: expected <name>:<sample type>:<unit>:<period type>:<period unit>")]
pub struct ProfileTypeParseError(pub String);

impl ProfileType {
    /// A profile type from what a sender said, normalized as docs/profile-types.md says: an
    /// empty name, sample type or sample unit becomes [`PLACEHOLDER`] (`unknown`), since a
    /// profile type id needs them and real profilers send pprofs without them. The result
    /// may still fail [`check_profile_type`] (a `:` inside a part), which ingest refuses.
    pub fn new(
        name: impl Into<String>,
        sample_type: impl Into<String>,
        sample_unit: impl Into<String>,
        period_type: impl Into<String>,
        period_unit: impl Into<String>,
    ) -> Self {
        let required = |part: String| if part.is_empty() { PLACEHOLDER.to_string() } else { part };
        ProfileType {
            name: required(name.into()),
            sample_type: required(sample_type.into()),
            sample_unit: required(sample_unit.into()),
            period_type: period_type.into(),
            period_unit: period_unit.into(),
        }
    }

    pub fn id(&self) -> String {
        self.to_string()
    }

    /// Parses an id, with the checks ingest applies ([`check_profile_type`]).
    pub fn parse(id: &str) -> Result<Self, ProfileTypeParseError> {
        let parts: Vec<&str> = id.split(':').collect();
        let [name, sample_type, sample_unit, period_type, period_unit] = parts[..] else {
            return Err(ProfileTypeParseError(id.to_string()));
        };
        let t = ProfileType {
            name: name.into(),
            sample_type: sample_type.into(),
            sample_unit: sample_unit.into(),
            period_type: period_type.into(),
            period_unit: period_unit.into(),
        };
        check_profile_type(&t).map_err(|_| ProfileTypeParseError(id.to_string()))?;
        Ok(t)
    }
}

impl fmt::Display for ProfileType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}:{}:{}",
            self.name, self.sample_type, self.sample_unit, self.period_type, self.period_unit
        )
    }
}

/// The OTLP profile attribute that carries a profile type's name part (`memory`, `mutex`,
/// `block`...) between flamepipes: the `otlp` exporter writes it and the `otlp` receiver
/// reads it, since the name cannot always be derived from the sample type alone.
pub const OTLP_PROFILE_NAME_ATTRIBUTE: &str = "flamepipe.profile.name";

/// Sample type display names Pyroscope assumes when a sender gives no `sample_type_config`.
pub const DEFAULT_DISPLAY_NAMES: &[(&str, &str)] = &[
    ("samples", "cpu"),
    ("goroutine", "goroutines"),
    ("contentions", "mutex_count"),
    ("delay", "mutex_duration"),
];

/// The profile name (`__name__`) Pyroscope gives a pprof upload whose sender names none.
///
/// `display_name` maps a pprof sample type to the name the sender's `sample_type_config`
/// shows for it (Go's mutex and block profiles have identical sample types; only this config
/// tells them apart); without one, [`DEFAULT_DISPLAY_NAMES`] applies. The rules, in order:
/// any `wall` sample type gives `wall`; then the first type whose display name contains `cpu`
/// gives `process_cpu`, `alloc_`/`inuse_` (or is `space`/`objects`) `memory`, `mutex_`
/// `mutex`, `block_` `block`, `goroutines` `goroutines`; else the last display name.
pub fn pprof_profile_name<'a>(sample_types: &[&'a str], display_name: impl Fn(&'a str) -> Option<&'a str>) -> String {
    if sample_types.contains(&"wall") {
        return "wall".to_string();
    }
    let mut last = "";
    for &st in sample_types {
        let shown = display_name(st)
            .or_else(|| DEFAULT_DISPLAY_NAMES.iter().find(|(k, _)| *k == st).map(|(_, v)| *v))
            .unwrap_or(st);
        let name = if shown.contains("cpu") {
            Some("process_cpu")
        } else if shown.contains("alloc_") || shown.contains("inuse_") || shown == "space" || shown == "objects" {
            Some("memory")
        } else if shown.contains("mutex_") {
            Some("mutex")
        } else if shown.contains("block_") {
            Some("block")
        } else if shown.contains("goroutines") {
            Some("goroutines")
        } else {
            None
        };
        if let Some(name) = name {
            return name.to_string();
        }
        last = shown;
    }
    last.to_string()
}

/// How Pyroscope reads the suffix of a legacy `/ingest` name for non-pprof (folded) bodies:
/// `app.cpu` is a CPU profile of `app`. Returns (name, sample type, unit), or `None` for an
/// unknown suffix.
pub fn folded_profile_kind(suffix: &str) -> Option<(&'static str, &'static str, &'static str)> {
    Some(match suffix {
        "cpu" | "itimer" => ("process_cpu", "samples", "count"),
        "wall" | "seconds" | "nanoseconds" | "microseconds" | "milliseconds" => ("wall", "samples", "count"),
        "inuse_objects" => ("memory", "inuse_objects", "count"),
        "alloc_objects" => ("memory", "alloc_objects", "count"),
        "inuse_space" => ("memory", "inuse_space", "bytes"),
        "alloc_space" => ("memory", "alloc_space", "bytes"),
        "goroutines" => ("goroutine", "goroutines", "count"),
        "mutex_count" => ("mutex", "contentions", "count"),
        "mutex_duration" => ("mutex", "delay", "nanoseconds"),
        "block_count" | "lock_count" => ("block", "contentions", "count"),
        "block_duration" | "lock_duration" => ("block", "delay", "nanoseconds"),
        "alloc_in_new_tlab_objects" | "alloc_outside_tlab_objects" => ("memory", suffix_static(suffix), "count"),
        "alloc_in_new_tlab_bytes" | "alloc_outside_tlab_bytes" => ("memory", suffix_static(suffix), "bytes"),
        "live" => ("memory", "live", "count"),
        "exceptions" => ("exceptions", "samples", "count"),
        "bytes" => ("memory", "samples", "bytes"),
        _ => return None,
    })
}

fn suffix_static(suffix: &str) -> &'static str {
    match suffix {
        "alloc_in_new_tlab_objects" => "alloc_in_new_tlab_objects",
        "alloc_outside_tlab_objects" => "alloc_outside_tlab_objects",
        "alloc_in_new_tlab_bytes" => "alloc_in_new_tlab_bytes",
        _ => "alloc_outside_tlab_bytes",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        let id = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";
        let t = ProfileType::parse(id).unwrap();
        assert_eq!(t.name, "process_cpu");
        assert_eq!(t.id(), id);
        assert!(ProfileType::parse("process_cpu:cpu").is_err());
        assert_eq!(
            ProfileType::parse("memory:alloc_space:bytes::").unwrap().period_type,
            ""
        );
        assert!(ProfileType::parse("::::").is_err());
        assert!(ProfileType::parse("cpu:cpu::cpu:nanoseconds").is_err());
    }

    #[test]
    fn empty_required_parts_become_the_placeholder() {
        let t = ProfileType::new("", "", "", "", "");
        assert_eq!(t.id(), "unknown:unknown:unknown::");
        assert_eq!(ProfileType::parse(&t.id()), Ok(t));
        let t = ProfileType::new("wall", "wall", "nanoseconds", "", "ms");
        assert_eq!(t.id(), "wall:wall:nanoseconds::ms");
    }

    #[test]
    fn names_follow_pyroscope() {
        let none = |_: &str| None;
        assert_eq!(pprof_profile_name(&["samples", "cpu"], none), "process_cpu");
        assert_eq!(pprof_profile_name(&["alloc_objects", "alloc_space"], none), "memory");
        assert_eq!(pprof_profile_name(&["objects", "space"], none), "memory");
        assert_eq!(pprof_profile_name(&["goroutine"], none), "goroutines");
        assert_eq!(pprof_profile_name(&["contentions", "delay"], none), "mutex");
        let block = |st: &str| match st {
            "contentions" => Some("block_count"),
            _ => None,
        };
        assert_eq!(pprof_profile_name(&["contentions", "delay"], block), "block");
        assert_eq!(pprof_profile_name(&["sample", "wall"], none), "wall");
        assert_eq!(pprof_profile_name(&["exception"], none), "exception");
        assert_eq!(folded_profile_kind("cpu"), Some(("process_cpu", "samples", "count")));
        assert_eq!(folded_profile_kind("nope"), None);
    }
}
