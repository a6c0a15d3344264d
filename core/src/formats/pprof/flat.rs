//! A single-pass pprof decoder into flat columns, borrowing strings from the input.
//!
//! Decoding pprof with prost allocates a `Vec` per sample (location ids, values, labels) and
//! per location (lines), and a `String` per string table entry; for the typical profile that
//! is most of the decode time. This reader walks the message once and appends every repeated
//! field to one shared column, so a profile costs a handful of allocations. Field numbers are
//! those of `proto.rs` (the published profile.proto); `tests.rs` checks that it agrees with
//! the prost decoder on every fixture and on arbitrary bytes.
//!
//! Both packed and unpacked encodings of repeated scalars are accepted, as protobuf requires;
//! unknown fields are skipped. Unlike prost, string table entries that are not UTF-8 are
//! accepted, with U+FFFD in place of invalid bytes, as `go tool pprof` reads such files.

use std::borrow::Cow;

use prost::bytes::Buf;
use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};

use super::proto;
use crate::validate::lossy_utf8;

/// Why bytes are not a pprof message.
#[derive(Debug, thiserror::Error)]
pub enum FlatError {
    #[error(transparent)]
    Protobuf(#[from] prost::DecodeError),
    #[error("field {field} has wire type {wire_type:?}, expected {expected:?}")]
    WireType {
        field: &'static str,
        wire_type: WireType,
        expected: &'static str,
    },
    #[error("length-delimited field runs past the end of its message")]
    Truncated,
    #[error("more than {0} samples")]
    TooManySamples(usize),
}

type Result<T> = std::result::Result<T, FlatError>;

/// A location with its lines at `lines[lines_start..lines_start + lines_len]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlatLocation {
    pub id: u64,
    pub mapping_id: u64,
    pub address: u64,
    pub lines_start: u32,
    pub lines_len: u32,
}

/// A sample's ranges in the shared columns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlatSample {
    pub locations_start: u32,
    pub locations_len: u32,
    pub values_start: u32,
    pub values_len: u32,
    pub labels_start: u32,
    pub labels_len: u32,
}

#[derive(Debug, Default)]
pub struct FlatProfile<'a> {
    pub sample_types: Vec<proto::ValueType>,
    pub samples: Vec<FlatSample>,
    pub sample_locations: Vec<u64>,
    pub sample_values: Vec<i64>,
    pub sample_labels: Vec<proto::Label>,
    pub mappings: Vec<proto::Mapping>,
    pub locations: Vec<FlatLocation>,
    pub lines: Vec<proto::Line>,
    pub functions: Vec<proto::Function>,
    /// The string table; entries that are not UTF-8 are converted with U+FFFD replacements.
    pub strings: Vec<Cow<'a, str>>,
    pub time_nanos: i64,
    pub duration_nanos: i64,
    pub period_type: Option<proto::ValueType>,
    pub period: i64,
}

impl FlatProfile<'_> {
    pub fn sample_locations(&self, s: &FlatSample) -> &[u64] {
        &self.sample_locations[s.locations_start as usize..(s.locations_start + s.locations_len) as usize]
    }

    pub fn sample_values(&self, s: &FlatSample) -> &[i64] {
        &self.sample_values[s.values_start as usize..(s.values_start + s.values_len) as usize]
    }

    pub fn sample_labels(&self, s: &FlatSample) -> &[proto::Label] {
        &self.sample_labels[s.labels_start as usize..(s.labels_start + s.labels_len) as usize]
    }

    pub fn location_lines(&self, l: &FlatLocation) -> &[proto::Line] {
        &self.lines[l.lines_start as usize..(l.lines_start + l.lines_len) as usize]
    }
}

/// Splits off a length-delimited field's bytes.
fn delimited<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8]> {
    let len = decode_varint(buf)?;
    let len = usize::try_from(len).map_err(|_| FlatError::Truncated)?;
    if len > buf.len() {
        return Err(FlatError::Truncated);
    }
    let (head, tail) = buf.split_at(len);
    *buf = tail;
    Ok(head)
}

fn varint(buf: &mut &[u8], wire_type: WireType, field: &'static str) -> Result<u64> {
    if wire_type != WireType::Varint {
        return Err(FlatError::WireType {
            field,
            wire_type,
            expected: "varint",
        });
    }
    Ok(decode_varint(buf)?)
}

/// Appends a repeated varint field, packed or not.
fn repeated_varint(
    buf: &mut &[u8],
    wire_type: WireType,
    field: &'static str,
    out: &mut impl Extend<u64>,
) -> Result<()> {
    match wire_type {
        WireType::Varint => out.extend(std::iter::once(decode_varint(buf)?)),
        WireType::LengthDelimited => {
            let mut packed = delimited(buf)?;
            while packed.has_remaining() {
                out.extend(std::iter::once(decode_varint(&mut packed)?));
            }
        }
        _ => {
            return Err(FlatError::WireType {
                field,
                wire_type,
                expected: "varint or packed",
            });
        }
    }
    Ok(())
}

