//! Streaming queries: the Connect server streams of `querier.v1.QuerierStreamService`
//! (`SelectMergeStacktracesStream`, `SelectSeriesStream`, in 5-byte envelopes) and the NDJSON
//! streams `/api/v1/stream/flamegraph` and `/api/v1/stream/series` (one JSON event a line).
//!
//! Both carry the engine's plan / snapshot / result events, framed by [`Framing`]; snapshots
//! come at most every `snapshot_interval`, or the interval a request asks for (the
//! `flamepipe-snapshot-interval` header, the `snapshotInterval` parameter). A request refused
//! before any event is a `200` with only an end-stream message (Connect) or an error status
//! with a line of text (NDJSON); an error later is the stream's last message.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query as QueryParams, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use super::encode::{flamegraph_event, series_event};
use super::http::{Params, http_flamegraph, int_param, param};
use super::unary::{flamegraph_request, series_merge, series_request};
use super::{Api, Shared, engine_error};
use crate::connect::{self, Codec, ConnectError};
use crate::engine::merge::FlameGraphMerge;
use crate::engine::run::Accumulator;
use crate::engine::{Event, Query, QueryError};
use crate::messages as msg;
use crate::params;

/// Overrides `query.snapshot_interval` for one streaming request.
const SNAPSHOT_HEADER: &str = "flamepipe-snapshot-interval";
const MIN_SNAPSHOT_INTERVAL: Duration = Duration::from_millis(10);
const MAX_SNAPSHOT_INTERVAL: Duration = Duration::from_secs(60);

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
    prepared: Result<(Query, A, Duration), ConnectError>,
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

pub(super) async fn stream_stacktraces(State(api): Shared, headers: HeaderMap, body: Bytes) -> Response {
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

pub(super) async fn stream_series(State(api): Shared, headers: HeaderMap, body: Bytes) -> Response {
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

pub(super) async fn ndjson_flamegraph(State(api): Shared, headers: HeaderMap, QueryParams(params): Params) -> Response {
    let prepared = http_flamegraph(&api, &headers, &params).and_then(|(selection, max_nodes)| {
        let interval = snapshot_interval(&api, param(&params, &["snapshotInterval", "snapshot_interval"]))?;
        Ok((selection.query, FlameGraphMerge::new(max_nodes), interval))
    });
    stream_response(&api, "stream/flamegraph", Framing::Ndjson, prepared, flamegraph_event)
}

pub(super) async fn ndjson_series(State(api): Shared, headers: HeaderMap, QueryParams(params): Params) -> Response {
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
