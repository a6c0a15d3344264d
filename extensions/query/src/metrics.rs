//! The query extension's metrics, registered when the engine is built: reads of block
//! sections, blocks skipped as unreadable, and queries answered.

use flamepipe_core::telemetry::{Counter, CounterFamily, LabelPairs, Telemetry};

#[derive(Clone)]
pub struct QueryMetrics {
    block_reads: Counter,
    read_bytes: Counter,
    skipped_blocks: CounterFamily,
    requests: CounterFamily,
}

fn pairs(pairs: &[(&str, &str)]) -> LabelPairs {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

impl QueryMetrics {
    pub fn new(telemetry: &Telemetry) -> Self {
        QueryMetrics {
            block_reads: telemetry.metric(
                "query_block_reads",
                "Ranged reads of block sections (footers, indexes, symbols, samples) made by queries",
            ),
            read_bytes: telemetry.metric("query_read_bytes", "Bytes of block sections read by queries"),
            skipped_blocks: telemetry.metric(
                "query_skipped_blocks",
                "Blocks (or some of their datasets) a query skipped because they cannot be read, by reason (checksum, corrupt, bad_magic, unsupported_version, missing)",
            ),
            requests: telemetry.metric(
                "query_requests",
                "Queries answered, by API method and outcome (ok, invalid, canceled, error)",
            ),
        }
    }

    /// A query skipped a block it cannot read.
    pub fn block_skipped(&self, reason: &str) {
        self.skipped_blocks.get_or_create(&pairs(&[("reason", reason)])).inc();
    }

    /// One ranged read of a block made by a query.
    pub fn block_read(&self, bytes: u64) {
        self.block_reads.inc();
        self.read_bytes.inc_by(bytes);
    }

    pub fn answered(&self, method: &str, outcome: &str) {
        self.requests
            .get_or_create(&pairs(&[("method", method), ("outcome", outcome)]))
            .inc();
    }
}
