//! Loading `pipeline.yaml`: parse, substitute `${env:...}`, type each component through the
//! [registry](crate::registry), then check how the parts fit together.
//!
//! Every problem is collected, not just the first, and reported as `FILE: yaml.path: message`.
//! Each component section is parsed on its own so one bad component cannot hide another.
//! Warnings (a component defined but used by no pipeline) do not fail loading, as in the
//! OpenTelemetry Collector.
//!
//! # Layout
//!
//! - [`env`]: `${env:NAME}` substitution on the parsed tree.
//! - [`service`]: the fixed-shape `service` section.
//! - [`check`]: cross-section checks (references, empty pipelines, HTTP route conflicts).

pub mod check;
pub mod env;
pub mod service;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use flamepipe_core::component::{
    ConnectorConfig, ExporterConfig, ExtensionConfig, ProcessorConfig, ReceiverConfig, Signal,
};
use flamepipe_core::config::ConfigIssue;
use yaml_serde::{Mapping, Value};

use crate::registry::{self, ProcessorParser, Registry};
use flamepipe_core::store::StorageConfig;
pub use service::{LogFormat, LogLevel, Pipeline, Service, TracesTelemetry};

/// A loaded, valid configuration: components by id, and the service section.
#[derive(Debug, Default)]
pub struct Config {
    pub receivers: BTreeMap<String, Box<dyn ReceiverConfig>>,
    pub processors: BTreeMap<String, ProcessorDef>,
    pub exporters: BTreeMap<String, Box<dyn ExporterConfig>>,
    /// Components that join pipelines: an exporter of one, a receiver of another.
    pub connectors: BTreeMap<String, Box<dyn ConnectorConfig>>,
    /// Components outside the pipelines (the query API, the compactor); those listed in
    /// `service.extensions` run.
    pub extensions: BTreeMap<String, Box<dyn ExtensionConfig>>,
    /// Object stores by id, as components refer to them.
    pub storage: BTreeMap<String, StorageConfig>,
    pub service: Service,
}

/// A processor section. Each pipeline gets its own instance of a processor (as in the
/// Collector), and building consumes a config, so the section is kept to parse again.
pub struct ProcessorDef {
    value: Value,
    parse: ProcessorParser,
}

impl ProcessorDef {
    pub fn instance(&self) -> Result<Box<dyn ProcessorConfig>, Vec<ConfigIssue>> {
        (self.parse)(&self.value)
    }
}

impl fmt::Debug for ProcessorDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessorDef")
            .field("value", &self.value)
            .finish_non_exhaustive()
    }
}

/// The outcome of loading: on success the config and any warnings; on failure every error.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
}

#[derive(Debug)]
pub struct Invalid {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

/// A problem at a YAML path (empty for the whole file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl Problem {
    fn new(path: impl fmt::Display, message: impl Into<String>) -> Self {
        Problem {
            path: path.to_string(),
            message: message.into(),
        }
    }

    fn render(&self, file: &str) -> String {
        if self.path.is_empty() {
            format!("{file}: {}", self.message)
        } else {
            format!("{file}: {}: {}", self.path, self.message)
        }
    }
}

/// A position in the YAML tree, written `a.b[1].c`.
#[derive(Clone, Debug, Default)]
pub struct YamlPath(String);

impl YamlPath {
    pub fn root() -> Self {
        YamlPath(String::new())
    }

    pub fn key(&self, key: &str) -> Self {
        if self.0.is_empty() {
            YamlPath(key.to_string())
        } else {
            YamlPath(format!("{}.{key}", self.0))
        }
    }

    pub fn index(&self, i: usize) -> Self {
        YamlPath(format!("{}[{i}]", self.0))
    }

    /// Appends a path relative to this one, as components report it ([`ConfigIssue::path`]).
    pub fn join(&self, relative: &str) -> Self {
        if relative.is_empty() {
            self.clone()
        } else if relative.starts_with('[') {
            YamlPath(format!("{}{relative}", self.0))
        } else {
            self.key(relative)
        }
    }
}

impl fmt::Display for YamlPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A mapping key as it reads in a path or message.
pub fn key_text(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Null => "~".to_string(),
        other => format!("{other:?}"),
    }
}

/// Reads and loads `path`, with the process environment for substitution.
pub fn load_file(path: &Path, registry: &Registry) -> Result<Loaded, Invalid> {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => load_str(&file, &text, registry, &|name| std::env::var(name).ok()),
        Err(e) => Err(Invalid {
            errors: vec![format!("{file}: cannot read config: {e}")],
            warnings: Vec::new(),
        }),
    }
}

