//! Metric points -> an OTLP `ExportMetricsServiceRequest`, and one attempt at sending it.
//!
//! The counters of the `profile_metrics` connector become monotonic cumulative sums: one
//! `Metric` per name, a `NumberDataPoint` per point with its series labels as attributes, the
//! counter's start (the process start) as `start_time_unix_nano` and the step as
//! `time_unix_nano`. Names keep their Prometheus form (`profile_cpu_seconds_total`), which the
//! Collector's Prometheus exporters pass through unchanged; the unit is said again in `unit`
//! (UCUM: `s`, `By`, `1`).

use std::collections::BTreeMap;

use flamepipe_core::exporter_helper::{Deliver, Delivered, ExportError};
use flamepipe_core::metric::{MetricPoint, MetricsBatch};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue};
use tonic::transport::Channel;

use crate::forward::{classify, request};

/// The UCUM unit a Prometheus counter name says.
fn unit(name: &str) -> &'static str {
    if name.ends_with("_seconds_total") {
        "s"
    } else if name.ends_with("_bytes_total") {
        "By"
    } else {
        "1"
    }
}

pub(crate) fn string(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

fn nanos(ms: i64) -> u64 {
    u64::try_from(ms).unwrap_or(0).saturating_mul(1_000_000)
}

/// One request for a batch: one resource (flamepipe), one scope, a `Metric` per name.
pub fn encode_metrics(points: &[MetricPoint]) -> ExportMetricsServiceRequest {
    let mut by_name: BTreeMap<&str, Vec<NumberDataPoint>> = BTreeMap::new();
    for p in points {
        by_name.entry(&p.name).or_default().push(NumberDataPoint {
            attributes: p.labels.iter().map(|(k, v)| string(k, v)).collect(),
            start_time_unix_nano: nanos(p.start_ms),
            time_unix_nano: nanos(p.timestamp_ms),
            value: Some(number_data_point::Value::AsDouble(p.value)),
            ..Default::default()
        });
    }
    let metrics = by_name
        .into_iter()
        .map(|(name, data_points)| Metric {
            name: name.to_string(),
            unit: unit(name).to_string(),
            data: Some(metric::Data::Sum(Sum {
                data_points,
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            })),
            ..Default::default()
        })
        .collect();
    request_of("flamepipe/profile_metrics", metrics)
}

/// One request holding `metrics`, under the resource `service.name=flamepipe` (and its
/// version) and the instrumentation scope `scope`.
pub(crate) fn request_of(scope: &str, metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    string("service.name", "flamepipe"),
                    string("service.version", env!("CARGO_PKG_VERSION")),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: scope.to_string(),
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// One attempt at `MetricsService/Export`.
pub struct ExportMetrics {
    pub endpoint: String,
    pub client: MetricsServiceClient<Channel>,
    pub headers: Vec<(AsciiMetadataKey, AsciiMetadataValue)>,
}

impl Deliver<MetricsBatch> for ExportMetrics {
    async fn deliver(&self, batch: &MetricsBatch) -> Result<Delivered, ExportError> {
        if batch.points.is_empty() {
            return Ok(Delivered::default());
        }
        let call = request(encode_metrics(&batch.points), &batch.tenant, &self.headers);
        match self.client.clone().export(call).await {
            Ok(response) => Ok(match response.into_inner().partial_success {
                Some(partial) if partial.rejected_data_points > 0 => Delivered {
                    refused: usize::try_from(partial.rejected_data_points).unwrap_or(usize::MAX),
                    reason: partial.error_message,
                },
                _ => Delivered::default(),
            }),
            Err(status) => Err(classify(&self.endpoint, &status)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use flamepipe_core::Labels;

    use super::*;

    #[test]
    fn counters_become_monotonic_cumulative_sums_per_name() {
        let point = |name: &str, service: &str, t: i64, v: f64| MetricPoint {
            name: Arc::from(name),
            labels: Labels::from_iter([("service_name", service)]),
            start_ms: 1_000,
            timestamp_ms: t,
            value: v,
        };
        let request = encode_metrics(&[
            point("profile_cpu_seconds_total", "a", 15_000, 1.5),
            point("profile_alloc_bytes_total", "a", 15_000, 4096.0),
            point("profile_cpu_seconds_total", "b", 15_000, 2.0),
        ]);
        let metrics = &request.resource_metrics[0].scope_metrics[0].metrics;
        let names: Vec<(&str, &str)> = metrics.iter().map(|m| (m.name.as_str(), m.unit.as_str())).collect();
        assert_eq!(
            names,
            [("profile_alloc_bytes_total", "By"), ("profile_cpu_seconds_total", "s")]
        );
        let Some(metric::Data::Sum(sum)) = &metrics[1].data else {
            panic!("a sum")
        };
        assert!(sum.is_monotonic);
        assert_eq!(sum.aggregation_temporality, AggregationTemporality::Cumulative as i32);
        assert_eq!(sum.data_points.len(), 2);
        assert_eq!(sum.data_points[0].start_time_unix_nano, 1_000_000_000);
        assert_eq!(sum.data_points[0].time_unix_nano, 15_000_000_000);
        assert_eq!(sum.data_points[0].value, Some(number_data_point::Value::AsDouble(1.5)));
        assert_eq!(sum.data_points[0].attributes, [string("service_name", "a")]);
    }
}
