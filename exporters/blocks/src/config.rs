//! Configuration of the `blocks` exporter.
//!
//! ```yaml
//! exporters:
//!   blocks:
//!     store: local
//!     timeout: 60s
//!     sending_queue: { queue_size: 4, num_consumers: 4 }
//!     retry_on_failure: { initial_interval: 100ms, max_interval: 2s, max_elapsed_time: 5s }
//! ```

use flamepipe_core::component::{BuildContext, BuildError, Exporter, ExporterConfig};
use flamepipe_core::config::{ConfigIssue, Duration, Validate};
use flamepipe_core::exporter_helper::{QueueConfig, QueueSettings, RetryConfig, RetrySettings, Settings, WhenFull};
use flamepipe_core::store::DEFAULT_STORE;
use serde::Deserialize;

use crate::writer::BlockWriter;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The store blocks go to: an id from the `storage` section. Default `local`.
    pub store: String,
    /// One write attempt (encoding excluded). Default `60s`.
    pub timeout: Duration,
    /// Segments waiting for a writer, and writers at once. Default 4 and 4; when full, the
    /// pipeline waits (`block`), so senders get 429 rather than memory growing.
    pub sending_queue: QueueConfig,
    /// Retries of a write that failed in a way another attempt may mend (the store's own
    /// retries, `storage.<id>.max_retries`, come first). Permanent failures (permission
    /// denied, an invalid path) fail the segment's requests at once. Default: first wait
    /// `100ms`, at most `2s` apart, give up after `5s`, well within the receivers' ack
    /// timeout, so the senders hear of a failing store and retry.
    pub retry_on_failure: RetryConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            store: DEFAULT_STORE.to_string(),
            timeout: Duration::from_secs(60),
            sending_queue: QueueConfig::default(),
            retry_on_failure: RetryConfig::default(),
        }
    }
}

impl Config {
    /// The exporter helper's settings: what the config says, else this exporter's defaults.
    pub fn helper_settings(&self) -> Settings {
        Settings {
            timeout: self.timeout,
            queue: self.sending_queue.or(QueueSettings {
                queue_size: 4,
                num_consumers: 4,
                when_full: WhenFull::Block,
            }),
            retry: self.retry_on_failure.or(RetrySettings {
                initial_interval: Duration::from_millis(100),
                max_interval: Duration::from_secs(2),
                max_elapsed_time: Duration::from_secs(5),
                ..RetrySettings::default()
            }),
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Vec<ConfigIssue> {
        self.helper_settings().validate()
    }
}

impl ExporterConfig for Config {
    fn stores(&self) -> Vec<&str> {
        vec![&self.store]
    }

    fn build(&self, ctx: &BuildContext) -> Result<Box<dyn Exporter>, BuildError> {
        let store = ctx.stores.open(&self.store).map_err(|e| ctx.error(e))?;
        Ok(Box::new(BlockWriter::new(self.clone(), store, ctx)))
    }
}
