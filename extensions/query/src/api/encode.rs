//! Engine results in the query API's wire forms, shared by the unary methods, the streams and
//! the plain-HTTP endpoints: flame graphs, series and stream events as messages
//! ([`messages`](crate::messages)), a merged pprof profile as a Connect proto answer or in
//! protobuf JSON, and Pyroscope's flamebearer JSON for `/pyroscope/render`.

use std::time::Duration;

use flamepipe_core::ProfileType;
use flamepipe_core::formats::pprof::proto;
use serde::Serialize;

use crate::engine::merge::Series;
use crate::engine::{Diagnostics, Event, FlameGraph, Plan, Progress};
use crate::messages as msg;

/// A pprof profile as a Connect proto response (JSON goes through [`pprof_json`]).
pub(super) struct PprofProto(pub(super) proto::Profile);

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
pub(super) fn pprof_json(p: &proto::Profile) -> serde_json::Value {
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

pub(super) fn flamegraph_message(graph: FlameGraph) -> msg::FlameGraph {
    msg::FlameGraph {
        names: graph.names,
        levels: graph.levels.into_iter().map(|values| msg::Level { values }).collect(),
        total: graph.total,
        max_self: graph.max_self,
    }
}

pub(super) fn series_messages(series: Vec<Series>) -> Vec<msg::Series> {
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

fn plan_message(p: Plan) -> msg::QueryPlan {
    msg::QueryPlan {
        blocks_total: p.blocks_total,
        datasets_total: p.datasets_total,
        bytes_total: p.bytes_total,
        complete: p.complete,
    }
}

fn progress_message(p: Progress) -> msg::QueryProgress {
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

pub(super) fn flamegraph_event(event: Event<FlameGraph>) -> msg::SelectMergeStacktracesStreamResponse {
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

pub(super) fn series_event(event: Event<Vec<Series>>) -> msg::SelectSeriesStreamResponse {
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

/// Pyroscope's flamebearer JSON (what `/pyroscope/render` answers), with a dense timeline.
pub(super) fn flamebearer(
    profile_type: &ProfileType,
    graph: FlameGraph,
    series: &[Series],
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
