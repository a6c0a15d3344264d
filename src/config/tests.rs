//! Loading tests against the stand-in components of [`crate::testing`]: each broken config
//! asserts the exact messages a user would see.

use super::*;
use crate::testing;

fn env(name: &str) -> Option<String> {
    (name == "PORT").then(|| "4041".to_string())
}

fn load(text: &str) -> Result<Loaded, Invalid> {
    load_str("pipeline.yaml", text, &testing::registry(), &env)
}

fn errors(text: &str) -> Vec<String> {
    match load(text) {
        Ok(_) => panic!("config loaded, expected errors:\n{text}"),
        Err(invalid) => invalid.errors,
    }
}

const GOOD: &str = "
receivers:
  test: { address: '127.0.0.1:${env:PORT}' }
processors:
  test: { flush_interval: 2s }
exporters:
  test: {}
service:
  pipelines:
    profiles: { receivers: [test], processors: [test], exporters: [test] }
";

#[test]
fn a_good_config_loads_with_defaults() {
    let loaded = load(GOOD).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let c = loaded.config;
    assert_eq!(c.service.pipelines.len(), 1);
    assert_eq!(c.service.shutdown_timeout, service::DEFAULT_SHUTDOWN_TIMEOUT);
    assert_eq!(c.service.telemetry.metrics_address.0.to_string(), "127.0.0.1:8888");
    assert_eq!(c.service.telemetry.logs.level, LogLevel::Info);
    assert_eq!(c.service.telemetry.logs.format, LogFormat::Text);
    let routes = c.receivers["test"].routes();
    assert_eq!(routes[0].0.to_string(), "127.0.0.1:4041");
    assert!(c.processors["test"].instance().is_ok());
}

