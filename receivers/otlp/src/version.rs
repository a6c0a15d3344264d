//! Detects `ExportProfilesServiceRequest`s written with an older `profiles/v1development` layout.
//!
//! The `v1development` package renumbered its fields several times (opentelemetry-proto v1.5 → v1.6/v1.7 →
//! v1.8 → v1.9 → v1.10; v1.11 is identical to v1.10 on the wire) without changing the package name, so a
//! v1.10 decoder reads many older payloads without any error and gets garbage: a v1.8 `Sample.values`
//! (field 2) becomes v1.10 `Sample.attribute_indices`, a v1.8 `Sample.link_index` (field 4) becomes v1.10
//! `Sample.values`, and so on.
//!
//! [`check`] scans the wire format (tags, wire types and lengths; no allocation, no decoding of
//! strings) of the request, its `ResourceProfiles`, `ScopeProfiles`, `Profile`s, `Sample`s and
//! `Profile.sample_type`, and of the request's `ProfilesDictionary` with its mapping, location,
//! attribute and stack tables. Every field it meets is compared with each layout's schema (field
//! number → type): a field is *consistent* with a layout if that layout has the field with a type that
//! can produce the seen wire type (a packed `fixed64` list must be a multiple of 8 bytes long, a packed
//! varint list must end on a final varint byte), and a non-repeated field must not occur twice in one
//! message. The candidate set starts as {v1.5, v1.6, v1.7, v1.8, v1.9, v1.10} and every observation
//! narrows it; an observation consistent with no candidate left (an unknown or future field, junk) is
//! ignored. If v1.10 drops out of the set the request is rejected with the remaining candidates and the
//! first observation that ruled v1.10 out.
//!
//! Rules beyond the field tables, all about `Sample` (v1.9 differs from v1.10 only there):
//!
//! - A `Sample` with field 2 but neither field 4 nor 5 is the v1.8/v1.9 `values` with no timestamps:
//!   a v1.10 `Sample` must have `values` (4) or `timestamps_unix_nano` (5).
//! - A `Sample` with a packed field 2, no field 4, and as many timestamps as field 2 has elements
//!   (v1.8/v1.9: values and timestamps pair up) whose field 2 holds an index beyond the dictionary's
//!   `attribute_table` or holds the same number twice is v1.8/v1.9 `values`, not v1.10
//!   `attribute_indices`.
//! - Every protobuf encoder we know packs repeated scalars either always (prost, Go, Java, C++, ...) or
//!   never. If any `Sample` field of the request is length-delimited (so the sender packs), a varint
//!   field 4 is the v1.8/v1.9 `link_index`, not one unpacked v1.10 `values` element (and a varint field
//!   2 is the v1.5–v1.7 `locations_length`).
//!
//! What stays undetectable: a v1.9 (or v1.8 without the v1.8-only `Profile`/`ValueType` fields) sample
//! with `values` and matching timestamps but no attributes and no link, whose values are all distinct
//! and valid attribute indices, is also a valid v1.10 sample (attributes plus timestamps), byte for byte.
//!
//! A buffer whose top level is not well-formed protobuf (e.g. truncated) passes: the decoder reports it.

/// The proto version a request was written with, when it is not the one we read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct VersionMismatch {
    /// The older layouts the request is consistent with, e.g. `"v1.7"` or `"v1.8 or v1.9"`.
    pub detected: &'static str,
    /// A message for the sender, naming the field that gave the old layout away.
    pub message: String,
}

/// Returns `Err` if `request` (an encoded `ExportProfilesServiceRequest`) uses a `profiles/v1development`
/// layout older than opentelemetry-proto v1.10, which a v1.10 decoder would misread or reject with a
/// confusing error.
///
/// Returns `Ok(())` for v1.10/v1.11 requests, for requests that are not well-formed protobuf (the decoder
/// reports those) and for requests whose layout cannot be told apart from v1.10.
pub fn check(request: &[u8]) -> Result<(), VersionMismatch> {
    let mut scan = Scan::new();
    match scan.request(request) {
        Ok(()) => scan.finish(),
        Err(Stop::Decided) => {}
        Err(Stop::Malformed) => return Ok(()),
    }
    if scan.mask & V1_10 != 0 {
        return Ok(());
    }
    let detected = DETECTED[usize::from(scan.mask & OLD)];
    let detail = scan
        .reason
        .map_or_else(String::new, |reason| format!(" ({})", reason.describe(scan.mask)));
    Err(VersionMismatch {
        detected,
        message: format!(
            "OTLP profiles request uses the profiles/v1development layout of opentelemetry-proto {detected}{detail}; \
             flamepipe reads v1.10 and v1.11: upgrade the sender's OTLP exporter"
        ),
    })
}

/// Whether a mismatch is one [`upgrade_samples`] repairs: the request is v1.9 (or a v1.8 request
/// that uses no field v1.8 has and v1.9 lacks), which differs from v1.10 only in the field
/// numbers of `Sample`.
pub fn is_repairable(mismatch: &VersionMismatch) -> bool {
    matches!(mismatch.detected, "v1.9" | "v1.8 or v1.9")
}

/// Renumbers every `Sample`'s fields from the v1.8/v1.9 layout (2 values, 3 attribute_indices,
/// 4 link_index) to v1.10's (4 values, 2 attribute_indices, 3 link_index), in place: the tags
/// of fields 2 to 4 are one byte in both layouts, so no length changes. The OTel Python
/// profiling SDK (0.63b4, the only release) sends v1.9. Returns false if the buffer is not
/// well-formed, in which case it is left as it was.
pub fn upgrade_samples(request: &mut [u8]) -> bool {
    let mut tags = Vec::new();
    if sample_tags(request, &[1, 2, 2, 2], 0, &mut tags).is_err() {
        return false;
    }
    for at in tags {
        let tag = request[at];
        let new = match tag >> 3 {
            2 => 4,
            3 => 2,
            4 => 3,
            _ => continue,
        };
        request[at] = (new << 3) | (tag & 7);
    }
    true
}

/// Collects the offsets (from the request's start) of the one-byte tags of fields 2 to 4 of every
/// `Sample`, found by following `path` (resource_profiles 1 -> scope_profiles 2 -> profiles 2
/// -> samples 2).
fn sample_tags(buf: &[u8], path: &[u32], base: usize, out: &mut Vec<usize>) -> Result<(), Stop> {
    let mut fields = Fields::new(buf);
    loop {
        let tag_at = fields.pos;
        let Some((number, wire, payload)) = fields.next_field()? else {
            return Ok(());
        };
        let payload_at = base + (payload.as_ptr() as usize - buf.as_ptr() as usize);
        match path.split_first() {
            Some((&next, rest)) if number == next && wire == LEN => sample_tags(payload, rest, payload_at, out)?,
            None if (2..=4).contains(&number) => out.push(base + tag_at),
            _ => {}
        }
    }
}

// Layouts, one bit each. v1.11 is v1.10 on the wire.
const V1_5: u8 = 1 << 0;
const V1_6: u8 = 1 << 1;
const V1_7: u8 = 1 << 2;
const V1_8: u8 = 1 << 3;
const V1_9: u8 = 1 << 4;
const V1_10: u8 = 1 << 5;
const OLD: u8 = V1_5 | V1_6 | V1_7 | V1_8 | V1_9;
const ALL: u8 = OLD | V1_10;

