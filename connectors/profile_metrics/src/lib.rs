//! The `profile_metrics` connector: counters from profiles, for alerting and graphs in the
//! Prometheus, Mimir or VictoriaMetrics users already run.
//!
//! It is an exporter of a `profiles/…` pipeline and a receiver of `metrics/…` pipelines.
//! Each rule picks profiles (a profile type, a label selector), optionally the samples whose
//! stacks hold a function, and keeps a cumulative counter per `group_by` series, in base
//! units (nanoseconds become seconds), stamped with the profile's time rounded to `step`.
//! The semantics (counter resets, late profiles, cardinality) are in docs/metrics.md.
//!
//! # Layout
//!
//! - [`config`]: the YAML config and its checks.
//! - `rules`: compiled rules; function names resolved once per symbol table.
//! - `counters`: cumulative counters per series, sent step by step in time order.
//! - `connector`: the task between the two pipelines.

pub mod config;
mod connector;
mod counters;
mod rules;

pub use config::Config;

#[cfg(test)]
mod tests;
