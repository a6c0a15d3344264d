//! Every component type flamepipe knows, in one place: the YAML type name and the function
//! that turns that component's YAML section into its typed, validated config.
//!
//! To add a component, add one line to [`registry`]. Parsing is generic ([`receiver`],
//! [`processor`], [`exporter`], [`extension`]): a config only needs `Deserialize` (rejecting unknown keys,
//! with its defaults), [`Validate`] and the component trait of its kind.

use flamepipe_core::component::{ConnectorConfig, ExporterConfig, ExtensionConfig, ProcessorConfig, ReceiverConfig};
use flamepipe_core::config::{ConfigIssue, Validate};
use serde::de::DeserializeOwned;
use yaml_serde::Value;

pub type Parsed<C> = Result<C, Vec<ConfigIssue>>;
pub type ReceiverParser = fn(&Value) -> Parsed<Box<dyn ReceiverConfig>>;
pub type ProcessorParser = fn(&Value) -> Parsed<Box<dyn ProcessorConfig>>;
pub type ExporterParser = fn(&Value) -> Parsed<Box<dyn ExporterConfig>>;
pub type ExtensionParser = fn(&Value) -> Parsed<Box<dyn ExtensionConfig>>;
pub type ConnectorParser = fn(&Value) -> Parsed<Box<dyn ConnectorConfig>>;

