//! The reference answer: per-function totals as `go tool pprof -raw` reads a profile.
//!
//! `-raw` prints every sample's values and location ids, then every location with its
//! (possibly inlined) function lines. From that we compute flat and cumulative totals per
//! function with pprof's rules; nothing here uses flamepipe's own decoder.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Command;

/// Per sample type (`cpu/nanoseconds`), per function: (flat, cum).
pub type ReferenceTotals = HashMap<String, HashMap<String, (i64, i64)>>;

pub fn go_pprof_totals(go: &Path, profile: &Path) -> ReferenceTotals {
    let out = Command::new(go).args(["tool", "pprof", "-raw"]).arg(profile).output().expect("run go tool pprof");
    assert!(out.status.success(), "go tool pprof -raw {}: {}", profile.display(), String::from_utf8_lossy(&out.stderr));
    parse_raw(&String::from_utf8_lossy(&out.stdout))
}

fn parse_raw(text: &str) -> ReferenceTotals {
    #[derive(PartialEq)]
    enum Section {
        Header,
        Samples,
        Locations,
        Other,
    }
    let mut section = Section::Header;
    let mut types: Vec<String> = Vec::new();
    let mut samples: Vec<(Vec<i64>, Vec<u64>)> = Vec::new();
    let mut locations: HashMap<u64, Vec<String>> = HashMap::new();
    let mut current: Option<u64> = None;
    for line in text.lines() {
        match line.trim_end() {
            "Samples:" => {
                section = Section::Samples;
                continue;
            }
            "Locations" => {
                section = Section::Locations;
                continue;
            }
            "Mappings" => {
                section = Section::Other;
                continue;
            }
            _ => {}
        }
        match section {
            Section::Samples if types.is_empty() => {
                types = line.split_whitespace().map(str::to_string).collect();
            }
            Section::Samples => {
                let Some((values, ids)) = line.split_once(':') else { continue };
                let values: Option<Vec<i64>> = values.split_whitespace().map(|v| v.parse().ok()).collect();
                // Label lines (`  key:[value]`) do not parse as numbers and are skipped.
                let Some(values) = values.filter(|v| v.len() == types.len()) else { continue };
                let ids: Option<Vec<u64>> = ids.split_whitespace().map(|v| v.parse().ok()).collect();
                let Some(ids) = ids else { continue };
                samples.push((values, ids));
            }
            Section::Locations => {
                let trimmed = line.trim_start();
                let (id, rest) = match trimmed.split_once(": ") {
                    Some((id, rest)) if id.parse::<u64>().is_ok() && line.starts_with(' ') && !rest.is_empty() => {
                        (Some(id.parse::<u64>().unwrap_or_default()), rest)
                    }
                    _ => (None, trimmed),
                };
                let rest = match id {
                    Some(id) => {
                        current = Some(id);
                        // `0xADDR M=N name file:line s=N`, or just the address and mapping.
                        let mut parts = rest.splitn(3, ' ');
                        let addr = parts.next().unwrap_or_default();
                        let _mapping = parts.next();
                        let rest = parts.next().unwrap_or("").trim();
                        if rest.is_empty() {
                            locations.entry(id).or_default().push(format!("0x{:x}", u64::from_str_radix(addr.trim_start_matches("0x"), 16).unwrap_or(0)));
                            continue;
                        }
                        rest
                    }
                    None => rest.trim(),
                };
                let Some(loc) = current else { continue };
                // `name file:line s=N`: strip ` s=N`, then the last space-separated field.
                let without_start = rest.rsplit_once(" s=").map_or(rest, |(a, _)| a);
                let name = without_start.rsplit_once(' ').map_or(without_start, |(a, _)| a);
                locations.entry(loc).or_default().push(name.to_string());
            }
            _ => {}
        }
    }
    let mut totals: ReferenceTotals = HashMap::new();
    for (i, t) in types.iter().enumerate() {
        let per_fn = totals.entry(t.clone()).or_default();
        for (values, ids) in &samples {
            let value = values[i];
            if value == 0 {
                continue;
            }
            let mut seen = HashSet::new();
            for (depth, id) in ids.iter().enumerate() {
                for (j, name) in locations.get(id).into_iter().flatten().enumerate() {
                    if depth == 0 && j == 0 {
                        per_fn.entry(name.clone()).or_default().0 += value;
                    }
                    if seen.insert(name.clone()) {
                        per_fn.entry(name.clone()).or_default().1 += value;
                    }
                }
            }
        }
    }
    totals
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_raw_output() {
        let text = "PeriodType: cpu nanoseconds\nSamples:\nsamples/count cpu/nanoseconds\n          2   20: 1 2 \n                foo:[bar]\n          1   10: 2 \nLocations\n     1: 0x10 M=1 main.inner /a.go:3 s=0\n             main.outer /a.go:9 s=0\n     2: 0x20 M=1 main.main /a.go:20 s=0\n     3: 0x30 M=1 \nMappings\n1: 0x0/0x0/0x0   [FN]\n";
        let t = parse_raw(text);
        let cpu = &t["cpu/nanoseconds"];
        assert_eq!(cpu["main.inner"], (20, 20));
        assert_eq!(cpu["main.outer"], (0, 20));
        assert_eq!(cpu["main.main"], (10, 30));
        assert_eq!(t["samples/count"]["main.main"], (1, 3));
    }
}
