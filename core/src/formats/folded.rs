//! Folded stacks (`main;work;leaf 12`, one stack per line, root first) and the `lines` format
//! (one stack per line, each counted once) into one profile.
//!
//! The caller says the profile kind (the Pyroscope API takes it from the application name's
//! suffix). CPU and wall profiles that say their sample rate are stored in nanoseconds
//! (`count * 1e9 / rate`) so they add up with pprof CPU profiles of the same service;
//! everything else keeps its counts.

use std::collections::HashMap;
use std::sync::Arc;

use crate::labels::{Labels, METRIC_NAME, PROFILE_TYPE};
use crate::symbols::{Function, Line, Location};
use crate::{Profile, ProfileType, Sample, SymbolsBuilder};

/// Why folded text was refused. Every variant is the sender's fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FoldedError {
    #[error("invalid folded line {line}: {problem}")]
    Line { line: usize, problem: &'static str },
    #[error("folded text has more than {limit} samples")]
    TooManySamples { limit: usize },
    #[error("folded text holds no samples")]
    Empty,
}

impl FoldedError {
    /// A short stable name for metrics (`reason` label).
    pub fn reason(&self) -> &'static str {
        match self {
            FoldedError::Line { .. } => "bad_folded",
            FoldedError::TooManySamples { .. } => "too_large",
            FoldedError::Empty => "empty_body",
        }
    }
}

type Result<T> = std::result::Result<T, FoldedError>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `frame;frame;frame count`
    Folded,
    /// `frame;frame;frame`, each line one sample
    Lines,
}

pub struct FoldedOptions {
    pub mode: Mode,
    /// Series labels without `__name__` and `__profile_type__`.
    pub series: Labels,
    /// (profile name, sample type, unit) from `folded_profile_kind`.
    pub kind: (&'static str, &'static str, &'static str),
    /// Samples per second; 0 when unknown.
    pub sample_rate: u32,
    pub timestamp_ns: i64,
    pub duration_ns: i64,
    pub max_samples: usize,
}

/// One profile from folded text: every line's stack with its count, leaf first.
pub fn to_profile(text: &str, opts: &FoldedOptions) -> Result<Profile> {
    let (name, mut sample_type, mut sample_unit) = opts.kind;
    let (mut period_type, mut period_unit, mut period) = ("", "", 0i64);
    // Rates above 1 GHz would make the period 0 ns: such counts stay counts.
    if matches!(name, "process_cpu" | "wall") && opts.sample_rate > 0 && opts.sample_rate <= 1_000_000_000 {
        sample_type = if name == "wall" { "wall" } else { "cpu" };
        sample_unit = "nanoseconds";
        period_type = sample_type;
        period_unit = "nanoseconds";
        period = 1_000_000_000 / i64::from(opts.sample_rate);
    }

    let mut b = SymbolsBuilder::new();
    // Frame name -> location id: most frames repeat on every line.
    let mut frames: HashMap<&str, u32> = HashMap::new();
    // Values by stack id; the builder hands out stack ids densely from 0.
    let mut values: Vec<i64> = Vec::new();
    let mut stack = Vec::new();
    let mut count_lines = 0usize;
    for (number, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let (frames_part, count) = match opts.mode {
            Mode::Lines => (line, 1),
            Mode::Folded => {
                let (frames_part, count) = line
                    .rsplit_once(' ')
                    .ok_or_else(|| bad_line(number, "no sample count"))?;
                let count: i64 = count
                    .trim()
                    .parse()
                    .map_err(|_| bad_line(number, "the sample count is not a whole number"))?;
                if count < 0 {
                    return Err(bad_line(number, "negative sample count"));
                }
                (frames_part.trim_end(), count)
            }
        };
        if count == 0 {
            continue;
        }
        count_lines += 1;
        if count_lines > opts.max_samples {
            return Err(FoldedError::TooManySamples {
                limit: opts.max_samples,
            });
        }
        stack.clear();
        // Folded stacks list the root first; the model wants the leaf first.
        for frame in frames_part.rsplit(';').filter(|f| !f.is_empty()) {
            let location = *frames.entry(frame).or_insert_with(|| {
                let name = b.string(frame);
                let function = b.function(Function {
                    name,
                    system_name: name,
                    ..Function::default()
                });
                b.location(Location {
                    mapping: 0,
                    address: 0,
                    lines: vec![Line { function, line: 0 }],
                })
            });
            stack.push(location);
        }
        // An empty stack still counts: py-spy writes ` 2` for samples it could not attribute,
        // and dropping them would make totals disagree with the profiler's.
        let id = b.stack(&stack) as usize;
        debug_assert!(id <= values.len(), "stack ids are dense");
        if id == values.len() {
            values.push(0);
        }
        let value = if period > 0 {
            count.saturating_mul(period)
        } else {
            count
        };
        values[id] = values[id].saturating_add(value);
    }
    if values.is_empty() {
        return Err(FoldedError::Empty);
    }

    let profile_type = ProfileType::new(name, sample_type, sample_unit, period_type, period_unit);
    let mut series = opts.series.clone();
    series.set(METRIC_NAME, profile_type.name.as_str());
    series.set(PROFILE_TYPE, profile_type.id());
    let samples = values
        .into_iter()
        .enumerate()
        .map(|(stack, value)| Sample {
            stack: stack as u32,
            value,
            labels: 0,
        })
        .collect();
    Ok(Profile {
        series,
        profile_type,
        timestamp_ns: opts.timestamp_ns,
        duration_ns: opts.duration_ns,
        period,
        samples,
        symbols: Arc::new(b.finish()),
    })
}

fn bad_line(index: usize, problem: &'static str) -> FoldedError {
    FoldedError::Line {
        line: index + 1,
        problem,
    }
}
