//! The Connect unary methods of Pyroscope's `querier.v1.QuerierService`: the metadata methods
//! (`ProfileTypes`, `LabelNames`, `LabelValues`, `Series`, `GetProfileStats`), the merged
//! flame graph, pprof profile and series, and `unimplemented` for the methods not served.
//!
//! [`unary`] runs each: decode (proto or JSON), tenant, slot, the method, encode;
//! `SelectMergeProfile` takes the same steps itself, as its JSON answer is written by hand. The
//! checks that turn a Connect request into a selection ([`flamegraph_request`],
//! [`series_request`], [`series_merge`]) are shared with the streams.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use flamepipe_core::{Labels, ProfileType};
use serde::Serialize;

use super::encode::{PprofProto, flamegraph_message, pprof_json, series_messages};
use super::{Api, Shared, Skipped, engine_error};
use crate::connect::{self, Code, Codec, ConnectError};
use crate::engine::merge::{Aggregation, FlameGraphMerge, ProfileMerge, SeriesLabels, SeriesMerge, SeriesSpec};
use crate::messages as msg;
use crate::params::{self, Selection};

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

pub(super) async fn unimplemented() -> Response {
    ConnectError::new(Code::Unimplemented, "this method is not implemented by flamepipe").into_response()
}

/// The distinct series with profiles in range: what the metadata methods list.
async fn series_labels(
    api: &Api,
    tenant: &str,
    matchers: &[String],
    range: (i64, i64),
    skipped: &Skipped,
) -> Result<Vec<(Labels, ProfileType)>, ConnectError> {
    let query = params::matchers(tenant, matchers, range)?;
    api.execute(query, SeriesLabels::default(), skipped).await
}

pub(super) async fn profile_types(State(api): Shared, headers: HeaderMap, body: Bytes) -> Response {
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
pub(super) async fn profile_stats(State(api): Shared, headers: HeaderMap, body: Bytes) -> Response {
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

pub(super) async fn label_names(State(api): Shared, headers: HeaderMap, body: Bytes) -> Response {
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

pub(super) async fn label_values(State(api): Shared, headers: HeaderMap, body: Bytes) -> Response {
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

pub(super) async fn series(State(api): Shared, headers: HeaderMap, body: Bytes) -> Response {
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
pub(super) fn flamegraph_request(
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

pub(super) async fn select_merge_stacktraces(State(api): Shared, headers: HeaderMap, body: Bytes) -> Response {
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

pub(super) async fn select_merge_profile(State(api): Shared, headers: HeaderMap, body: Bytes) -> Response {
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

/// A series request: its selection and the merge to run.
pub(super) fn series_request(
    tenant: &str,
    req: &msg::SelectSeriesRequest,
) -> Result<(Selection, SeriesMerge), ConnectError> {
    refuse_selectors(&req.stack_trace_selector, &[])?;
    let range = params::range_ms(req.start, req.end)?;
    let selection = params::selection(tenant, &req.profile_type_id, &req.label_selector, range)?;
    let merge = series_merge(range, req.step, req.group_by.clone(), req.aggregation, req.limit)?;
    Ok((selection, merge))
}

pub(super) fn series_merge(
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

pub(super) async fn select_series(State(api): Shared, headers: HeaderMap, body: Bytes) -> Response {
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
