//! The receiver's YAML config, shaped like the OpenTelemetry Collector's `otlp` receiver.
//!
//! ```yaml
//! receivers:
//!   otlp:
//!     protocols:
//!       grpc: { endpoint: 127.0.0.1:4317 }
//!       http: { endpoint: 127.0.0.1:4318 }
//!     max_request_bytes: 16MiB
//!     max_samples: 1000000
//!     max_stack_depth: 8192
//!     max_concurrent_requests: 64
//!     ack: durable        # or `received`
//!     ack_timeout: 30s
//! ```
//! Leaving a protocol out disables it (`protocols: { grpc: {} }` serves gRPC only).

use std::net::{Ipv4Addr, SocketAddr};

use flamepipe_core::component::{
    AckMode, BuildContext, BuildError, HttpMount, PipelineSender, ReceiverConfig, ServedParts,
};
use flamepipe_core::config::{ByteSize, ConfigIssue, Duration, Validate};
use serde::{Deserialize, Serialize};

use crate::receiver::{self, GRPC_PATH, HTTP_PATH};

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    pub endpoint: SocketAddr,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Protocols {
    /// gRPC `ProfilesService/Export`; default endpoint `127.0.0.1:4317`.
    #[serde(default, deserialize_with = "endpoint_or_default::grpc")]
    pub grpc: Option<Endpoint>,
    /// OTLP/HTTP `POST /v1development/profiles`; default endpoint `127.0.0.1:4318`.
    #[serde(default, deserialize_with = "endpoint_or_default::http")]
    pub http: Option<Endpoint>,
}

/// `grpc:` or `grpc: {}` means the default endpoint, as in the Collector.
mod endpoint_or_default {
    use super::*;
    use serde::Deserializer;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Partial {
        endpoint: Option<SocketAddr>,
    }

    fn with_default<'de, D: Deserializer<'de>>(d: D, port: u16) -> Result<Option<Endpoint>, D::Error> {
        let partial = Option::<Partial>::deserialize(d)?;
        let endpoint = partial
            .and_then(|p| p.endpoint)
            .unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
        Ok(Some(Endpoint { endpoint }))
    }

    pub fn grpc<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Endpoint>, D::Error> {
        with_default(d, 4317)
    }

    pub fn http<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Endpoint>, D::Error> {
        with_default(d, 4318)
    }
}

impl Default for Protocols {
    fn default() -> Self {
        Protocols {
            grpc: Some(Endpoint {
                endpoint: SocketAddr::from((Ipv4Addr::LOCALHOST, 4317)),
            }),
            http: Some(Endpoint {
                endpoint: SocketAddr::from((Ipv4Addr::LOCALHOST, 4318)),
            }),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub protocols: Protocols,
    /// Largest request body, as sent; larger ones get 413 / RESOURCE_EXHAUSTED. Default `16MiB`.
    pub max_request_bytes: ByteSize,
    /// Largest size a gzipped body may inflate to. Default `64MiB`.
    pub max_decompressed_bytes: ByteSize,
    /// Most samples in one request. Default `1000000`.
    pub max_samples: usize,
    /// Most frames in one stack; a profile with a deeper one is rejected. Default `8192`.
    pub max_stack_depth: usize,
    /// Requests handled at once; more get 429 / RESOURCE_EXHAUSTED. Default `64`.
    pub max_concurrent_requests: usize,
    /// When to answer: `durable` (default) or `received`.
    pub ack: AckMode,
    /// How long a `durable` request waits for its write before it fails. Default `30s`.
    pub ack_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            protocols: Protocols::default(),
            max_request_bytes: ByteSize::mib(16),
            max_decompressed_bytes: ByteSize::mib(64),
            max_samples: 1_000_000,
            max_stack_depth: 8192,
            max_concurrent_requests: 64,
            ack: AckMode::Durable,
            ack_timeout: Duration::from_secs(30),
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if self.protocols.grpc.is_none() && self.protocols.http.is_none() {
            issues.push(ConfigIssue::new("protocols", "enable grpc, http or both"));
        }
        for (name, value) in [
            ("max_request_bytes", self.max_request_bytes.0 as usize),
            ("max_decompressed_bytes", self.max_decompressed_bytes.0 as usize),
            ("max_samples", self.max_samples),
            ("max_stack_depth", self.max_stack_depth),
            ("max_concurrent_requests", self.max_concurrent_requests),
        ] {
            if value == 0 {
                issues.push(ConfigIssue::new(name, "must be greater than 0"));
            }
        }
        if self.ack_timeout.is_zero() {
            issues.push(ConfigIssue::new("ack_timeout", "must be greater than 0s"));
        }
        issues
    }
}

impl ReceiverConfig for Config {
    fn routes(&self) -> Vec<(SocketAddr, String)> {
        let grpc = self.protocols.grpc.iter().map(|e| (e.endpoint, GRPC_PATH.to_string()));
        let http = self.protocols.http.iter().map(|e| (e.endpoint, HTTP_PATH.to_string()));
        grpc.chain(http).collect()
    }

    fn build(self: Box<Self>, ctx: &BuildContext, output: PipelineSender) -> Result<ServedParts, BuildError> {
        let (grpc, http) = receiver::routers(&self, ctx, output);
        let mut mounts = Vec::new();
        if let Some(e) = &self.protocols.grpc {
            mounts.push(HttpMount {
                address: e.endpoint,
                paths: vec![GRPC_PATH.to_string()],
                router: grpc,
            });
        }
        if let Some(e) = &self.protocols.http {
            mounts.push(HttpMount {
                address: e.endpoint,
                paths: vec![HTTP_PATH.to_string()],
                router: http,
            });
        }
        Ok(ServedParts { mounts, task: None })
    }
}
