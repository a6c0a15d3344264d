//! The query API's handlers and router (docs/query-api.md).
//!
//! Each handler reads the tenant, takes one of `max_concurrent_queries` slots (429 /
//! `resource_exhausted` when none is free), turns the request into an engine query
//! ([`params`](super::params)) and encodes the answer. Streaming handlers hand the engine's
//! event channel to the response body: when the client disconnects, hyper drops the body,
//! the channel closes and the engine stops reading.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Query as QueryParams, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::BytesMut;
use flamepipe_core::component::{BuildContext, BuildError, HttpMount};
use flamepipe_core::formats::pprof::proto;
use flamepipe_core::query::engine::Accumulator;
use flamepipe_core::query::merge::{Aggregation, FlameGraphMerge, ProfileMerge, SeriesLabels, SeriesMerge, SeriesSpec};
use flamepipe_core::query::{
    self as core_query, Diagnostics, EngineOptions, Event, QueryEngine, QueryError, SkippedBlock,
};
use flamepipe_core::telemetry::Telemetry;
use flamepipe_core::tenant::tenant;
use prost::Message;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::QueryConfig;
use super::connect::{self, Code, Codec, ConnectError};
use super::messages as msg;
use super::params::{self, Selection};

const QUERIER: &str = "/querier.v1.QuerierService/";
const STREAMER: &str = "/querier.v1.QuerierStreamService/";
/// Overrides `query.snapshot_interval` for one streaming request.
const SNAPSHOT_HEADER: &str = "flamepipe-snapshot-interval";
const MIN_SNAPSHOT_INTERVAL: Duration = Duration::from_millis(10);
const MAX_SNAPSHOT_INTERVAL: Duration = Duration::from_secs(60);

struct Api {
    engine: Arc<QueryEngine>,
    config: QueryConfig,
    telemetry: Arc<Telemetry>,
    slots: Arc<Semaphore>,
}

type Shared = State<Arc<Api>>;

/// Builds the query API's routes on `config.address`.
pub fn mount(config: QueryConfig, ctx: &BuildContext) -> Result<HttpMount, BuildError> {
    let store = ctx.stores.open(&config.store).map_err(|e| BuildError {
        component: ctx.id.to_string(),
        message: e.to_string(),
    })?;
    let limits = EngineOptions {
        max_concurrent_reads: config.max_concurrent_reads,
        unreadable_blocks: config.unreadable_blocks,
        ..EngineOptions::default()
    };
    let engine = Arc::new(QueryEngine::new(
        store,
        Arc::clone(&ctx.telemetry),
        limits,
        ctx.shutdown.clone(),
    ));
    let api = Arc::new(Api {
        engine,
        slots: Arc::new(Semaphore::new(config.max_concurrent_queries)),
        telemetry: Arc::clone(&ctx.telemetry),
        config: config.clone(),
    });
    let mut router = Router::new();
    let mut paths = Vec::new();
    for (path, route) in routes() {
        router = router.route(&path, route);
        paths.push(path);
    }
    let router = router
        .layer(DefaultBodyLimit::max(config.max_request_bytes.as_usize()))
        .with_state(api);
    Ok(HttpMount {
        address: config.address,
        paths,
        router,
    })
}

/// The query API's routes: Pyroscope's querier service (with `unimplemented` for its
/// methods not served here), the streaming service, and the plain-HTTP endpoints.
fn routes() -> Vec<(String, axum::routing::MethodRouter<Arc<Api>>)> {
    let mut routes = vec![
        (format!("{QUERIER}ProfileTypes"), post(profile_types)),
        (format!("{QUERIER}LabelNames"), post(label_names)),
        (format!("{QUERIER}LabelValues"), post(label_values)),
        (format!("{QUERIER}Series"), post(series)),
        (
            format!("{QUERIER}SelectMergeStacktraces"),
            post(select_merge_stacktraces),
        ),
        (format!("{QUERIER}SelectMergeProfile"), post(select_merge_profile)),
        (format!("{QUERIER}SelectSeries"), post(select_series)),
        (format!("{QUERIER}GetProfileStats"), post(profile_stats)),
    ];
    for method in ["SelectMergeSpanProfile", "SelectHeatmap", "Diff", "AnalyzeQuery"] {
        routes.push((format!("{QUERIER}{method}"), post(unimplemented)));
    }
    routes.extend([
        (
            format!("{STREAMER}SelectMergeStacktracesStream"),
            post(stream_stacktraces),
        ),
        (format!("{STREAMER}SelectSeriesStream"), post(stream_series)),
        ("/pyroscope/render".to_string(), get(render)),
        ("/api/v1/pprof".to_string(), get(pprof_download)),
        ("/api/v1/stream/flamegraph".to_string(), get(ndjson_flamegraph)),
        ("/api/v1/stream/series".to_string(), get(ndjson_series)),
    ]);
    routes
}

/// The paths the query API serves, for config validation.
pub fn paths() -> Vec<String> {
    routes().into_iter().map(|(path, _)| path).collect()
}

