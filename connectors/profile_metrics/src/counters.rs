//! Cumulative counters per series, stamped with profile time.
//!
//! Each series keeps its running total and the buckets (multiples of `step`, by the
//! profile's time) not sent yet. [`Counters::flush`] sends every bucket that lies before a
//! cut-off, in time order, each with the series' running total up to it, so every series'
//! points rise in time and in value, as Prometheus requires of a counter.
//!
//! A profile whose bucket was already sent for its series is late: its value goes into the
//! series' next bucket after the last one sent (so no point is rewritten, and the counter
//! still holds every value), and it is counted. How late data is handled is in
//! docs/metrics.md.

use std::collections::BTreeMap;
use std::sync::Arc;

use flamepipe_core::labels::Labels;
use flamepipe_core::metric::MetricPoint;
use std::collections::HashMap;

/// One series: when it started counting, the total sent so far, the last bucket sent and
/// what is pending.
#[derive(Default)]
struct Series {
    /// The process start, or the series' first step if that is earlier (a profile recorded
    /// before this process started): a cumulative series starts no later than its points.
    start_ms: i64,
    sent_total: f64,
    last_sent_ms: Option<i64>,
    /// Bucket start (ms) -> value added in it, not sent yet.
    pending: BTreeMap<i64, f64>,
}

/// What [`Counters::add`] did with a value.
#[derive(Debug, PartialEq, Eq)]
pub enum Added {
    OnTime,
    /// Its bucket was already sent: it went into the next one.
    Late,
    /// The rule has `max_series` series and this would be a new one: dropped.
    Overflow,
}

/// The counters of one connector: per (tenant, metric), series by labels.
pub struct Counters {
    step_ms: i64,
    start_ms: i64,
    metrics: HashMap<(Arc<str>, Arc<str>), HashMap<Labels, Series>>,
}

impl Counters {
    pub fn new(step_ms: i64, start_ms: i64) -> Self {
        Counters {
            step_ms: step_ms.max(1),
            start_ms,
            metrics: HashMap::new(),
        }
    }

    /// The start of the step holding `time_ms`.
    pub fn bucket(&self, time_ms: i64) -> i64 {
        time_ms.div_euclid(self.step_ms) * self.step_ms
    }

    /// Series of one metric of one tenant, for the cardinality gauge.
    pub fn series_count(&self, tenant: &Arc<str>, metric: &Arc<str>) -> usize {
        self.metrics
            .get(&(Arc::clone(tenant), Arc::clone(metric)))
            .map_or(0, HashMap::len)
    }

    /// Adds `value` at the profile time `time_ms` to a series, creating it if the metric has
    /// fewer than `max_series` series.
    pub fn add(
        &mut self,
        tenant: &Arc<str>,
        metric: &Arc<str>,
        labels: Labels,
        time_ms: i64,
        value: f64,
        max_series: usize,
    ) -> Added {
        let bucket = self.bucket(time_ms);
        let step = self.step_ms;
        let series_of = self
            .metrics
            .entry((Arc::clone(tenant), Arc::clone(metric)))
            .or_default();
        if !series_of.contains_key(&labels) && series_of.len() >= max_series {
            return Added::Overflow;
        }
        let start_ms = self.start_ms.min(bucket);
        let series = series_of.entry(labels).or_insert_with(|| Series {
            start_ms,
            ..Series::default()
        });
        let (bucket, added) = match series.last_sent_ms {
            Some(last) if bucket <= last => (last + step, Added::Late),
            _ => (bucket, Added::OnTime),
        };
        *series.pending.entry(bucket).or_default() += value;
        added
    }

