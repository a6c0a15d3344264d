//! The query engine over stored blocks, and the results it merges.
//!
//! - [`run`]: plans a query from block footers, reads datasets in parallel, merges parts,
//!   and streams plan / snapshot / result events.
//! - [`merge`]: what each query method accumulates (flame graph, pprof, series, labels).
//! - [`tree`]: the merged call tree and its flame graph rendering with `max_nodes` pruning.
//!
//! Queries select series with [`flamepipe_core::selector`]; the HTTP and Connect APIs on top
//! of the engine are this crate's `api` module.

pub mod merge;
pub mod run;
#[cfg(test)]
mod tests;
pub mod tree;

pub use run::{
    Diagnostics, EngineOptions, Event, Plan, Progress, Query, QueryEngine, QueryError, SkippedBlock, UnreadableBlocks,
};
pub use tree::{FlameGraph, FlameTree};
