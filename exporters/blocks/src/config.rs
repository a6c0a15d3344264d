//! Configuration of the `blocks` exporter.

use flamepipe_core::component::{BuildContext, BuildError, Exporter, ExporterConfig};
use flamepipe_core::config::{ConfigIssue, Duration, Validate};
use flamepipe_core::store::DEFAULT_STORE;
use serde::Deserialize;

use crate::writer::BlockWriter;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The store blocks go to: an id from the `storage` section. Default `local`.
    pub store: String,
    /// Attempts after the first failed write of a block. Default 5.
    pub max_retries: u32,
    /// Wait before the first retry; doubles each time. Default `100ms`.
    pub retry_backoff: Duration,
    /// Blocks encoded and written at once. Default 4.
    pub max_concurrent_writes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            store: DEFAULT_STORE.to_string(),
            max_retries: 5,
            retry_backoff: Duration::from_millis(100),
            max_concurrent_writes: 4,
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if self.max_concurrent_writes == 0 {
            issues.push(ConfigIssue::new("max_concurrent_writes", "must be at least 1"));
        }
        issues
    }
}

impl ExporterConfig for Config {
    fn stores(&self) -> Vec<&str> {
        vec![&self.store]
    }

    fn build(self: Box<Self>, ctx: &BuildContext) -> Result<Box<dyn Exporter>, BuildError> {
        let store = ctx.stores.open(&self.store).map_err(|e| BuildError {
            component: ctx.id.to_string(),
            message: e.to_string(),
        })?;
        Ok(Box::new(BlockWriter::new(*self, store, ctx)))
    }
}
