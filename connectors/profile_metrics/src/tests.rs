//! The connector end to end: profiles in, the points it sends out.

use std::sync::Arc;

use flamepipe_core::component::{Ack, Batch, BuildContext, ConnectorConfig, Output};
use flamepipe_core::config::{Duration, Validate};
use flamepipe_core::metric::{MetricPoint, MetricsBatch};
use flamepipe_core::store::StoreRegistry;
use flamepipe_core::symbols::{Function, Line, Location};
use flamepipe_core::telemetry::Telemetry;
use flamepipe_core::{Labels, Profile, ProfileType, Sample, SymbolsBuilder};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, FunctionMatch, FunctionMode, Rule};

const CPU: &str = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";

/// Stacks (leaf first) of function names; a `+` joins lines of one location (inlined,
/// innermost first).
fn profile(service: &str, time_s: i64, stacks: &[(&[&str], i64)]) -> Profile {
    let mut b = SymbolsBuilder::new();
    let mut samples = Vec::new();
    for (frames, value) in stacks {
        let locations: Vec<u32> = frames
            .iter()
            .map(|frame| {
                let lines = frame
                    .split('+')
                    .map(|name| {
                        let name = b.string(name);
                        let function = b.function(Function {
                            name,
                            ..Default::default()
                        });
                        Line { function, line: 1 }
                    })
                    .collect();
                b.location(Location {
                    lines,
                    ..Default::default()
                })
            })
            .collect();
        samples.push(Sample {
            stack: b.stack(&locations),
            value: *value,
            labels: 0,
        });
    }
    Profile {
        series: Labels::from_iter([("service_name", service), ("region", "eu")]),
        profile_type: ProfileType::parse(CPU).unwrap(),
        timestamp_ns: time_s * 1_000_000_000,
        duration_ns: 10_000_000_000,
        period: 1,
        samples,
        symbols: Arc::new(b.finish()),
    }
}

fn rule(metric: &str) -> Rule {
    Rule {
        metric: metric.to_string(),
        profile_type: CPU.to_string(),
        selector: None,
        function: None,
        group_by: vec!["service_name".to_string()],
        max_series: None,
    }
}

fn function(name: &str, mode: FunctionMode) -> Option<FunctionMatch> {
    Some(FunctionMatch {
        name: Some(name.to_string()),
        regex: None,
        mode,
    })
}

/// Runs the connector over `batches` (closing its input after them) and returns every point
/// it sent, and the telemetry text.
async fn run(config: Config, batches: Vec<Batch>) -> (Vec<MetricPoint>, String) {
    assert!(config.validate().is_empty(), "{:?}", config.validate());
    let ctx = BuildContext {
        id: "profile_metrics/test".into(),
        telemetry: Arc::new(Telemetry::new()),
        stores: StoreRegistry::default(),
        shutdown: CancellationToken::new(),
    };
    let (out, mut metrics) = mpsc::channel::<MetricsBatch>(64);
    let connector = Box::new(config)
        .build_profiles_to_metrics(&ctx, Output::new(vec![out]))
        .unwrap();
    let (tx, input) = mpsc::channel(16);
    let task = tokio::spawn(connector.run(input));
    let mut waiters = Vec::new();
    for mut batch in batches {
        let (ack, waiter) = Ack::new();
        batch.acks.push(ack);
        tx.send(batch).await.unwrap();
        waiters.push(waiter);
    }
    for waiter in waiters {
        assert_eq!(
            waiter.await.unwrap(),
            Ok(()),
            "every profile is acknowledged once counted"
        );
    }
    drop(tx);
    task.await.unwrap();
    let mut points = Vec::new();
    while let Ok(batch) = metrics.try_recv() {
        points.extend(batch.points);
    }
    (points, ctx.telemetry.encode())
}

fn config(rules: Vec<Rule>) -> Config {
    Config {
        step: Duration::from_secs(15),
        instance: Some("host-a".to_string()),
        rules,
        ..Config::default()
    }
}

/// The last value per (metric, service), the way a Prometheus instant query reads a counter.
fn last(points: &[MetricPoint], metric: &str, service: &str) -> Option<f64> {
    points
        .iter()
        .filter(|p| &*p.name == metric && p.labels.get("service_name") == Some(service))
        .max_by_key(|p| p.timestamp_ms)
        .map(|p| p.value)
}

