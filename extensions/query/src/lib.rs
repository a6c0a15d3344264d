//! The `query` extension: flamepipe's read side, a component outside the pipelines that
//! serves queries over the blocks a store holds. It speaks Pyroscope's
//! `querier.v1.QuerierService` over Connect, its `/pyroscope/render` flamebearer endpoint,
//! pprof downloads, and flamepipe's streaming queries (Connect server streaming and NDJSON).
//! See docs/query-api.md.
//!
//! # Layout
//!
//! - this file: the extension's config section ([`QueryConfig`]), its checks, and `build`.
//! - [`engine`]: plans a query from block footers, reads datasets in parallel and merges
//!   them (flame graphs, pprof, series, labels), streaming plan / snapshot / result events.
//! - `api`: the routes mounted on the `query` address and their handlers (Connect unary
//!   methods, streams, plain-HTTP endpoints, and the encoders of their answers).
//! - [`messages`]: the prost + serde message types.
//! - `connect`: the Connect protocol (unary, envelopes, errors).
//! - `params`: turning requests into engine queries, with their validation.
//! - `metrics`: the extension's own metrics (block reads, skipped blocks, queries answered).
//!
//! Selectors (`<profile type>{label matchers}`) are parsed by [`flamepipe_core::selector`].

mod api;
mod connect;
pub mod engine;
pub mod messages;
mod metrics;
mod params;

use std::net::{Ipv4Addr, SocketAddr};

use flamepipe_core::component::{BuildContext, BuildError, ExtensionConfig, ServedParts};
use flamepipe_core::config::{ByteSize, ConfigIssue, Duration, Validate};
use flamepipe_core::store::DEFAULT_STORE;
use serde::{Deserialize, Serialize};

use crate::engine::UnreadableBlocks;

/// The `query` extension's section of pipeline.yaml.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// Where to serve the query API; default `127.0.0.1:4040`, shared with the Pyroscope
    /// receiver as Pyroscope does.
    pub address: SocketAddr,
    /// The store to read blocks from: an id from the `storage` section, the one the blocks
    /// exporter writes to. Default `local`.
    pub store: String,
    /// Block reads in flight per query. Default `16`.
    pub max_concurrent_reads: usize,
    /// Queries running at once; more get 429 / `resource_exhausted`. Default `32`.
    pub max_concurrent_queries: usize,
    /// How often a streaming query sends a snapshot. Default `250ms`.
    pub snapshot_interval: Duration,
    /// Flame graph nodes when a request says none. Default `8192`.
    pub max_nodes: u32,
    /// The most nodes a request may ask for. Default `1048576`.
    pub max_nodes_limit: u32,
    /// Largest request body. Default `1MiB`.
    pub max_request_bytes: ByteSize,
    /// What a query does with a block it cannot read (bad checksum, truncated, refused by
    /// the reader, gone): `skip` it and name it in the answer (default), or `fail`.
    pub unreadable_blocks: UnreadableBlocks,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            address: SocketAddr::from((Ipv4Addr::LOCALHOST, 4040)),
            store: DEFAULT_STORE.to_string(),
            max_concurrent_reads: 16,
            max_concurrent_queries: 32,
            snapshot_interval: Duration::from_millis(250),
            max_nodes: 8192,
            max_nodes_limit: 1 << 20,
            max_request_bytes: ByteSize::mib(1),
            unreadable_blocks: UnreadableBlocks::Skip,
        }
    }
}

impl Validate for QueryConfig {
    fn validate(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        for (name, value) in [
            ("max_concurrent_reads", self.max_concurrent_reads),
            ("max_concurrent_queries", self.max_concurrent_queries),
            ("max_nodes", self.max_nodes as usize),
            ("max_nodes_limit", self.max_nodes_limit as usize),
        ] {
            if value == 0 {
                issues.push(ConfigIssue::new(name, "must be greater than 0"));
            }
        }
        if self.max_nodes > self.max_nodes_limit {
            issues.push(ConfigIssue::new(
                "max_nodes",
                format!("must not exceed max_nodes_limit ({})", self.max_nodes_limit),
            ));
        }
        if self.snapshot_interval.0 < std::time::Duration::from_millis(10) {
            issues.push(ConfigIssue::new("snapshot_interval", "must be at least 10ms"));
        }
        if self.max_request_bytes.0 == 0 {
            issues.push(ConfigIssue::new("max_request_bytes", "must be greater than 0"));
        }
        issues
    }
}

impl ExtensionConfig for QueryConfig {
    fn routes(&self) -> Vec<(SocketAddr, String)> {
        api::paths().into_iter().map(|path| (self.address, path)).collect()
    }

    fn stores(&self) -> Vec<&str> {
        vec![&self.store]
    }

    fn build(self: Box<Self>, ctx: &BuildContext) -> Result<ServedParts, BuildError> {
        Ok(ServedParts {
            mounts: vec![api::mount(*self, ctx)?],
            task: None,
        })
    }
}