impl Api {
    fn tenant(&self, headers: &HeaderMap) -> Result<Arc<str>, ConnectError> {
        tenant(headers).map_err(|m| ConnectError::invalid(format!("invalid tenant id in X-Scope-OrgID: {m}")))
    }

    fn slot(&self) -> Result<OwnedSemaphorePermit, ConnectError> {
        Arc::clone(&self.slots).try_acquire_owned().map_err(|_| {
            ConnectError::new(
                Code::ResourceExhausted,
                format!(
                    "too many queries running (max_concurrent_queries = {}); retry later",
                    self.config.max_concurrent_queries
                ),
            )
        })
    }

    /// Runs a query to the end; the blocks it skipped are added to `skipped`.
    async fn execute<A: Accumulator>(
        &self,
        query: core_query::Query,
        acc: A,
        skipped: &Skipped,
    ) -> Result<A::Output, ConnectError> {
        let (output, diagnostics) = self.engine.execute(query, acc).await.map_err(engine_error)?;
        skipped.add(diagnostics.skipped);
        Ok(output)
    }

    fn max_nodes(&self, requested: Option<i64>) -> Result<usize, ConnectError> {
        params::max_nodes(requested, self.config.max_nodes, self.config.max_nodes_limit)
    }

    fn record(&self, method: &str, result: &Result<impl Sized, ConnectError>) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(e) => match e.code {
                Code::InvalidArgument | Code::Unimplemented => "invalid",
                Code::ResourceExhausted => "refused",
                Code::Canceled => "canceled",
                _ => "error",
            },
        };
        self.telemetry.query_answered(method, outcome);
    }
}

fn engine_error(e: QueryError) -> ConnectError {
    match e {
        QueryError::Canceled => ConnectError::new(Code::Canceled, e.to_string()),
        QueryError::ShuttingDown => ConnectError::new(Code::Unavailable, e.to_string()),
        QueryError::Block(_) | QueryError::Worker(_) => {
            tracing::error!(component = "query", error = %e, "query failed");
            ConnectError::new(Code::Internal, e.to_string())
        }
    }
}

/// The blocks one request's queries skipped because they cannot be read. Unary answers carry
/// them in the [`SKIPPED_HEADER`] header (streams in their result's diagnostics), a header
/// that Grafana and other Pyroscope clients ignore.
#[derive(Default)]
struct Skipped(std::sync::Mutex<Vec<SkippedBlock>>);

/// Names the blocks a unary answer left out: `<block id>;reason=<reason>`, comma separated.
const SKIPPED_HEADER: &str = "flamepipe-skipped-blocks";
/// Blocks named in the header at most (the count of the rest follows as `+<n>`).
const SKIPPED_HEADER_MAX: usize = 32;

impl Skipped {
    fn add(&self, blocks: Vec<SkippedBlock>) {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for block in blocks {
            if !all.iter().any(|b| b.path == block.path) {
                all.push(block);
            }
        }
    }

    /// Adds the header to `response` when blocks were skipped.
    fn annotate(&self, mut response: Response) -> Response {
        let all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if all.is_empty() {
            return response;
        }
        let mut value: Vec<String> = all
            .iter()
            .take(SKIPPED_HEADER_MAX)
            .map(|b| format!("{};reason={}", b.id, b.reason))
            .collect();
        if all.len() > SKIPPED_HEADER_MAX {
            value.push(format!("+{}", all.len() - SKIPPED_HEADER_MAX));
        }
        if let Ok(value) = HeaderValue::from_str(&value.join(", ")) {
            response.headers_mut().insert(SKIPPED_HEADER, value);
        }
        response
    }
}

/// Runs one unary method: decode, tenant, slot, `run`, encode.
async fn unary<Req, Resp, Fut>(
    api: &Arc<Api>,
    method: &'static str,
    headers: &HeaderMap,
    body: &[u8],
    run: impl FnOnce(Arc<Api>, Arc<str>, Req, Arc<Skipped>) -> Fut,
) -> Response
where
    Req: prost::Message + Default + serde::de::DeserializeOwned,
    Resp: prost::Message + Serialize,
    Fut: Future<Output = Result<Resp, ConnectError>>,
{
    let mut codec = Codec::Json;
    let skipped = Arc::new(Skipped::default());
    let result = async {
        let (c, request) = connect::unary_request::<Req>(headers, body, api.config.max_request_bytes.0)?;
        codec = c;
        let tenant = api.tenant(headers)?;
        let _slot = api.slot()?;
        run(Arc::clone(api), tenant, request, Arc::clone(&skipped)).await
    }
    .await;
    api.record(method, &result);
    match result {
        Ok(response) => skipped.annotate(connect::unary_response(codec, &response)),
        Err(e) => e.into_response(),
    }
}

async fn unimplemented() -> Response {
    ConnectError::new(Code::Unimplemented, "this method is not implemented by flamepipe").into_response()
}

/// The distinct series with profiles in range: what the metadata methods list.
async fn series_labels(
    api: &Api,
    tenant: &str,
    matchers: &[String],
    range: (i64, i64),
    skipped: &Skipped,
) -> Result<Vec<(flamepipe_core::Labels, flamepipe_core::ProfileType)>, ConnectError> {
    let query = params::matchers(tenant, matchers, range)?;
    api.execute(query, SeriesLabels::default(), skipped).await
}

