//! Compiled rules: which profiles a rule reads, which of their samples count, and the
//! factor from the sample unit to the metric's base unit.
//!
//! A `function` rule resolves names once per symbol table ([`FunctionIndex`]): which
//! functions match, then which locations hold one (any inlined line for `total`, the
//! innermost line for `self`), then, lazily, which stacks do. Samples only look up their
//! stack, so the cost per sample does not depend on name length or stack depth.

use std::sync::Arc;

use flamepipe_core::labels::Labels;
use flamepipe_core::selector::Selector;
use flamepipe_core::symbols::Symbols;
use flamepipe_core::{Profile, ProfileType};
use regex::Regex;

use crate::config::{self, FunctionMode};

/// A sample unit and how it converts to the base unit Prometheus names use.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unit {
    /// A time unit, with units per second (dividing by an exact power of ten rounds once,
    /// where multiplying by its inverse would round twice).
    Time(f64),
    Bytes,
    /// Counts, or a unit flamepipe does not know: values stay as they are.
    Other,
}

impl Unit {
    pub fn of(sample_unit: &str) -> Unit {
        match sample_unit {
            "nanoseconds" => Unit::Time(1e9),
            "microseconds" => Unit::Time(1e6),
            "milliseconds" => Unit::Time(1e3),
            "seconds" => Unit::Time(1.0),
            "bytes" => Unit::Bytes,
            _ => Unit::Other,
        }
    }

    /// The suffix the metric's name carries before `_total`.
    pub fn suffix(self) -> Option<&'static str> {
        match self {
            Unit::Time(_) => Some("seconds"),
            Unit::Bytes => Some("bytes"),
            Unit::Other => None,
        }
    }

    /// A value in this unit, in the base unit.
    pub fn to_base(self, value: i64) -> f64 {
        match self {
            Unit::Time(per_second) => value as f64 / per_second,
            Unit::Bytes | Unit::Other => value as f64,
        }
    }
}

enum NameMatch {
    Exact(String),
    Regex(Regex),
}

impl NameMatch {
    fn matches(&self, name: &str) -> bool {
        match self {
            NameMatch::Exact(n) => n == name,
            NameMatch::Regex(r) => r.is_match(name),
        }
    }
}

pub struct Rule {
    pub metric: Arc<str>,
    pub profile_type: ProfileType,
    selector: Option<Selector>,
    function: Option<(NameMatch, FunctionMode)>,
    pub group_by: Vec<String>,
    pub unit: Unit,
    pub max_series: usize,
}

impl Rule {
    pub fn compile(rule: &config::Rule, default_max_series: usize) -> Result<Rule, String> {
        let profile_type = ProfileType::parse(&rule.profile_type).map_err(|e| e.to_string())?;
        let selector = rule
            .selector
            .as_deref()
            .map(Selector::parse)
            .transpose()
            .map_err(|e| e.to_string())?;
        let function = match &rule.function {
            None => None,
            Some(f) => {
                let matcher = match (&f.name, &f.regex) {
                    (Some(name), _) => NameMatch::Exact(name.clone()),
                    (None, Some(regex)) => {
                        NameMatch::Regex(Regex::new(&format!("^(?:{regex})$")).map_err(|e| e.to_string())?)
                    }
                    (None, None) => return Err("function: give name or regex".to_string()),
                };
                Some((matcher, f.mode))
            }
        };
        Ok(Rule {
            metric: Arc::from(rule.metric.as_str()),
            unit: Unit::of(&profile_type.sample_unit),
            profile_type,
            selector,
            function,
            group_by: rule.group_by.clone(),
            max_series: rule.max_series.unwrap_or(default_max_series),
        })
    }

    /// Whether the rule reads this profile at all.
    pub fn selects(&self, profile: &Profile) -> bool {
        profile.profile_type == self.profile_type
            && self
                .selector
                .as_ref()
                .is_none_or(|s| s.matches(&profile.series, &profile.profile_type))
    }

    /// The labels of the metric's series for a profile: the `group_by` labels it has.
    pub fn series_labels(&self, series: &Labels) -> Labels {
        self.group_by
            .iter()
            .filter_map(|name| Some((name.as_str(), series.get(name)?)))
            .collect()
    }

    /// The sum of the sample values the rule counts, in the profile's unit; `index` is this
    /// rule's function index for the profile's symbol table (see [`Rule::index_for`]).
    pub fn raw_value(&self, profile: &Profile, index: Option<&mut FunctionIndex>) -> i64 {
        match index {
            None => profile.total(),
            Some(index) => profile
                .samples
                .iter()
                .filter(|s| index.stack_matches(&profile.symbols, s.stack))
                .fold(0i64, |sum, s| sum.saturating_add(s.value)),
        }
    }

    /// A fresh function index for one symbol table, if the rule matches functions.
    pub fn index_for(&self, symbols: &Symbols) -> Option<FunctionIndex> {
        let (matcher, mode) = self.function.as_ref()?;
        Some(FunctionIndex::new(symbols, matcher, *mode))
    }
}

/// Which locations, and lazily which stacks, of one symbol table hold a matching function.
pub struct FunctionIndex {
    locations: Vec<bool>,
    /// Per stack: 0 not yet known, 1 no, 2 yes.
    stacks: Vec<u8>,
    mode: FunctionMode,
}

impl FunctionIndex {
    fn new(symbols: &Symbols, matcher: &NameMatch, mode: FunctionMode) -> Self {
        let functions: Vec<bool> = symbols
            .functions
            .iter()
            .map(|f| matcher.matches(symbols.str(f.name)))
            .collect();
        let matches = |function: u32| functions.get(function as usize).copied().unwrap_or(false);
        let locations = symbols
            .locations
            .iter()
            .map(|location| match mode {
                FunctionMode::Total => location.lines.iter().any(|l| matches(l.function)),
                FunctionMode::SelfOnly => location.lines.first().is_some_and(|l| matches(l.function)),
            })
            .collect();
        FunctionIndex {
            locations,
            stacks: vec![0; symbols.stack_count()],
            mode,
        }
    }

    fn stack_matches(&mut self, symbols: &Symbols, stack: u32) -> bool {
        let Some(known) = self.stacks.get_mut(stack as usize) else {
            return false;
        };
        if *known == 0 {
            let frames = symbols.stack(stack);
            let hit = |loc: &u32| self.locations.get(*loc as usize).copied().unwrap_or(false);
            let matched = match self.mode {
                // The leaf is the stack's first location.
                FunctionMode::SelfOnly => frames.first().is_some_and(hit),
                FunctionMode::Total => frames.iter().any(hit),
            };
            *known = if matched { 2 } else { 1 };
        }
        *known == 2
    }
}