/// `VersionMismatch::detected` for every set of old layouts (indexed by the `OLD` bits).
const DETECTED: [&str; 32] = [
    "an older version",
    "v1.5",
    "v1.6",
    "v1.5 or v1.6",
    "v1.7",
    "v1.5 or v1.7",
    "v1.6 or v1.7",
    "v1.5 to v1.7",
    "v1.8",
    "v1.5 or v1.8",
    "v1.6 or v1.8",
    "v1.5, v1.6 or v1.8",
    "v1.7 or v1.8",
    "v1.5, v1.7 or v1.8",
    "v1.6 to v1.8",
    "v1.5 to v1.8",
    "v1.9",
    "v1.5 or v1.9",
    "v1.6 or v1.9",
    "v1.5, v1.6 or v1.9",
    "v1.7 or v1.9",
    "v1.5, v1.7 or v1.9",
    "v1.6, v1.7 or v1.9",
    "v1.5, v1.6, v1.7 or v1.9",
    "v1.8 or v1.9",
    "v1.5, v1.8 or v1.9",
    "v1.6, v1.8 or v1.9",
    "v1.5, v1.6, v1.8 or v1.9",
    "v1.7 to v1.9",
    "v1.5, v1.7, v1.8 or v1.9",
    "v1.6 to v1.9",
    "v1.5 to v1.9",
];

// Wire types.
const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;
const I32: u8 = 5;

/// What a field is in one layout, as far as the wire format can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A single int32/int64/uint32/uint64/bool/enum.
    Varint,
    /// A single fixed64.
    Fixed64,
    /// A single string or bytes.
    Bytes,
    /// A single message.
    Message,
    /// A repeated message.
    Messages,
    /// A repeated string.
    Strings,
    /// A repeated int32/int64/uint64: packed (LEN) or not (VARINT).
    PackedVarint,
    /// A repeated fixed64: packed (LEN, a multiple of 8 bytes) or not (I64).
    PackedFixed64,
}

impl Kind {
    fn accepts(self, wire: u8, payload: &[u8]) -> bool {
        match self {
            Kind::Varint => wire == VARINT,
            Kind::Fixed64 => wire == I64,
            Kind::Bytes | Kind::Message | Kind::Messages | Kind::Strings => wire == LEN,
            Kind::PackedVarint => wire == VARINT || (wire == LEN && payload.last().is_none_or(|b| b & 0x80 == 0)),
            Kind::PackedFixed64 => wire == I64 || (wire == LEN && payload.len() % 8 == 0),
        }
    }

    fn repeated(self) -> bool {
        matches!(
            self,
            Kind::Messages | Kind::Strings | Kind::PackedVarint | Kind::PackedFixed64
        )
    }

    fn describe(self) -> &'static str {
        match self {
            Kind::Varint => "a varint",
            Kind::Fixed64 => "a fixed64",
            Kind::Bytes => "a string/bytes",
            Kind::Message => "a message",
            Kind::Messages => "a repeated message",
            Kind::Strings => "a repeated string",
            Kind::PackedVarint => "a packed varint list",
            Kind::PackedFixed64 => "a packed fixed64 list",
        }
    }
}

struct Field {
    number: u32,
    name: &'static str,
    kind: Kind,
}

const fn f(number: u32, name: &'static str, kind: Kind) -> Field {
    Field { number, name, kind }
}

/// One message's fields in the layouts `versions`.
struct Layout {
    versions: u8,
    message: &'static str,
    fields: &'static [Field],
}

impl Layout {
    fn field(&self, number: u32) -> Option<&'static Field> {
        self.fields.iter().find(|field| field.number == number)
    }
}

use Kind::{Bytes, Fixed64, Message, Messages, PackedFixed64, PackedVarint, Strings, Varint};

const REQUEST: &[Layout] = &[
    Layout {
        versions: V1_5 | V1_6,
        message: "ExportProfilesServiceRequest",
        fields: &[f(1, "resource_profiles", Messages)],
    },
    Layout {
        versions: V1_7 | V1_8 | V1_9 | V1_10,
        message: "ExportProfilesServiceRequest",
        fields: &[f(1, "resource_profiles", Messages), f(2, "dictionary", Message)],
    },
];

const PROFILE: &[Layout] = &[
    Layout {
        versions: V1_5,
        message: "Profile",
        fields: &[
            f(1, "sample_type", Messages),
            f(2, "sample", Messages),
            f(3, "mapping_table", Messages),
            f(4, "location_table", Messages),
            f(5, "location_indices", PackedVarint),
            f(6, "function_table", Messages),
            f(7, "attribute_table", Messages),
            f(8, "attribute_units", Messages),
            f(9, "link_table", Messages),
            f(10, "string_table", Strings),
            f(11, "time_nanos", Varint),
            f(12, "duration_nanos", Varint),
            f(13, "period_type", Message),
            f(14, "period", Varint),
            f(15, "comment_strindices", PackedVarint),
            f(16, "default_sample_type_strindex", Varint),
            f(17, "profile_id", Bytes),
            f(19, "dropped_attributes_count", Varint),
            f(20, "original_payload_format", Bytes),
            f(21, "original_payload", Bytes),
            f(22, "attribute_indices", PackedVarint),
        ],
    },
    Layout {
        versions: V1_6 | V1_7,
        message: "Profile",
        fields: &[
            f(1, "sample_type", Messages),
            f(2, "sample", Messages),
            f(3, "location_indices", PackedVarint),
            f(4, "time_nanos", Varint),
            f(5, "duration_nanos", Varint),
            f(6, "period_type", Message),
            f(7, "period", Varint),
            f(8, "comment_strindices", PackedVarint),
            f(9, "default_sample_type_index", Varint),
            f(10, "profile_id", Bytes),
            f(11, "dropped_attributes_count", Varint),
            f(12, "original_payload_format", Bytes),
            f(13, "original_payload", Bytes),
            f(14, "attribute_indices", PackedVarint),
        ],
    },
    Layout {
        versions: V1_8,
        message: "Profile",
        fields: &[
            f(1, "sample_type", Message),
            f(2, "sample", Messages),
            f(3, "time_unix_nano", Fixed64),
            f(4, "duration_nano", Varint),
            f(5, "period_type", Message),
            f(6, "period", Varint),
            f(7, "comment_strindices", PackedVarint),
            f(8, "profile_id", Bytes),
            f(9, "dropped_attributes_count", Varint),
            f(10, "original_payload_format", Bytes),
            f(11, "original_payload", Bytes),
            f(12, "attribute_indices", PackedVarint),
        ],
    },
    Layout {
        versions: V1_9 | V1_10,
        message: "Profile",
        fields: &[
            f(1, "sample_type", Message),
            f(2, "samples", Messages),
            f(3, "time_unix_nano", Fixed64),
            f(4, "duration_nano", Varint),
            f(5, "period_type", Message),
            f(6, "period", Varint),
            f(7, "profile_id", Bytes),
            f(8, "dropped_attributes_count", Varint),
            f(9, "original_payload_format", Bytes),
            f(10, "original_payload", Bytes),
            f(11, "attribute_indices", PackedVarint),
        ],
    },
];