async fn profile_types(State(api): Shared, headers: HeaderMap, body: Bytes) -> Response {
    unary(
        &api,
        "ProfileTypes",
        &headers,
        &body,
        |api, tenant, req: msg::ProfileTypesRequest, skipped| async move {
            let range = params::range_ms(req.start, req.end)?;
            let series = series_labels(&api, &tenant, &[], range, &skipped).await?;
            let mut types: Vec<_> = series.into_iter().map(|(_, t)| t).collect();
            types.sort();
            types.dedup();
            Ok(msg::ProfileTypesResponse {
                profile_types: types
                    .into_iter()
                    .map(|t| msg::ProfileType {
                        id: t.id(),
                        name: t.name,
                        sample_type: t.sample_type,
                        sample_unit: t.sample_unit,
                        period_type: t.period_type,
                        period_unit: t.period_unit,
                    })
                    .collect(),
            })
        },
    )
    .await
}

/// Whether the tenant has data, and its time bounds (ms): Grafana asks this to tell an empty
/// store from an empty query.
async fn profile_stats(State(api): Shared, headers: HeaderMap, body: Bytes) -> Response {
    unary(
        &api,
        "GetProfileStats",
        &headers,
        &body,
        |api, tenant, _: msg::GetProfileStatsRequest, skipped| async move {
            let (bounds, skipped_blocks) = api.engine.time_bounds(&tenant).await.map_err(engine_error)?;
            skipped.add(skipped_blocks);
            let (oldest, newest) = bounds.unwrap_or((0, 0));
            Ok(msg::GetProfileStatsResponse {
                data_ingested: bounds.is_some(),
                oldest_profile_time: oldest.div_euclid(1_000_000),
                newest_profile_time: newest.div_euclid(1_000_000),
            })
        },
    )
    .await
}

async fn label_names(State(api): Shared, headers: HeaderMap, body: Bytes) -> Response {
    unary(
        &api,
        "LabelNames",
        &headers,
        &body,
        |api, tenant, req: msg::LabelNamesRequest, skipped| async move {
            let range = params::range_ms(req.start, req.end)?;
            let series = series_labels(&api, &tenant, &req.matchers, range, &skipped).await?;
            let mut names: Vec<String> = series
                .iter()
                .flat_map(|(labels, _)| labels.iter().map(|(n, _)| n.to_string()))
                .collect();
            names.sort();
            names.dedup();
            Ok(msg::LabelNamesResponse { names })
        },
    )
    .await
}

async fn label_values(State(api): Shared, headers: HeaderMap, body: Bytes) -> Response {
    unary(
        &api,
        "LabelValues",
        &headers,
        &body,
        |api, tenant, req: msg::LabelValuesRequest, skipped| async move {
            if req.name.is_empty() {
                return Err(ConnectError::invalid("name: a label name is required"));
            }
            let range = params::range_ms(req.start, req.end)?;
            let series = series_labels(&api, &tenant, &req.matchers, range, &skipped).await?;
            let mut names: Vec<String> = series
                .iter()
                .filter_map(|(labels, _)| labels.get(&req.name).map(str::to_string))
                .collect();
            names.sort();
            names.dedup();
            Ok(msg::LabelValuesResponse { names })
        },
    )
    .await
}

async fn series(State(api): Shared, headers: HeaderMap, body: Bytes) -> Response {
    unary(
        &api,
        "Series",
        &headers,
        &body,
        |api, tenant, req: msg::SeriesRequest, skipped| async move {
            let range = params::range_ms(req.start, req.end)?;
            let series = series_labels(&api, &tenant, &req.matchers, range, &skipped).await?;
            let mut sets: Vec<Vec<msg::LabelPair>> = series
                .iter()
                .map(|(labels, _)| {
                    labels
                        .iter()
                        .filter(|(n, _)| req.label_names.is_empty() || req.label_names.iter().any(|w| w == n))
                        .map(|(name, value)| msg::LabelPair {
                            name: name.to_string(),
                            value: value.to_string(),
                        })
                        .collect()
                })
                .collect();
            sets.sort_by(|a, b| {
                let key =
                    |s: &Vec<msg::LabelPair>| s.iter().map(|p| (p.name.clone(), p.value.clone())).collect::<Vec<_>>();
                key(a).cmp(&key(b))
            });
            sets.dedup();
            Ok(msg::SeriesResponse {
                labels_set: sets.into_iter().map(|labels| msg::Labels { labels }).collect(),
            })
        },
    )
    .await
}

fn refuse_selectors(
    stack_trace_selector: &Option<msg::StackTraceSelector>,
    ids: &[&[String]],
) -> Result<(), ConnectError> {
    if stack_trace_selector
        .as_ref()
        .is_some_and(|s| *s != msg::StackTraceSelector::default())
        || ids.iter().any(|s| !s.is_empty())
    {
        return Err(ConnectError::new(
            Code::Unimplemented,
            "stack trace, profile id, span and trace id selectors are not supported",
        ));
    }
    Ok(())
}

