//! The internal profile model every receiver decodes into and every exporter writes.
//!
//! A [`Profile`] is one series (labels), one sample type, a time range, and samples that each
//! map a stack to a value. One pprof with N sample types becomes N profiles sharing one symbol
//! table, as Pyroscope and the OpenTelemetry translator do.

use std::collections::HashMap;
use std::sync::Arc;

use crate::labels::Labels;
use crate::profile_type::ProfileType;
use crate::symbols::{FrameName, Symbols};

#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    /// Series labels: `service_name`, `__name__`, `__profile_type__` and the sender's labels.
    pub series: Labels,
    pub profile_type: ProfileType,
    pub timestamp_ns: i64,
    pub duration_ns: i64,
    pub period: i64,
    pub samples: Vec<Sample>,
    pub symbols: Arc<Symbols>,
}

/// One stack's value; `labels` is a label set id in the profile's symbols (0 = none).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Sample {
    pub stack: u32,
    pub value: i64,
    pub labels: u32,
}

/// Flat (as the leaf) and cumulative (anywhere in the stack, once per sample) totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub flat: i64,
    pub cum: i64,
}

impl Profile {
    /// The sum of all values. Values come from senders, so sums saturate rather than overflow.
    pub fn total(&self) -> i64 {
        self.samples.iter().fold(0i64, |sum, s| sum.saturating_add(s.value))
    }

    /// Per-function totals keyed by frame name, with `go tool pprof`'s semantics: the leaf is
    /// the innermost inlined function of the first location, and a function that appears
    /// several times in one stack counts once toward its cumulative total.
    pub fn function_totals(&self) -> HashMap<String, Totals> {
        self.function_totals_by(|name| name.to_string())
    }

    /// [`Profile::function_totals`] with frames named by `name_of` (frames given the same
    /// name count as one function).
    pub fn function_totals_by(&self, name_of: impl Fn(FrameName<'_>) -> String) -> HashMap<String, Totals> {
        let mut per_stack: HashMap<u32, i64> = HashMap::new();
        for s in &self.samples {
            let total = per_stack.entry(s.stack).or_default();
            *total = total.saturating_add(s.value);
        }
        let mut totals: HashMap<String, Totals> = HashMap::new();
        let mut seen = Vec::new();
        for (stack, value) in per_stack {
            seen.clear();
            for (depth, &loc) in self.symbols.stack(stack).iter().enumerate() {
                for (i, frame) in self.symbols.frame_names(loc).enumerate() {
                    let name = name_of(frame);
                    if depth == 0 && i == 0 {
                        let t = totals.entry(name.clone()).or_default();
                        t.flat = t.flat.saturating_add(value);
                    }
                    if !seen.contains(&name) {
                        let t = totals.entry(name.clone()).or_default();
                        t.cum = t.cum.saturating_add(value);
                        seen.push(name);
                    }
                }
            }
        }
        totals
    }

    /// Rough heap size, used for segment size limits.
    pub fn approx_bytes(&self) -> usize {
        self.samples.len() * std::mem::size_of::<Sample>() + 256
    }
}