    /// The points of every pending bucket that starts before `before_ms`, per tenant, in
    /// time order per series.
    pub fn flush(&mut self, before_ms: i64) -> Vec<(Arc<str>, Vec<MetricPoint>)> {
        let mut out: Vec<(Arc<str>, Vec<MetricPoint>)> = Vec::new();
        for ((tenant, metric), series_of) in &mut self.metrics {
            let mut points = Vec::new();
            for (labels, series) in series_of.iter_mut() {
                while let Some(entry) = series.pending.first_entry() {
                    if *entry.key() >= before_ms {
                        break;
                    }
                    let (bucket, value) = entry.remove_entry();
                    series.sent_total += value;
                    series.last_sent_ms = Some(bucket);
                    points.push(MetricPoint {
                        name: Arc::clone(metric),
                        labels: labels.clone(),
                        start_ms: series.start_ms,
                        timestamp_ms: bucket,
                        value: series.sent_total,
                    });
                }
            }
            if points.is_empty() {
                continue;
            }
            match out.iter_mut().find(|(t, _)| t == tenant) {
                Some((_, all)) => all.append(&mut points),
                None => out.push((Arc::clone(tenant), points)),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(service: &str) -> Labels {
        Labels::from_iter([("service_name", service)])
    }

    fn values(points: &[MetricPoint]) -> Vec<(i64, f64)> {
        let mut v: Vec<_> = points.iter().map(|p| (p.timestamp_ms, p.value)).collect();
        v.sort_by_key(|(t, _)| *t);
        v
    }

    #[test]
    fn points_are_cumulative_per_step_in_profile_time() {
        let (t, m): (Arc<str>, Arc<str>) = ("anonymous".into(), "cpu_seconds_total".into());
        let mut c = Counters::new(15_000, 0);
        assert_eq!(c.add(&t, &m, labels("a"), 1_000, 1.0, 10), Added::OnTime);
        assert_eq!(c.add(&t, &m, labels("a"), 14_999, 2.0, 10), Added::OnTime);
        assert_eq!(c.add(&t, &m, labels("a"), 31_000, 4.0, 10), Added::OnTime);
        // Only buckets before the cut-off go out.
        let out = c.flush(30_000);
        assert_eq!(values(&out[0].1), [(0, 3.0)]);
        let out = c.flush(i64::MAX);
        assert_eq!(values(&out[0].1), [(30_000, 7.0)]);
        assert!(c.flush(i64::MAX).is_empty(), "nothing is sent twice");
    }

    #[test]
    fn a_series_starts_no_later_than_its_first_point() {
        let (t, m): (Arc<str>, Arc<str>) = ("anonymous".into(), "cpu_seconds_total".into());
        let mut c = Counters::new(10, 1_000);
        c.add(&t, &m, labels("before"), 500, 1.0, 10);
        c.add(&t, &m, labels("after"), 2_000, 1.0, 10);
        let out = c.flush(i64::MAX);
        let start = |service: &str| {
            out[0]
                .1
                .iter()
                .find(|p| p.labels.get("service_name") == Some(service))
                .map(|p| p.start_ms)
        };
        assert_eq!(start("before"), Some(500));
        assert_eq!(start("after"), Some(1_000), "the process start");
    }

    #[test]
    fn a_late_value_goes_into_the_next_bucket_and_the_counter_keeps_it() {
        let (t, m): (Arc<str>, Arc<str>) = ("anonymous".into(), "cpu_seconds_total".into());
        let mut c = Counters::new(10, 0);
        c.add(&t, &m, labels("a"), 25, 1.0, 10);
        c.flush(i64::MAX);
        assert_eq!(c.add(&t, &m, labels("a"), 5, 2.0, 10), Added::Late);
        let out = c.flush(i64::MAX);
        assert_eq!(
            values(&out[0].1),
            [(30, 3.0)],
            "after the last point sent, with every value"
        );
    }

    #[test]
    fn out_of_order_buckets_not_yet_sent_are_sent_in_order() {
        let (t, m): (Arc<str>, Arc<str>) = ("anonymous".into(), "cpu_seconds_total".into());
        let mut c = Counters::new(10, 0);
        c.add(&t, &m, labels("a"), 35, 1.0, 10);
        c.add(&t, &m, labels("a"), 15, 2.0, 10);
        let out = c.flush(i64::MAX);
        assert_eq!(values(&out[0].1), [(10, 2.0), (30, 3.0)]);
    }

    #[test]
    fn series_beyond_the_limit_are_refused() {
        let (t, m): (Arc<str>, Arc<str>) = ("anonymous".into(), "cpu_seconds_total".into());
        let mut c = Counters::new(10, 0);
        assert_eq!(c.add(&t, &m, labels("a"), 1, 1.0, 2), Added::OnTime);
        assert_eq!(c.add(&t, &m, labels("b"), 1, 1.0, 2), Added::OnTime);
        assert_eq!(c.add(&t, &m, labels("c"), 1, 1.0, 2), Added::Overflow);
        assert_eq!(
            c.add(&t, &m, labels("a"), 2, 1.0, 2),
            Added::OnTime,
            "known series still count"
        );
        assert_eq!(c.series_count(&t, &m), 2);
    }
}
