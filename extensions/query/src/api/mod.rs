//! The query API (docs/query-api.md): the state its handlers share, [`mount`], and the route
//! table ([`routes`], whose paths [`paths`] lists for config validation).
//!
//! Each handler reads the tenant, takes one of `max_concurrent_queries` slots (429 /
//! `resource_exhausted` when none is free), turns the request into an engine query
//! ([`params`](crate::params)) and encodes the answer. Streaming handlers hand the engine's
//! event channel to the response body: when the client disconnects, hyper drops the body,
//! the channel closes and the engine stops reading. The blocks a query skipped go in a
//! response header on unary answers ([`Skipped`]) and in the result's diagnostics on streams.
//!
//! - [`unary`]: the Connect unary methods of Pyroscope's `querier.v1.QuerierService`.
//! - [`streams`]: the Connect server streams (`querier.v1.QuerierStreamService`) and the
//!   NDJSON streams (`/api/v1/stream/...`).
//! - [`http`]: the plain-HTTP endpoints `/pyroscope/render` and `/api/v1/pprof`.
//! - [`encode`]: engine results as messages and events, flamebearer JSON, pprof as JSON.

mod encode;
mod http;
mod streams;
mod unary;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use axum::routing::{MethodRouter, get, post};
use flamepipe_core::component::{BuildContext, BuildError, HttpMount};
use flamepipe_core::tenant::tenant;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use crate::QueryConfig;
use crate::connect::{Code, ConnectError};
use crate::engine::run::Accumulator;
use crate::engine::{EngineOptions, Query, QueryEngine, QueryError, SkippedBlock};
use crate::metrics::QueryMetrics;
use crate::params;

const QUERIER: &str = "/querier.v1.QuerierService/";
const STREAMER: &str = "/querier.v1.QuerierStreamService/";

struct Api {
    engine: Arc<QueryEngine>,
    config: QueryConfig,
    metrics: QueryMetrics,
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
        metrics: QueryMetrics::new(&ctx.telemetry),
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
fn routes() -> Vec<(String, MethodRouter<Arc<Api>>)> {
    let mut routes = vec![
        (format!("{QUERIER}ProfileTypes"), post(unary::profile_types)),
        (format!("{QUERIER}LabelNames"), post(unary::label_names)),
        (format!("{QUERIER}LabelValues"), post(unary::label_values)),
        (format!("{QUERIER}Series"), post(unary::series)),
        (
            format!("{QUERIER}SelectMergeStacktraces"),
            post(unary::select_merge_stacktraces),
        ),
        (
            format!("{QUERIER}SelectMergeProfile"),
            post(unary::select_merge_profile),
        ),
        (format!("{QUERIER}SelectSeries"), post(unary::select_series)),
        (format!("{QUERIER}GetProfileStats"), post(unary::profile_stats)),
    ];
    for method in ["SelectMergeSpanProfile", "SelectHeatmap", "Diff", "AnalyzeQuery"] {
        routes.push((format!("{QUERIER}{method}"), post(unary::unimplemented)));
    }
    routes.extend([
        (
            format!("{STREAMER}SelectMergeStacktracesStream"),
            post(streams::stream_stacktraces),
        ),
        (format!("{STREAMER}SelectSeriesStream"), post(streams::stream_series)),
        ("/pyroscope/render".to_string(), get(http::render)),
        ("/api/v1/pprof".to_string(), get(http::pprof_download)),
        ("/api/v1/stream/flamegraph".to_string(), get(streams::ndjson_flamegraph)),
        ("/api/v1/stream/series".to_string(), get(streams::ndjson_series)),
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
        query: Query,
        acc: A,
        skipped: &Skipped,
    ) -> Result<A::Output, ConnectError> {
        let span = tracing::info_span!(
            target: "flamepipe",
            "query",
            component = "query",
            tenant = %query.tenant,
            blocks = tracing::field::Empty,
            blocks_read = tracing::field::Empty,
            profiles = tracing::field::Empty,
        );
        let (output, diagnostics) = self
            .engine
            .execute(query, acc)
            .instrument(span.clone())
            .await
            .map_err(engine_error)?;
        span.record("blocks", diagnostics.blocks.join(",").as_str());
        span.record("blocks_read", diagnostics.blocks_read);
        span.record("profiles", diagnostics.profiles_merged);
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
        self.metrics.answered(method, outcome);
    }
}

fn engine_error(e: QueryError) -> ConnectError {
    match e {
        QueryError::Canceled => ConnectError::new(Code::Canceled, e.to_string()),
        QueryError::ShuttingDown => ConnectError::new(Code::Unavailable, e.to_string()),
        QueryError::Block(_) | QueryError::Manifest(_) | QueryError::Worker(_) => {
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
