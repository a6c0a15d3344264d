//! Sample labels become series labels: a profile whose samples carry pprof labels (Go's
//! `pprof.Do`, pyroscope-go's `TagWrapper`, pyroscope-io's `tag_wrapper`, OTLP sample
//! attributes such as `thread.name`) is split into one profile per distinct label set, each
//! with those labels added to its series, as Pyroscope's distributor does. Selectors,
//! `LabelNames`, `LabelValues`, `Series` and `group_by` then see them like any series label.
//!
//! The rules (docs/profile-types.md, "Sample labels"):
//! - string labels become series labels; numeric ones (`bytes`) stay sample labels only;
//! - [`KEPT_AS_SAMPLE_LABELS`] (`span_id`, `trace_id`, `profile_id`) stay sample labels only:
//!   one series per span would be a series per request;
//! - a name is made a label name by the Prometheus OTLP rule ([`otel_label_name`]:
//!   `thread.name` -> `thread_name`); a label the series already has wins over a sample label
//!   of the same name, as in Pyroscope;
//! - samples keep their labels, so a pprof download of a selection still has them;
//! - samples without such labels form the profile's series as it was, so totals are exact:
//!   every sample is in exactly one of the profiles a split makes.
//!
//! The block builder splits as it writes a block (one profile per sample type travels
//! through the pipelines, which is cheaper for every processor); [`split_by_sample_labels`]
//! is the same split on whole profiles, the reference the builder is tested against.

use std::sync::Arc;

use crate::labels::{Labels, otel_label_name};
use crate::model::{Profile, Sample};
use crate::symbols::Symbols;

/// Sample labels that never become series labels (per-request identifiers).
pub const KEPT_AS_SAMPLE_LABELS: &[&str] = &["span_id", "trace_id", "profile_id"];

/// Splits each profile by the series labels its samples carry; profiles without such labels
/// pass unchanged (and without a copy).
pub fn split_by_sample_labels(profiles: Vec<Profile>) -> Vec<Profile> {
    if profiles.iter().all(|p| p.samples.iter().all(|s| s.labels == 0)) {
        return profiles;
    }
    let mut out = Vec::with_capacity(profiles.len());
    for p in profiles {
        split_one(p, &mut out);
    }
    out
}

fn split_one(mut p: Profile, out: &mut Vec<Profile>) {
    // Label set id -> group index, computed once per set; sets that add the same series
    // labels (they differ only in numeric labels or span ids) share a group.
    let mut group_of_set: Vec<Option<usize>> = vec![None; p.symbols.label_set_count()];
    let mut groups: Vec<(Labels, Vec<Sample>)> = Vec::new();
    for s in std::mem::take(&mut p.samples) {
        let group = match group_of_set[s.labels as usize] {
            Some(g) => g,
            None => {
                let mut labels = series_labels_of(&p.symbols, s.labels);
                let taken: Vec<String> = labels
                    .iter()
                    .filter(|(name, _)| p.series.get(name).is_some())
                    .map(|(name, _)| name.to_string())
                    .collect();
                for name in taken {
                    labels.set(name, "");
                }
                let g = match groups.iter().position(|(l, _)| *l == labels) {
                    Some(g) => g,
                    None => {
                        groups.push((labels, Vec::new()));
                        groups.len() - 1
                    }
                };
                group_of_set[s.labels as usize] = Some(g);
                g
            }
        };
        groups[group].1.push(s);
    }
    // No labels to split by (or no samples at all: the profile is kept, as it was sent).
    if groups.len() <= 1 && groups.first().is_none_or(|(labels, _)| labels.is_empty()) {
        p.samples = groups.pop().map(|(_, samples)| samples).unwrap_or_default();
        out.push(p);
        return;
    }
    let Profile {
        series: base,
        profile_type,
        timestamp_ns,
        duration_ns,
        period,
        symbols,
        ..
    } = p;
    for (labels, samples) in groups {
        let mut series = base.clone();
        for (name, value) in labels.shared() {
            series.set(Arc::clone(name), Arc::clone(value));
        }
        out.push(Profile {
            series,
            profile_type: profile_type.clone(),
            timestamp_ns,
            duration_ns,
            period,
            samples,
            symbols: Arc::clone(&symbols),
        });
    }
}

