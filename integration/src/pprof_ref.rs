//! The reference answer: per-function totals as `go tool pprof` reads a profile.
//!
//! `-raw` gives the sample types; then, per sample type, `-traces` prints every sample's value
//! (in the type's own unit, so nothing is rounded) and its frames by function name, inlined
//! frames included. Flat and cumulative totals follow pprof's rules. Nothing here uses
//! flamepipe's own decoder. (`-raw` alone is ambiguous: it prints `name file:line` and both
//! may hold spaces.)

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Command;

/// Per sample type (`cpu/nanoseconds`), per function: (flat, cum).
pub type ReferenceTotals = HashMap<String, HashMap<String, (i64, i64)>>;

fn go_pprof(go: &Path, profile: &Path, args: &[&str]) -> String {
    let out = Command::new(go)
        .args(["tool", "pprof", "-symbolize=none"])
        .args(args)
        .arg(profile)
        .output()
        .expect("run go tool pprof");
    assert!(
        out.status.success(),
        "go tool pprof {args:?} {}: {}",
        profile.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn go_pprof_totals(go: &Path, profile: &Path) -> ReferenceTotals {
    go_pprof_totals_with(go, profile, &[])
}

/// [`go_pprof_totals`] with further `go tool pprof` options, such as `-tagfocus=key=regexp`
/// to keep only samples with a label.
pub fn go_pprof_totals_with(go: &Path, profile: &Path, extra: &[&str]) -> ReferenceTotals {
    let types = sample_types(&go_pprof(go, profile, &["-raw"]));
    let mut totals = ReferenceTotals::new();
    for (i, sample_type) in types.iter().enumerate() {
        let index = format!("-sample_index={i}");
        let mut args = vec!["-traces", index.as_str()];
        args.extend_from_slice(extra);
        let unit = sample_type.rsplit_once('/').map_or("", |(_, u)| u);
        let unit_flag = match unit {
            "nanoseconds" => Some("-unit=ns"),
            "microseconds" => Some("-unit=us"),
            "milliseconds" => Some("-unit=ms"),
            "seconds" => Some("-unit=s"),
            "bytes" => Some("-unit=B"),
            _ => None,
        };
        args.extend(unit_flag);
        let per_fn = totals.entry(stored_type_key(sample_type)).or_default();
        for (value, frames) in parse_traces(&go_pprof(go, profile, &args)) {
            if value == 0 {
                continue;
            }
            let mut seen = HashSet::new();
            for (depth, name) in frames.iter().enumerate() {
                if depth == 0 {
                    per_fn.entry(name.clone()).or_default().0 += value;
                }
                if seen.insert(name) {
                    per_fn.entry(name.clone()).or_default().1 += value;
                }
            }
        }
    }
    totals
}

/// A `type/unit` key as flamepipe stores the sample type: an empty type or unit becomes
/// `unknown` (the normalization docs/profile-types.md documents; `go tool pprof` shows `/`).
fn stored_type_key(go_key: &str) -> String {
    let (sample_type, unit) = go_key.rsplit_once('/').unwrap_or((go_key, ""));
    let part = |s: &str| {
        if s.is_empty() {
            "unknown".to_string()
        } else {
            s.to_string()
        }
    };
    format!("{}/{}", part(sample_type), part(unit))
}

/// The `type/unit` pairs of `-raw`'s sample header. A type may hold spaces (austin's
/// `Wall time/μs`), so a pair ends at the token with the `/`.
fn sample_types(raw: &str) -> Vec<String> {
    let mut lines = raw.lines().skip_while(|l| l.trim_end() != "Samples:");
    let Some(header) = lines.nth(1) else { return Vec::new() };
    let mut types = Vec::new();
    let mut pending = String::new();
    for token in header.split_whitespace() {
        if !pending.is_empty() {
            pending.push(' ');
        }
        pending.push_str(token.trim_end_matches("[dflt]"));
        if token.contains('/') {
            types.push(std::mem::take(&mut pending));
        }
    }
    types
}

/// Samples of `-traces` output: blocks after a `-----------+----` rule, label lines
/// (`key:  value`) first, then frames, the first with the value: `%10s   %s`.
fn parse_traces(text: &str) -> Vec<(i64, Vec<String>)> {
    let mut samples: Vec<(i64, Vec<String>)> = Vec::new();
    let mut in_trace = false;
    for line in text.lines() {
        if line.starts_with("-----------+") {
            in_trace = true;
            continue;
        }
        if !in_trace {
            continue;
        }
        // A frame under the first has an empty value column: 10 + 3 spaces.
        if line.starts_with("             ") {
            if let Some(last) = samples.last_mut() {
                last.1.push(frame_name(line.trim()));
            }
            continue;
        }
        let Some((head, name)) = line.trim_start().split_once("   ") else {
            continue;
        };
        let digits: String = head
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '-' || *c == '.')
            .collect();
        if digits.is_empty() || !head[digits.len()..].chars().all(|c| c.is_alphabetic()) {
            // A label line such as ` Thread ID:  2464`.
            continue;
        }
        let value: i64 = digits
            .parse()
            .unwrap_or_else(|_| panic!("go tool pprof rounded a value: {line:?}"));
        samples.push((value, vec![frame_name(name.trim_start())]));
    }
    samples
}

fn frame_name(name: &str) -> String {
    name.trim_end_matches(" (inline)").to_string()
}

/// A stored profile's per-function (flat, cum) totals named as `go tool pprof -traces
/// -symbolize=none` names them: unsymbolized frames by their mapping's file (`[file]`), or
/// `<unknown>` without one.
pub fn go_named_totals(profile: &flamepipe_core::Profile) -> HashMap<String, (i64, i64)> {
    use flamepipe_core::symbols::FrameName;
    profile
        .function_totals_by(|frame| match frame {
            FrameName::Function(name) => name.to_string(),
            FrameName::Address { mapping_file: "", .. } => "<unknown>".to_string(),
            FrameName::Address { mapping_file, .. } => {
                format!("[{}]", mapping_file.rsplit('/').next().unwrap_or(mapping_file))
            }
        })
        .into_iter()
        .map(|(k, v)| (k, (v.flat, v.cum)))
        .collect()
}

/// Totals without the functions whose totals are both zero (`go tool pprof` omits those).
pub fn without_zeros(totals: &HashMap<String, (i64, i64)>) -> HashMap<String, (i64, i64)> {
    totals
        .iter()
        .filter(|(_, v)| **v != (0, 0))
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

/// Stored profiles' go-named totals, by service name and then by `sample type/unit`
/// (the keys of [`go_pprof_totals`]), summed over the series a profile was split into by its
/// sample labels. A profile stored twice shows as doubled totals.
pub fn stored_totals_by_service(stored: &[crate::stored::StoredProfile]) -> HashMap<String, ReferenceTotals> {
    let mut by_service: HashMap<String, ReferenceTotals> = HashMap::new();
    for s in stored {
        let p = &s.profile;
        let service = p.series.get("service_name").expect("service_name").to_string();
        let key = format!("{}/{}", p.profile_type.sample_type, p.profile_type.sample_unit);
        let totals = by_service.entry(service).or_default().entry(key).or_default();
        for (function, (flat, cum)) in go_named_totals(p) {
            let t = totals.entry(function).or_default();
            t.0 += flat;
            t.1 += cum;
        }
    }
    by_service
}

/// Asserts that `ours` (one service's [`stored_totals_by_service`] entry) has every sample
/// type of `file` with the per-function totals `go tool pprof` reads from it.
pub fn assert_totals_match_go(go: &Path, file: &Path, ours: &ReferenceTotals) {
    let reference = go_pprof_totals(go, file);
    assert_eq!(ours.len(), reference.len(), "{}: sample types", file.display());
    for (sample_type, expected) in &reference {
        let got = ours
            .get(sample_type)
            .unwrap_or_else(|| panic!("{}: no {sample_type}", file.display()));
        assert_eq!(
            without_zeros(got),
            without_zeros(expected),
            "{} {sample_type}",
            file.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_traces_and_types() {
        let raw = "PeriodType: cpu nanoseconds\nSamples:\nsamples/count Wall time/μs[dflt]\n   1 2: 1\n";
        assert_eq!(sample_types(raw), vec!["samples/count", "Wall time/μs"]);
        assert_eq!(sample_types("Samples:\n/[dflt]\n   1: 1\n"), vec!["/"]);
        assert_eq!(stored_type_key("/"), "unknown/unknown");
        assert_eq!(stored_type_key("cpu/nanoseconds"), "cpu/nanoseconds");
        let traces = "Type: cpu\n-----------+------\n Thread ID:  2464\n160000000ns   main.inner (inline)\n             main.outer\n-----------+------\n      1113   <module>\n";
        assert_eq!(
            parse_traces(traces),
            vec![
                (160000000, vec!["main.inner".to_string(), "main.outer".to_string()]),
                (1113, vec!["<module>".to_string()])
            ]
        );
    }
}
