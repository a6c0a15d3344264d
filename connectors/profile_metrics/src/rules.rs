//! Compiled rules: which profiles a rule reads, which of their samples count, and how a value
//! converts from the sample unit to the metric's base unit.
//!
//! Function rules are matched together ([`Rules`], [`TableIndex`]), once per symbol table:
//! one pass over the function names gives each function the set of rules it matches (a bit
//! per rule: exact names by lookup, regexes by one `RegexSet`), one pass over the locations
//! gives each location the rules of any of its inlined lines (`total`) and of its innermost
//! line (`self`), and each stack, the first time a sample names it, the rules it counts for.
//! A sample then costs one lookup and one add per rule it counts for, whatever the number of
//! rules, names or frames.

use std::collections::HashMap;
use std::sync::Arc;

use flamepipe_core::labels::Labels;
use flamepipe_core::selector::Selector;
use flamepipe_core::symbols::Symbols;
use flamepipe_core::{Profile, ProfileType};
use regex::RegexSet;

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

/// The most rules one connector may have: a stack's rules are a bit set in a `u64`.
pub const MAX_RULES: usize = 64;

pub struct Rule {
    pub metric: Arc<str>,
    pub profile_type: ProfileType,
    selector: Option<Selector>,
    pub group_by: Vec<String>,
    pub unit: Unit,
    pub max_series: usize,
}

impl Rule {
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
}

/// A connector's rules, with their function matchers combined.
pub struct Rules {
    pub rules: Vec<Rule>,
    /// Exact function names -> the rules naming them.
    names: HashMap<String, u64>,
    regexes: RegexSet,
    /// The rule of each pattern of `regexes`.
    regex_rules: Vec<usize>,
    /// Function rules counting anywhere in the stack, and at the leaf only.
    total_mode: u64,
    self_mode: u64,
}

impl Rules {
    /// Compiles a validated config's rules (at most [`MAX_RULES`]).
    pub fn compile(rules: &[config::Rule], default_max_series: usize) -> Result<Rules, String> {
        if rules.len() > MAX_RULES {
            return Err(format!("at most {MAX_RULES} rules"));
        }
        let mut names: HashMap<String, u64> = HashMap::new();
        let (mut patterns, mut regex_rules) = (Vec::new(), Vec::new());
        let (mut total_mode, mut self_mode) = (0u64, 0u64);
        let mut compiled = Vec::with_capacity(rules.len());
        for (i, rule) in rules.iter().enumerate() {
            let bit = 1u64 << i;
            if let Some(f) = &rule.function {
                match (&f.name, &f.regex) {
                    (Some(name), _) => *names.entry(name.clone()).or_default() |= bit,
                    (None, Some(regex)) => {
                        patterns.push(format!("^(?:{regex})$"));
                        regex_rules.push(i);
                    }
                    (None, None) => return Err("function: give name or regex".to_string()),
                }
                match f.mode {
                    FunctionMode::Total => total_mode |= bit,
                    FunctionMode::SelfOnly => self_mode |= bit,
                }
            }
            let profile_type = ProfileType::parse(&rule.profile_type).map_err(|e| e.to_string())?;
            let selector = rule
                .selector
                .as_deref()
                .map(Selector::parse)
                .transpose()
                .map_err(|e| e.to_string())?;
            compiled.push(Rule {
                metric: Arc::from(rule.metric.as_str()),
                unit: Unit::of(&profile_type.sample_unit),
                profile_type,
                selector,
                group_by: rule.group_by.clone(),
                max_series: rule.max_series.unwrap_or(default_max_series),
            });
        }
        Ok(Rules {
            rules: compiled,
            names,
            regexes: RegexSet::new(&patterns).map_err(|e| e.to_string())?,
            regex_rules,
            total_mode,
            self_mode,
        })
    }

    /// Whether any rule matches functions (else no table index is needed).
    pub fn has_function_rules(&self) -> bool {
        self.total_mode | self.self_mode != 0
    }

    /// The index of one symbol table.
    pub fn index(&self, symbols: &Symbols) -> TableIndex {
        let functions: Vec<u64> = symbols
            .functions
            .iter()
            .map(|f| {
                let name = symbols.str(f.name);
                let mut mask = self.names.get(name).copied().unwrap_or(0);
                if !self.regex_rules.is_empty() {
                    for pattern in self.regexes.matches(name).iter() {
                        mask |= 1 << self.regex_rules[pattern];
                    }
                }
                mask
            })
            .collect();
        let of = |function: u32| functions.get(function as usize).copied().unwrap_or(0);
        let locations = symbols
            .locations
            .iter()
            .map(|location| {
                let any = location.lines.iter().fold(0, |mask, l| mask | of(l.function));
                let leaf = location.lines.first().map_or(0, |l| of(l.function));
                (any & self.total_mode, leaf & self.self_mode)
            })
            .collect();
        TableIndex {
            locations,
            stacks: vec![None; symbols.stack_count()],
        }
    }

    /// Adds, per rule, the sample values it counts of one profile to `sums` (one slot per
    /// rule): every sample for a rule without `function`, the matching ones for the others.
    /// Only the rules in `selected` (a bit per rule) are counted.
    pub fn count(&self, profile: &Profile, selected: u64, index: Option<&mut TableIndex>, sums: &mut [i64; MAX_RULES]) {
        let function_rules = self.total_mode | self.self_mode;
        let plain = selected & !function_rules;
        if plain != 0 {
            let total = profile.total();
            for_each_bit(plain, |i| sums[i] = sums[i].saturating_add(total));
        }
        let wanted = selected & function_rules;
        let Some(index) = index.filter(|_| wanted != 0) else {
            return;
        };
        for sample in &profile.samples {
            let mask = index.stack(&profile.symbols, sample.stack) & wanted;
            for_each_bit(mask, |i| sums[i] = sums[i].saturating_add(sample.value));
        }
    }
}

fn for_each_bit(mut mask: u64, mut f: impl FnMut(usize)) {
    while mask != 0 {
        f(mask.trailing_zeros() as usize);
        mask &= mask - 1;
    }
}

/// Which rules each location, and lazily each stack, of one symbol table counts for.
pub struct TableIndex {
    /// Per location: (`total` rules of any of its lines, `self` rules of its innermost line).
    locations: Vec<(u64, u64)>,
    stacks: Vec<Option<u64>>,
}

impl TableIndex {
    fn stack(&mut self, symbols: &Symbols, stack: u32) -> u64 {
        let Some(known) = self.stacks.get_mut(stack as usize) else {
            return 0;
        };
        if let Some(mask) = *known {
            return mask;
        }
        let frames = symbols.stack(stack);
        let location = |loc: &u32| self.locations.get(*loc as usize).copied().unwrap_or((0, 0));
        // The leaf is the stack's first location.
        let leaf = frames.first().map_or(0, |l| location(l).1);
        let any = frames.iter().fold(0, |mask, l| mask | location(l).0);
        *known = Some(any | leaf);
        any | leaf
    }
}
