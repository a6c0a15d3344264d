//! The receiver's YAML config: where it listens, how much it accepts, and when it answers.
//!
//! ```yaml
//! receivers:
//!   pyroscope:
//!     address: 127.0.0.1:4040
//!     max_request_bytes: 16MiB
//!     max_decompressed_bytes: 64MiB
//!     max_samples: 1000000
//!     max_concurrent_requests: 64
//!     ack: durable        # or `received`
//!     ack_timeout: 30s
//! ```

use std::net::{Ipv4Addr, SocketAddr};

pub use flamepipe_core::component::AckMode;
use flamepipe_core::component::{BuildContext, BuildError, HttpMount, PipelineSender, ReceiverConfig, ServedParts};
use flamepipe_core::config::{ByteSize, ConfigIssue, Duration, Validate};
use serde::{Deserialize, Serialize};

use crate::receiver;

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to serve the Pyroscope HTTP API on; default `127.0.0.1:4040` (Pyroscope's port).
    pub address: SocketAddr,
    /// Largest request body accepted, as sent (compressed); larger ones get 413. Default `16MiB`.
    pub max_request_bytes: ByteSize,
    /// Largest size a gzipped body or profile may inflate to; larger ones get 413.
    /// Default `64MiB`.
    pub max_decompressed_bytes: ByteSize,
    /// Most samples one pprof (or folded body) may hold; more get 413. Default `1000000`.
    pub max_samples: usize,
    /// Requests handled at once (reading, decoding, waiting for their write); more get 429.
    /// With the size limits this bounds the receiver's memory. Default `64`.
    pub max_concurrent_requests: usize,
    /// When to answer: `durable` (default) or `received`.
    pub ack: AckMode,
    /// How long a `durable` request waits for its write before it gets 503. Default `30s`.
    pub ack_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            address: SocketAddr::from((Ipv4Addr::LOCALHOST, 4040)),
            max_request_bytes: ByteSize::mib(16),
            max_decompressed_bytes: ByteSize::mib(64),
            max_samples: 1_000_000,
            max_concurrent_requests: 64,
            ack: AckMode::Durable,
            ack_timeout: Duration::from_secs(30),
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if self.max_request_bytes.0 == 0 {
            issues.push(ConfigIssue::new("max_request_bytes", "must be greater than 0"));
        }
        if self.max_decompressed_bytes.0 == 0 {
            issues.push(ConfigIssue::new("max_decompressed_bytes", "must be greater than 0"));
        }
        // Decoded columns are indexed with u32.
        if self.max_decompressed_bytes.0 > u64::from(u32::MAX) {
            issues.push(ConfigIssue::new("max_decompressed_bytes", "must be at most 4GiB"));
        }
        if self.max_samples == 0 {
            issues.push(ConfigIssue::new("max_samples", "must be greater than 0"));
        }
        if self.max_concurrent_requests == 0 {
            issues.push(ConfigIssue::new("max_concurrent_requests", "must be greater than 0"));
        }
        if self.ack_timeout.is_zero() {
            issues.push(ConfigIssue::new(
                "ack_timeout",
                format!("must be greater than 0s, got \"{}\"", self.ack_timeout),
            ));
        }
        issues
    }
}

impl ReceiverConfig for Config {
    fn routes(&self) -> Vec<(SocketAddr, String)> {
        receiver::paths().into_iter().map(|p| (self.address, p)).collect()
    }

    fn build(self: Box<Self>, ctx: &BuildContext, output: PipelineSender) -> Result<ServedParts, BuildError> {
        let router = receiver::router(&self, ctx, output);
        Ok(ServedParts {
            mounts: vec![HttpMount {
                address: self.address,
                paths: receiver::paths(),
                router,
            }],
            task: None,
        })
    }
}