/// Loads config text; `file` names it in messages and `lookup` reads environment variables.
pub fn load_str(
    file: &str,
    text: &str,
    registry: &Registry,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, Invalid> {
    let mut loader = Loader {
        registry,
        errors: Vec::new(),
        warnings: Vec::new(),
        defined: Defined::default(),
    };
    let config = loader.load(text, lookup);
    let render = |problems: Vec<Problem>| problems.iter().map(|p| p.render(file)).collect::<Vec<_>>();
    let warnings = render(loader.warnings);
    match config {
        Some(config) if loader.errors.is_empty() => Ok(Loaded { config, warnings }),
        _ => Err(Invalid {
            errors: render(loader.errors),
            warnings,
        }),
    }
}

/// The component ids each section defines, parsed or not (a component with a broken config
/// is still defined: pipelines naming it must not get a second error).
#[derive(Default)]
pub struct Defined {
    pub receivers: Vec<String>,
    pub processors: Vec<String>,
    pub exporters: Vec<String>,
    pub connectors: Vec<String>,
    pub extensions: Vec<String>,
}

struct Loader<'a> {
    registry: &'a Registry,
    errors: Vec<Problem>,
    warnings: Vec<Problem>,
    defined: Defined,
}

const SECTIONS: &str = "receivers, processors, exporters, connectors, extensions, storage, service";