const SAMPLE: &[Layout] = &[
    Layout {
        versions: V1_5 | V1_6 | V1_7,
        message: "Sample",
        fields: &[
            f(1, "locations_start_index", Varint),
            f(2, "locations_length", Varint),
            f(3, "value", PackedVarint),
            f(4, "attribute_indices", PackedVarint),
            f(5, "link_index", Varint),
            f(6, "timestamps_unix_nano", PackedVarint),
        ],
    },
    Layout {
        versions: V1_8 | V1_9,
        message: "Sample",
        fields: &[
            f(1, "stack_index", Varint),
            f(2, "values", PackedVarint),
            f(3, "attribute_indices", PackedVarint),
            f(4, "link_index", Varint),
            f(5, "timestamps_unix_nano", PackedFixed64),
        ],
    },
    Layout {
        versions: V1_10,
        message: "Sample",
        fields: &[
            f(1, "stack_index", Varint),
            f(2, "attribute_indices", PackedVarint),
            f(3, "link_index", Varint),
            f(4, "values", PackedVarint),
            f(5, "timestamps_unix_nano", PackedFixed64),
        ],
    },
];

const VALUE_TYPE: &[Layout] = &[
    Layout {
        versions: V1_5 | V1_6 | V1_7 | V1_8,
        message: "ValueType",
        fields: &[
            f(1, "type_strindex", Varint),
            f(2, "unit_strindex", Varint),
            f(3, "aggregation_temporality", Varint),
        ],
    },
    Layout {
        versions: V1_9 | V1_10,
        message: "ValueType",
        fields: &[f(1, "type_strindex", Varint), f(2, "unit_strindex", Varint)],
    },
];

// The dictionary exists from v1.7 on (v1.6 had the tables in `ProfilesData` only, v1.5 in `Profile`).
const DICTIONARY: &[Layout] = &[
    Layout {
        versions: V1_7,
        message: "ProfilesDictionary",
        fields: &[
            f(1, "mapping_table", Messages),
            f(2, "location_table", Messages),
            f(3, "function_table", Messages),
            f(4, "link_table", Messages),
            f(5, "string_table", Strings),
            f(6, "attribute_table", Messages),
            f(7, "attribute_units", Messages),
        ],
    },
    Layout {
        versions: V1_8 | V1_9 | V1_10,
        message: "ProfilesDictionary",
        fields: &[
            f(1, "mapping_table", Messages),
            f(2, "location_table", Messages),
            f(3, "function_table", Messages),
            f(4, "link_table", Messages),
            f(5, "string_table", Strings),
            f(6, "attribute_table", Messages),
            f(7, "stack_table", Messages),
        ],
    },
];

const MAPPING: &[Layout] = &[
    Layout {
        versions: V1_7,
        message: "Mapping",
        fields: &[
            f(1, "memory_start", Varint),
            f(2, "memory_limit", Varint),
            f(3, "file_offset", Varint),
            f(4, "filename_strindex", Varint),
            f(5, "attribute_indices", PackedVarint),
            f(6, "has_functions", Varint),
            f(7, "has_filenames", Varint),
            f(8, "has_line_numbers", Varint),
            f(9, "has_inline_frames", Varint),
        ],
    },
    Layout {
        versions: V1_8 | V1_9 | V1_10,
        message: "Mapping",
        fields: &[
            f(1, "memory_start", Varint),
            f(2, "memory_limit", Varint),
            f(3, "file_offset", Varint),
            f(4, "filename_strindex", Varint),
            f(5, "attribute_indices", PackedVarint),
        ],
    },
];

const LOCATION: &[Layout] = &[
    Layout {
        versions: V1_7,
        message: "Location",
        fields: &[
            f(1, "mapping_index", Varint),
            f(2, "address", Varint),
            f(3, "line", Messages),
            f(4, "is_folded", Varint),
            f(5, "attribute_indices", PackedVarint),
        ],
    },
    Layout {
        versions: V1_8 | V1_9 | V1_10,
        message: "Location",
        fields: &[
            f(1, "mapping_index", Varint),
            f(2, "address", Varint),
            f(3, "lines", Messages),
            f(4, "attribute_indices", PackedVarint),
        ],
    },
];

/// `ProfilesDictionary.attribute_table` entries.
const ATTRIBUTE: &[Layout] = &[
    Layout {
        versions: V1_7,
        message: "KeyValue",
        fields: &[f(1, "key", Bytes), f(2, "value", Message)],
    },
    Layout {
        versions: V1_8 | V1_9 | V1_10,
        message: "KeyValueAndUnit",
        fields: &[
            f(1, "key_strindex", Varint),
            f(2, "value", Message),
            f(3, "unit_strindex", Varint),
        ],
    },
];

/// `ProfilesDictionary` field 7 entries.
const ATTRIBUTE_UNIT_OR_STACK: &[Layout] = &[
    Layout {
        versions: V1_7,
        message: "AttributeUnit",
        fields: &[f(1, "attribute_key_strindex", Varint), f(2, "unit_strindex", Varint)],
    },
    Layout {
        versions: V1_8 | V1_9 | V1_10,
        message: "Stack",
        fields: &[f(1, "location_indices", PackedVarint)],
    },
];

/// A message whose fields are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctx {
    Request,
    Profile,
    Sample,
    ValueType,
    Dictionary,
    Mapping,
    Location,
    Attribute,
    AttributeUnitOrStack,
}

impl Ctx {
    fn layouts(self) -> &'static [Layout] {
        match self {
            Ctx::Request => REQUEST,
            Ctx::Profile => PROFILE,
            Ctx::Sample => SAMPLE,
            Ctx::ValueType => VALUE_TYPE,
            Ctx::Dictionary => DICTIONARY,
            Ctx::Mapping => MAPPING,
            Ctx::Location => LOCATION,
            Ctx::Attribute => ATTRIBUTE,
            Ctx::AttributeUnitOrStack => ATTRIBUTE_UNIT_OR_STACK,
        }
    }

    /// The layouts this message does not exist in: observations in it say nothing about them.
    fn absent(self) -> u8 {
        ALL & !self
            .layouts()
            .iter()
            .fold(0, |versions, layout| versions | layout.versions)
    }

    /// The layouts consistent with field `number` arriving with wire type `wire`.
    fn consistent(self, number: u32, wire: u8, payload: &[u8]) -> u8 {
        self.layouts()
            .iter()
            .fold(self.absent(), |mask, layout| match layout.field(number) {
                Some(field) if field.kind.accepts(wire, payload) => mask | layout.versions,
                _ => mask,
            })
    }

    /// The layouts consistent with field `number` occurring more than once in one message.
    fn consistent_repeated(self, number: u32) -> u8 {
        self.layouts()
            .iter()
            .fold(self.absent(), |mask, layout| match layout.field(number) {
                Some(field) if field.kind.repeated() => mask | layout.versions,
                _ => mask,
            })
    }

    /// The layouts in which field `number` is a single varint (not a repeated one).
    fn single_varint(self, number: u32) -> u8 {
        self.layouts()
            .iter()
            .fold(self.absent(), |mask, layout| match layout.field(number) {
                Some(field) if field.kind == Kind::Varint => mask | layout.versions,
                _ => mask,
            })
    }

    /// The message name and field `number` in the newest of the layouts `mask` that has it.
    fn field_in(self, mask: u8, number: u32) -> Option<(&'static str, &'static Field)> {
        self.layouts()
            .iter()
            .rev()
            .filter(|layout| layout.versions & mask != 0)
            .find_map(|layout| layout.field(number).map(|field| (layout.message, field)))
    }

    fn message_in(self, mask: u8) -> &'static str {
        self.layouts()
            .iter()
            .rev()
            .find(|layout| layout.versions & mask != 0)
            .map_or("message", |layout| layout.message)
    }
}

