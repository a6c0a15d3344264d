//! The dedup processor's metrics, registered when it is built (each pipeline's instance
//! reports under the processor's id).

use flamepipe_core::component::BuildContext;
use flamepipe_core::telemetry::{CounterFamily, GaugeFamily, LabelPairs, component, with};

pub struct DedupMetrics {
    labels: LabelPairs,
    profiles: CounterFamily,
    forgotten: CounterFamily,
    window: GaugeFamily,
}

impl DedupMetrics {
    pub fn new(ctx: &BuildContext) -> Self {
        let t = &ctx.telemetry;
        DedupMetrics {
            labels: component("processor", &ctx.id),
            profiles: t.metric(
                "processor_dedup_profiles",
                "Profiles the dedup processor saw, by outcome: passed (new), duplicate (dropped: it repeats one already passed), shifted (passed with its timestamp moved to stay apart from a distinct profile; also counted as passed), crowded (passed unshifted, too many collisions)",
            ),
            forgotten: t.metric(
                "processor_dedup_forgotten",
                "Profiles the dedup window forgot: expired (older than the window) or evicted (the window was full)",
            ),
            window: t.metric("processor_dedup_window_entries", "Profiles the dedup window remembers now"),
        }
    }

    pub fn profiles(&self, outcome: &str, n: u64) {
        self.profiles
            .get_or_create(&with(&self.labels, "outcome", outcome))
            .inc_by(n);
    }

    pub fn forgotten(&self, why: &str, n: u64) {
        self.forgotten.get_or_create(&with(&self.labels, "why", why)).inc_by(n);
    }

    pub fn window(&self, entries: usize) {
        self.window
            .get_or_create(&self.labels)
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
    }
}
