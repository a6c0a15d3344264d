//! The `profile_metrics` connector's config: the step, the instance label and the rules,
//! each checked when the config loads so that a bad rule names its path.
//!
//! ```yaml
//! connectors:
//!   profile_metrics/cpu:
//!     step: 15s
//!     rules:
//!       - metric: profile_cpu_seconds_total
//!         profile_type: process_cpu:cpu:nanoseconds:cpu:nanoseconds
//!         match: '{service_name=~"checkout|cart"}'
//!         group_by: [service_name, region]
//!       - metric: profile_function_cpu_seconds_total
//!         profile_type: process_cpu:cpu:nanoseconds:cpu:nanoseconds
//!         function: { name: "runtime.mallocgc", mode: total }
//!         group_by: [service_name]
//! ```

use flamepipe_core::ProfileType;
use flamepipe_core::component::{BuildContext, BuildError, ConnectorConfig, Exporter, Output, Signal};
use flamepipe_core::config::{ConfigIssue, Duration, Validate};
use flamepipe_core::metric::MetricsBatch;
use flamepipe_core::selector::Selector;
use regex::Regex;
use serde::Deserialize;

use crate::connector::ProfileMetrics;
use crate::rules::{MAX_RULES, Rules, Unit};

/// The default of `max_series`, per rule.
pub const DEFAULT_MAX_SERIES: usize = 10_000;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Points are stamped with the profile's time rounded down to a multiple of the step, and
    /// a step's points are sent once the wall clock has passed it. Default `15s`.
    pub step: Duration,
    /// The label that keeps two flamepipe processes from writing one series. Default
    /// `instance`; empty to add none.
    pub instance_label: String,
    /// Its value. Default: the host name.
    pub instance: Option<String>,
    /// Series per rule at most; profiles of further series are counted
    /// (`flamepipe_connector_profile_metrics_overflow_total`) and not turned into metrics.
    /// Default 10000.
    pub max_series: usize,
    pub rules: Vec<Rule>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            step: Duration::from_secs(15),
            instance_label: "instance".to_string(),
            instance: None,
            max_series: DEFAULT_MAX_SERIES,
            rules: Vec::new(),
        }
    }
}

