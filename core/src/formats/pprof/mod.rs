//! pprof: the protobuf messages, decoding with limits, and conversion into the model.
//!
//! Used by every receiver that takes pprof (the Pyroscope API, scraping) and by the query side
//! that hands pprof back to `go tool pprof`.

mod convert;
pub mod flat;
pub mod proto;
#[cfg(test)]
mod tests;

pub use convert::{ConvertOptions, to_profiles};

use crate::body::{self, BodyError};

/// Why a pprof body was refused. Every variant is the sender's fault: retrying cannot help.
#[derive(Debug, thiserror::Error)]
pub enum PprofError {
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error("invalid pprof protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("invalid pprof protobuf: {0}")]
    Malformed(#[from] flat::FlatError),
    #[error("pprof has no sample types")]
    NoSampleTypes,
    #[error("pprof string table must start with the empty string")]
    FirstStringNotEmpty,
    #[error("pprof {what} refers to string {index}, but the string table has {len} entries")]
    StringIndex { what: &'static str, index: i64, len: usize },
    #[error("pprof {what} has the reserved id 0")]
    ReservedId { what: &'static str },
    #[error("pprof {from} refers to {what} id {id}, which does not exist")]
    UnknownId {
        from: &'static str,
        what: &'static str,
        id: u64,
    },
    #[error("pprof sample has {got} values, but the profile has {expected} sample types")]
    ValueCount { expected: usize, got: usize },
    #[error("pprof has more than {limit} samples")]
    TooManySamples { limit: usize },
}

impl PprofError {
    /// A short stable name for metrics (`reason` label).
    pub fn reason(&self) -> &'static str {
        match self {
            PprofError::Body(e) => e.reason(),
            PprofError::Protobuf(_) | PprofError::Malformed(_) => "bad_protobuf",
            PprofError::TooManySamples { .. } => "too_large",
            _ => "bad_pprof",
        }
    }
}

/// Limits applied while decoding: both guard memory against hostile or broken senders.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_decompressed_bytes: usize,
    pub max_samples: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_decompressed_bytes: 64 << 20,
            max_samples: 1 << 20,
        }
    }
}

/// Decodes a pprof body, gzipped or raw (sniffed, not trusted from headers), into profiles:
/// the ingest path ([`flat`] decoder, then [`to_profiles`]).
pub fn decode_profiles(
    bytes: &[u8],
    limits: &Limits,
    opts: &ConvertOptions<'_>,
) -> Result<Vec<crate::model::Profile>, PprofError> {
    let raw = body::maybe_gunzip(bytes, limits.max_decompressed_bytes)?;
    let profile = flat::decode(&raw, limits.max_samples).map_err(|e| match e {
        flat::FlatError::TooManySamples(limit) => PprofError::TooManySamples { limit },
        e => e.into(),
    })?;
    to_profiles(&profile, opts)
}
