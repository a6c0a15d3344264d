//! Every component type flamepipe knows, in one place: the YAML type name and the function
//! that turns that component's YAML section into its typed, validated config.
//!
//! To add a component, add one line to [`registry`]. Parsing is generic ([`receiver`],
//! [`processor`], [`exporter`]): a config only needs `Deserialize` (rejecting unknown keys,
//! with its defaults), [`Validate`] and the component trait of its kind.

use flamepipe_core::component::{ExporterConfig, ProcessorConfig, ReceiverConfig};
use flamepipe_core::config::{ConfigIssue, Validate};
use serde::de::DeserializeOwned;
use yaml_serde::Value;

pub type Parsed<C> = Result<C, Vec<ConfigIssue>>;
pub type ReceiverParser = fn(&Value) -> Parsed<Box<dyn ReceiverConfig>>;
pub type ProcessorParser = fn(&Value) -> Parsed<Box<dyn ProcessorConfig>>;
pub type ExporterParser = fn(&Value) -> Parsed<Box<dyn ExporterConfig>>;

/// The component types of each kind, by YAML type name (the part before any `/`).
pub struct Registry {
    pub receivers: Vec<(&'static str, ReceiverParser)>,
    pub processors: Vec<(&'static str, ProcessorParser)>,
    pub exporters: Vec<(&'static str, ExporterParser)>,
}

/// The one list of every component flamepipe ships: add a component with one line here.
pub fn registry() -> Registry {
    Registry {
        receivers: vec![
            ("pyroscope", receiver::<flamepipe_receiver_pyroscope::Config>),
            ("otlp", receiver::<flamepipe_receiver_otlp::Config>),
        ],
        processors: vec![("segment", processor::<flamepipe_processor_segment::Config>)],
        exporters: vec![
            ("blocks", exporter::<flamepipe_exporter_blocks::Config>),
            ("otlp", exporter::<flamepipe_exporter_otlp::Config>),
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
    use super::*;

    #[test]
    fn every_registered_type_is_unique_and_its_defaults_validate() {
        let r = registry();
        let empty = Value::Null;
        for (kind, names) in [
            ("receiver", r.receivers.iter().map(|(n, _)| *n).collect::<Vec<_>>()),
            ("processor", r.processors.iter().map(|(n, _)| *n).collect()),
            ("exporter", r.exporters.iter().map(|(n, _)| *n).collect()),
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