/// A flame graph request: its selection and `max_nodes`.
fn flamegraph_request(
    api: &Api,
    tenant: &str,
    req: &msg::SelectMergeStacktracesRequest,
) -> Result<(Selection, usize), ConnectError> {
    if req.format > msg::PROFILE_FORMAT_FLAMEGRAPH {
        return Err(ConnectError::new(
            Code::Unimplemented,
            "only the flame graph format is supported",
        ));
    }
    refuse_selectors(
        &req.stack_trace_selector,
        &[&req.profile_id_selector, &req.trace_id_selector, &req.span_selector],
    )?;
    let range = params::range_ms(req.start, req.end)?;
    let selection = params::selection(tenant, &req.profile_type_id, &req.label_selector, range)?;
    Ok((selection, api.max_nodes(req.max_nodes)?))
}

async fn select_merge_stacktraces(State(api): Shared, headers: HeaderMap, body: Bytes) -> Response {
    unary(
        &api,
        "SelectMergeStacktraces",
        &headers,
        &body,
        |api, tenant, req: msg::SelectMergeStacktracesRequest, skipped| async move {
            let (selection, max_nodes) = flamegraph_request(&api, &tenant, &req)?;
            let graph = api
                .execute(selection.query, FlameGraphMerge::new(max_nodes), &skipped)
                .await?;
            Ok(msg::SelectMergeStacktracesResponse {
                flamegraph: Some(flamegraph_message(graph)),
            })
        },
    )
    .await
}

fn profile_request(
    tenant: &str,
    req: &msg::SelectMergeProfileRequest,
) -> Result<(Selection, ProfileMerge), ConnectError> {
    refuse_selectors(
        &req.stack_trace_selector,
        &[&req.profile_id_selector, &req.trace_id_selector],
    )?;
    let range = params::range_ms(req.start, req.end)?;
    let selection = params::selection(tenant, &req.profile_type_id, &req.label_selector, range)?;
    let merge = ProfileMerge::new(selection.profile_type.clone(), range.0, range.1);
    Ok((selection, merge))
}

async fn select_merge_profile(State(api): Shared, headers: HeaderMap, body: Bytes) -> Response {
    // The answer is a pprof profile; its JSON form is written by hand (`pprof_json`).
    let mut codec = Codec::Json;
    let skipped = Skipped::default();
    let result = async {
        let (c, req) =
            connect::unary_request::<msg::SelectMergeProfileRequest>(&headers, &body, api.config.max_request_bytes.0)?;
        codec = c;
        let tenant = api.tenant(&headers)?;
        let _slot = api.slot()?;
        let (selection, merge) = profile_request(&tenant, &req)?;
        api.execute(selection.query, merge, &skipped).await
    }
    .await;
    api.record("SelectMergeProfile", &result);
    match (result, codec) {
        (Ok(profile), Codec::Proto) => skipped.annotate(connect::unary_response(codec, &PprofProto(profile))),
        (Ok(profile), Codec::Json) => skipped.annotate(
            (
                [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
                pprof_json(&profile).to_string(),
            )
                .into_response(),
        ),
        (Err(e), _) => e.into_response(),
    }
}

/// A pprof profile as a Connect proto response (JSON goes through [`pprof_json`]).
struct PprofProto(proto::Profile);

impl Serialize for PprofProto {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        pprof_json(&self.0).serialize(s)
    }
}

impl std::fmt::Debug for PprofProto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl prost::Message for PprofProto {
    fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
        self.0.encode_raw(buf)
    }
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        self.0.merge_field(tag, wire_type, buf, ctx)
    }
    fn encoded_len(&self) -> usize {
        self.0.encoded_len()
    }
    fn clear(&mut self) {
        self.0.clear()
    }
}

