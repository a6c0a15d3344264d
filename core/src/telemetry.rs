//! flamepipe's own metrics, exposed on `/metrics` (OpenMetrics text) at
//! `service.telemetry.metrics_address`.
//!
//! Families are labelled by component id and named after the OpenTelemetry Collector's
//! (`otelcol_receiver_accepted_spans` -> our `flamepipe_receiver_accepted_profiles_total`)
//! so Collector dashboards translate directly. Each component registers its own families
//! with [`Telemetry::metric`] when it is built; the ones declared here belong to core's own
//! shared parts: the receiver intake (accepted and refused requests) and the store layers.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Mutex;

use prometheus_client::encoding::text::encode;
pub use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The label pairs of one series of a family.
pub type LabelPairs = Vec<(String, String)>;

/// A counter family labelled by [`LabelPairs`].
pub type CounterFamily = Family<LabelPairs, Counter>;
/// A gauge family labelled by [`LabelPairs`].
pub type GaugeFamily = Family<LabelPairs, Gauge>;

/// A histogram family labelled by [`LabelPairs`], its buckets fixed by its constructor.
pub type HistogramFamily = Family<LabelPairs, Histogram, fn() -> Histogram>;

/// Durations from 1 ms to about 30 s (doubling): flushes, requests.
pub fn short_seconds() -> HistogramFamily {
    Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 16)))
}

/// Durations from 10 ms to about 1.5 h (doubling): jobs, waits.
pub fn long_seconds() -> HistogramFamily {
    Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.01, 2.0, 20)))
}

/// The label pairs naming one component: `{kind="id"}`.
pub fn component(kind: &str, id: &str) -> LabelPairs {
    vec![(kind.to_string(), id.to_string())]
}

/// `labels` and one more pair.
pub fn with(labels: &LabelPairs, name: &str, value: &str) -> LabelPairs {
    let mut labels = labels.clone();
    labels.push((name.to_string(), value.to_string()));
    labels
}

pub struct Telemetry {
    registry: Mutex<Registry>,
    /// The metrics components registered, by name: a second instance of a component gets
    /// the family the first registered.
    owned: Mutex<HashMap<String, Box<dyn Any + Send + Sync>>>,
    accepted_profiles: CounterFamily,
    accepted_bytes: CounterFamily,
    refused_requests: CounterFamily,
    store_requests: CounterFamily,
    store_retries: CounterFamily,
    store_bytes: CounterFamily,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Telemetry")
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    pub fn new() -> Self {
        let telemetry = Telemetry {
            registry: Mutex::new(Registry::with_prefix("flamepipe")),
            owned: Mutex::new(HashMap::new()),
            accepted_profiles: CounterFamily::default(),
            accepted_bytes: CounterFamily::default(),
            refused_requests: CounterFamily::default(),
            store_requests: CounterFamily::default(),
            store_retries: CounterFamily::default(),
            store_bytes: CounterFamily::default(),
        };
        for (name, help, family) in [
            (
                "store_requests",
                "Object store requests by store, operation (get, head, put, list, delete, copy) and outcome (ok, not_found, already_exists, precondition, timeout, error); retries count as requests",
                &telemetry.store_requests,
            ),
            (
                "store_retries",
                "Object store requests retried after a transient failure, by store and operation",
                &telemetry.store_retries,
            ),
            (
                "store_bytes",
                "Bytes read from and written to object stores, by store and direction (read, written)",
                &telemetry.store_bytes,
            ),
            (
                "receiver_accepted_profiles",
                "Profiles accepted by a receiver (one per sample type)",
                &telemetry.accepted_profiles,
            ),
            (
                "receiver_accepted_bytes",
                "Request body bytes accepted by a receiver, as sent",
                &telemetry.accepted_bytes,
            ),
            (
                "receiver_refused_requests",
                "Requests a receiver refused, by reason",
                &telemetry.refused_requests,
            ),
        ] {
            telemetry
                .registry
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .register(name, help, family.clone());
        }
        telemetry
    }

    pub fn store_request(&self, store: &str, operation: &str, outcome: &str) {
        self.store_requests
            .get_or_create(&vec![
                ("store".to_string(), store.to_string()),
                ("operation".to_string(), operation.to_string()),
                ("outcome".to_string(), outcome.to_string()),
            ])
            .inc();
    }

    pub fn store_retry(&self, store: &str, operation: &str) {
        self.store_retries
            .get_or_create(&vec![
                ("store".to_string(), store.to_string()),
                ("operation".to_string(), operation.to_string()),
            ])
            .inc();
    }

    pub fn store_bytes(&self, store: &str, direction: &str, bytes: u64) {
        self.store_bytes
            .get_or_create(&vec![
                ("store".to_string(), store.to_string()),
                ("direction".to_string(), direction.to_string()),
            ])
            .inc_by(bytes);
    }

    pub fn accepted(&self, receiver: &str, profiles: u64, bytes: u64) {
        let labels = component("receiver", receiver);
        self.accepted_profiles.get_or_create(&labels).inc_by(profiles);
        self.accepted_bytes.get_or_create(&labels).inc_by(bytes);
    }

    pub fn refused(&self, receiver: &str, reason: &str) {
        self.refused_requests
            .get_or_create(&with(&component("receiver", receiver), "reason", reason))
            .inc();
    }

    /// A metric a component owns, registered under `flamepipe_<name>` the first time and
    /// shared by every later caller (several instances of one component type). Counters get
    /// `_total` appended in the exposition.
    ///
    /// Panics if `name` was registered before with another metric type: two components
    /// disagreeing on one name is a programming error.
    pub fn metric<M>(&self, name: &str, help: &str) -> M
    where
        M: prometheus_client::registry::Metric + Clone + Default,
    {
        self.metric_with(name, help, M::default)
    }

    /// [`Telemetry::metric`] for metrics without a default (histograms with buckets).
    pub fn metric_with<M>(&self, name: &str, help: &str, make: impl FnOnce() -> M) -> M
    where
        M: prometheus_client::registry::Metric + Clone,
    {
        let mut owned = self.owned.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = owned.get(name) {
            return existing
                .downcast_ref::<M>()
                .unwrap_or_else(|| panic!("metric {name} registered twice with different types"))
                .clone();
        }
        let metric = make();
        self.registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .register(name, help, metric.clone());
        owned.insert(name.to_string(), Box::new(metric.clone()));
        metric
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_counters_by_component() {
        let t = Telemetry::new();
        t.accepted("pyroscope", 2, 100);
        t.refused("pyroscope", "bad_gzip");
        let text = t.encode();
        assert!(
            text.contains("flamepipe_receiver_accepted_profiles_total{receiver=\"pyroscope\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("flamepipe_receiver_refused_requests_total{receiver=\"pyroscope\",reason=\"bad_gzip\"} 1")
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn a_metric_registered_twice_is_one_family() {
        let t = Telemetry::new();
        let a: CounterFamily = t.metric("widget_things", "Things");
        let b: CounterFamily = t.metric("widget_things", "Things");
        a.get_or_create(&component("widget", "w/1")).inc();
        b.get_or_create(&component("widget", "w/1")).inc();
        let text = t.encode();
        assert!(
            text.contains("flamepipe_widget_things_total{widget=\"w/1\"} 2"),
            "{text}"
        );
        assert_eq!(text.matches("# TYPE flamepipe_widget_things counter").count(), 1);
    }
}
