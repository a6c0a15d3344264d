//! The `dedup` processor's YAML config.
//!
//! ```yaml
//! processors:
//!   dedup:
//!     window: 10m            # how long a profile is remembered
//!     max_entries: 100000    # profiles remembered at most (about 253 bytes each at most)
//!     timestamp_shift: 1ns   # the step a colliding distinct profile's timestamp moves by
//! ```

use flamepipe_core::component::{BuildContext, BuildError, Processor, ProcessorConfig, Simple};
use flamepipe_core::config::{ConfigIssue, Duration, Validate};
use serde::Deserialize;

use crate::processor::Dedup;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// How long a profile is remembered after it passed. Default `10m`.
    pub window: Duration,
    /// The most profiles remembered; past it the oldest are forgotten first. Default `100000`.
    pub max_entries: usize,
    /// The step a distinct profile's timestamp moves by when its (series, timestamp) is taken.
    /// Default `1ns`.
    pub timestamp_shift: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            window: Duration::from_secs(600),
            max_entries: 100_000,
            timestamp_shift: Duration(std::time::Duration::from_nanos(1)),
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if self.window.is_zero() {
            issues.push(ConfigIssue::new("window", "must be greater than 0s, got \"0s\""));
        }
        if self.max_entries == 0 {
            issues.push(ConfigIssue::new("max_entries", "must be greater than 0"));
        }
        if self.timestamp_shift.is_zero() {
            issues.push(ConfigIssue::new(
                "timestamp_shift",
                "must be greater than 0s, got \"0s\"",
            ));
        }
        if self.timestamp_shift.0 > std::time::Duration::from_secs(1) {
            issues.push(ConfigIssue::new(
                "timestamp_shift",
                "must be at most 1s: shifts are a tie-break, not a move in time (a profile moves by at most 1024 steps)",
            ));
        }
        issues
    }
}

impl ProcessorConfig for Config {
    fn build(self: Box<Self>, ctx: &BuildContext) -> Result<Box<dyn Processor>, BuildError> {
        Ok(Box::new(Simple(Dedup::new(*self, ctx))))
    }
}
