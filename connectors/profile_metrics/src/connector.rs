//! The connector task: counts each profile into the rules' counters, acknowledges it, and
//! once per `step` sends the points of every step the wall clock has passed to the metrics
//! pipelines it feeds (waiting while they are full, which holds back its own input).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use flamepipe_core::Profile;
use flamepipe_core::component::{Batch, BoxFuture, BuildContext, Exporter, Output, Payload};
use flamepipe_core::metric::MetricsBatch;
use flamepipe_core::symbols::Symbols;
use flamepipe_core::telemetry::{CounterFamily, GaugeFamily, LabelPairs};
use std::collections::HashMap;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::config::Config;
use crate::counters::{Added, Counters};
use crate::rules::{MAX_RULES, Rule, Rules, TableIndex};

pub struct ProfileMetrics {
    rules: Rules,
    instance: Option<(String, String)>,
    step: std::time::Duration,
    output: Output<MetricsBatch>,
    id: Arc<str>,
    metrics: ConnectorMetrics,
}

struct ConnectorMetrics {
    profiles: CounterFamily,
    points: CounterFamily,
    late: CounterFamily,
    overflow: CounterFamily,
    series: GaugeFamily,
}

impl ConnectorMetrics {
    fn new(ctx: &BuildContext) -> Self {
        let t = &ctx.telemetry;
        ConnectorMetrics {
            profiles: t.metric(
                "connector_profile_metrics_profiles",
                "Profiles the profile_metrics connector read",
            ),
            points: t.metric(
                "connector_profile_metrics_points",
                "Metric points the profile_metrics connector sent on",
            ),
            late: t.metric(
                "connector_profile_metrics_late_profiles",
                "Profiles that arrived after their step was sent; their values went into the series' next step",
            ),
            overflow: t.metric(
                "connector_profile_metrics_overflow",
                "Profiles not counted because their series would exceed the rule's max_series",
            ),
            series: t.metric(
                "connector_profile_metrics_series",
                "Series a rule of the profile_metrics connector holds",
            ),
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl ProfileMetrics {
    pub fn new(config: &Config, rules: Rules, output: Output<MetricsBatch>, ctx: &BuildContext) -> Self {
        ProfileMetrics {
            rules,
            instance: config.instance_pair(),
            step: config.step.0,
            output,
            id: Arc::clone(&ctx.id),
            metrics: ConnectorMetrics::new(ctx),
        }
    }

    fn labels(&self, extra: &[(&str, &str)]) -> LabelPairs {
        let mut labels = vec![("connector".to_string(), self.id.to_string())];
        labels.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        labels
    }

    /// Counts every profile of a batch into every rule that selects it.
    fn count(&self, counters: &mut Counters, batch: &Batch) {
        // One index per symbol table: the sample types of one pprof share one.
        let mut indexes: HashMap<*const Symbols, TableIndex> = HashMap::new();
        for profile in &batch.profiles {
            let selected = self
                .rules
                .rules
                .iter()
                .enumerate()
                .filter(|(_, rule)| rule.selects(profile))
                .fold(0u64, |mask, (i, _)| mask | 1 << i);
            if selected == 0 {
                continue;
            }
            let index = self.rules.has_function_rules().then(|| {
                indexes
                    .entry(Arc::as_ptr(&profile.symbols))
                    .or_insert_with(|| self.rules.index(&profile.symbols))
            });
            let mut sums = [0i64; MAX_RULES];
            self.rules.count(profile, selected, index, &mut sums);
            for (i, rule) in self.rules.rules.iter().enumerate() {
                if selected & (1 << i) != 0 {
                    self.add(counters, &batch.tenant, rule, profile, rule.unit.to_base(sums[i]));
                }
            }
        }
        self.metrics
            .profiles
            .get_or_create(&self.labels(&[]))
            .inc_by(batch.profiles.len() as u64);
        // Series only appear while counting: their gauges are set once per batch.
        for rule in &self.rules.rules {
            self.metrics
                .series
                .get_or_create(&self.labels(&[("metric", &rule.metric)]))
                .set(counters.series_count(&batch.tenant, &rule.metric) as i64);
        }
    }

    fn add(&self, counters: &mut Counters, tenant: &Arc<str>, rule: &Rule, profile: &Profile, value: f64) {
        let mut labels = rule.series_labels(&profile.series);
        if let Some((name, instance)) = &self.instance {
            labels.set(name.as_str(), instance.as_str());
        }
        let time_ms = profile.timestamp_ns.div_euclid(1_000_000);
        match counters.add(tenant, &rule.metric, labels, time_ms, value, rule.max_series) {
            Added::OnTime => {}
            Added::Late => {
                self.metrics
                    .late
                    .get_or_create(&self.labels(&[("metric", &rule.metric)]))
                    .inc();
            }
            Added::Overflow => {
                let overflow = self
                    .metrics
                    .overflow
                    .get_or_create(&self.labels(&[("metric", &rule.metric)]));
                if overflow.inc() == 0 {
                    warn!(component = %self.id, metric = %rule.metric, max_series = rule.max_series,
                        "a rule reached its series limit; profiles of further series are not counted");
                }
            }
        }
    }

    /// Sends the points of every step before `before_ms`, one batch per tenant.
    async fn send(&self, counters: &mut Counters, before_ms: i64) {
        for (tenant, points) in counters.flush(before_ms) {
            self.metrics
                .points
                .get_or_create(&self.labels(&[]))
                .inc_by(points.len() as u64);
            debug!(component = %self.id, tenant = %tenant, points = points.len(), "sending metric points");
            self.output.send(MetricsBatch::new(tenant, points)).await;
        }
    }

    async fn run_loop(self, mut input: mpsc::Receiver<Batch>) {
        let step_ms = i64::try_from(self.step.as_millis()).unwrap_or(i64::MAX);
        let mut counters = Counters::new(step_ms, now_ms());
        let mut tick = tokio::time::interval(self.step);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                batch = input.recv() => match batch {
                    Some(batch) => {
                        self.count(&mut counters, &batch);
                        // Counted: the profile's share of the work is done here.
                        Payload::done(batch);
                    }
                    None => break,
                },
                _ = tick.tick() => {
                    let current = counters.bucket(now_ms());
                    self.send(&mut counters, current).await;
                }
            }
        }
        // The input closed (shutdown): everything counted goes out.
        self.send(&mut counters, i64::MAX).await;
        debug!(component = %self.id, "profile_metrics connector drained");
    }
}

impl Exporter for ProfileMetrics {
    fn run(self: Box<Self>, input: mpsc::Receiver<Batch>) -> BoxFuture {
        Box::pin((*self).run_loop(input))
    }
}
