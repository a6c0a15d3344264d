//! Checks across sections, run after every part has parsed: pipelines and
//! `service.extensions` name defined components, each component fits its pipeline's signal,
//! every connector joins two pipelines, pipelines are complete, the stores components name
//! are declared, and HTTP addresses and routes do not collide.
//!
//! Only components that a pipeline or `service.extensions` uses are checked for stores and
//! collisions: the others are never built (they get a warning instead, as in the
//! OpenTelemetry Collector).

use std::collections::BTreeSet;
use std::net::SocketAddr;

use flamepipe_core::component::Signal;
use flamepipe_core::store::DEFAULT_STORE;

use super::{Config, Defined, Problem, YamlPath, pipeline_signal};

pub fn check(config: &Config, defined: &Defined, errors: &mut Vec<Problem>, warnings: &mut Vec<Problem>) {
    let mut used = BTreeSet::new();
    // Where each connector is used: as an exporter (its input side) and as a receiver.
    let mut connector_sides: Vec<(&str, &str)> = Vec::new();
    for id in &defined.connectors {
        if defined.receivers.contains(id) || defined.exporters.contains(id) {
            errors.push(Problem::new(
                YamlPath::root().key("connectors").key(id),
                format!("{id:?} is also defined as a receiver or exporter; a connector needs an id of its own"),
            ));
        }
    }
    for (id, pipeline) in &config.service.pipelines {
        let at = YamlPath::root().key("service").key("pipelines").key(id);
        let signal = pipeline_signal(id);
        for (list, kind, names) in [
            ("receivers", "receiver", &pipeline.receivers),
            ("processors", "processor", &pipeline.processors),
            ("exporters", "exporter", &pipeline.exporters),
        ] {
            let known = match kind {
                "receiver" => &defined.receivers,
                "processor" => &defined.processors,
                _ => &defined.exporters,
            };
            if names.is_empty() && list != "processors" {
                errors.push(Problem::new(
                    at.key(list),
                    format!("a pipeline needs at least one {kind}"),
                ));
            }
            for (i, name) in names.iter().enumerate() {
                let item = at.key(list).index(i);
                if let Some(first) = names[..i].iter().position(|n| n == name) {
                    errors.push(Problem::new(
                        item,
                        format!("{kind} {name:?} is already listed at {list}[{first}]"),
                    ));
                } else if known.contains(name) {
                    used.insert((kind, name.as_str()));
                    if let Some(message) = signal_misfit(config, kind, name, signal) {
                        errors.push(Problem::new(item, message));
                    }
                } else if kind != "processor" && defined.connectors.contains(name) {
                    used.insert(("connector", name.as_str()));
                    connector_sides.push((name.as_str(), kind));
                    if let Some(message) = connector_misfit(config, kind, name, signal) {
                        errors.push(Problem::new(item, message));
                    }
                } else {
                    let mut candidates = known.clone();
                    if kind != "processor" {
                        candidates.extend(defined.connectors.iter().cloned());
                    }
                    let defined = if candidates.is_empty() {
                        "none".to_string()
                    } else {
                        candidates.join(", ")
                    };
                    errors.push(Problem::new(
                        item,
                        format!("unknown {kind} {name:?} (defined: {defined})"),
                    ));
                }
            }
        }
    }
    // A receiver in two pipelines hands each batch to both; if they also share an exporter,
    // that exporter would write every profile twice.
    let pipelines: Vec<_> = config.service.pipelines.iter().collect();
    for (i, (a_id, a)) in pipelines.iter().enumerate() {
        for (b_id, b) in &pipelines[i + 1..] {
            let receiver = a.receivers.iter().find(|r| b.receivers.contains(r));
            let exporter = a.exporters.iter().find(|e| b.exporters.contains(e));
            if let (Some(receiver), Some(exporter)) = (receiver, exporter) {
                errors.push(Problem::new(
                    YamlPath::root().key("service").key("pipelines").key(b_id),
                    format!(
                        "shares receiver {receiver:?} and exporter {exporter:?} with pipeline {a_id:?}: \
                         every profile would be written twice"
                    ),
                ));
            }
        }
    }
    let listed = &config.service.extensions;
    for (i, id) in listed.iter().enumerate() {
        let item = YamlPath::root().key("service").key("extensions").index(i);
        if let Some(first) = listed[..i].iter().position(|n| n == id) {
            errors.push(Problem::new(
                item,
                format!("extension {id:?} is already listed at extensions[{first}]"),
            ));
        } else if defined.extensions.contains(id) {
            used.insert(("extension", id.as_str()));
            for connector in config.extensions.get(id).map(|e| e.feeds()).unwrap_or_default() {
                let at = YamlPath::root().key("extensions").key(id);
                if !defined.connectors.iter().any(|c| c == connector) {
                    errors.push(Problem::new(
                        at,
                        format!("feeds connector {connector:?}, which is not defined under connectors"),
                    ));
                    continue;
                }
                used.insert(("connector", connector));
                connector_sides.push((connector, "exporter"));
                if let Some(message) = connector_misfit(config, "exporter", connector, Signal::Profiles) {
                    errors.push(Problem::new(at, message));
                }
            }
        } else {
            let known = if defined.extensions.is_empty() {
                "none".to_string()
            } else {
                defined.extensions.join(", ")
            };
            errors.push(Problem::new(
                item,
                format!("unknown extension {id:?} (defined: {known})"),
            ));
        }
    }
    for id in &defined.connectors {
        let as_exporter = connector_sides.contains(&(id.as_str(), "exporter"));
        let as_receiver = connector_sides.contains(&(id.as_str(), "receiver"));
        let missing = match (as_exporter, as_receiver) {
            (true, false) => "it is an exporter of a pipeline but no pipeline lists it as a receiver",
            (false, true) => {
                "it is a receiver of a pipeline but no pipeline lists it as an exporter (nor does an extension feed it)"
            }
            _ => continue,
        };
        errors.push(Problem::new(
            YamlPath::root().key("connectors").key(id),
            format!("connector {id:?} joins two pipelines: {missing}"),
        ));
    }
    for (section, kind, ids) in [
        ("receivers", "receiver", &defined.receivers),
        ("processors", "processor", &defined.processors),
        ("exporters", "exporter", &defined.exporters),
        ("connectors", "connector", &defined.connectors),
        ("extensions", "extension", &defined.extensions),
    ] {
        for id in ids {
            if !used.contains(&(kind, id.as_str())) {
                warnings.push(Problem::new(
                    YamlPath::root().key(section).key(id),
                    if kind == "extension" {
                        format!("extension {id:?} is defined but not listed in service.extensions; it will not run")
                    } else {
                        format!("{kind} {id:?} is defined but no pipeline uses it; it will not run")
                    },
                ));
            }
        }
    }
    check_stores(config, &used, errors);
    check_addresses(config, &defined.receivers, &used, errors);
}

