//! flamepipe's own metrics over OTLP: what `/metrics` serves, pushed every `interval` to an
//! OTLP gRPC receiver, as the Collector's periodic metric readers do
//! (`service.telemetry.metrics.readers`).
//!
//! The telemetry registry's OpenMetrics text is read back family by family: counters become
//! monotonic cumulative sums, gauges gauges, histograms explicit-bucket histograms, each with
//! the name `/metrics` shows (`flamepipe_receiver_accepted_profiles_total`), so the two views
//! line up. Start times are the process start.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flamepipe_core::telemetry::Telemetry;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, Sum, metric,
    number_data_point,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;
use tracing::{debug, warn};

use crate::metrics::{request_of, string};

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Label pairs as the exposition writes them.
type Pairs = Vec<(String, String)>;

/// One sample line of the exposition: name, labels, value.
fn sample(line: &str) -> Option<(&str, Pairs, f64)> {
    let (head, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let Some((name, rest)) = head.split_once('{') else {
        return Some((head, Vec::new(), value));
    };
    let mut labels = Vec::new();
    let mut chars = rest.strip_suffix('}')?.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        if key.is_empty() {
            break;
        }
        if chars.next() != Some('"') {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.push((key.trim_start_matches(',').to_string(), value));
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    Some((name, labels, value))
}

/// The registry's exposition as one OTLP request.
pub fn snapshot(exposition: &str, start_ns: u64, now_ns: u64) -> ExportMetricsServiceRequest {
    let mut metrics: Vec<Metric> = Vec::new();
    let mut kind = "";
    let mut help = String::new();
    // Histogram points being gathered: labels (without `le`) -> (bounds, cumulative counts, sum, count).
    type Gathering = BTreeMap<Pairs, (Vec<f64>, Vec<u64>, f64, u64)>;
    let mut histogram: (String, Gathering) = (String::new(), BTreeMap::new());
    let flush_histogram = |histogram: &mut (String, Gathering), metrics: &mut Vec<Metric>, help: &str| {
        if histogram.1.is_empty() {
            return;
        }
        let data_points = std::mem::take(&mut histogram.1)
            .into_iter()
            .map(|(labels, (bounds, cumulative, sum, count))| {
                // Per bucket, the last one being +Inf's.
                let mut counts: Vec<u64> = cumulative
                    .iter()
                    .scan(0u64, |previous, &c| {
                        let n = c.saturating_sub(*previous);
                        *previous = c;
                        Some(n)
                    })
                    .collect();
                if counts.len() == bounds.len() {
                    counts.push(count.saturating_sub(cumulative.last().copied().unwrap_or(0)));
                }
                HistogramDataPoint {
                    attributes: labels.iter().map(|(k, v)| string(k, v)).collect(),
                    start_time_unix_nano: start_ns,
                    time_unix_nano: now_ns,
                    count,
                    sum: Some(sum),
                    bucket_counts: counts,
                    explicit_bounds: bounds,
                    ..Default::default()
                }
            })
            .collect();
        metrics.push(Metric {
            name: std::mem::take(&mut histogram.0),
            description: help.to_string(),
            data: Some(metric::Data::Histogram(Histogram {
                data_points,
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            })),
            ..Default::default()
        });
    };
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            flush_histogram(&mut histogram, &mut metrics, &help);
            kind = rest.rsplit(' ').next().unwrap_or("");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = rest.split_once(' ').map_or("", |(_, h)| h).to_string();
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let Some((name, mut labels, value)) = sample(line) else {
            continue;
        };
        let attributes = |labels: &[(String, String)]| labels.iter().map(|(k, v)| string(k, v)).collect();
        let point = |labels: &[(String, String)]| NumberDataPoint {
            attributes: attributes(labels),
            start_time_unix_nano: start_ns,
            time_unix_nano: now_ns,
            value: Some(number_data_point::Value::AsDouble(value)),
            ..Default::default()
        };
        match kind {
            "counter" => push_point(&mut metrics, name, &help, point(&labels), true),
            "gauge" => push_point(&mut metrics, name, &help, point(&labels), false),
            "histogram" => {
                let base = name
                    .strip_suffix("_bucket")
                    .or_else(|| name.strip_suffix("_sum"))
                    .or_else(|| name.strip_suffix("_count"))
                    .unwrap_or(name);
                histogram.0 = base.to_string();
                let le = labels.iter().position(|(k, _)| k == "le").map(|i| labels.remove(i).1);
                let entry = histogram.1.entry(labels).or_default();
                if name.ends_with("_bucket") {
                    if let Some(bound) = le.and_then(|le| le.parse::<f64>().ok()).filter(|b| b.is_finite()) {
                        entry.0.push(bound);
                        entry.1.push(value as u64);
                    }
                } else if name.ends_with("_sum") {
                    entry.2 = value;
                } else if name.ends_with("_count") {
                    entry.3 = value as u64;
                }
            }
            _ => {}
        }
    }
    flush_histogram(&mut histogram, &mut metrics, &help);
    request_of("flamepipe", metrics)
}

/// Adds a point to the metric `name` (a sum when `monotonic`, else a gauge).
fn push_point(metrics: &mut Vec<Metric>, name: &str, help: &str, point: NumberDataPoint, monotonic: bool) {
    let existing = metrics.iter_mut().find(|m| m.name == name);
    let metric = match existing {
        Some(m) => m,
        None => {
            metrics.push(Metric {
                name: name.to_string(),
                description: help.to_string(),
                data: Some(if monotonic {
                    metric::Data::Sum(Sum {
                        data_points: Vec::new(),
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                        is_monotonic: true,
                    })
                } else {
                    metric::Data::Gauge(Gauge {
                        data_points: Vec::new(),
                    })
                }),
                ..Default::default()
            });
            let last = metrics.len() - 1;
            &mut metrics[last]
        }
    };
    match &mut metric.data {
        Some(metric::Data::Sum(sum)) => sum.data_points.push(point),
        Some(metric::Data::Gauge(gauge)) => gauge.data_points.push(point),
        _ => {}
    }
}

/// Pushes `telemetry` to `endpoint` every `interval` until `shutdown`, then once more.
pub async fn push_periodically(
    telemetry: Arc<Telemetry>,
    endpoint: String,
    interval: Duration,
    timeout: Duration,
    shutdown: CancellationToken,
) {
    let start_ns = now_ns();
    let channel = match Endpoint::from_shared(endpoint.clone()) {
        Ok(e) => e.timeout(timeout).connect_timeout(timeout).connect_lazy(),
        Err(e) => {
            warn!(endpoint, error = %e, "invalid telemetry endpoint; not pushing metrics");
            return;
        }
    };
    let client = MetricsServiceClient::new(channel);
    let push = |client: MetricsServiceClient<tonic::transport::Channel>| {
        let request = snapshot(&telemetry.encode(), start_ns, now_ns());
        let endpoint = endpoint.clone();
        async move {
            match client.clone().export(request).await {
                Ok(_) => debug!(endpoint, "pushed flamepipe's metrics"),
                Err(status) => warn!(endpoint, code = ?status.code(), error = %status.message(),
                    "pushing flamepipe's metrics failed; the next push carries them (they are cumulative)"),
            }
        }
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => push(client.clone()).await,
            () = shutdown.cancelled() => break,
        }
    }
    push(client).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_gauges_and_histograms_become_otlp_metrics() {
        let telemetry = Telemetry::new();
        telemetry.accepted("pyroscope", 3, 100);
        telemetry.refused("pyroscope", "bad \"gzip\"");
        let gauge: flamepipe_core::telemetry::GaugeFamily = telemetry.metric("things_now", "Things now");
        gauge.get_or_create(&vec![("a".to_string(), "b".to_string())]).set(7);
        let histogram: flamepipe_core::telemetry::HistogramFamily =
            telemetry.metric_with("wait_seconds", "Waits", flamepipe_core::telemetry::short_seconds);
        histogram.get_or_create(&Vec::new()).observe(0.0015);
        histogram.get_or_create(&Vec::new()).observe(100.0);
        let request = snapshot(&telemetry.encode(), 1, 2);
        let metrics = &request.resource_metrics[0].scope_metrics[0].metrics;
        let find = |name: &str| {
            metrics
                .iter()
                .find(|m| m.name == name)
                .unwrap_or_else(|| panic!("{name} in {metrics:?}"))
        };
        let Some(metric::Data::Sum(sum)) = &find("flamepipe_receiver_accepted_profiles_total").data else {
            panic!("a sum")
        };
        assert!(sum.is_monotonic);
        assert_eq!(sum.data_points[0].value, Some(number_data_point::Value::AsDouble(3.0)));
        assert_eq!(sum.data_points[0].attributes, [string("receiver", "pyroscope")]);
        let Some(metric::Data::Sum(refused)) = &find("flamepipe_receiver_refused_requests_total").data else {
            panic!("a sum")
        };
        assert!(
            refused.data_points[0]
                .attributes
                .contains(&string("reason", "bad \"gzip\""))
        );
        let Some(metric::Data::Gauge(g)) = &find("flamepipe_things_now").data else {
            panic!("a gauge")
        };
        assert_eq!(g.data_points[0].value, Some(number_data_point::Value::AsDouble(7.0)));
        let Some(metric::Data::Histogram(h)) = &find("flamepipe_wait_seconds").data else {
            panic!("a histogram")
        };
        let point = &h.data_points[0];
        assert_eq!(point.count, 2);
        assert_eq!(point.explicit_bounds.len(), 16);
        assert_eq!(point.bucket_counts.len(), 17, "one per bound, and +Inf");
        assert_eq!(point.bucket_counts.iter().sum::<u64>(), 2);
        assert_eq!(point.bucket_counts[16], 1, "100 s is past every bound");
        assert!((point.sum.unwrap() - 100.0015).abs() < 1e-9);
    }
}
