//! The profile formats flamepipe reads, as decoders any receiver can call: a receiver owns the
//! transport (HTTP, gRPC, files, scraping); the bytes of a profile are decoded here.
//!
//! - [`pprof`]: pprof protobuf (gzipped or raw): messages, decoding with limits, conversion.
//! - [`folded`]: folded stacks (`main;work 12`) and one-stack-per-line text.
//! - [`speedscope`]: speedscope JSON files (sampled and evented profiles, several per file).
//! - [`detect`]: which of these a body holds, from its content.

pub mod detect;
pub mod folded;
pub mod pprof;
pub mod speedscope;

pub use detect::{Format, detect};