/// Why a receiver, processor or exporter cannot be in a pipeline of `signal`, if it cannot.
fn signal_misfit(config: &Config, kind: &str, id: &str, signal: Signal) -> Option<String> {
    let signals = match kind {
        "receiver" => config.receivers.get(id)?.signals(),
        "processor" => config.processors.get(id)?.instance().ok()?.signals(),
        _ => config.exporters.get(id)?.signals(),
    };
    if signals.contains(&signal) {
        return None;
    }
    let handles = signals.iter().map(|s| s.name()).collect::<Vec<_>>().join(" and ");
    Some(format!(
        "{kind} {id:?} handles {handles}, not {signal}: it cannot be in a {signal} pipeline"
    ))
}

/// Why a connector cannot be on this side of a pipeline of `signal`, if it cannot.
fn connector_misfit(config: &Config, kind: &str, id: &str, signal: Signal) -> Option<String> {
    let (consumes, emits) = config.connectors.get(id)?.signals();
    match kind {
        "exporter" if consumes != signal => Some(format!(
            "connector {id:?} consumes {consumes}: list it as an exporter of a {consumes} pipeline, not of a {signal} one"
        )),
        "receiver" if emits != signal => Some(format!(
            "connector {id:?} emits {emits}: list it as a receiver of a {emits} pipeline, not of a {signal} one"
        )),
        _ => None,
    }
}