#[tokio::test]
async fn totals_and_function_times_in_seconds_per_service() {
    let stacks: &[(&[&str], i64)] = &[
        (&["runtime.mallocgc", "alloc", "main"], 2_000_000_000),
        // Inlined into alloc: the leaf line is mallocgc's, so it is also self time.
        (&["runtime.mallocgc+alloc", "main"], 1_000_000_000),
        (&["alloc", "runtime.mallocgc", "main"], 500_000_000),
        (&["work", "main"], 4_000_000_000),
    ];
    let mut total = rule("profile_cpu_seconds_total");
    total.selector = Some("{service_name=~\"checkout|cart\"}".to_string());
    let mut cum = rule("profile_function_cpu_seconds_total");
    cum.function = function("runtime.mallocgc", FunctionMode::Total);
    let mut flat = rule("profile_function_self_cpu_seconds_total");
    flat.function = function("runtime.mallocgc", FunctionMode::SelfOnly);
    let batches = vec![
        Batch::new(
            "anonymous",
            vec![profile("checkout", 100, stacks), profile("search", 100, stacks)],
        ),
        Batch::new("anonymous", vec![profile("checkout", 130, stacks)]),
    ];
    let (points, _) = run(config(vec![total, cum, flat]), batches).await;
    assert_eq!(last(&points, "profile_cpu_seconds_total", "checkout"), Some(15.0));
    assert_eq!(
        last(&points, "profile_cpu_seconds_total", "search"),
        None,
        "not selected"
    );
    assert_eq!(
        last(&points, "profile_function_cpu_seconds_total", "checkout"),
        Some(7.0)
    );
    assert_eq!(last(&points, "profile_function_cpu_seconds_total", "search"), Some(3.5));
    assert_eq!(
        last(&points, "profile_function_self_cpu_seconds_total", "checkout"),
        Some(6.0)
    );
    // Stamped with the profile's time rounded down to the step, cumulative.
    let checkout: Vec<(i64, f64)> = points
        .iter()
        .filter(|p| &*p.name == "profile_cpu_seconds_total")
        .map(|p| (p.timestamp_ms, p.value))
        .collect();
    assert_eq!(checkout, [(90_000, 7.5), (120_000, 15.0)]);
    let labels: Vec<_> = points[0].labels.iter().map(|(k, _)| k.to_string()).collect();
    assert_eq!(
        labels,
        ["instance", "service_name"],
        "group_by labels and the instance, nothing else"
    );
    assert_eq!(points[0].labels.get("instance"), Some("host-a"));
}

#[tokio::test]
async fn a_regex_matches_whole_names_and_counts_each_sample_once() {
    let stacks: &[(&[&str], i64)] = &[
        (&["runtime.mallocgc", "runtime.newobject", "main"], 3_000_000_000),
        (&["main.runtime", "main"], 5_000_000_000),
    ];
    let mut runtime = rule("profile_runtime_cpu_seconds_total");
    runtime.function = Some(FunctionMatch {
        name: None,
        regex: Some("runtime\\..*".to_string()),
        mode: FunctionMode::Total,
    });
    let (points, _) = run(
        config(vec![runtime]),
        vec![Batch::new("t", vec![profile("a", 1, stacks)])],
    )
    .await;
    assert_eq!(last(&points, "profile_runtime_cpu_seconds_total", "a"), Some(3.0));
}

#[tokio::test]
async fn series_beyond_the_limit_are_counted_not_kept() {
    let mut total = rule("profile_cpu_seconds_total");
    total.max_series = Some(2);
    let stacks: &[(&[&str], i64)] = &[(&["main"], 1)];
    let profiles = ["a", "b", "c", "d"].iter().map(|s| profile(s, 1, stacks)).collect();
    let (points, telemetry) = run(config(vec![total]), vec![Batch::new("t", profiles)]).await;
    assert_eq!(points.len(), 2);
    assert!(
        telemetry.contains(
            "flamepipe_connector_profile_metrics_overflow_total{connector=\"profile_metrics/test\",metric=\"profile_cpu_seconds_total\"} 2"
        ),
        "{telemetry}"
    );
}

#[test]
fn bad_rules_are_named_by_their_path() {
    let mut bad_name = rule("profile cpu");
    bad_name.group_by = vec![
        "__name__".to_string(),
        "service_name".to_string(),
        "service_name".to_string(),
    ];
    let mut no_unit = rule("profile_cpu_total");
    no_unit.selector = Some("{service_name=~\"(\"}".to_string());
    let mut not_counter = rule("profile_cpu_seconds");
    not_counter.profile_type = "process_cpu:cpu".to_string();
    let mut bad_function = rule("profile_fn_cpu_seconds_total");
    bad_function.function = Some(FunctionMatch {
        name: Some("a".to_string()),
        regex: Some("(".to_string()),
        mode: FunctionMode::Total,
    });
    let mut bad_regex = rule("profile_fn2_cpu_seconds_total");
    bad_regex.function = Some(FunctionMatch {
        name: None,
        regex: Some("(".to_string()),
        mode: FunctionMode::Total,
    });
    let issues: Vec<String> = config(vec![bad_name, no_unit, not_counter, bad_function, bad_regex])
        .validate()
        .into_iter()
        .map(|i| i.path)
        .collect();
    assert_eq!(
        issues,
        [
            "rules[0].metric",
            "rules[0].group_by[0]",
            "rules[0].group_by[2]",
            "rules[1].metric",
            "rules[1].match",
            "rules[2].profile_type",
            "rules[2].metric",
            "rules[3].function",
            "rules[4].function.regex",
        ]
    );
}
