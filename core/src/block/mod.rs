//! The immutable block format: builder, reader, object keys (spec: docs/block-format.md).
//!
//! Only this module touches block bytes, and only [`paths`] knows object keys. A block holds
//! one tenant's profiles grouped by service (datasets); each dataset has a series index, a
//! symbol table and sample columns, each a separately compressed, checksummed section that a
//! reader fetches with a ranged read.

mod builder;
mod codec;
pub mod format;
#[cfg(test)]
mod golden;
pub mod manifest;
pub mod paths;
mod reader;
#[cfg(test)]
mod tests;
mod verify;

pub use builder::{BlockBuilder, EncodedBlock};
pub use manifest::{Manifest, ManifestError, live_blocks, live_blocks_of};
pub use paths::{BlockKey, BlockRef, block_path, level_path, list_blocks, parse_block_path, quarantine_path};
pub use reader::{BlockReader, DatasetIndex, RawSection, SectionKind, decode_block};
pub use verify::{Verified, verify_block};

pub type Result<T, E = BlockError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("block {block}: not a flamepipe block (bad magic)")]
    BadMagic { block: String },
    #[error("block {block}: format version {version} is not supported (supported: {supported:?})")]
    UnsupportedVersion {
        block: String,
        version: u32,
        supported: &'static [u32],
    },
    #[error("block {block}: {what} checksum mismatch")]
    Checksum { block: String, what: &'static str },
    #[error("block {block}: corrupt {what}: {detail}")]
    Corrupt {
        block: String,
        what: &'static str,
        detail: String,
    },
    #[error("block {block}: {source}")]
    Store { block: String, source: object_store::Error },
    #[error("cannot encode block: {0}")]
    Encode(String),
}

impl BlockError {
    /// A short stable name for the kind of failure (metrics `reason` label, diagnostics).
    pub fn reason(&self) -> &'static str {
        match self {
            BlockError::BadMagic { .. } => "bad_magic",
            BlockError::UnsupportedVersion { .. } => "unsupported_version",
            BlockError::Checksum { .. } => "checksum",
            BlockError::Corrupt { .. } => "corrupt",
            BlockError::Store {
                source: object_store::Error::NotFound { .. },
                ..
            } => "missing",
            BlockError::Store { .. } => "store",
            BlockError::Encode(_) => "encode",
        }
    }

    /// Whether the block itself is at fault (damaged, truncated, unreadable by this version,
    /// or gone), as opposed to the store failing to answer: a query may skip such a block,
    /// while a store error would fail the next read as well.
    pub fn is_damaged_block(&self) -> bool {
        !matches!(self.reason(), "store" | "encode")
    }

    pub(crate) fn corrupt(block: &str, what: &'static str, detail: impl ToString) -> Self {
        BlockError::Corrupt {
            block: block.to_string(),
            what,
            detail: detail.to_string(),
        }
    }
}