/// Every store a running component names is declared under `storage` (or is the implicit
/// default).
fn check_stores(config: &Config, used: &BTreeSet<(&str, &str)>, errors: &mut Vec<Problem>) {
    let exporters = config
        .exporters
        .iter()
        .filter(|(id, _)| used.contains(&("exporter", id.as_str())))
        .map(|(id, c)| (YamlPath::root().key("exporters").key(id), c.stores()));
    let extensions = config
        .extensions
        .iter()
        .filter(|(id, _)| used.contains(&("extension", id.as_str())))
        .map(|(id, c)| (YamlPath::root().key("extensions").key(id), c.stores()));
    for (at, stores) in exporters.chain(extensions) {
        for store in stores {
            if config.storage.contains_key(store) || store == DEFAULT_STORE {
                continue;
            }
            let declared = if config.storage.is_empty() {
                "none".to_string()
            } else {
                config.storage.keys().cloned().collect::<Vec<_>>().join(", ")
            };
            errors.push(Problem::new(
                at.key("store"),
                format!("unknown store {store:?}; declare it under storage (declared: {declared})"),
            ));
        }
    }
}

/// The same path twice on one address, listeners that cannot both bind, and the telemetry
/// server colliding with a receiver.
fn check_addresses(config: &Config, ids_in_order: &[String], used: &BTreeSet<(&str, &str)>, errors: &mut Vec<Problem>) {
    // Receivers in file order, so that the later of two claims is the one reported, then the
    // extensions in start order.
    let receivers = ids_in_order
        .iter()
        .filter(|id| used.contains(&("receiver", id.as_str())))
        .filter_map(|id| Some(("receiver", "receivers", id, config.receivers.get(id)?.routes())));
    let extensions = config
        .service
        .extensions
        .iter()
        .filter(|id| used.contains(&("extension", id.as_str())))
        .filter_map(|id| Some(("extension", "extensions", id, config.extensions.get(id)?.routes())));
    // (address, path, "kind id") in claim order.
    let mut claimed: Vec<(SocketAddr, String, String)> = Vec::new();
    for (kind, section, id, routes) in receivers.chain(extensions) {
        let at = YamlPath::root().key(section).key(id);
        let me = format!("{kind} {id:?}");
        // Paths already served, grouped by the component serving them: one message per pair.
        let mut taken: Vec<(SocketAddr, String, Vec<String>)> = Vec::new();
        for (address, path) in routes {
            if let Some((_, _, other)) = claimed.iter().find(|(a, p, _)| *a == address && *p == path) {
                match taken.iter_mut().find(|(a, o, _)| *a == address && o == other) {
                    Some((_, _, paths)) => paths.push(path),
                    None => taken.push((address, other.clone(), vec![path])),
                }
            } else if let Some((a, _, other)) = claimed.iter().find(|(a, _, _)| overlaps(*a, address)) {
                errors.push(Problem::new(
                    &at,
                    format!(
                        "address {address} overlaps {a} used by {other}; components that share a port must use the same address"
                    ),
                ));
            } else {
                claimed.push((address, path, me.clone()));
            }
        }
        for (address, other, paths) in taken {
            let (noun, verb) = if paths.len() == 1 {
                ("route", "is")
            } else {
                ("routes", "are")
            };
            let paths = paths.iter().map(|p| format!("{p:?}")).collect::<Vec<_>>().join(", ");
            errors.push(Problem::new(
                &at,
                format!("{noun} {paths} on {address} {verb} already served by {other}"),
            ));
        }
    }
    let metrics = config.service.telemetry.metrics_address.0;
    if let Some((a, _, other)) = claimed
        .iter()
        .find(|(a, _, _)| (*a == metrics && a.port() != 0) || overlaps(*a, metrics))
    {
        errors.push(Problem::new(
            "service.telemetry.metrics_address",
            format!("{metrics} collides with {a} used by {other}; the telemetry server needs an address of its own"),
        ));
    }
}

/// Two different listen addresses that cannot both be bound: the same fixed port, with
/// one of them the unspecified address (or the same address written twice, e.g. v4/v6).
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a != b
        && a.port() == b.port()
        && a.port() != 0
        && (a.ip().is_unspecified() || b.ip().is_unspecified() || a.ip() == b.ip())
}
