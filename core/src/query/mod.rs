//! The read side: selectors, the query engine over stored blocks, and the results it merges.
//!
//! - [`selector`]: Pyroscope's `<profile type>{label matchers}` syntax.
//! - [`engine`]: plans a query from block footers, reads datasets in parallel, merges parts,
//!   and streams plan / snapshot / result events.
//! - [`merge`]: what each query method accumulates (flame graph, pprof, series, labels).
//! - [`tree`]: the merged call tree and its flame graph rendering with `max_nodes` pruning.
//!
//! The HTTP and Connect APIs on top of this live in the binary (`src/query/`).

pub mod engine;
pub mod merge;
mod selector;
#[cfg(test)]
mod tests;
pub mod tree;

pub use engine::{
    Diagnostics, EngineOptions, Event, Plan, Progress, Query, QueryEngine, QueryError, SkippedBlock, UnreadableBlocks,
};
pub use selector::{MatchOp, Matcher, Selector, SelectorError};
pub use tree::{FlameGraph, FlameTree};
