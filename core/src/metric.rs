//! The metrics signal: what `metrics/…` pipelines carry from a connector that derives metrics
//! (`profile_metrics`) to the exporters that deliver them (`prometheus_remote_write`, `otlp`).
//!
//! flamepipe makes one kind of metric today: a monotonic counter, cumulative since
//! `start_ms` (the process start, so a restart is an ordinary counter reset). A point is one
//! series' value at one time; a [`MetricsBatch`] is the points of one tenant.

use std::sync::Arc;

use crate::component::Ack;
use crate::labels::Labels;

/// One cumulative counter value of one series.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricPoint {
    /// The Prometheus metric name (`profile_cpu_seconds_total`).
    pub name: Arc<str>,
    /// The series labels, without `__name__`, sorted.
    pub labels: Labels,
    /// When the counter started counting from zero (unix ms): the process start, or the
    /// series' first step if that is earlier.
    pub start_ms: i64,
    /// The time the value is stamped with (unix ms).
    pub timestamp_ms: i64,
    pub value: f64,
}

/// Metric points of one tenant on their way through a `metrics/…` pipeline.
#[derive(Debug, Default)]
pub struct MetricsBatch {
    pub tenant: Arc<str>,
    pub points: Vec<MetricPoint>,
    /// Shares of the requests waiting on these points (none when the connector acknowledged
    /// its input once the points were queued).
    pub acks: Vec<Ack>,
}

impl MetricsBatch {
    pub fn new(tenant: impl Into<Arc<str>>, points: Vec<MetricPoint>) -> Self {
        MetricsBatch {
            tenant: tenant.into(),
            points,
            acks: Vec::new(),
        }
    }
}
