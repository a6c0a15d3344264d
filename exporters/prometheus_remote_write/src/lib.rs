//! The `prometheus_remote_write` exporter: metric points (from the `profile_metrics`
//! connector) to anything that takes Prometheus remote write 1.0: Prometheus with
//! `--web.enable-remote-write-receiver`, Mimir, VictoriaMetrics, Thanos receive; remote write
//! 2.0 when configured.
//!
//! The last stage of a `metrics/…` pipeline. Delivery (queue, retries, timeout) is the shared
//! exporter helper's; `write` says which answers are retried, refused or final.
//!
//! # Layout
//!
//! - [`config`]: the YAML config.
//! - `proto`: the `WriteRequest` messages, 1.0 and 2.0.
//! - `encode`: points into series, series into request bodies.
//! - `write`: gathering points into requests, sending, reading the answers.

pub mod config;
mod encode;
mod proto;
mod write;

pub use config::Config;