/// Why v1.10 was ruled out.
#[derive(Debug, Clone, Copy)]
enum Why {
    /// The field's wire type (or its presence) does not fit v1.10.
    Wire,
    /// A field that is single in v1.10 occurs more than once.
    Repeated,
    /// A sample with field 2 but neither field 4 nor field 5.
    SampleWithoutValues,
    /// A sample whose field 2 holds an index beyond the attribute table.
    AttributeIndexOutOfRange { index: u64, table_len: u64 },
    /// A sample whose field 2 holds the same number twice.
    DuplicateAttributeIndex { index: u64 },
    /// A varint where v1.10 has a repeated field, from a sender that packs repeated fields.
    Unpacked,
}

#[derive(Debug, Clone, Copy)]
struct Reason {
    ctx: Ctx,
    number: u32,
    wire: u8,
    why: Why,
}

fn wire_name(wire: u8) -> &'static str {
    match wire {
        VARINT => "a varint",
        I64 => "8 fixed bytes",
        LEN => "length-delimited bytes",
        _ => "4 fixed bytes",
    }
}

impl Reason {
    fn describe(&self, mask: u8) -> String {
        let Reason { ctx, number, wire, why } = *self;
        let old = ctx.field_in(mask, number);
        let new = ctx.field_in(V1_10, number);
        let new_message = ctx.message_in(V1_10);
        let old_part = match old {
            Some((message, field)) => format!("{message}.{} is field {number}, {}", field.name, field.kind.describe()),
            None => format!("{} field {number} is {}", ctx.message_in(mask), wire_name(wire)),
        };
        let new_part = match new {
            Some((message, field)) => {
                format!(
                    "in v1.10 field {number} is {message}.{}, {}",
                    field.name,
                    field.kind.describe()
                )
            }
            None => format!("v1.10 has no field {number} in {new_message}"),
        };
        match why {
            Why::Wire => format!("{old_part}; {new_part}"),
            Why::Repeated => format!("{old_part}, and occurs more than once; {new_part}, which cannot repeat"),
            Why::Unpacked => format!("{old_part}, in a request whose repeated fields are packed; {new_part}"),
            Why::SampleWithoutValues => format!(
                "{old_part}: a sample has field 2 but neither field 4 nor field 5, while a v1.10 Sample needs \
                 values (field 4) or timestamps_unix_nano (field 5) and its field 2 is attribute_indices"
            ),
            Why::AttributeIndexOutOfRange { index, table_len } => format!(
                "{old_part}: a sample without field 4 has {index} in field 2, which as v1.10 \
                 Sample.attribute_indices would point past the {table_len}-entry attribute_table"
            ),
            Why::DuplicateAttributeIndex { index } => format!(
                "{old_part}: a sample without field 4 has {index} twice in field 2, which as v1.10 \
                 Sample.attribute_indices would repeat an attribute key"
            ),
        }
    }
}

/// Why a scan ended early.
#[derive(Debug)]
enum Stop {
    /// The buffer is not well-formed protobuf.
    Malformed,
    /// A single old layout is left: no need to look further.
    Decided,
}

type Step = Result<(), Stop>;

/// A field's number, wire type and payload.
type RawField<'a> = (u32, u8, &'a [u8]);

/// Reads one field at a time.
struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Fields<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Fields { buf, pos: 0 }
    }

    /// The next field: number, wire type and payload (the varint's bytes, the fixed bytes or the
    /// length-delimited content).
    fn next_field(&mut self) -> Result<Option<RawField<'a>>, Stop> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let number = tag >> 3;
        if number == 0 || number > u64::from(u32::MAX >> 3) {
            return Err(Stop::Malformed);
        }
        let wire = (tag & 7) as u8;
        let start = self.pos;
        let end = match wire {
            VARINT => {
                self.varint()?;
                self.pos
            }
            I64 => start.checked_add(8).ok_or(Stop::Malformed)?,
            I32 => start.checked_add(4).ok_or(Stop::Malformed)?,
            LEN => {
                let len = usize::try_from(self.varint()?).map_err(|_| Stop::Malformed)?;
                let start = self.pos;
                let end = start.checked_add(len).ok_or(Stop::Malformed)?;
                if end > self.buf.len() {
                    return Err(Stop::Malformed);
                }
                self.pos = end;
                return Ok(Some((number as u32, wire, &self.buf[start..end])));
            }
            // Groups (3, 4) are not used by these messages; 6 and 7 are invalid.
            _ => return Err(Stop::Malformed),
        };
        if end > self.buf.len() {
            return Err(Stop::Malformed);
        }
        self.pos = end;
        Ok(Some((number as u32, wire, &self.buf[start..end])))
    }

    fn varint(&mut self) -> Result<u64, Stop> {
        let (value, len) = read_varint(&self.buf[self.pos..]).ok_or(Stop::Malformed)?;
        self.pos += len;
        Ok(value)
    }
}

/// A varint at the start of `buf` and its length in bytes.
fn read_varint(buf: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &byte) in buf.iter().take(10).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// The elements of a packed varint list (stops at a malformed tail).
fn packed_varints(mut buf: &[u8]) -> impl Iterator<Item = u64> + '_ {
    std::iter::from_fn(move || {
        let (value, len) = read_varint(buf)?;
        buf = &buf[len..];
        Some(value)
    })
}

/// Field numbers below 64 as bits.
fn bit(number: u32) -> u64 {
    if number < 64 { 1 << number } else { 0 }
}

/// For messages whose fields need no more than [`Scan::message`]'s checks.
fn ignore(_: &mut Scan, _: u32, _: u8, _: &[u8]) -> Step {
    Ok(())
}

/// How many elements of a sample's field 2 are checked for duplicates (quadratic).
const DUPLICATE_CHECK_LIMIT: usize = 32;

struct Scan {
    /// The layouts still consistent with everything seen.
    mask: u8,
    /// The observation that ruled out v1.10.
    reason: Option<Reason>,
    /// Some sample field was length-delimited: the sender packs repeated fields.
    packed_sender: bool,
    /// Sample field numbers seen as varints.
    sample_varints: u64,
    /// Entries in the dictionary's attribute_table, if the request has a dictionary.
    attribute_table_len: Option<u64>,
}

impl Scan {
    fn new() -> Self {
        Scan {
            mask: ALL,
            reason: None,
            packed_sender: false,
            sample_varints: 0,
            attribute_table_len: None,
        }
    }

