//! Configuration of the `segment` processor.

use flamepipe_core::component::{BuildContext, BuildError, Processor, ProcessorConfig};
use flamepipe_core::config::{ByteSize, ConfigIssue, Duration, Validate};
use serde::Deserialize;

use crate::segmenter::Segmenter;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// How long a segment stays open after its first profile arrived. Default `1s`.
    pub flush_interval: Duration,
    /// Flush a tenant's segment early once its profiles take about this much memory.
    /// Default `16MiB`.
    pub max_bytes: ByteSize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            flush_interval: Duration::from_secs(1),
            max_bytes: ByteSize::mib(16),
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if self.flush_interval.is_zero() {
            issues.push(ConfigIssue::new(
                "flush_interval",
                "must be greater than 0s, got \"0s\"",
            ));
        }
        if self.max_bytes.0 == 0 {
            issues.push(ConfigIssue::new("max_bytes", "must be greater than 0"));
        }
        issues
    }
}

impl ProcessorConfig for Config {
    fn build(self: Box<Self>, ctx: &BuildContext) -> Result<Box<dyn Processor>, BuildError> {
        Ok(Box::new(Segmenter::new(*self, ctx)))
    }
}
