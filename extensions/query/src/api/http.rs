//! The plain-HTTP endpoints, with query parameters instead of Connect bodies:
//! `/pyroscope/render` (Pyroscope's flamebearer JSON with its timeline) and `/api/v1/pprof` (a
//! gzipped pprof download, for `go tool pprof`). Errors are a status and a line of text. The
//! parameter helpers here are shared with the NDJSON streams.

use std::collections::HashMap;
use std::io::Write;

use axum::extract::{Query as QueryParams, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use prost::Message;

use super::encode::flamebearer;
use super::{Api, Shared, Skipped};
use crate::connect::{Code, ConnectError};
use crate::engine::merge::{Aggregation, FlameGraphMerge, ProfileMerge, SeriesMerge, SeriesSpec};
use crate::params::{self, Selection};

pub(super) type Params = QueryParams<HashMap<String, String>>;

pub(super) fn param<'a>(params: &'a HashMap<String, String>, names: &[&str]) -> Option<&'a str> {
    names.iter().find_map(|n| params.get(*n)).map(String::as_str)
}

pub(super) fn int_param(params: &HashMap<String, String>, names: &[&str]) -> Result<Option<i64>, ConnectError> {
    param(params, names)
        .map(|v| {
            v.trim()
                .parse::<i64>()
                .map_err(|_| ConnectError::invalid(format!("{}={v:?} is not an integer", names[0])))
        })
        .transpose()
}

/// `query`, `from`, `until` and `maxNodes` of the HTTP endpoints.
pub(super) fn http_flamegraph(
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

pub(super) async fn render(State(api): Shared, headers: HeaderMap, QueryParams(params): Params) -> Response {
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

pub(super) async fn pprof_download(State(api): Shared, headers: HeaderMap, QueryParams(params): Params) -> Response {
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