fn message<'a>(buf: &mut &'a [u8], wire_type: WireType, field: &'static str) -> Result<&'a [u8]> {
    if wire_type != WireType::LengthDelimited {
        return Err(FlatError::WireType {
            field,
            wire_type,
            expected: "length-delimited",
        });
    }
    delimited(buf)
}

fn skip(buf: &mut &[u8], wire_type: WireType, tag: u32) -> Result<()> {
    Ok(skip_field(wire_type, tag, buf, DecodeContext::default())?)
}

/// Decodes a raw (already inflated) pprof message of at most `max_samples` samples; the
/// limit is checked as samples arrive, so an oversized profile is refused before it is built.
pub fn decode(mut buf: &[u8], max_samples: usize) -> Result<FlatProfile<'_>> {
    let mut p = FlatProfile::default();
    while buf.has_remaining() {
        let (tag, wt) = decode_key(&mut buf)?;
        match tag {
            1 => p.sample_types.push(value_type(message(&mut buf, wt, "sample_type")?)?),
            2 if p.samples.len() >= max_samples => return Err(FlatError::TooManySamples(max_samples)),
            2 => sample(&mut p, message(&mut buf, wt, "sample")?)?,
            3 => p.mappings.push(mapping(message(&mut buf, wt, "mapping")?)?),
            4 => location(&mut p, message(&mut buf, wt, "location")?)?,
            5 => p.functions.push(function(message(&mut buf, wt, "function")?)?),
            6 => {
                // Real profilers write non-UTF-8 names (Latin-1 paths, raw C++ symbols) and
                // `go tool pprof` reads them; they are kept with U+FFFD for invalid bytes.
                p.strings.push(lossy_utf8(message(&mut buf, wt, "string_table")?));
            }
            9 => p.time_nanos = varint(&mut buf, wt, "time_nanos")? as i64,
            10 => p.duration_nanos = varint(&mut buf, wt, "duration_nanos")? as i64,
            // A message field given twice merges, as protobuf (and prost) defines.
            11 => {
                p.period_type = Some(merge_value_type(
                    p.period_type.unwrap_or_default(),
                    message(&mut buf, wt, "period_type")?,
                )?)
            }
            // Known fields flamepipe does not use: skipped, but their wire types are checked.
            7 | 8 | 14 => {
                varint(&mut buf, wt, "profile scalar")?;
            }
            13 => repeated_varint(&mut buf, wt, "comment", &mut Discard)?,
            12 => p.period = varint(&mut buf, wt, "period")? as i64,
            _ => skip(&mut buf, wt, tag)?,
        }
    }
    Ok(p)
}

fn value_type(buf: &[u8]) -> Result<proto::ValueType> {
    merge_value_type(proto::ValueType::default(), buf)
}

fn merge_value_type(mut vt: proto::ValueType, mut buf: &[u8]) -> Result<proto::ValueType> {
    while buf.has_remaining() {
        let (tag, wt) = decode_key(&mut buf)?;
        match tag {
            1 => vt.r#type = varint(&mut buf, wt, "value_type.type")? as i64,
            2 => vt.unit = varint(&mut buf, wt, "value_type.unit")? as i64,
            _ => skip(&mut buf, wt, tag)?,
        }
    }
    Ok(vt)
}

/// `Extend` sink for values that are checked and dropped.
struct Discard;

impl Extend<u64> for Discard {
    fn extend<I: IntoIterator<Item = u64>>(&mut self, iter: I) {
        iter.into_iter().for_each(drop);
    }
}

/// `Extend` adapter appending varints as `i64` (protobuf `int64` is the varint reinterpreted).
struct AsI64<'v>(&'v mut Vec<i64>);

impl Extend<u64> for AsI64<'_> {
    fn extend<I: IntoIterator<Item = u64>>(&mut self, iter: I) {
        self.0.extend(iter.into_iter().map(|v| v as i64));
    }
}