    /// Narrows the candidates to those in `consistent`, unless that leaves none.
    fn observe(&mut self, consistent: u8, reason: Reason) -> Step {
        let next = self.mask & consistent;
        if next == 0 || next == self.mask {
            return Ok(());
        }
        if self.mask & V1_10 != 0 && next & V1_10 == 0 {
            self.reason = Some(reason);
        }
        self.mask = next;
        if next & V1_10 == 0 && next.count_ones() == 1 {
            Err(Stop::Decided)
        } else {
            Ok(())
        }
    }

    /// Checks every field of one `ctx` message against the layouts, calling `each` for each field (to
    /// recurse or collect more), then checks which fields occurred more than once.
    fn message<'b>(
        &mut self,
        ctx: Ctx,
        buf: &'b [u8],
        mut each: impl FnMut(&mut Self, u32, u8, &'b [u8]) -> Step,
    ) -> Result<u64, Stop> {
        let mut fields = Fields::new(buf);
        let (mut seen, mut repeated) = (0u64, 0u64);
        while let Some((number, wire, payload)) = fields.next_field()? {
            let b = bit(number);
            repeated |= seen & b;
            seen |= b;
            self.observe(
                ctx.consistent(number, wire, payload),
                Reason {
                    ctx,
                    number,
                    wire,
                    why: Why::Wire,
                },
            )?;
            each(self, number, wire, payload)?;
        }
        let mut rest = repeated;
        while rest != 0 {
            let number = rest.trailing_zeros();
            rest &= rest - 1;
            let reason = Reason {
                ctx,
                number,
                wire: LEN,
                why: Why::Repeated,
            };
            self.observe(ctx.consistent_repeated(number), reason)?;
        }
        Ok(seen)
    }

    fn request(&mut self, buf: &[u8]) -> Step {
        // The top level must be well-formed (a truncated request is the decoder's to report); the
        // dictionary's attribute_table size is needed before the samples, which come first.
        let mut fields = Fields::new(buf);
        while let Some((number, wire, payload)) = fields.next_field()? {
            if number == 2 && wire == LEN {
                let mut dictionary = Fields::new(payload);
                let mut len = self.attribute_table_len.unwrap_or(0);
                while let Some((number, _, _)) = dictionary.next_field()? {
                    len += u64::from(number == 6);
                }
                self.attribute_table_len = Some(len);
            }
        }
        self.message(Ctx::Request, buf, |scan, number, wire, payload| match (number, wire) {
            (1, LEN) => scan.resource_profiles(payload),
            (2, LEN) => scan.dictionary(payload),
            _ => Ok(()),
        })?;
        Ok(())
    }

