//! The `blocks` exporter: writes each batch it receives as one immutable block object.
//!
//! Last stage of a pipeline, after the `segment` processor (which makes each batch one
//! tenant's segment). A block is encoded off the async runtime, written with a single `put`
//! (atomic on every object store; fsynced on local disk), and only then are the batch's
//! requests acknowledged. Queueing, retries with backoff and the timeout are the shared
//! exporter helper's; a write that fails permanently, or still fails after the retries,
//! fails the requests (the senders see 503 and retry) rather than losing them silently.

mod config;
mod writer;

pub use config::Config;
pub use writer::BlockWriter;
