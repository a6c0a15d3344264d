//! The `dedup` processor: a profile sent twice (a client retry, two agents forwarding the same
//! data) is stored once, and distinct profiles that collide on (series, timestamp) are both
//! kept.
//!
//! Sits before `segment` in a pipeline. Two profiles are **duplicates** when tenant, series
//! labels, profile type, time range and content are equal; the content is a fingerprint of
//! the normalized samples (stacks by frame names, values, sample labels:
//! `flamepipe_core::fingerprint`, which compaction shares). A
//! duplicate seen within `window` of the profile it repeats is dropped, and its request is
//! answered only once that profile is durably written (failing if that write fails, so the
//! sender retries): no request is acknowledged for data that is not stored. Two profiles
//! with equal tenant, series and timestamp but different content are **distinct**: the later
//! one's timestamp moves by the smallest number of `timestamp_shift` steps that makes
//! (series, timestamp) unique, so nothing keyed on (series, timestamp) downstream can drop
//! one of them.
//!
//! Memory is bounded: at most `max_entries` entries, the oldest evicted first (counted). After
//! a restart the window is empty; a retry of a profile stored before the restart is stored
//! again, and compaction removes such exact copies.
//!
//! # Layout
//!
//! - [`config`]: the YAML config and its checks.
//! - [`window`]: the bounded window of recent profiles.
//! - `outcome`: how a passed batch's write went, shared by its profiles' window entries.
//! - `processor`: the processor (the simple, batch-in batches-out shape) and its acks.
//! - `metrics`: the processor's own metrics.

pub mod config;
mod metrics;
mod outcome;
mod processor;
#[cfg(test)]
mod tests;
pub mod window;

pub use config::Config;
pub use processor::Dedup;
