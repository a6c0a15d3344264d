//! The `prometheus_remote_write` exporter: metric points (from the `profile_metrics`
//! connector) to anything that takes Prometheus remote write 1.0: Prometheus with
//! `--web.enable-remote-write-receiver`, Mimir, VictoriaMetrics, Thanos receive.
//!
//! The last stage of a `metrics/…` pipeline. Delivery (queue, retries, timeout) is the shared
//! exporter helper's; `write` says which answers are retried, refused or final.
//!
//! # Layout
//!
//! - [`config`]: the YAML config.
//! - `proto`: the `WriteRequest` messages.
//! - `write`: gathering points into requests, encoding, sending.

pub mod config;
mod proto;
mod write;

pub use config::Config;
