//! Metric points -> request bodies: remote write 1.0 (`prometheus.WriteRequest`) or 2.0
//! (`io.prometheus.write.v2.Request`), protobuf in snappy's block format.

use std::collections::HashMap;

use flamepipe_core::Labels;
use flamepipe_core::metric::MetricPoint;
use prost::Message;
use serde::Deserialize;

use crate::proto::{Label, Sample, TimeSeries, WriteRequest, v2};

/// Which message the exporter sends, named as Prometheus' own `protobuf_message` setting.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum ProtobufMessage {
    /// Remote write 1.0: every receiver takes it.
    #[default]
    #[serde(rename = "prometheus.WriteRequest")]
    V1,
    /// Remote write 2.0: interned strings, counter metadata and start times. Only for
    /// receivers that speak it; answers are checked for the `Written` headers.
    #[serde(rename = "io.prometheus.write.v2.Request")]
    V2,
}

impl ProtobufMessage {
    pub fn content_type(self) -> &'static str {
        match self {
            ProtobufMessage::V1 => "application/x-protobuf",
            ProtobufMessage::V2 => "application/x-protobuf;proto=io.prometheus.write.v2.Request",
        }
    }

    pub fn version_header(self) -> &'static str {
        match self {
            ProtobufMessage::V1 => "0.1.0",
            ProtobufMessage::V2 => "2.0.0",
        }
    }
}

/// One series of a request: labels sorted (`__name__` among them), samples in time order, and
/// when its counter started (remote write 2.0 sends it).
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub labels: Vec<Label>,
    pub samples: Vec<Sample>,
    pub start_ms: i64,
}

/// The series of a batch's points, samples in the order the points came, which is time order
/// per series.
pub fn series(points: &[MetricPoint]) -> Vec<Series> {
    let mut series: Vec<Series> = Vec::new();
    let mut index: HashMap<(&str, &Labels), usize> = HashMap::new();
    for point in points {
        let at = *index.entry((&point.name, &point.labels)).or_insert_with(|| {
            let mut labels: Vec<Label> = point
                .labels
                .iter()
                .map(|(name, value)| Label {
                    name: name.to_string(),
                    value: value.to_string(),
                })
                .collect();
            labels.push(Label {
                name: "__name__".to_string(),
                value: point.name.to_string(),
            });
            labels.sort_by(|a, b| a.name.cmp(&b.name));
            series.push(Series {
                labels,
                samples: Vec::new(),
                start_ms: point.start_ms,
            });
            series.len() - 1
        });
        series[at].samples.push(Sample {
            value: point.value,
            timestamp: point.timestamp_ms,
        });
    }
    series
}

/// Samples in `series`.
pub fn sample_count(series: &[Series]) -> usize {
    series.iter().map(|s| s.samples.len()).sum()
}

/// The request body for `series`.
pub fn encode(series: &[Series], message: ProtobufMessage) -> Vec<u8> {
    let bytes = match message {
        ProtobufMessage::V1 => WriteRequest {
            timeseries: series
                .iter()
                .map(|s| TimeSeries {
                    labels: s.labels.clone(),
                    samples: s.samples.clone(),
                })
                .collect(),
        }
        .encode_to_vec(),
        ProtobufMessage::V2 => v2_request(series).encode_to_vec(),
    };
    snap::raw::Encoder::new().compress_vec(&bytes).unwrap_or_default()
}

fn v2_request(series: &[Series]) -> v2::Request {
    let mut symbols = vec![String::new()];
    let mut refs: HashMap<String, u32> = HashMap::from([(String::new(), 0)]);
    let mut symbol = |s: &str| -> u32 {
        if let Some(&r) = refs.get(s) {
            return r;
        }
        let r = symbols.len() as u32;
        symbols.push(s.to_string());
        refs.insert(s.to_string(), r);
        r
    };
    let timeseries = series
        .iter()
        .map(|s| {
            let name = s.labels.iter().find(|l| l.name == "__name__").map_or("", |l| &l.value);
            let unit = if name.ends_with("_seconds_total") {
                "seconds"
            } else if name.ends_with("_bytes_total") {
                "bytes"
            } else {
                ""
            };
            v2::TimeSeries {
                labels_refs: s
                    .labels
                    .iter()
                    .flat_map(|l| [symbol(&l.name), symbol(&l.value)])
                    .collect(),
                samples: s.samples.clone(),
                metadata: Some(v2::Metadata {
                    r#type: v2::MetricType::Counter as i32,
                    help_ref: 0,
                    unit_ref: symbol(unit),
                }),
                created_timestamp: s.start_ms,
            }
        })
        .collect();
    v2::Request { symbols, timeseries }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn point(name: &str, service: &str, t: i64, v: f64) -> MetricPoint {
        MetricPoint {
            name: Arc::from(name),
            labels: Labels::from_iter([("service_name", service), ("Zone", "a")]),
            start_ms: 7,
            timestamp_ms: t,
            value: v,
        }
    }

    fn decoded_v1(body: &[u8]) -> WriteRequest {
        let raw = snap::raw::Decoder::new().decompress_vec(body).unwrap();
        WriteRequest::decode(raw.as_slice()).unwrap()
    }

    #[test]
    fn series_have_sorted_labels_and_samples_in_order() {
        let series = series(&[
            point("x_total", "a", 1, 1.0),
            point("x_total", "b", 1, 5.0),
            point("x_total", "a", 2, 3.0),
        ]);
        assert_eq!(series.len(), 2);
        let names: Vec<_> = series[0].labels.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(
            names,
            ["Zone", "__name__", "service_name"],
            "sorted by bytes, as Prometheus wants"
        );
        assert_eq!(
            series[0].samples,
            [
                Sample {
                    value: 1.0,
                    timestamp: 1
                },
                Sample {
                    value: 3.0,
                    timestamp: 2
                }
            ]
        );
        let request = decoded_v1(&encode(&series, ProtobufMessage::V1));
        assert_eq!(request.timeseries.len(), 2);
        assert_eq!(request.timeseries[1].samples, series[1].samples);
    }

    #[test]
    fn remote_write_2_interns_strings_and_says_counter() {
        let series = series(&[
            point("x_seconds_total", "a", 1, 1.0),
            point("x_seconds_total", "b", 1, 2.0),
        ]);
        let body = encode(&series, ProtobufMessage::V2);
        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        let request = v2::Request::decode(raw.as_slice()).unwrap();
        assert_eq!(request.symbols[0], "", "index 0 is the empty string");
        let labels = |ts: &v2::TimeSeries| -> Vec<(String, String)> {
            ts.labels_refs
                .chunks(2)
                .map(|p| {
                    (
                        request.symbols[p[0] as usize].clone(),
                        request.symbols[p[1] as usize].clone(),
                    )
                })
                .collect()
        };
        assert_eq!(
            labels(&request.timeseries[1]),
            [
                ("Zone".to_string(), "a".to_string()),
                ("__name__".to_string(), "x_seconds_total".to_string()),
                ("service_name".to_string(), "b".to_string())
            ]
        );
        let unique: std::collections::HashSet<_> = request.symbols.iter().collect();
        assert_eq!(unique.len(), request.symbols.len(), "each string once");
        let metadata = request.timeseries[0].metadata.as_ref().unwrap();
        assert_eq!(metadata.r#type, v2::MetricType::Counter as i32);
        assert_eq!(request.symbols[metadata.unit_ref as usize], "seconds");
        assert_eq!(request.timeseries[0].created_timestamp, 7);
    }
}