/// One metric to derive.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// A Prometheus counter name: ends in `_total`, after the unit (`_seconds_total` for
    /// time, `_bytes_total` for bytes).
    pub metric: String,
    /// The profile type id the rule reads.
    pub profile_type: String,
    /// A label selector the profile's series must match, `{name="value", …}`.
    #[serde(default, rename = "match")]
    pub selector: Option<String>,
    /// Count only the samples whose stack holds a matching function.
    #[serde(default)]
    pub function: Option<FunctionMatch>,
    /// The series labels the metric keeps (besides the instance label).
    #[serde(default)]
    pub group_by: Vec<String>,
    /// Overrides the connector's `max_series` for this rule.
    #[serde(default)]
    pub max_series: Option<usize>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FunctionMatch {
    /// The function's name exactly, as `go tool pprof` shows it.
    #[serde(default)]
    pub name: Option<String>,
    /// Or a regex the whole name must match.
    #[serde(default)]
    pub regex: Option<String>,
    #[serde(default)]
    pub mode: FunctionMode,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FunctionMode {
    /// Samples with the function anywhere in the stack (`go tool pprof`'s cum), each once.
    #[default]
    Total,
    /// Samples with the function as the leaf (`go tool pprof`'s flat).
    #[serde(rename = "self")]
    SelfOnly,
}

/// A Prometheus metric name.
fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// A label name a rule may group by: Prometheus' syntax, and not one of the reserved `__` ones.
fn is_group_label(name: &str) -> bool {
    flamepipe_core::validate::is_valid_label_name(name) && !name.starts_with("__")
}

impl Rule {
    fn check(&self, at: &str, issues: &mut Vec<ConfigIssue>) {
        let unit = match ProfileType::parse(&self.profile_type) {
            Ok(t) => Some(Unit::of(&t.sample_unit)),
            Err(e) => {
                issues.push(ConfigIssue::new(format!("{at}.profile_type"), e.to_string()));
                None
            }
        };
        if !is_metric_name(&self.metric) {
            issues.push(ConfigIssue::new(
                format!("{at}.metric"),
                format!(
                    "{:?} is not a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)",
                    self.metric
                ),
            ));
        } else if !self.metric.ends_with("_total") {
            issues.push(ConfigIssue::new(
                format!("{at}.metric"),
                format!("{:?} is a counter: its name must end in _total", self.metric),
            ));
        } else if let Some(suffix) = unit.and_then(Unit::suffix)
            && !self.metric.ends_with(&format!("_{suffix}_total"))
        {
            issues.push(ConfigIssue::new(
                format!("{at}.metric"),
                format!(
                    "{:?} counts {suffix} (from {}): its name must end in _{suffix}_total",
                    self.metric, self.profile_type
                ),
            ));
        }
        if let Some(selector) = &self.selector {
            match Selector::parse(selector) {
                Ok(s) if s.profile_type.is_some() => issues.push(ConfigIssue::new(
                    format!("{at}.match"),
                    "only label matchers, {name=\"value\"}: the profile type goes in profile_type",
                )),
                Ok(_) => {}
                Err(e) => issues.push(ConfigIssue::new(format!("{at}.match"), e.to_string())),
            }
        }
        if let Some(function) = &self.function {
            match (&function.name, &function.regex) {
                (Some(_), Some(_)) | (None, None) => issues.push(ConfigIssue::new(
                    format!("{at}.function"),
                    "give exactly one of name and regex",
                )),
                (Some(name), None) if name.is_empty() => {
                    issues.push(ConfigIssue::new(format!("{at}.function.name"), "must not be empty"))
                }
                (None, Some(regex)) => {
                    if let Err(e) = Regex::new(regex) {
                        issues.push(ConfigIssue::new(format!("{at}.function.regex"), e.to_string()));
                    }
                }
                _ => {}
            }
        }
        for (i, label) in self.group_by.iter().enumerate() {
            if !is_group_label(label) {
                issues.push(ConfigIssue::new(
                    format!("{at}.group_by[{i}]"),
                    format!("{label:?} is not a label name a metric can keep ([a-zA-Z_][a-zA-Z0-9_]*, not __…)"),
                ));
            } else if self.group_by[..i].contains(label) {
                issues.push(ConfigIssue::new(
                    format!("{at}.group_by[{i}]"),
                    format!("{label:?} is listed twice"),
                ));
            }
        }
        if self.max_series == Some(0) {
            issues.push(ConfigIssue::new(format!("{at}.max_series"), "must be at least 1"));
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if self.step.0 < std::time::Duration::from_secs(1) {
            issues.push(ConfigIssue::new("step", "must be at least 1s"));
        }
        if !self.instance_label.is_empty() && !is_group_label(&self.instance_label) {
            issues.push(ConfigIssue::new(
                "instance_label",
                format!("{:?} is not a label name", self.instance_label),
            ));
        }
        if self.max_series == 0 {
            issues.push(ConfigIssue::new("max_series", "must be at least 1"));
        }
        if self.rules.is_empty() {
            issues.push(ConfigIssue::new("rules", "define at least one rule"));
        }
        if self.rules.len() > MAX_RULES {
            issues.push(ConfigIssue::new(
                "rules",
                format!("at most {MAX_RULES} rules per connector; use another connector for more"),
            ));
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let at = format!("rules[{i}]");
            rule.check(&at, &mut issues);
            if let Some(first) = self.rules[..i].iter().position(|r| r.metric == rule.metric) {
                issues.push(ConfigIssue::new(
                    format!("{at}.metric"),
                    format!(
                        "{:?} is already made by rules[{first}]: two rules would write one series",
                        rule.metric
                    ),
                ));
            }
            if rule.group_by.contains(&self.instance_label) {
                issues.push(ConfigIssue::new(
                    format!("{at}.group_by"),
                    format!("{:?} is the instance label", self.instance_label),
                ));
            }
        }
        issues
    }
}

impl Config {
    /// The rules, compiled. Call only on a config that validated.
    pub fn compile(&self) -> Result<Rules, String> {
        Rules::compile(&self.rules, self.max_series)
    }

    /// The instance label pair, if any.
    pub fn instance_pair(&self) -> Option<(String, String)> {
        if self.instance_label.is_empty() {
            return None;
        }
        let value = self.instance.clone().unwrap_or_else(host_name);
        Some((self.instance_label.clone(), value))
    }
}

/// The host name, as the kernel reports it (`localhost` if it cannot be read).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

impl ConnectorConfig for Config {
    fn signals(&self) -> (Signal, Signal) {
        (Signal::Profiles, Signal::Metrics)
    }

    fn build_profiles_to_metrics(
        self: Box<Self>,
        ctx: &BuildContext,
        output: Output<MetricsBatch>,
    ) -> Result<Box<dyn Exporter>, BuildError> {
        let rules = self.compile().map_err(|e| ctx.error(e))?;
        Ok(Box::new(ProfileMetrics::new(&self, rules, output, ctx)))
    }
}