impl Loader<'_> {
    fn load(&mut self, text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Option<Config> {
        let mut root: Value = match yaml_serde::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                self.errors.push(Problem::new("", format!("invalid YAML: {e}")));
                return None;
            }
        };
        let mut env_issues = Vec::new();
        env::substitute(&mut root, &YamlPath::root(), lookup, &mut env_issues);

        let root = match root {
            Value::Mapping(m) => m,
            Value::Null => Mapping::new(),
            _ => {
                self.errors.push(Problem::new(
                    "",
                    format!("expected a mapping with the sections {SECTIONS}"),
                ));
                return None;
            }
        };
        let mut config = Config::default();
        let mut service = None;
        for (key, value) in &root {
            let name = key_text(key);
            let path = YamlPath::root().key(&name);
            match name.as_str() {
                "receivers" => self.section(&path, value, "receiver", |l, at, id, type_name, v| {
                    let parse = l.registry.receiver(type_name)?;
                    l.component(at, v, parse)
                        .map(|c| config.receivers.insert(id.to_string(), c));
                    Some(())
                }),
                "processors" => self.section(&path, value, "processor", |l, at, id, type_name, v| {
                    let parse = l.registry.processor(type_name)?;
                    if l.component(at, v, parse).is_some() {
                        config.processors.insert(
                            id.to_string(),
                            ProcessorDef {
                                value: v.clone(),
                                parse,
                            },
                        );
                    }
                    Some(())
                }),
                "exporters" => self.section(&path, value, "exporter", |l, at, id, type_name, v| {
                    let parse = l.registry.exporter(type_name)?;
                    l.component(at, v, parse)
                        .map(|c| config.exporters.insert(id.to_string(), c));
                    Some(())
                }),
                "connectors" => self.section(&path, value, "connector", |l, at, id, type_name, v| {
                    let parse = l.registry.connector(type_name)?;
                    l.component(at, v, parse)
                        .map(|c| config.connectors.insert(id.to_string(), c));
                    Some(())
                }),
                "extensions" => self.section(&path, value, "extension", |l, at, id, type_name, v| {
                    let parse = l.registry.extension(type_name)?;
                    l.component(at, v, parse)
                        .map(|c| config.extensions.insert(id.to_string(), c));
                    Some(())
                }),
                "storage" => self.storage(&path, value, &mut config.storage),
                "service" => service = Some(self.service(&path, value)),
                "query" => self.errors.push(Problem::new(
                    path,
                    "the query API is an extension now: move this section to extensions.query \
                     and list query in service.extensions",
                )),
                _ => self.errors.push(Problem::new(
                    path,
                    format!("unknown section, expected one of {SECTIONS}"),
                )),
            }
        }
        config.service = service.unwrap_or_else(|| {
            self.errors.push(Problem::new(
                "",
                "missing section service; it lists the pipelines to run",
            ));
            Service::default()
        });
        check::check(&config, &self.defined, &mut self.errors, &mut self.warnings);
        // A value whose substitution failed was left as written; the errors it then causes
        // downstream ("invalid duration \"${env:X}\"") would only repeat the first one.
        self.errors
            .retain(|p| !env_issues.iter().any(|(e, _)| is_within(&p.path, e)));
        let mut errors: Vec<Problem> = env_issues.into_iter().map(|(p, m)| Problem::new(p, m)).collect();
        errors.append(&mut self.errors);
        self.errors = errors;
        Some(config)
    }

    /// Walks one component section; `add` returns `None` when the type is unknown.
    fn section(
        &mut self,
        path: &YamlPath,
        value: &Value,
        kind: &str,
        mut add: impl FnMut(&mut Self, &YamlPath, &str, &str, &Value) -> Option<()>,
    ) {
        let map = match value {
            Value::Mapping(m) => m,
            Value::Null => return,
            _ => {
                self.errors.push(Problem::new(
                    path,
                    format!("expected a mapping of {kind} ids to their settings"),
                ));
                return;
            }
        };
        for (key, value) in map {
            let id = key_text(key);
            let at = path.key(&id);
            let Some(type_name) = component_type(&id) else {
                self.errors.push(Problem::new(
                    &at,
                    format!("invalid {kind} id {id:?}; expected TYPE or TYPE/NAME"),
                ));
                continue;
            };
            match kind {
                "receiver" => self.defined.receivers.push(id.clone()),
                "processor" => self.defined.processors.push(id.clone()),
                "connector" => self.defined.connectors.push(id.clone()),
                "extension" => self.defined.extensions.push(id.clone()),
                _ => self.defined.exporters.push(id.clone()),
            }
            if add(self, &at, &id, type_name, value).is_none() {
                let known = match kind {
                    "receiver" => registry::names(&self.registry.receivers),
                    "processor" => registry::names(&self.registry.processors),
                    "connector" => registry::names(&self.registry.connectors),
                    "extension" => registry::names(&self.registry.extensions),
                    _ => registry::names(&self.registry.exporters),
                };
                self.errors.push(Problem::new(
                    &at,
                    format!("unknown {kind} type {type_name:?} (known: {known})"),
                ));
            }
        }
    }

    /// Parses one component, recording its issues under its path.
    fn component<C>(&mut self, at: &YamlPath, value: &Value, parse: fn(&Value) -> registry::Parsed<C>) -> Option<C> {
        match parse(value) {
            Ok(c) => Some(c),
            Err(issues) => {
                self.issues(at, issues);
                None
            }
        }
    }

    fn issues(&mut self, at: &YamlPath, issues: Vec<ConfigIssue>) {
        self.errors
            .extend(issues.into_iter().map(|i| Problem::new(at.join(&i.path), i.message)));
    }

    fn parse_part<C: serde::de::DeserializeOwned + flamepipe_core::config::Validate>(
        &mut self,
        at: &YamlPath,
        value: &Value,
    ) -> Option<C> {
        match registry::parse::<C>(value) {
            Ok(c) => Some(c),
            Err(issues) => {
                self.issues(at, issues);
                None
            }
        }
    }

    /// The `storage` section: store ids (any name) to their settings.
    fn storage(&mut self, path: &YamlPath, value: &Value, storage: &mut BTreeMap<String, StorageConfig>) {
        let map = match value {
            Value::Mapping(m) => m,
            Value::Null => return,
            _ => {
                self.errors
                    .push(Problem::new(path, "expected a mapping of store ids to their settings"));
                return;
            }
        };
        for (key, value) in map {
            let id = key_text(key);
            let at = path.key(&id);
            if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || "_-/".contains(c)) {
                self.errors.push(Problem::new(
                    &at,
                    format!("invalid store id {id:?}; use letters, digits, _, - and /"),
                ));
                continue;
            }
            if let Some(config) = self.parse_part::<StorageConfig>(&at, value) {
                storage.insert(id, config);
            }
        }
    }

    fn service(&mut self, path: &YamlPath, value: &Value) -> Service {
        let mut service = Service::default();
        let map = match value {
            Value::Mapping(m) => m.clone(),
            Value::Null => Mapping::new(),
            _ => {
                self.errors.push(Problem::new(
                    path,
                    "expected a mapping with extensions, pipelines, telemetry, queue_size and shutdown_timeout",
                ));
                return service;
            }
        };
        let mut saw_pipelines = false;
        for (key, value) in &map {
            let name = key_text(key);
            let at = path.key(&name);
            match name.as_str() {
                "pipelines" => {
                    saw_pipelines = true;
                    self.pipelines(&at, value, &mut service);
                }
                "extensions" => {
                    if let Some(service::Extensions(ids)) = self.parse_part(&at, value) {
                        service.extensions = ids;
                    }
                }
                "telemetry" => self.telemetry(&at, value, &mut service.telemetry),
                "queue_size" => {
                    if let Some(service::QueueSize(n)) = self.parse_part(&at, value) {
                        service.queue_size = n;
                    }
                }
                "shutdown_timeout" => {
                    if let Some(service::ShutdownTimeout(d)) = self.parse_part(&at, value) {
                        service.shutdown_timeout = d;
                    }
                }
                _ => self.errors.push(Problem::new(
                    at,
                    "unknown key, expected one of extensions, pipelines, telemetry, queue_size, shutdown_timeout",
                )),
            }
        }
        // A process may run extensions only (a query node, a compactor); otherwise it needs
        // a pipeline.
        if !saw_pipelines && service.extensions.is_empty() {
            self.errors.push(Problem::new(
                path,
                "missing pipelines; define at least one, e.g. profiles/default, or list extensions to run",
            ));
        }
        service
    }

    /// Each telemetry setting on its own, so a bad address does not hide a bad log level.
    fn telemetry(&mut self, path: &YamlPath, value: &Value, telemetry: &mut service::TelemetrySettings) {
        let map = match value {
            Value::Mapping(m) => m,
            Value::Null => return,
            _ => {
                self.errors.push(Problem::new(
                    path,
                    "expected a mapping with metrics_address, metrics, traces and logs",
                ));
                return;
            }
        };
        for (key, value) in map {
            let name = key_text(key);
            let at = path.key(&name);
            match name.as_str() {
                "metrics_address" => {
                    if let Some(a) = self.parse_part(&at, value) {
                        telemetry.metrics_address = a;
                    }
                }
                "logs" => {
                    if let Some(l) = self.parse_part(&at, value) {
                        telemetry.logs = l;
                    }
                }
                "metrics" => {
                    if let Some(m) = self.parse_part(&at, value) {
                        telemetry.metrics = m;
                    }
                }
                "traces" => {
                    if let Some(t) = self.parse_part(&at, value) {
                        telemetry.traces = t;
                    }
                }
                _ => self.errors.push(Problem::new(
                    at,
                    "unknown key, expected one of metrics_address, metrics, traces, logs",
                )),
            }
        }
    }

    fn pipelines(&mut self, path: &YamlPath, value: &Value, service: &mut Service) {
        let Value::Mapping(map) = value else {
            self.errors.push(Problem::new(
                path,
                "expected a mapping of pipeline ids (profiles/NAME or metrics/NAME) to pipelines",
            ));
            return;
        };
        if map.is_empty() {
            self.errors.push(Problem::new(
                path,
                "no pipelines defined; define at least one, e.g. profiles/default",
            ));
        }
        for (key, value) in map {
            let id = key_text(key);
            let at = path.key(&id);
            match component_type(&id) {
                Some(signal) if Signal::from_name(signal).is_some() => {}
                Some(other) => {
                    self.errors.push(Problem::new(
                        &at,
                        format!(
                            "unsupported pipeline type {other:?}; flamepipe pipelines carry profiles or metrics: \
                             use profiles/NAME or metrics/NAME"
                        ),
                    ));
                    continue;
                }
                None => {
                    self.errors.push(Problem::new(
                        &at,
                        format!("invalid pipeline id {id:?}; expected profiles/NAME or metrics/NAME"),
                    ));
                    continue;
                }
            }
            if let Some(p) = self.parse_part::<Pipeline>(&at, value) {
                service.pipelines.push((id, p));
            }
        }
    }
}

/// The signal a pipeline carries, from its id (`metrics/profiles` carries metrics). Loading
/// refuses every other id, so anything else is profiles.
pub fn pipeline_signal(id: &str) -> Signal {
    component_type(id)
        .and_then(Signal::from_name)
        .unwrap_or(Signal::Profiles)
}

/// The type part of a `type` or `type/name` id, if the id is well formed.
pub fn component_type(id: &str) -> Option<&str> {
    let (type_name, name) = match id.split_once('/') {
        Some((t, n)) => (t, Some(n)),
        None => (id, None),
    };
    let type_ok = type_name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && type_name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let name_ok = name.is_none_or(|n| !n.is_empty() && !n.chars().any(char::is_whitespace));
    (type_ok && name_ok).then_some(type_name)
}

/// Whether `path` is `outer` or lies below it.
fn is_within(path: &str, outer: &str) -> bool {
    path.strip_prefix(outer)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
}