/// pprof's `google.v1.Profile` in protobuf JSON (64-bit integers as strings).
fn pprof_json(p: &proto::Profile) -> serde_json::Value {
    use serde_json::json;
    let vt = |v: &proto::ValueType| json!({ "type": v.r#type.to_string(), "unit": v.unit.to_string() });
    let ids = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>();
    let nums = |v: &[i64]| v.iter().map(i64::to_string).collect::<Vec<_>>();
    json!({
        "sampleType": p.sample_type.iter().map(vt).collect::<Vec<_>>(),
        "sample": p.sample.iter().map(|s| json!({
            "locationId": ids(&s.location_id),
            "value": nums(&s.value),
        })).collect::<Vec<_>>(),
        "mapping": p.mapping.iter().map(|m| json!({
            "id": m.id.to_string(),
            "memoryStart": m.memory_start.to_string(),
            "memoryLimit": m.memory_limit.to_string(),
            "fileOffset": m.file_offset.to_string(),
            "filename": m.filename.to_string(),
            "buildId": m.build_id.to_string(),
            "hasFunctions": m.has_functions,
        })).collect::<Vec<_>>(),
        "location": p.location.iter().map(|l| json!({
            "id": l.id.to_string(),
            "mappingId": l.mapping_id.to_string(),
            "address": l.address.to_string(),
            "line": l.line.iter().map(|line| json!({
                "functionId": line.function_id.to_string(),
                "line": line.line.to_string(),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "function": p.function.iter().map(|f| json!({
            "id": f.id.to_string(),
            "name": f.name.to_string(),
            "systemName": f.system_name.to_string(),
            "filename": f.filename.to_string(),
            "startLine": f.start_line.to_string(),
        })).collect::<Vec<_>>(),
        "stringTable": p.string_table,
        "timeNanos": p.time_nanos.to_string(),
        "durationNanos": p.duration_nanos.to_string(),
        "periodType": p.period_type.as_ref().map(vt),
        "period": p.period.to_string(),
    })
}

/// A series request: its selection and the merge to run.
fn series_request(tenant: &str, req: &msg::SelectSeriesRequest) -> Result<(Selection, SeriesMerge), ConnectError> {
    refuse_selectors(&req.stack_trace_selector, &[])?;
    let range = params::range_ms(req.start, req.end)?;
    let selection = params::selection(tenant, &req.profile_type_id, &req.label_selector, range)?;
    let merge = series_merge(range, req.step, req.group_by.clone(), req.aggregation, req.limit)?;
    Ok((selection, merge))
}

fn series_merge(
    range: (i64, i64),
    step_seconds: f64,
    group_by: Vec<String>,
    aggregation: Option<i32>,
    limit: Option<i64>,
) -> Result<SeriesMerge, ConnectError> {
    let step_ns = params::step_ns(step_seconds, range)?;
    let aggregation = match aggregation {
        Some(msg::AGGREGATION_AVERAGE) => Aggregation::Average,
        None | Some(0) => Aggregation::Sum,
        Some(other) => return Err(ConnectError::invalid(format!("aggregation {other} is unknown"))),
    };
    let limit = match limit {
        Some(n) if n < 0 => return Err(ConnectError::invalid(format!("limit {n} is negative"))),
        Some(n) if n > 0 => Some(n as usize),
        _ => None,
    };
    let spec = SeriesSpec {
        start_ns: range.0,
        step_ns,
        group_by,
    };
    Ok(SeriesMerge::new(spec, aggregation, limit))
}

async fn select_series(State(api): Shared, headers: HeaderMap, body: Bytes) -> Response {
    unary(
        &api,
        "SelectSeries",
        &headers,
        &body,
        |api, tenant, req: msg::SelectSeriesRequest, skipped| async move {
            let (selection, merge) = series_request(&tenant, &req)?;
            let series = api.execute(selection.query, merge, &skipped).await?;
            Ok(msg::SelectSeriesResponse {
                series: series_messages(series),
            })
        },
    )
    .await
}

// ---- conversions from engine results to messages ----

fn flamegraph_message(graph: core_query::FlameGraph) -> msg::FlameGraph {
    msg::FlameGraph {
        names: graph.names,
        levels: graph.levels.into_iter().map(|values| msg::Level { values }).collect(),
        total: graph.total,
        max_self: graph.max_self,
    }
}

fn series_messages(series: Vec<core_query::merge::Series>) -> Vec<msg::Series> {
    series
        .into_iter()
        .map(|s| msg::Series {
            labels: s
                .labels
                .into_iter()
                .map(|(name, value)| msg::LabelPair { name, value })
                .collect(),
            points: s
                .points
                .into_iter()
                .map(|(timestamp, value)| msg::Point { value, timestamp })
                .collect(),
        })
        .collect()
}

fn plan_message(p: core_query::Plan) -> msg::QueryPlan {
    msg::QueryPlan {
        blocks_total: p.blocks_total,
        datasets_total: p.datasets_total,
        bytes_total: p.bytes_total,
        complete: p.complete,
    }
}

fn progress_message(p: core_query::Progress) -> msg::QueryProgress {
    msg::QueryProgress {
        blocks_done: p.blocks_done,
        blocks_total: p.blocks_total,
        datasets_done: p.datasets_done,
        datasets_total: p.datasets_total,
        bytes_done: p.bytes_done,
        bytes_total: p.bytes_total,
        profiles_merged: p.profiles_merged,
    }
}

fn diagnostics_message(d: Diagnostics) -> msg::QueryDiagnostics {
    let ns = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
    msg::QueryDiagnostics {
        blocks_read: d.blocks_read,
        datasets_read: d.datasets_read,
        bytes_read: d.bytes_read,
        profiles_merged: d.profiles_merged,
        duration_ns: ns(d.duration),
        stages: d
            .stages
            .into_iter()
            .map(|(stage, d)| msg::StageTiming {
                stage: stage.to_string(),
                duration_ns: ns(d),
            })
            .collect(),
        skipped_blocks: d
            .skipped
            .into_iter()
            .map(|s| msg::SkippedBlock {
                block_id: s.id,
                reason: s.reason.to_string(),
                message: s.message,
            })
            .collect(),
    }
}

fn flamegraph_event(event: Event<core_query::FlameGraph>) -> msg::SelectMergeStacktracesStreamResponse {
    let mut out = msg::SelectMergeStacktracesStreamResponse::default();
    match event {
        Event::Plan(p) => out.plan = Some(plan_message(p)),
        Event::Snapshot(progress, graph) => {
            out.snapshot = Some(msg::FlameGraphSnapshot {
                progress: Some(progress_message(progress)),
                flamegraph: Some(flamegraph_message(graph)),
            })
        }
        Event::Result(graph, d) => {
            out.result = Some(msg::FlameGraphResult {
                flamegraph: Some(flamegraph_message(graph)),
                diagnostics: Some(diagnostics_message(d)),
            })
        }
    }
    out
}

fn series_event(event: Event<Vec<core_query::merge::Series>>) -> msg::SelectSeriesStreamResponse {
    let mut out = msg::SelectSeriesStreamResponse::default();
    match event {
        Event::Plan(p) => out.plan = Some(plan_message(p)),
        Event::Snapshot(progress, series) => {
            out.snapshot = Some(msg::SeriesSnapshot {
                progress: Some(progress_message(progress)),
                series: series_messages(series),
            })
        }
        Event::Result(series, d) => {
            out.result = Some(msg::SeriesResult {
                series: series_messages(series),
                diagnostics: Some(diagnostics_message(d)),
            })
        }
    }
    out
}

// ---- streaming ----

/// How events are written: Connect envelopes or JSON lines.
#[derive(Clone, Copy)]
enum Framing {
    Connect(Codec),
    Ndjson,
}

impl Framing {
    fn message<M: prost::Message + Serialize>(self, message: &M) -> Bytes {
        match self {
            Framing::Connect(codec) => connect::stream_message(codec, message),
            Framing::Ndjson => {
                let mut line = serde_json::to_vec(message).unwrap_or_default();
                line.push(b'\n');
                Bytes::from(line)
            }
        }
    }

    fn end(self, error: Option<&ConnectError>) -> Bytes {
        match (self, error) {
            (Framing::Connect(_), error) => connect::end_stream(error),
            (Framing::Ndjson, None) => Bytes::new(),
            (Framing::Ndjson, Some(e)) => Bytes::from(format!("{}\n", serde_json::json!({ "error": e.json() }))),
        }
    }

    fn content_type(self) -> HeaderValue {
        match self {
            Framing::Connect(codec) => connect::stream_content_type(codec),
            Framing::Ndjson => HeaderValue::from_static("application/x-ndjson"),
        }
    }

    /// A response that is only an error: Connect streams answer 200 with an end-stream
    /// message; NDJSON answers 400 (or the code's status) before any event.
    fn error_response(self, e: ConnectError) -> Response {
        match self {
            Framing::Connect(_) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, self.content_type())],
                self.end(Some(&e)),
            )
                .into_response(),
            Framing::Ndjson => (e.status, format!("{}\n", e.message)).into_response(),
        }
    }
}

/// Starts a streaming query and returns the response that carries its events.
fn stream_response<A: Accumulator, M: prost::Message + Serialize + 'static>(
    api: &Arc<Api>,
    method: &'static str,
    framing: Framing,
    prepared: Result<(core_query::Query, A, Duration), ConnectError>,
    convert: fn(Event<A::Output>) -> M,
) -> Response {
    let started = prepared.and_then(|(query, acc, interval)| Ok((api.slot()?, query, acc, interval)));
    let (slot, query, acc, interval) = match started {
        Ok(started) => started,
        Err(e) => {
            api.record(method, &Err::<(), _>(e.clone()));
            return framing.error_response(e);
        }
    };
    let events = api.engine.stream(query, acc, interval);
    let body = event_body(Arc::clone(api), method, events, framing, convert, slot);
    (StatusCode::OK, [(header::CONTENT_TYPE, framing.content_type())], body).into_response()
}

/// The response body of a stream: each event framed, then the end (or the error).
fn event_body<O: Send + 'static, M: prost::Message + Serialize + 'static>(
    api: Arc<Api>,
    method: &'static str,
    events: mpsc::Receiver<Result<Event<O>, QueryError>>,
    framing: Framing,
    convert: fn(Event<O>) -> M,
    slot: OwnedSemaphorePermit,
) -> Body {
    let state = Some((events, slot));
    let stream = futures::stream::unfold(state, move |state| {
        let api = Arc::clone(&api);
        async move {
            let (mut events, slot) = state?;
            match events.recv().await {
                Some(Ok(event)) => {
                    let last = matches!(event, Event::Result(..));
                    let bytes = framing.message(&convert(event));
                    if !last {
                        return Some((Ok::<_, std::convert::Infallible>(bytes), Some((events, slot))));
                    }
                    api.record(method, &Ok::<(), ConnectError>(()));
                    let mut out = BytesMut::from(&bytes[..]);
                    out.extend_from_slice(&framing.end(None));
                    Some((Ok(out.freeze()), None))
                }
                Some(Err(e)) => {
                    let e = engine_error(e);
                    api.record(method, &Err::<(), _>(e.clone()));
                    Some((Ok(framing.end(Some(&e))), None))
                }
                // The engine stopped without a result: the process is shutting down.
                None => None,
            }
        }
    });
    Body::from_stream(stream)
}

fn snapshot_interval(api: &Api, requested: Option<&str>) -> Result<Duration, ConnectError> {
    let Some(text) = requested else {
        return Ok(api.config.snapshot_interval.0);
    };
    let interval = humantime::parse_duration(text.trim())
        .map_err(|e| ConnectError::invalid(format!("snapshot interval {text:?}: {e}")))?;
    if !(MIN_SNAPSHOT_INTERVAL..=MAX_SNAPSHOT_INTERVAL).contains(&interval) {
        return Err(ConnectError::invalid(format!(
            "snapshot interval {text:?} must be between 10ms and 60s"
        )));
    }
    Ok(interval)
}

fn header_interval(headers: &HeaderMap) -> Option<&str> {
    headers.get(SNAPSHOT_HEADER).and_then(|v| v.to_str().ok())
}

async fn stream_stacktraces(State(api): Shared, headers: HeaderMap, body: Bytes) -> Response {
    let Some(codec) = connect::stream_codec(&headers) else {
        return unsupported_stream_type();
    };
    let prepared = (|| {
        let req: msg::SelectMergeStacktracesRequest =
            connect::stream_request(codec, &headers, &body, api.config.max_request_bytes.0)?;
        let tenant = api.tenant(&headers)?;
        let (selection, max_nodes) = flamegraph_request(&api, &tenant, &req)?;
        let interval = snapshot_interval(&api, header_interval(&headers))?;
        Ok((selection.query, FlameGraphMerge::new(max_nodes), interval))
    })();
    stream_response(
        &api,
        "SelectMergeStacktracesStream",
        Framing::Connect(codec),
        prepared,
        flamegraph_event,
    )
}

async fn stream_series(State(api): Shared, headers: HeaderMap, body: Bytes) -> Response {
    let Some(codec) = connect::stream_codec(&headers) else {
        return unsupported_stream_type();
    };
    let prepared = (|| {
        let req: msg::SelectSeriesRequest =
            connect::stream_request(codec, &headers, &body, api.config.max_request_bytes.0)?;
        let tenant = api.tenant(&headers)?;
        let (selection, merge) = series_request(&tenant, &req)?;
        let interval = snapshot_interval(&api, header_interval(&headers))?;
        Ok((selection.query, merge, interval))
    })();
    stream_response(
        &api,
        "SelectSeriesStream",
        Framing::Connect(codec),
        prepared,
        series_event,
    )
}

fn unsupported_stream_type() -> Response {
    (
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "use Content-Type application/connect+proto or application/connect+json\n",
    )
        .into_response()
}

// ---- HTTP (query parameters) ----

type Params = QueryParams<HashMap<String, String>>;

fn param<'a>(params: &'a HashMap<String, String>, names: &[&str]) -> Option<&'a str> {
    names.iter().find_map(|n| params.get(*n)).map(String::as_str)
}

fn int_param(params: &HashMap<String, String>, names: &[&str]) -> Result<Option<i64>, ConnectError> {
    param(params, names)
        .map(|v| {
            v.trim()
                .parse::<i64>()
                .map_err(|_| ConnectError::invalid(format!("{}={v:?} is not an integer", names[0])))
        })
        .transpose()
}

/// `query`, `from`, `until` and `maxNodes` of the HTTP endpoints.
fn http_flamegraph(
    api: &Api,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<(Selection, usize), ConnectError> {
    let tenant = api.tenant(headers)?;
    let range = params::range_http(param(params, &["from"]), param(params, &["until"]))?;
    let query = param(params, &["query"]).ok_or_else(|| {
        ConnectError::invalid(
            "query is required, e.g. query=process_cpu:cpu:nanoseconds:cpu:nanoseconds{service_name=\"app\"}",
        )
    })?;
    let selection = params::selection(&tenant, "", query, range)?;
    let max_nodes = api.max_nodes(int_param(params, &["maxNodes", "max-nodes", "max_nodes"])?)?;
    Ok((selection, max_nodes))
}

fn plain_error(e: ConnectError) -> Response {
    (e.status, format!("{}\n", e.message)).into_response()
}

async fn render(State(api): Shared, headers: HeaderMap, QueryParams(params): Params) -> Response {
    let skipped = Skipped::default();
    let result = async {
        let (selection, max_nodes) = http_flamegraph(&api, &headers, &params)?;
        let _slot = api.slot()?;
        let (start_ns, end_ns) = (selection.query.start_ns, selection.query.end_ns);
        let step_ns = params::timeline_step_ns(start_ns, end_ns);
        let aligned_start = start_ns - start_ns.rem_euclid(step_ns);
        // Steps start at the aligned start, but only profiles in range count, as in the flame graph.
        let series_query = selection.query.clone();
        let timeline = SeriesMerge::new(
            SeriesSpec {
                start_ns: aligned_start,
                step_ns,
                group_by: Vec::new(),
            },
            Aggregation::Sum,
            None,
        );
        let (graph, series) = tokio::try_join!(
            api.execute(selection.query.clone(), FlameGraphMerge::new(max_nodes), &skipped),
            api.execute(series_query, timeline, &skipped),
        )?;
        Ok(flamebearer(
            &selection.profile_type,
            graph,
            &series,
            aligned_start,
            end_ns,
            step_ns,
        ))
    }
    .await;
    api.record("render", &result);
    match result {
        Ok(body) => skipped.annotate(([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()),
        Err(e) => plain_error(e),
    }
}

/// Pyroscope's flamebearer JSON (what `/pyroscope/render` answers), with a dense timeline.
fn flamebearer(
    profile_type: &flamepipe_core::ProfileType,
    graph: core_query::FlameGraph,
    series: &[core_query::merge::Series],
    aligned_start_ns: i64,
    end_ns: i64,
    step_ns: i64,
) -> serde_json::Value {
    let (units, sample_rate) = match profile_type.sample_type.as_str() {
        "cpu" => ("samples".to_string(), 1_000_000_000u64),
        "inuse_objects" | "alloc_objects" | "goroutine" | "samples" => ("objects".to_string(), 100),
        _ => (profile_type.sample_unit.clone(), 100),
    };
    let steps = ((end_ns - aligned_start_ns) / step_ns + 1).max(0) as usize;
    let mut samples = vec![0u64; steps];
    for point in series.iter().flat_map(|s| &s.points) {
        let step = (point.0 * 1_000_000 - aligned_start_ns) / step_ns;
        if let Some(slot) = usize::try_from(step).ok().and_then(|i| samples.get_mut(i)) {
            *slot += point.1 as u64;
        }
    }
    serde_json::json!({
        "version": 1,
        "flamebearer": {
            "names": graph.names,
            "levels": graph.levels,
            "numTicks": graph.total,
            "maxSelf": graph.max_self,
        },
        "metadata": {
            "format": "single",
            "spyName": "",
            "sampleRate": sample_rate,
            "units": units,
            "name": profile_type.sample_type,
        },
        "timeline": {
            "startTime": aligned_start_ns.div_euclid(1_000_000_000),
            "samples": samples,
            "durationDelta": step_ns / 1_000_000_000,
            "watermarks": null,
        },
        "groups": null,
        "heatmap": null,
    })
}

async fn pprof_download(State(api): Shared, headers: HeaderMap, QueryParams(params): Params) -> Response {
    let skipped = Skipped::default();
    let result = async {
        let (selection, _) = http_flamegraph(&api, &headers, &params)?;
        let _slot = api.slot()?;
        let merge = ProfileMerge::new(
            selection.profile_type.clone(),
            selection.query.start_ns,
            selection.query.end_ns,
        );
        let profile = api.execute(selection.query, merge, &skipped).await?;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&profile.encode_to_vec())
            .and_then(|_| gz.finish())
            .map_err(|e| ConnectError::new(Code::Internal, format!("cannot gzip the profile: {e}")))
    }
    .await;
    api.record("pprof", &result);
    match result {
        Ok(body) => skipped.annotate(
            (
                [
                    (header::CONTENT_TYPE, "application/octet-stream"),
                    (header::CONTENT_DISPOSITION, "attachment; filename=\"profile.pb.gz\""),
                ],
                body,
            )
                .into_response(),
        ),
        Err(e) => plain_error(e),
    }
}

async fn ndjson_flamegraph(State(api): Shared, headers: HeaderMap, QueryParams(params): Params) -> Response {
    let prepared = http_flamegraph(&api, &headers, &params).and_then(|(selection, max_nodes)| {
        let interval = snapshot_interval(&api, param(&params, &["snapshotInterval", "snapshot_interval"]))?;
        Ok((selection.query, FlameGraphMerge::new(max_nodes), interval))
    });
    stream_response(&api, "stream/flamegraph", Framing::Ndjson, prepared, flamegraph_event)
}

async fn ndjson_series(State(api): Shared, headers: HeaderMap, QueryParams(params): Params) -> Response {
    let prepared = (|| {
        let tenant = api.tenant(&headers)?;
        let range = params::range_http(param(&params, &["from"]), param(&params, &["until"]))?;
        let query = param(&params, &["query"]).ok_or_else(|| ConnectError::invalid("query is required"))?;
        let selection = params::selection(&tenant, "", query, range)?;
        let step = match param(&params, &["step"]) {
            None => 0.0,
            Some(s) => match s.trim().parse::<f64>() {
                Ok(seconds) => seconds,
                Err(_) => humantime::parse_duration(s.trim())
                    .map_err(|_| ConnectError::invalid(format!("step={s:?} is neither seconds nor a duration")))?
                    .as_secs_f64(),
            },
        };
        let aggregation = match param(&params, &["aggregation"]) {
            None | Some("sum") => None,
            Some("avg" | "average") => Some(msg::AGGREGATION_AVERAGE),
            Some(other) => return Err(ConnectError::invalid(format!("aggregation={other:?}: use sum or avg"))),
        };
        let group_by = param(&params, &["groupBy", "group_by"])
            .map(|g| {
                g.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        let merge = series_merge(range, step, group_by, aggregation, int_param(&params, &["limit"])?)?;
        let interval = snapshot_interval(&api, param(&params, &["snapshotInterval", "snapshot_interval"]))?;
        Ok((selection.query, merge, interval))
    })();
    stream_response(&api, "stream/series", Framing::Ndjson, prepared, series_event)
}