#[test]
fn the_shipped_config_is_valid_with_the_real_registry() {
    let text = include_str!("../../pipeline.yaml");
    let loaded = load_str("pipeline.yaml", text, &crate::registry::registry(), &|_| None).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn every_error_is_reported_with_its_path() {
    let text = "
receivers:
  test: { address: nowhere }
  test/b: { port: 1 }
  bogus: {}
processors:
  test: { flush_interval: x }
  test/zero: { flush_interval: 0s }
exporters:
  test: {}
service:
  pipelines:
    profiles/default:
      receivers: [test, test/c]
      processors: [test, test]
      exporters: [test, s3/cold]
    traces: { receivers: [test], exporters: [test] }
    profiles/empty: {}
  telemetry: { logs: { level: verbose, format: xml } }
  shutdown_timeout: 0s
  queue_size: 0
  extensions: [test, nope, test]
  tracing: {}
compactor: {}
query: { max_nodes: 0 }
extensions:
  test: { address: nowhere }
  test/b: {}
  bogus: {}
storage:
  cold: { url: \"ftp://host/x\" }
  bad id: { url: memory:// }
";
    assert_eq!(
        errors(text),
        [
            "pipeline.yaml: receivers.test.address: invalid socket address syntax",
            "pipeline.yaml: receivers.test/b.port: unknown field `port`, expected one of `address`, `paths`, `send`",
            "pipeline.yaml: receivers.bogus: unknown receiver type \"bogus\" (known: test, other)",
            "pipeline.yaml: processors.test.flush_interval: invalid duration \"x\" (expected number at 0); expected e.g. \"1s\", \"250ms\"",
            "pipeline.yaml: processors.test/zero.flush_interval: must be greater than 0s, got \"0s\"",
            "pipeline.yaml: service.pipelines.traces: unsupported pipeline type \"traces\"; flamepipe pipelines carry profiles or metrics: use profiles/NAME or metrics/NAME",
            "pipeline.yaml: service.telemetry.logs.level: invalid log level \"verbose\"; expected one of trace, debug, info, warn, error",
            "pipeline.yaml: service.shutdown_timeout: must be greater than 0s, got \"0s\"",
            "pipeline.yaml: service.queue_size: must be at least 1",
            "pipeline.yaml: service.tracing: unknown key, expected one of extensions, pipelines, telemetry, queue_size, shutdown_timeout",
            "pipeline.yaml: compactor: unknown section, expected one of receivers, processors, exporters, connectors, extensions, storage, service",
            "pipeline.yaml: query: the query API is an extension now: move this section to extensions.query and list query in service.extensions",
            "pipeline.yaml: extensions.test.address: invalid socket address syntax",
            "pipeline.yaml: extensions.bogus: unknown extension type \"bogus\" (known: test)",
            "pipeline.yaml: storage.cold.url: unsupported store URL \"ftp://host/x\": expected file://PATH, a path, s3://BUCKET[/PREFIX], gs://BUCKET[/PREFIX], az://CONTAINER[/PREFIX] or memory://",
            "pipeline.yaml: storage.bad id: invalid store id \"bad id\"; use letters, digits, _, - and /",
            "pipeline.yaml: service.pipelines.profiles/default.receivers[1]: unknown receiver \"test/c\" (defined: test, test/b, bogus)",
            "pipeline.yaml: service.pipelines.profiles/default.processors[1]: processor \"test\" is already listed at processors[0]",
            "pipeline.yaml: service.pipelines.profiles/default.exporters[1]: unknown exporter \"s3/cold\" (defined: test)",
            "pipeline.yaml: service.pipelines.profiles/empty.receivers: a pipeline needs at least one receiver",
            "pipeline.yaml: service.pipelines.profiles/empty.exporters: a pipeline needs at least one exporter",
            "pipeline.yaml: service.extensions[1]: unknown extension \"nope\" (defined: test, test/b, bogus)",
            "pipeline.yaml: service.extensions[2]: extension \"test\" is already listed at extensions[0]",
        ]
    );
}

#[test]
fn components_name_declared_stores() {
    let text = "
receivers:
  test: {}
exporters:
  test: {}
extensions:
  test: { store: cold }
  test/b: { store: local }
  test/c: { store: warm }
storage:
  warm: { url: memory://w }
service:
  extensions: [test, test/b, test/c]
  pipelines:
    profiles: { receivers: [test], exporters: [test] }
";
    assert_eq!(
        errors(text),
        ["pipeline.yaml: extensions.test.store: unknown store \"cold\"; declare it under storage (declared: warm)"]
    );
    let loaded = load(&text.replace("store: cold", "store: warm")).unwrap();
    assert_eq!(loaded.config.storage["warm"].url, "memory://w");
}

#[test]
fn extensions_share_servers_with_receivers_and_unlisted_ones_warn() {
    let text = "
receivers:
  test: { address: '127.0.0.1:4040', paths: [/ingest] }
exporters:
  test: {}
extensions:
  test: { address: '127.0.0.1:4040', paths: [/render, /ingest] }
  test/spare: {}
service:
  extensions: [test]
  pipelines:
    profiles: { receivers: [test], exporters: [test] }
";
    assert_eq!(
        errors(text),
        ["pipeline.yaml: extensions.test: route \"/ingest\" on 127.0.0.1:4040 is already served by receiver \"test\""]
    );
    let loaded = load(&text.replace("/render, /ingest", "/render")).unwrap();
    assert_eq!(
        loaded.warnings,
        [
            "pipeline.yaml: extensions.test/spare: extension \"test/spare\" is defined but not listed in service.extensions; it will not run"
        ]
    );
}

#[test]
fn unused_components_are_warnings() {
    let text = format!("{GOOD}\nexporters:\n  test: {{}}\n  test/spare: {{}}\n");
    // A duplicate `exporters` key is a YAML error; build the variant properly instead.
    assert!(
        errors(&text)[0].starts_with("pipeline.yaml: invalid YAML: "),
        "{:?}",
        errors(&text)
    );
    let text = GOOD.replace("exporters:\n  test: {}", "exporters:\n  test: {}\n  test/spare: {}");
    let loaded = load(&text).unwrap();
    assert_eq!(
        loaded.warnings,
        [
            "pipeline.yaml: exporters.test/spare: exporter \"test/spare\" is defined but no pipeline uses it; it will not run"
        ]
    );
}

#[test]
fn structural_problems() {
    assert_eq!(
        errors("[]"),
        [
            "pipeline.yaml: expected a mapping with the sections receivers, processors, exporters, connectors, extensions, storage, service"
        ]
    );
    assert_eq!(
        errors(""),
        ["pipeline.yaml: missing section service; it lists the pipelines to run"]
    );
    assert_eq!(
        errors("service: {}"),
        [
            "pipeline.yaml: service: missing pipelines; define at least one, e.g. profiles/default, or list extensions to run"
        ]
    );
    assert_eq!(
        errors("service: { pipelines: {} }"),
        ["pipeline.yaml: service.pipelines: no pipelines defined; define at least one, e.g. profiles/default"]
    );
    assert_eq!(
        errors("receivers: [a]\nservice: { pipelines: { 'profiles/': {} } }"),
        [
            "pipeline.yaml: receivers: expected a mapping of receiver ids to their settings",
            "pipeline.yaml: service.pipelines.profiles/: invalid pipeline id \"profiles/\"; expected profiles/NAME or metrics/NAME",
        ]
    );
    let e = errors("receivers: {a: 1\n");
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("pipeline.yaml: invalid YAML: "), "{e:?}");
}

#[test]
fn env_errors_are_reported_once() {
    let text = GOOD.replace("flush_interval: 2s", "flush_interval: '${env:FLUSH}'");
    assert_eq!(
        errors(&text),
        [
            "pipeline.yaml: processors.test.flush_interval: environment variable FLUSH is not set (write ${env:FLUSH:-default} to give a default)"
        ]
    );
    let text = GOOD.replace("flush_interval: 2s", "flush_interval: '${env:FLUSH:-3s}'");
    assert!(load(&text).is_ok());
}

#[test]
fn a_route_claimed_twice_on_one_address_is_an_error() {
    let text = "
receivers:
  test/a: { address: '127.0.0.1:4040', paths: [/ingest, /render] }
  test/b: { address: '127.0.0.1:4040', paths: [/push, /ingest] }
  test/c: { address: '0.0.0.0:4040', paths: [/other] }
  test/d: { address: '127.0.0.1:8888' }
  other: { address: '127.0.0.1:4040', paths: [/render] }
exporters:
  test: {}
  test/b: {}
service:
  pipelines:
    profiles/a: { receivers: [test/a, test/b], exporters: [test] }
    profiles/b: { receivers: [test/c, test/d, other, test/a], exporters: [test/b] }
";
    assert_eq!(
        errors(text),
        [
            "pipeline.yaml: receivers.test/b: route \"/ingest\" on 127.0.0.1:4040 is already served by receiver \"test/a\"",
            "pipeline.yaml: receivers.test/c: address 0.0.0.0:4040 overlaps 127.0.0.1:4040 used by receiver \"test/a\"; components that share a port must use the same address",
            "pipeline.yaml: receivers.other: route \"/render\" on 127.0.0.1:4040 is already served by receiver \"test/a\"",
            "pipeline.yaml: service.telemetry.metrics_address: 127.0.0.1:8888 collides with 127.0.0.1:8888 used by receiver \"test/d\"; the telemetry server needs an address of its own",
        ]
    );
}

#[test]
fn pipelines_sharing_a_receiver_and_an_exporter_would_write_twice() {
    let text = "
receivers:
  test: {}
exporters:
  test: {}
service:
  pipelines:
    profiles/a: { receivers: [test], exporters: [test] }
    profiles/b: { receivers: [test], exporters: [test] }
";
    assert_eq!(
        errors(text),
        [
            "pipeline.yaml: service.pipelines.profiles/b: shares receiver \"test\" and exporter \"test\" with pipeline \"profiles/a\": every profile would be written twice"
        ]
    );
}

#[test]
fn components_sharing_an_address_with_distinct_paths_are_fine() {
    let text = "
receivers:
  test/a: { address: '127.0.0.1:4040', paths: [/ingest] }
  test/b: { address: '127.0.0.1:4040', paths: [/render] }
  test/c: { address: '127.0.0.1:0', paths: [/ingest] }
  test/d: { address: '127.0.0.1:0', paths: [/x] }
exporters:
  test: {}
service:
  pipelines:
    profiles: { receivers: [test/a, test/b, test/c, test/d], exporters: [test] }
  telemetry: { metrics_address: '127.0.0.1:0' }
";
    assert!(load(text).is_ok());
}

#[test]
fn component_ids_are_checked() {
    assert_eq!(component_type("pyroscope"), Some("pyroscope"));
    assert_eq!(component_type("pprof_scrape/go_app"), Some("pprof_scrape"));
    assert_eq!(component_type("s3/cold/x"), Some("s3"));
    for bad in ["", "/x", "x/", "9x", "a-b", "a b", "a/b c"] {
        assert_eq!(component_type(bad), None, "{bad:?}");
    }
}

#[test]
fn paths_join_like_yaml() {
    let p = YamlPath::root()
        .key("service")
        .key("pipelines")
        .key("profiles/a")
        .key("exporters")
        .index(1);
    assert_eq!(p.to_string(), "service.pipelines.profiles/a.exporters[1]");
    assert_eq!(YamlPath::root().key("a").join("[2].b").to_string(), "a[2].b");
    assert_eq!(YamlPath::root().key("a").join("").to_string(), "a");
    assert!(is_within("a.b[1]", "a.b") && is_within("a.b", "a.b") && !is_within("a.bc", "a.b"));
}

#[test]
fn a_connector_joins_a_profiles_pipeline_to_a_metrics_pipeline() {
    let loaded = load(
        "
receivers:
  test: {}
exporters:
  test: {}
connectors:
  test/count: {}
service:
  pipelines:
    profiles: { receivers: [test], exporters: [test, test/count] }
    metrics/profiles: { receivers: [test/count], exporters: [test] }
",
    )
    .unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(pipeline_signal("metrics/profiles"), Signal::Metrics);
    assert_eq!(pipeline_signal("profiles"), Signal::Profiles);
}

#[test]
fn components_must_fit_their_pipelines_signal() {
    let errors = errors(
        "
receivers:
  test: {}
processors:
  test: {}
exporters:
  test: {}
connectors:
  test/count: {}
  test/half: {}
service:
  pipelines:
    profiles: { receivers: [test, test/count], exporters: [test, test/half] }
    metrics: { receivers: [test], processors: [test], exporters: [test/count] }
",
    );
    assert_eq!(
        errors,
        [
            "pipeline.yaml: service.pipelines.profiles.receivers[1]: connector \"test/count\" emits metrics: list it as a receiver of a metrics pipeline, not of a profiles one",
            "pipeline.yaml: service.pipelines.metrics.receivers[0]: receiver \"test\" handles profiles, not metrics: it cannot be in a metrics pipeline",
            "pipeline.yaml: service.pipelines.metrics.processors[0]: processor \"test\" handles profiles, not metrics: it cannot be in a metrics pipeline",
            "pipeline.yaml: service.pipelines.metrics.exporters[0]: connector \"test/count\" consumes profiles: list it as an exporter of a profiles pipeline, not of a metrics one",
            "pipeline.yaml: connectors.test/half: connector \"test/half\" joins two pipelines: it is an exporter of a pipeline but no pipeline lists it as a receiver",
        ]
    );
}

#[test]
fn a_connector_needs_an_id_of_its_own() {
    let errors = errors(
        "
receivers:
  test: {}
exporters:
  test: {}
connectors:
  test: {}
service:
  pipelines:
    profiles: { receivers: [test], exporters: [test] }
",
    );
    assert_eq!(
        errors,
        [
            "pipeline.yaml: connectors.test: \"test\" is also defined as a receiver or exporter; a connector needs an id of its own"
        ]
    );
}

#[test]
fn an_extension_may_feed_a_connector() {
    let config = |feeds: &str| {
        format!(
            "
receivers:
  pyroscope: {{}}
exporters:
  blocks: {{}}
  prometheus_remote_write: {{}}
connectors:
  profile_metrics/backfill:
    rules:
      - {{ metric: profile_cpu_seconds_total, profile_type: 'process_cpu:cpu:nanoseconds:cpu:nanoseconds' }}
extensions:
  compactor: {{ profile_metrics: {feeds} }}
service:
  extensions: [compactor]
  pipelines:
    profiles: {{ receivers: [pyroscope], exporters: [blocks] }}
    metrics: {{ receivers: [profile_metrics/backfill], exporters: [prometheus_remote_write] }}
"
        )
    };
    let real = |text: &str| load_str("pipeline.yaml", text, &crate::registry::registry(), &|_| None);
    let loaded = real(&config("profile_metrics/backfill")).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let errors = real(&config("profile_metrics/nope")).unwrap_err().errors;
    assert_eq!(
        errors,
        [
            "pipeline.yaml: extensions.compactor: feeds connector \"profile_metrics/nope\", which is not defined under connectors",
            "pipeline.yaml: connectors.profile_metrics/backfill: connector \"profile_metrics/backfill\" joins two pipelines: it is a receiver of a pipeline but no pipeline lists it as an exporter (nor does an extension feed it)",
        ]
    );
}