/// The component types of each kind, by YAML type name (the part before any `/`).
pub struct Registry {
    pub receivers: Vec<(&'static str, ReceiverParser)>,
    pub processors: Vec<(&'static str, ProcessorParser)>,
    pub exporters: Vec<(&'static str, ExporterParser)>,
    pub connectors: Vec<(&'static str, ConnectorParser)>,
    pub extensions: Vec<(&'static str, ExtensionParser)>,
}

/// The one list of every component flamepipe ships: add a component with one line here.
pub fn registry() -> Registry {
    Registry {
        receivers: vec![
            ("pyroscope", receiver::<flamepipe_receiver_pyroscope::Config>),
            ("otlp", receiver::<flamepipe_receiver_otlp::Config>),
        ],
        processors: vec![
            ("dedup", processor::<flamepipe_processor_dedup::Config>),
            ("segment", processor::<flamepipe_processor_segment::Config>),
        ],
        exporters: vec![
            ("blocks", exporter::<flamepipe_exporter_blocks::Config>),
            ("otlp", exporter::<flamepipe_exporter_otlp::Config>),
            ("otlphttp", exporter::<flamepipe_exporter_otlp::HttpConfig>),
            (
                "prometheus_remote_write",
                exporter::<flamepipe_exporter_prometheus_remote_write::Config>,
            ),
        ],
        connectors: vec![(
            "profile_metrics",
            connector::<flamepipe_connector_profile_metrics::Config>,
        )],
        extensions: vec![
            ("query", extension::<flamepipe_extension_query::QueryConfig>),
            ("compactor", extension::<flamepipe_extension_compactor::Config>),
        ],
    }
}

impl Registry {
    pub fn receiver(&self, type_name: &str) -> Option<ReceiverParser> {
        find(&self.receivers, type_name)
    }

    pub fn processor(&self, type_name: &str) -> Option<ProcessorParser> {
        find(&self.processors, type_name)
    }

    pub fn exporter(&self, type_name: &str) -> Option<ExporterParser> {
        find(&self.exporters, type_name)
    }

    pub fn connector(&self, type_name: &str) -> Option<ConnectorParser> {
        find(&self.connectors, type_name)
    }

    pub fn extension(&self, type_name: &str) -> Option<ExtensionParser> {
        find(&self.extensions, type_name)
    }
}

fn find<P: Copy>(list: &[(&'static str, P)], type_name: &str) -> Option<P> {
    list.iter()
        .find(|(name, _)| *name == type_name)
        .map(|(_, parse)| *parse)
}

/// The type names in `list`, for "unknown type" messages.
pub fn names<P>(list: &[(&'static str, P)]) -> String {
    if list.is_empty() {
        return "none".to_string();
    }
    list.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(", ")
}

pub fn receiver<C: DeserializeOwned + Validate + ReceiverConfig + 'static>(
    value: &Value,
) -> Parsed<Box<dyn ReceiverConfig>> {
    Ok(Box::new(parse::<C>(value)?))
}

pub fn processor<C: DeserializeOwned + Validate + ProcessorConfig + 'static>(
    value: &Value,
) -> Parsed<Box<dyn ProcessorConfig>> {
    Ok(Box::new(parse::<C>(value)?))
}

pub fn exporter<C: DeserializeOwned + Validate + ExporterConfig + 'static>(
    value: &Value,
) -> Parsed<Box<dyn ExporterConfig>> {
    Ok(Box::new(parse::<C>(value)?))
}

pub fn connector<C: DeserializeOwned + Validate + ConnectorConfig + 'static>(
    value: &Value,
) -> Parsed<Box<dyn ConnectorConfig>> {
    Ok(Box::new(parse::<C>(value)?))
}

pub fn extension<C: DeserializeOwned + Validate + ExtensionConfig + 'static>(
    value: &Value,
) -> Parsed<Box<dyn ExtensionConfig>> {
    Ok(Box::new(parse::<C>(value)?))
}

/// Deserializes then validates; an empty section (`pyroscope:`) means all defaults.
pub fn parse<C: DeserializeOwned + Validate>(value: &Value) -> Parsed<C> {
    let config = deserialize::<C>(value).map_err(|issue| vec![issue])?;
    let issues = config.validate();
    if issues.is_empty() { Ok(config) } else { Err(issues) }
}

/// Deserializes with the YAML path of the first problem, relative to `value`.
pub fn deserialize<C: DeserializeOwned>(value: &Value) -> Result<C, ConfigIssue> {
    let empty = Value::Mapping(Default::default());
    let value = if value.is_null() { &empty } else { value };
    serde_path_to_error::deserialize::<_, C>(value)
        .map_err(|e| ConfigIssue::new(path_text(e.path()), e.inner().to_string()))
}

fn path_text(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } => push_key(&mut out, key),
            Segment::Enum { variant } => push_key(&mut out, variant),
            Segment::Unknown => push_key(&mut out, "?"),
        }
    }
    out
}

fn push_key(out: &mut String, key: &str) {
    if !out.is_empty() {
        out.push('.');
    }
    out.push_str(key);
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use flamepipe_core::component::{Ack, AckWaiter, Batch, BuildContext, Output, PipelineSender, Signal};
    use flamepipe_core::store::{DEFAULT_STORE, StoreRegistry};
    use flamepipe_core::symbols::{Function, Line, Location};
    use flamepipe_core::telemetry::Telemetry;
    use flamepipe_core::{Labels, Profile, ProfileType, Sample, SymbolsBuilder};
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    use super::*;

    #[test]
    fn every_registered_type_is_unique_and_its_defaults_validate() {
        let r = registry();
        let empty = Value::Null;
        for (kind, names) in [
            ("receiver", r.receivers.iter().map(|(n, _)| *n).collect::<Vec<_>>()),
            ("processor", r.processors.iter().map(|(n, _)| *n).collect()),
            ("exporter", r.exporters.iter().map(|(n, _)| *n).collect()),
            ("connector", r.connectors.iter().map(|(n, _)| *n).collect()),
            ("extension", r.extensions.iter().map(|(n, _)| *n).collect()),
        ] {
            let mut sorted = names.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), names.len(), "duplicate {kind} type in {names:?}");
        }
        for (name, parse) in &r.receivers {
            assert!(
                parse(&empty).is_ok(),
                "receiver {name}: default config does not validate"
            );
        }
        for (name, parse) in &r.processors {
            assert!(
                parse(&empty).is_ok(),
                "processor {name}: default config does not validate"
            );
        }
        for (name, parse) in &r.exporters {
            assert!(
                parse(&empty).is_ok(),
                "exporter {name}: default config does not validate"
            );
        }
        for (name, parse) in &r.extensions {
            assert!(
                parse(&empty).is_ok(),
                "extension {name}: default config does not validate"
            );
        }
    }

    /// A build context whose stores are all in memory (the default store too).
    fn memory_context() -> BuildContext {
        let stores = StoreRegistry::default();
        stores
            .preset(DEFAULT_STORE, Arc::new(object_store::memory::InMemory::new()))
            .unwrap();
        BuildContext {
            id: Arc::from(""),
            telemetry: Arc::new(Telemetry::new()),
            stores,
            shutdown: CancellationToken::new(),
        }
    }

    /// A one-profile request of `value`, and the waiter for its answer.
    fn request(value: i64) -> (Batch, AckWaiter) {
        let mut b = SymbolsBuilder::new();
        let name = b.string("main");
        let function = b.function(Function {
            name,
            ..Default::default()
        });
        let location = b.location(Location {
            lines: vec![Line { function, line: 1 }],
            ..Default::default()
        });
        let stack = b.stack(&[location]);
        let profile = Profile {
            series: Labels::from_iter([("service_name", "conformance")]),
            profile_type: ProfileType::new("process_cpu", "cpu", "nanoseconds", "cpu", "nanoseconds"),
            timestamp_ns: 1_700_000_000_000_000_000,
            duration_ns: 1,
            period: 1,
            samples: vec![Sample {
                stack,
                value,
                labels: 0,
            }],
            symbols: Arc::new(b.finish()),
        };
        let (ack, waiter) = Ack::new();
        let mut batch = Batch::new("anonymous", vec![profile]);
        batch.acks.push(ack);
        (batch, waiter)
    }

    /// The component contract, for every registered processor with its default config: it
    /// runs, drains when its input closes, and every request's acknowledgement ends as the
    /// contract says (passed on, or settled by the processor) — here, with every batch it
    /// sends on written, each request answers OK. The input holds a repeat of a request, so
    /// a processor that drops data shows what it does with the acks it holds.
    #[tokio::test]
    async fn every_processor_hands_on_or_settles_every_acknowledgement() {
        let ctx = memory_context();
        for (name, parse) in registry().processors {
            let processor = parse(&Value::Null)
                .unwrap()
                .build(&ctx.for_component(name))
                .unwrap_or_else(|e| panic!("processor {name}: {e}"));
            let (tx, input) = mpsc::channel(8);
            let (out_tx, mut out_rx) = mpsc::channel(8);
            let run = tokio::spawn(processor.run(input, Output::new(vec![out_tx])));
            let mut waiters = Vec::new();
            for value in [1, 1, 2] {
                let (batch, waiter) = request(value);
                tx.send(batch).await.unwrap();
                waiters.push(waiter);
            }
            drop(tx);
            let mut written = 0;
            while let Some(batch) = out_rx.recv().await {
                written += batch.profiles.len();
                batch.done();
            }
            tokio::time::timeout(Duration::from_secs(5), run)
                .await
                .unwrap_or_else(|_| panic!("processor {name} did not finish after its input closed"))
                .unwrap();
            assert!(written >= 2, "processor {name} lost data: {written} profiles written");
            for waiter in waiters {
                let answer = tokio::time::timeout(Duration::from_secs(5), waiter)
                    .await
                    .unwrap_or_else(|_| panic!("processor {name} left a request unanswered"));
                assert_eq!(answer, Ok(Ok(())), "processor {name}");
            }
        }
    }

    /// Every registered component builds from its default config and can be shut down before
    /// it ever saw data: receivers dropped unstarted, processors and exporters finishing at
    /// once on a closed input.
    #[tokio::test]
    async fn every_component_shuts_down_before_start() {
        let ctx = memory_context();
        let r = registry();
        for (name, parse) in &r.receivers {
            let parts = parse(&Value::Null)
                .unwrap()
                .build(&ctx.for_component(name), PipelineSender::default())
                .unwrap_or_else(|e| panic!("receiver {name}: {e}"));
            drop(parts);
        }
        for (name, parse) in &r.processors {
            let processor = parse(&Value::Null).unwrap().build(&ctx.for_component(name)).unwrap();
            let (_, input) = mpsc::channel(1);
            let run = processor.run(input, Output::new(Vec::new()));
            tokio::time::timeout(Duration::from_secs(5), run)
                .await
                .unwrap_or_else(|_| panic!("processor {name} did not stop on a closed input"));
        }
        for (name, parse) in &r.exporters {
            let config = parse(&Value::Null).unwrap();
            let ctx = ctx.for_component(name);
            for signal in config.signals() {
                let run = match signal {
                    Signal::Profiles => config.build(&ctx).unwrap().run(mpsc::channel(1).1),
                    Signal::Metrics => config.build_metrics(&ctx).unwrap().run(mpsc::channel(1).1),
                };
                tokio::time::timeout(Duration::from_secs(5), run)
                    .await
                    .unwrap_or_else(|_| panic!("exporter {name} ({signal}) did not stop on a closed input"));
            }
        }
        // Connectors need rules: each gets one from its own test suite; here, that a closed
        // input ends them is checked through the topology tests.
        // Extensions: their tasks end once shutdown is asked for.
        let stopping = ctx.shutdown.clone();
        stopping.cancel();
        for (name, parse) in &r.extensions {
            let parts = parse(&Value::Null)
                .unwrap()
                .build(&ctx.for_component(name))
                .unwrap_or_else(|e| panic!("extension {name}: {e}"));
            if let Some(task) = parts.task {
                tokio::time::timeout(Duration::from_secs(5), task)
                    .await
                    .unwrap_or_else(|_| panic!("extension {name} did not stop on shutdown"));
            }
        }
    }

    #[test]
    fn paths_are_written_like_yaml_paths() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Inner {
            n: u32,
        }
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Outer {
            items: Vec<Inner>,
        }
        let v: Value = yaml_serde::from_str("items: [{n: 1}, {n: x}]").unwrap();
        let issue = deserialize::<Outer>(&v).unwrap_err();
        assert_eq!(issue.path, "items[1].n");
        let v: Value = yaml_serde::from_str("items: []\nextra: 1").unwrap();
        let issue = deserialize::<Outer>(&v).unwrap_err();
        assert_eq!(
            (issue.path.as_str(), issue.message.as_str()),
            ("extra", "unknown field `extra`, expected `items`")
        );
    }
}