fn sample(p: &mut FlatProfile<'_>, mut buf: &[u8]) -> Result<()> {
    let mut s = FlatSample {
        locations_start: p.sample_locations.len() as u32,
        values_start: p.sample_values.len() as u32,
        labels_start: p.sample_labels.len() as u32,
        ..FlatSample::default()
    };
    while buf.has_remaining() {
        let (tag, wt) = decode_key(&mut buf)?;
        match tag {
            1 => repeated_varint(&mut buf, wt, "sample.location_id", &mut p.sample_locations)?,
            2 => repeated_varint(&mut buf, wt, "sample.value", &mut AsI64(&mut p.sample_values))?,
            3 => p.sample_labels.push(label(message(&mut buf, wt, "sample.label")?)?),
            _ => skip(&mut buf, wt, tag)?,
        }
    }
    s.locations_len = p.sample_locations.len() as u32 - s.locations_start;
    s.values_len = p.sample_values.len() as u32 - s.values_start;
    s.labels_len = p.sample_labels.len() as u32 - s.labels_start;
    p.samples.push(s);
    Ok(())
}

fn label(mut buf: &[u8]) -> Result<proto::Label> {
    let mut l = proto::Label::default();
    while buf.has_remaining() {
        let (tag, wt) = decode_key(&mut buf)?;
        match tag {
            1 => l.key = varint(&mut buf, wt, "label.key")? as i64,
            2 => l.str = varint(&mut buf, wt, "label.str")? as i64,
            3 => l.num = varint(&mut buf, wt, "label.num")? as i64,
            4 => l.num_unit = varint(&mut buf, wt, "label.num_unit")? as i64,
            _ => skip(&mut buf, wt, tag)?,
        }
    }
    Ok(l)
}

fn mapping(mut buf: &[u8]) -> Result<proto::Mapping> {
    let mut m = proto::Mapping::default();
    while buf.has_remaining() {
        let (tag, wt) = decode_key(&mut buf)?;
        match tag {
            1 => m.id = varint(&mut buf, wt, "mapping.id")?,
            2 => m.memory_start = varint(&mut buf, wt, "mapping.memory_start")?,
            3 => m.memory_limit = varint(&mut buf, wt, "mapping.memory_limit")?,
            4 => m.file_offset = varint(&mut buf, wt, "mapping.file_offset")?,
            5 => m.filename = varint(&mut buf, wt, "mapping.filename")? as i64,
            6 => m.build_id = varint(&mut buf, wt, "mapping.build_id")? as i64,
            7 => m.has_functions = varint(&mut buf, wt, "mapping.has_functions")? != 0,
            8 => m.has_filenames = varint(&mut buf, wt, "mapping.has_filenames")? != 0,
            9 => m.has_line_numbers = varint(&mut buf, wt, "mapping.has_line_numbers")? != 0,
            10 => m.has_inline_frames = varint(&mut buf, wt, "mapping.has_inline_frames")? != 0,
            _ => skip(&mut buf, wt, tag)?,
        }
    }
    Ok(m)
}

fn location(p: &mut FlatProfile<'_>, mut buf: &[u8]) -> Result<()> {
    let mut l = FlatLocation {
        lines_start: p.lines.len() as u32,
        ..FlatLocation::default()
    };
    while buf.has_remaining() {
        let (tag, wt) = decode_key(&mut buf)?;
        match tag {
            1 => l.id = varint(&mut buf, wt, "location.id")?,
            2 => l.mapping_id = varint(&mut buf, wt, "location.mapping_id")?,
            3 => l.address = varint(&mut buf, wt, "location.address")?,
            4 => p.lines.push(line(message(&mut buf, wt, "location.line")?)?),
            5 => {
                varint(&mut buf, wt, "location.is_folded")?;
            }
            _ => skip(&mut buf, wt, tag)?,
        }
    }
    l.lines_len = p.lines.len() as u32 - l.lines_start;
    p.locations.push(l);
    Ok(())
}

fn line(mut buf: &[u8]) -> Result<proto::Line> {
    let mut l = proto::Line::default();
    while buf.has_remaining() {
        let (tag, wt) = decode_key(&mut buf)?;
        match tag {
            1 => l.function_id = varint(&mut buf, wt, "line.function_id")?,
            2 => l.line = varint(&mut buf, wt, "line.line")? as i64,
            3 => l.column = varint(&mut buf, wt, "line.column")? as i64,
            _ => skip(&mut buf, wt, tag)?,
        }
    }
    Ok(l)
}

fn function(mut buf: &[u8]) -> Result<proto::Function> {
    let mut f = proto::Function::default();
    while buf.has_remaining() {
        let (tag, wt) = decode_key(&mut buf)?;
        match tag {
            1 => f.id = varint(&mut buf, wt, "function.id")?,
            2 => f.name = varint(&mut buf, wt, "function.name")? as i64,
            3 => f.system_name = varint(&mut buf, wt, "function.system_name")? as i64,
            4 => f.filename = varint(&mut buf, wt, "function.filename")? as i64,
            5 => f.start_line = varint(&mut buf, wt, "function.start_line")? as i64,
            _ => skip(&mut buf, wt, tag)?,
        }
    }
    Ok(f)
}