/// The series labels label set `set` of table `t` makes: its string labels, named as label
/// names, but for [`KEPT_AS_SAMPLE_LABELS`]. A series that has a label of the same name keeps
/// its own value (callers skip those).
pub fn series_labels_of(t: &Symbols, set: u32) -> Labels {
    let mut labels: Labels = Labels::new();
    for l in t.label_set(set) {
        let (key, value) = (t.str(l.key), t.str(l.str));
        if l.str == 0 || value.is_empty() || KEPT_AS_SAMPLE_LABELS.contains(&key) {
            continue;
        }
        let name = otel_label_name(key);
        if name.is_empty() {
            continue;
        }
        labels.set(name, value);
    }
    labels
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::profile_type::ProfileType;
    use crate::symbols::{SampleLabel, SymbolsBuilder};

    /// A profile whose samples carry (key, value) string labels, or a numeric one when the
    /// value starts with `#`.
    fn labelled(samples: &[(&[(&str, &str)], i64)]) -> Profile {
        let mut b = SymbolsBuilder::new();
        let stack = b.stack(&[]);
        let samples = samples
            .iter()
            .map(|(labels, value)| {
                let mut set: Vec<SampleLabel> = labels
                    .iter()
                    .map(|(k, v)| match v.strip_prefix('#') {
                        Some(num) => SampleLabel {
                            key: b.string(k),
                            num: num.parse().unwrap(),
                            ..Default::default()
                        },
                        None => SampleLabel {
                            key: b.string(k),
                            str: b.string(v),
                            ..Default::default()
                        },
                    })
                    .collect();
                set.sort_unstable();
                Sample {
                    stack,
                    value: *value,
                    labels: b.label_set(&set),
                }
            })
            .collect();
        Profile {
            series: Labels::from_iter([("service_name", "app"), ("env", "prod")]),
            profile_type: ProfileType::new("process_cpu", "cpu", "nanoseconds", "cpu", "nanoseconds"),
            timestamp_ns: 1,
            duration_ns: 1,
            period: 1,
            samples,
            symbols: Arc::new(b.finish()),
        }
    }

    fn by_series(profiles: &[Profile]) -> BTreeMap<String, i64> {
        profiles.iter().map(|p| (p.series.to_string(), p.total())).collect()
    }

    #[test]
    fn each_label_set_becomes_a_series_and_totals_stay_exact() {
        let p = labelled(&[
            (&[("workload", "hash")], 10),
            (&[("workload", "hash")], 5),
            (&[("workload", "json"), ("tenant", "acme")], 7),
            (&[], 3),
            (&[("bytes", "#512")], 2),
            (&[("span_id", "abc"), ("workload", "hash")], 1),
            (&[("env", "dev"), ("thread.name", "worker-1")], 4),
        ]);
        let out = split_by_sample_labels(vec![p.clone()]);
        let got = by_series(&out);
        let want = BTreeMap::from([
            (r#"{env="prod", service_name="app"}"#.to_string(), 3 + 2),
            (r#"{env="prod", service_name="app", workload="hash"}"#.to_string(), 16),
            (
                r#"{env="prod", service_name="app", tenant="acme", workload="json"}"#.to_string(),
                7,
            ),
            (
                r#"{env="prod", service_name="app", thread_name="worker-1"}"#.to_string(),
                4,
            ),
        ]);
        assert_eq!(got, want);
        assert_eq!(out.iter().map(Profile::total).sum::<i64>(), p.total());
        // Samples keep their labels, the span id included.
        let hash = out.iter().find(|p| p.series.get("workload") == Some("hash")).unwrap();
        assert!(hash.samples.iter().any(|s| hash.symbols.label_set(s.labels).len() == 2));
    }

    #[test]
    fn unlabelled_and_empty_profiles_pass_untouched() {
        let p = labelled(&[(&[], 3), (&[("bytes", "#8")], 1)]);
        let out = split_by_sample_labels(vec![p.clone()]);
        assert_eq!(out, vec![p]);
        // An empty profile next to a labelled one (a pprof type with no samples) is kept.
        let empty = labelled(&[]);
        let with_labels = labelled(&[(&[("workload", "hash")], 1)]);
        let out = split_by_sample_labels(vec![empty.clone(), with_labels]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], empty);
    }
}
