//! The `compactor` extension's YAML config and its checks.
//!
//! ```yaml
//! extensions:
//!   compactor:
//!     store: local              # the store to compact, an id under storage
//!     interval: 15s             # how often to look for work
//!     levels:                   # one entry per step: level 0 -> 1, 1 -> 2, 2 -> 3
//!       - { max_inputs: 20, max_age: 36s }
//!       - { max_inputs: 10, max_age: 12m }
//!       - { max_inputs: 10, max_age: 3h }
//!     lease_duration: 30s       # how long a claimed job is held without renewal
//!     grace_period: 15m         # retired blocks stay readable this long
//!     memory_budget: 512MiB     # what one job may hold; larger groups are split
//!     retention: 0s             # 0s keeps everything; else blocks older are deleted
//!     retention_by_tenant: { team-a: 7d }
//! ```

use std::collections::BTreeMap;

use flamepipe_core::component::{BuildContext, BuildError, ExtensionConfig, Output, ServedParts};
use flamepipe_core::config::{ByteSize, ConfigIssue, Duration, Validate};
use flamepipe_core::store::DEFAULT_STORE;
use serde::Deserialize;

use crate::Compactor;

/// One compaction step: blocks of its level are merged into the next once `max_inputs` of
/// them wait, or the oldest has waited `max_age`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Level {
    pub max_inputs: usize,
    pub max_age: Duration,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The store to compact: an id from the `storage` section. Default `local`.
    pub store: String,
    /// How often to look for work. Default `15s`.
    pub interval: Duration,
    /// The steps, level 0 first. Default Pyroscope's: 20 inputs or 36s, 10 or 12m, 10 or 3h.
    pub levels: Vec<Level>,
    /// How long a claimed job stays claimed without a renewal. Default `30s`.
    pub lease_duration: Duration,
    /// How long retired blocks, unreferenced outputs and old manifest versions are kept
    /// before they are deleted. Default `15m`.
    pub grace_period: Duration,
    /// What one job may hold in memory, estimated from its inputs' sizes; a group of blocks
    /// over it is split into smaller jobs. Default `512MiB`.
    pub memory_budget: ByteSize,
    /// Blocks whose data ended longer ago are deleted. `0s` (the default) keeps everything.
    pub retention: Duration,
    /// `retention` per tenant.
    pub retention_by_tenant: BTreeMap<String, Duration>,
    /// A connector (`profile_metrics/…`) that counts the profiles compaction first merges
    /// (level 0 into level 1), once each: metrics over stored history or a backfill, with the
    /// same rules as at ingest.
    pub profile_metrics: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            store: DEFAULT_STORE.to_string(),
            interval: Duration::from_secs(15),
            levels: vec![
                Level {
                    max_inputs: 20,
                    max_age: Duration::from_secs(36),
                },
                Level {
                    max_inputs: 10,
                    max_age: Duration::from_secs(12 * 60),
                },
                Level {
                    max_inputs: 10,
                    max_age: Duration::from_secs(3 * 3600),
                },
            ],
            lease_duration: Duration::from_secs(30),
            grace_period: Duration::from_secs(15 * 60),
            profile_metrics: None,
            memory_budget: ByteSize::mib(512),
            retention: Duration::from_secs(0),
            retention_by_tenant: BTreeMap::new(),
        }
    }
}

impl Config {
    /// The retention of `tenant`, if its data expires.
    pub fn retention_of(&self, tenant: &str) -> Option<std::time::Duration> {
        let r = self.retention_by_tenant.get(tenant).unwrap_or(&self.retention);
        (!r.is_zero()).then_some(r.0)
    }
}

impl Validate for Config {
    fn validate(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        for (name, d) in [
            ("interval", self.interval),
            ("lease_duration", self.lease_duration),
            ("grace_period", self.grace_period),
        ] {
            if d.is_zero() {
                issues.push(ConfigIssue::new(name, "must be greater than 0s, got \"0s\""));
            }
        }
        if self.levels.is_empty() {
            issues.push(ConfigIssue::new("levels", "needs at least one level"));
        }
        for (i, level) in self.levels.iter().enumerate() {
            if level.max_inputs < 2 {
                issues.push(ConfigIssue::new(
                    format!("levels[{i}].max_inputs"),
                    "must be at least 2",
                ));
            }
        }
        if self.memory_budget.0 == 0 {
            issues.push(ConfigIssue::new("memory_budget", "must be greater than 0"));
        }
        issues
    }
}

impl ExtensionConfig for Config {
    fn stores(&self) -> Vec<&str> {
        vec![&self.store]
    }

    fn feeds(&self) -> Vec<&str> {
        self.profile_metrics.iter().map(String::as_str).collect()
    }

    fn build(self: Box<Self>, ctx: &BuildContext) -> Result<ServedParts, BuildError> {
        self.build_feeding(ctx, Vec::new())
    }

    fn build_feeding(self: Box<Self>, ctx: &BuildContext, feeds: Vec<Output>) -> Result<ServedParts, BuildError> {
        let store = ctx.stores.open(&self.store).map_err(|e| BuildError {
            component: ctx.id.to_string(),
            message: e.to_string(),
        })?;
        let mut compactor = Compactor::new(*self, store, ctx);
        if let Some(feed) = feeds.into_iter().next() {
            compactor = compactor.with_feed(feed);
        }
        let shutdown = ctx.shutdown.clone();
        Ok(ServedParts {
            mounts: Vec::new(),
            task: Some(Box::pin(compactor.run(shutdown))),
        })
    }
}