    /// `ResourceProfiles` and `ScopeProfiles` are the same in all layouts: field 2 holds the next level.
    fn resource_profiles(&mut self, buf: &[u8]) -> Step {
        let mut fields = Fields::new(buf);
        while let Some((number, wire, payload)) = fields.next_field()? {
            if number == 2 && wire == LEN {
                let mut scope = Fields::new(payload);
                while let Some((number, wire, payload)) = scope.next_field()? {
                    if number == 2 && wire == LEN {
                        self.profile(payload)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn profile(&mut self, buf: &[u8]) -> Step {
        self.message(Ctx::Profile, buf, |scan, number, wire, payload| match (number, wire) {
            (1, LEN) => scan.message(Ctx::ValueType, payload, ignore).map(drop),
            (2, LEN) => scan.sample(payload),
            _ => Ok(()),
        })?;
        Ok(())
    }

    fn sample(&mut self, buf: &[u8]) -> Step {
        let mut field2: Option<&[u8]> = None;
        let mut timestamps = 0usize;
        let mut varints = 0u64;
        let mut packed = false;
        let seen = self.message(Ctx::Sample, buf, |_, number, wire, payload| {
            match wire {
                VARINT => varints |= bit(number),
                LEN => packed = true,
                _ => {}
            }
            match (number, wire) {
                (2, LEN) => field2 = field2.or(Some(payload)),
                (5, LEN) => timestamps += payload.len() / 8,
                (5, I64) => timestamps += 1,
                _ => {}
            }
            Ok(())
        })?;
        self.packed_sender |= packed;
        self.sample_varints |= varints;
        let (has2, has4, has5) = (seen & bit(2) != 0, seen & bit(4) != 0, seen & bit(5) != 0);
        if has4 {
            return Ok(());
        }
        let reason = |why| Reason {
            ctx: Ctx::Sample,
            number: 2,
            wire: LEN,
            why,
        };
        if has2 && !has5 {
            return self.observe(ALL & !V1_10, reason(Why::SampleWithoutValues));
        }
        // v1.8/v1.9 values with their timestamps, or v1.10 attributes with timestamps and no values?
        let Some(list) = field2 else { return Ok(()) };
        if packed_varints(list).count() != timestamps {
            return Ok(());
        }
        if let Some(table_len) = self.attribute_table_len {
            if let Some(index) = packed_varints(list).find(|&index| index >= table_len) {
                return self.observe(ALL & !V1_10, reason(Why::AttributeIndexOutOfRange { index, table_len }));
            }
        }
        let duplicate = packed_varints(list)
            .take(DUPLICATE_CHECK_LIMIT)
            .enumerate()
            .find(|&(i, index)| packed_varints(list).take(i).any(|earlier| earlier == index));
        if let Some((_, index)) = duplicate {
            return self.observe(ALL & !V1_10, reason(Why::DuplicateAttributeIndex { index }));
        }
        Ok(())
    }

    fn dictionary(&mut self, buf: &[u8]) -> Step {
        self.message(Ctx::Dictionary, buf, |scan, number, wire, payload| {
            let ctx = match (number, wire) {
                (1, LEN) => Ctx::Mapping,
                (2, LEN) => Ctx::Location,
                (6, LEN) => Ctx::Attribute,
                (7, LEN) => Ctx::AttributeUnitOrStack,
                _ => return Ok(()),
            };
            scan.message(ctx, payload, ignore).map(drop)
        })?;
        Ok(())
    }

    /// Rules that need the whole request.
    fn finish(&mut self) {
        if !self.packed_sender {
            return;
        }
        let mut rest = self.sample_varints;
        while rest != 0 {
            let number = rest.trailing_zeros();
            rest &= rest - 1;
            let reason = Reason {
                ctx: Ctx::Sample,
                number,
                wire: VARINT,
                why: Why::Unpacked,
            };
            if self.observe(Ctx::Sample.single_varint(number), reason).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
    use opentelemetry_proto::tonic::profiles::v1development::{
        Function, KeyValueAndUnit, Line, Link, Location, Mapping, Profile, ProfilesDictionary, ResourceProfiles,
        Sample, ScopeProfiles, Stack, ValueType,
    };
    use prost::Message as _;

    macro_rules! fixture {
        ($path:literal) => {
            include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../integration/testdata/fixtures/",
                $path
            ))
        };
    }

    const V1_10_FIXTURE: &[u8] = fixture!("otlp/otlp-v1.10.0-ebpf-profiler.pb");
    const V1_8_FIXTURE: &[u8] = fixture!("otlp/otlp-v1.8.0-ebpf-profiler.pb");
    const V1_7_FIXTURE: &[u8] = fixture!("otlp/otlp-v1.7.0-ebpf-profiler-unsymbolized.pb");
    const V1_5_FIXTURE: &[u8] = fixture!("otlp/otlp-v1.5.0-ebpf-profiler-unsymbolized.pb");
    const V1_7_BAD_FIXTURE: &[u8] = fixture!("bad/real-otlp-v1.7.0-index-out-of-range.pb");

    /// A tiny protobuf writer for hand-built old-layout payloads.
    #[derive(Default, Clone)]
    struct W(Vec<u8>);

    impl W {
        fn new() -> Self {
            W::default()
        }

        fn raw_varint(&mut self, mut value: u64) {
            while value >= 0x80 {
                self.0.push((value as u8) | 0x80);
                value >>= 7;
            }
            self.0.push(value as u8);
        }

        fn tag(&mut self, number: u32, wire: u8) {
            self.raw_varint((u64::from(number) << 3) | u64::from(wire));
        }

        fn varint(mut self, number: u32, value: u64) -> Self {
            self.tag(number, VARINT);
            self.raw_varint(value);
            self
        }

        fn fixed64(mut self, number: u32, value: u64) -> Self {
            self.tag(number, I64);
            self.0.extend_from_slice(&value.to_le_bytes());
            self
        }

        fn bytes(mut self, number: u32, bytes: &[u8]) -> Self {
            self.tag(number, LEN);
            self.raw_varint(bytes.len() as u64);
            self.0.extend_from_slice(bytes);
            self
        }

        fn message(self, number: u32, message: W) -> Self {
            self.bytes(number, &message.0)
        }

        fn packed(self, number: u32, values: &[u64]) -> Self {
            let mut list = W::new();
            for &value in values {
                list.raw_varint(value);
            }
            self.bytes(number, &list.0)
        }

        fn packed_fixed64(self, number: u32, values: &[u64]) -> Self {
            let list: Vec<u8> = values.iter().flat_map(|value| value.to_le_bytes()).collect();
            self.bytes(number, &list)
        }
    }

    /// A request holding one profile, with an optional dictionary (request field 2).
    fn request(profile: W, dictionary: Option<W>) -> Vec<u8> {
        let scope = W::new().message(2, profile);
        let resource = W::new().message(2, scope);
        let mut request = W::new().message(1, resource);
        if let Some(dictionary) = dictionary {
            request = request.message(2, dictionary);
        }
        request.0
    }

    /// A profile holding the given samples, with a `sample_type` (field 1 in all layouts).
    fn profile_with(samples: &[W]) -> W {
        samples.iter().fold(
            W::new().message(1, W::new().varint(1, 1).varint(2, 2)),
            |profile, sample| profile.message(2, sample.clone()),
        )
    }

    /// A v1.8+ dictionary with a zero entry and `attributes - 1` more attributes.
    fn dictionary_with_attributes(attributes: u64) -> W {
        let mut dictionary = W::new().bytes(5, b"").bytes(5, b"thread.name");
        for i in 0..attributes {
            let entry = if i == 0 {
                W::new()
            } else {
                W::new().varint(1, 1).message(2, W::new().bytes(1, b"x"))
            };
            dictionary = dictionary.message(6, entry);
        }
        dictionary.message(7, W::new())
    }

    fn detected(buf: &[u8]) -> VersionMismatch {
        check(buf).expect_err("an older layout")
    }

    fn encode(request: &ExportProfilesServiceRequest) -> Vec<u8> {
        request.encode_to_vec()
    }

    fn wrap(profiles: Vec<Profile>, dictionary: Option<ProfilesDictionary>) -> ExportProfilesServiceRequest {
        ExportProfilesServiceRequest {
            resource_profiles: vec![ResourceProfiles {
                resource: None,
                scope_profiles: vec![ScopeProfiles {
                    scope: None,
                    profiles,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
            dictionary,
        }
    }

    #[test]
    fn version_fixture_v1_10_passes() {
        assert_eq!(check(V1_10_FIXTURE), Ok(()));
        // Sanity: the fixture really is v1.10 for our decoder.
        ExportProfilesServiceRequest::decode(V1_10_FIXTURE).unwrap();
    }

    #[test]
    fn version_fixture_v1_8_is_detected() {
        let err = detected(V1_8_FIXTURE);
        // Nothing in this payload differs between v1.8 and v1.9 (no Profile fields past 6, no
        // aggregation_temporality); its samples carry attributes in field 3.
        assert_eq!(err.detected, "v1.8 or v1.9");
        assert!(
            err.message.contains("Sample.attribute_indices is field 3"),
            "{}",
            err.message
        );
        assert!(err.message.contains("Sample.link_index, a varint"), "{}", err.message);
        assert!(
            err.message.contains("flamepipe reads v1.10 and v1.11"),
            "{}",
            err.message
        );
    }

    #[test]
    fn version_fixture_v1_7_is_detected() {
        let err = detected(V1_7_FIXTURE);
        assert_eq!(err.detected, "v1.7");
        assert!(
            err.message
                .contains("opentelemetry-proto v1.7 (Sample.value is field 3"),
            "{}",
            err.message
        );
    }

    #[test]
    fn version_fixture_v1_5_is_detected() {
        let err = detected(V1_5_FIXTURE);
        assert_eq!(err.detected, "v1.5");
        assert!(err.message.contains("Sample.value is field 3"), "{}", err.message);
    }

    #[test]
    fn version_bad_fixture_v1_7_is_detected() {
        // Unpacked samples (locations_start_index, locations_length, value all varints) that v1.10 would
        // take as stack_index, attribute_indices and link_index; the profile and dictionary give it away.
        // Its encoder writes Profile fields out of order, period (7) first.
        let err = detected(V1_7_BAD_FIXTURE);
        assert_eq!(err.detected, "v1.7");
        assert!(
            err.message
                .contains("(Profile.period is field 7, a varint; in v1.10 field 7 is Profile.profile_id")
        );
    }

    #[test]
    fn version_message_is_the_display() {
        let err = detected(V1_7_FIXTURE);
        assert_eq!(err.to_string(), err.message);
        assert!(
            err.message
                .starts_with("OTLP profiles request uses the profiles/v1development layout")
        );
        assert!(err.message.ends_with("upgrade the sender's OTLP exporter"));
    }

    #[test]
    fn version_v1_8_sample_without_attributes_is_detected() {
        // v1.8: stack_index=1, values=[10] (field 2, packed), link_index=1 (field 4). v1.10 would read
        // attribute_indices=[10], values=[1].
        let sample = W::new().varint(1, 1).packed(2, &[10]).varint(4, 1);
        let err = detected(&request(profile_with(&[sample]), Some(dictionary_with_attributes(1))));
        assert_eq!(err.detected, "v1.8 or v1.9");
        assert!(
            err.message.contains("Sample.link_index is field 4, a varint"),
            "{}",
            err.message
        );
        assert!(
            err.message.contains("in v1.10 field 4 is Sample.values"),
            "{}",
            err.message
        );
    }

    #[test]
    fn version_v1_8_link_in_one_sample_packing_in_another_is_detected() {
        // The first sample alone is a valid v1.10 sample from a sender that does not pack (values=[1] as
        // one varint); the second shows that the sender packs, so field 4 must be v1.8/v1.9 link_index.
        let linked = W::new().varint(1, 1).varint(4, 1);
        let packed = W::new().varint(1, 2).packed(2, &[7]).packed_fixed64(5, &[1]);
        assert_eq!(
            check(&request(profile_with(std::slice::from_ref(&linked)), None)),
            Ok(())
        );
        let err = detected(&request(profile_with(&[linked, packed]), None));
        assert_eq!(err.detected, "v1.8 or v1.9");
        assert!(
            err.message.contains("in a request whose repeated fields are packed"),
            "{}",
            err.message
        );
    }

    #[test]
    fn version_v1_8_values_without_timestamps_are_detected() {
        // values=[10] only: v1.10 would see attributes without values or timestamps.
        let sample = W::new().varint(1, 1).packed(2, &[10]);
        let err = detected(&request(profile_with(&[sample]), None));
        assert_eq!(err.detected, "v1.8 or v1.9");
        assert!(err.message.contains("Sample.values is field 2"), "{}", err.message);
    }

    #[test]
    fn version_v1_8_values_with_timestamps_out_of_attribute_range_are_detected() {
        // values=[50000000] with one timestamp, 3 attributes in the dictionary.
        let sample = W::new()
            .varint(1, 1)
            .packed(2, &[50_000_000])
            .packed_fixed64(5, &[1_700_000_000_000_000_000]);
        let err = detected(&request(profile_with(&[sample]), Some(dictionary_with_attributes(3))));
        assert_eq!(err.detected, "v1.8 or v1.9");
        assert!(err.message.contains("50000000"), "{}", err.message);
        assert!(err.message.contains("3-entry attribute_table"), "{}", err.message);
    }

    #[test]
    fn version_v1_9_repeated_values_with_timestamps_are_detected() {
        // values=[1, 1] with two timestamps: as v1.10 attribute_indices the same key would repeat.
        let sample = W::new().varint(1, 1).packed(2, &[1, 1]).packed_fixed64(5, &[1, 2]);
        let err = detected(&request(profile_with(&[sample]), Some(dictionary_with_attributes(3))));
        assert_eq!(err.detected, "v1.8 or v1.9");
        assert!(err.message.contains("has 1 twice in field 2"), "{}", err.message);
    }

    #[test]
    fn version_v1_8_profile_fields_are_detected() {
        // profile_id is field 8 in v1.8 (a varint, dropped_attributes_count, in v1.10).
        let profile = profile_with(&[]).fixed64(3, 1).bytes(8, &[0xab; 16]);
        let err = detected(&request(profile, None));
        assert_eq!(err.detected, "v1.8");
        assert!(
            err.message.contains("Profile.profile_id is field 8, a string/bytes"),
            "{}",
            err.message
        );
        assert!(
            err.message
                .contains("in v1.10 field 8 is Profile.dropped_attributes_count"),
            "{}",
            err.message
        );

        // attribute_indices is field 12 in v1.8; v1.10 stops at 11.
        let profile = profile_with(&[]).fixed64(3, 1).packed(12, &[1]);
        let err = detected(&request(profile, None));
        assert_eq!(err.detected, "v1.8");
        assert!(
            err.message.contains("v1.10 has no field 12 in Profile"),
            "{}",
            err.message
        );
    }

    #[test]
    fn version_v1_8_aggregation_temporality_is_detected() {
        let profile = W::new()
            .message(1, W::new().varint(1, 1).varint(2, 2).varint(3, 1))
            .fixed64(3, 1);
        let err = detected(&request(profile, Some(dictionary_with_attributes(1))));
        assert_eq!(err.detected, "v1.8");
        assert!(
            err.message.contains("ValueType.aggregation_temporality is field 3"),
            "{}",
            err.message
        );
    }

    #[test]
    fn version_v1_9_is_detected() {
        // v1.9 sample: values (2), attribute_indices (3), link_index (4); the profile has
        // original_payload_format at 9 (a varint, dropped_attributes_count, in v1.8).
        let sample = W::new().varint(1, 1).packed(2, &[10]).packed(3, &[1]).varint(4, 1);
        let profile = profile_with(&[sample])
            .fixed64(3, 1)
            .bytes(9, b"pprof")
            .bytes(10, b"...");
        let err = detected(&request(profile, Some(dictionary_with_attributes(2))));
        assert_eq!(err.detected, "v1.9");
        assert!(
            err.message.contains("Sample.attribute_indices is field 3"),
            "{}",
            err.message
        );
    }

    #[test]
    fn version_v1_7_minimal_is_detected() {
        // A v1.7 sample (locations_start_index, locations_length, packed value) and a dictionary with a
        // KeyValue attribute (string key in field 1).
        let sample = W::new().varint(1, 0).varint(2, 3).packed(3, &[1]);
        let dictionary = W::new().bytes(5, b"").message(6, W::new().bytes(1, b"thread.name"));
        let err = detected(&request(profile_with(&[sample]), Some(dictionary)));
        assert_eq!(err.detected, "v1.7");

        // Only the dictionary differs.
        let dictionary = W::new().message(6, W::new().bytes(1, b"thread.name").message(2, W::new().bytes(1, b"x")));
        let err = detected(&request(profile_with(&[]), Some(dictionary)));
        assert_eq!(err.detected, "v1.7");
        assert!(
            err.message.contains("KeyValue.key is field 1, a string/bytes"),
            "{}",
            err.message
        );
        assert!(
            err.message.contains("in v1.10 field 1 is KeyValueAndUnit.key_strindex"),
            "{}",
            err.message
        );

        // Mapping.has_functions (6), attribute_units entries (AttributeUnit with field 2).
        let dictionary = W::new().message(1, W::new().varint(1, 4096).varint(6, 1));
        assert_eq!(detected(&request(profile_with(&[]), Some(dictionary))).detected, "v1.7");
        let dictionary = W::new().message(7, W::new().varint(1, 1).varint(2, 2));
        assert_eq!(detected(&request(profile_with(&[]), Some(dictionary))).detected, "v1.7");
    }

    #[test]
    fn version_v1_6_or_v1_7_without_dictionary_is_detected() {
        // v1.6/v1.7 Profile: location_indices (3, packed), time_nanos (4), period (7, a varint).
        let profile = profile_with(&[])
            .packed(3, &[1])
            .varint(4, 1_700_000_000)
            .varint(7, 10_000_000);
        let err = detected(&request(profile, None));
        assert_eq!(err.detected, "v1.6 or v1.7");
        assert!(
            err.message.contains("Profile.location_indices is field 3"),
            "{}",
            err.message
        );
        assert!(
            err.message
                .contains("in v1.10 field 3 is Profile.time_unix_nano, a fixed64"),
            "{}",
            err.message
        );
    }

    #[test]
    fn version_v1_5_minimal_is_detected() {
        // v1.5 Profile with its own tables: location_table (4), string_table (10).
        let location = W::new().varint(2, 0x1000);
        let profile = profile_with(&[W::new().varint(2, 1).packed(3, &[1])])
            .message(4, location)
            .bytes(10, b"")
            .bytes(10, b"samples");
        let err = detected(&request(profile, None));
        assert_eq!(err.detected, "v1.5");

        // Two sample_types (repeated before v1.8) and a string table, nothing else.
        let profile = W::new()
            .message(1, W::new().varint(1, 1))
            .message(1, W::new().varint(1, 2))
            .bytes(10, b"")
            .bytes(10, b"cpu");
        let err = detected(&request(profile, None));
        assert_eq!(err.detected, "v1.5");
        assert!(err.message.contains("occurs more than once"), "{}", err.message);
    }

    #[test]
    fn version_v1_10_hand_built_passes() {
        // The v1.10 reading of the ambiguous cases: attributes and timestamps, no values.
        let sample = W::new().varint(1, 1).packed(2, &[1, 2]).packed_fixed64(5, &[1, 2]);
        assert_eq!(
            check(&request(profile_with(&[sample]), Some(dictionary_with_attributes(3)))),
            Ok(())
        );
        // Unpacked v1.10 (a sender that never packs): values as repeated varints in field 4.
        let sample = W::new()
            .varint(1, 1)
            .varint(2, 1)
            .varint(3, 1)
            .varint(4, 5)
            .varint(4, 6);
        assert_eq!(
            check(&request(profile_with(&[sample]), Some(dictionary_with_attributes(2)))),
            Ok(())
        );
        let sample = W::new().varint(1, 1).varint(4, 5).fixed64(5, 1);
        assert_eq!(check(&request(profile_with(&[sample]), None)), Ok(()));
    }

    #[test]
    fn version_v1_10_prost_requests_pass() {
        let empty = ExportProfilesServiceRequest::default();
        assert_eq!(check(&encode(&empty)), Ok(()));
        assert_eq!(check(&[]), Ok(()));

        let value_type = Some(ValueType {
            type_strindex: 1,
            unit_strindex: 2,
        });
        let samples = vec![
            Sample::default(),
            Sample {
                timestamps_unix_nano: vec![1_700_000_000_000_000_000, 1_700_000_000_000_000_001],
                ..Default::default()
            },
            Sample {
                stack_index: 1,
                values: vec![1],
                ..Default::default()
            },
            Sample {
                stack_index: 1,
                values: vec![-1, i64::MIN],
                ..Default::default()
            },
            Sample {
                stack_index: 2,
                attribute_indices: vec![1],
                link_index: 1,
                values: vec![10_000_000],
                ..Default::default()
            },
            Sample {
                stack_index: 2,
                attribute_indices: vec![1, 2],
                timestamps_unix_nano: vec![5, 6],
                ..Default::default()
            },
            Sample {
                stack_index: 3,
                attribute_indices: vec![2],
                link_index: 1,
                values: vec![3, 4],
                timestamps_unix_nano: vec![7, 8],
            },
        ];
        let profile = Profile {
            sample_type: value_type,
            samples,
            time_unix_nano: 1_700_000_000_000_000_000,
            duration_nano: 10_000_000_000,
            period_type: Some(ValueType {
                type_strindex: 1,
                unit_strindex: 3,
            }),
            period: 10_000_000,
            profile_id: vec![0xff; 16],
            dropped_attributes_count: 3,
            original_payload_format: "pprof".into(),
            original_payload: vec![0x80, 0x81, 0xff],
            attribute_indices: vec![1, 2],
        };
        let dictionary = ProfilesDictionary {
            mapping_table: vec![
                Mapping::default(),
                Mapping {
                    memory_start: 0x1000,
                    memory_limit: 0x2000,
                    file_offset: 0x100,
                    filename_strindex: 4,
                    attribute_indices: vec![1],
                },
            ],
            location_table: vec![
                Location::default(),
                Location {
                    mapping_index: 1,
                    address: 0x1234,
                    lines: vec![Line {
                        function_index: 1,
                        line: 42,
                        column: 7,
                    }],
                    attribute_indices: vec![2],
                },
                Location {
                    mapping_index: 1,
                    address: 0x1235,
                    lines: vec![],
                    attribute_indices: vec![1],
                },
            ],
            function_table: vec![
                Function::default(),
                Function {
                    name_strindex: 5,
                    system_name_strindex: 5,
                    filename_strindex: 4,
                    start_line: 40,
                },
            ],
            link_table: vec![
                Link::default(),
                Link {
                    trace_id: vec![1; 16],
                    span_id: vec![2; 8],
                },
            ],
            string_table: ["", "cpu", "nanoseconds", "count", "/bin/app", "main"]
                .map(String::from)
                .to_vec(),
            attribute_table: vec![
                KeyValueAndUnit::default(),
                KeyValueAndUnit {
                    key_strindex: 1,
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("x".into())),
                    }),
                    unit_strindex: 0,
                },
                KeyValueAndUnit {
                    key_strindex: 2,
                    value: Some(AnyValue {
                        value: Some(any_value::Value::IntValue(7)),
                    }),
                    unit_strindex: 3,
                },
            ],
            stack_table: vec![
                Stack::default(),
                Stack {
                    location_indices: vec![1],
                },
                Stack {
                    location_indices: vec![1, 2],
                },
                Stack {
                    location_indices: vec![2, 1, 2],
                },
            ],
        };
        let full = wrap(vec![profile.clone(), Profile::default()], Some(dictionary.clone()));
        assert_eq!(check(&encode(&full)), Ok(()));
        assert_eq!(check(&encode(&wrap(vec![profile.clone()], None))), Ok(()));
        assert_eq!(check(&encode(&wrap(vec![], Some(dictionary.clone())))), Ok(()));
        assert_eq!(
            check(&encode(&wrap(vec![], Some(ProfilesDictionary::default())))),
            Ok(())
        );
        for sample in &profile.samples {
            let one = Profile {
                samples: vec![sample.clone()],
                ..Profile::default()
            };
            assert_eq!(check(&encode(&wrap(vec![one.clone()], None))), Ok(()), "{sample:?}");
            assert_eq!(
                check(&encode(&wrap(vec![one], Some(dictionary.clone())))),
                Ok(()),
                "{sample:?}"
            );
        }
        // Timestamps-only samples from a packing sender, next to unpacked-looking single fields.
        let ts_only = Profile {
            samples: vec![
                Sample {
                    timestamps_unix_nano: vec![1],
                    ..Default::default()
                };
                3
            ],
            ..Profile::default()
        };
        assert_eq!(check(&encode(&wrap(vec![ts_only], None))), Ok(()));
    }

    #[test]
    fn version_malformed_passes() {
        assert_eq!(check(&[0xff]), Ok(()));
        assert_eq!(check(&[0x0a, 0x05, 0x01]), Ok(()));
        assert_eq!(check(&[0x07]), Ok(()));
        assert_eq!(check(b"not protobuf at all"), Ok(()));
    }

    #[test]
    fn version_truncations_never_panic() {
        for end in (0..V1_10_FIXTURE.len()).step_by(97) {
            assert_eq!(check(&V1_10_FIXTURE[..end]), Ok(()), "v1.10 fixture cut at {end}");
        }
        for fixture in [V1_8_FIXTURE, V1_7_FIXTURE, V1_5_FIXTURE, V1_7_BAD_FIXTURE] {
            for end in (0..fixture.len()).step_by(97) {
                let _ = check(&fixture[..end]);
            }
        }
        // And bytes flipped all over the v1.10 fixture (never a panic; any verdict is fine).
        let mut buf = V1_10_FIXTURE.to_vec();
        for i in (0..buf.len()).step_by(97) {
            buf[i] ^= 0x5a;
            let _ = check(&buf);
            buf[i] ^= 0x5a;
        }
    }
}
