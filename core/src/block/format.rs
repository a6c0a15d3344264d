//! The block's on-disk messages (see docs/block-format.md; keep the two in step).
//!
//! Sections are protobuf messages whose repeated fields are packed columns, zstd-compressed
//! one by one; the footer is a `BlockMeta` left uncompressed so that a reader needs one small
//! ranged read to learn where everything is.

/// Bytes every block starts with.
pub const HEADER_MAGIC: &[u8; 16] = b"FLAMEPIPE-BLOCK\0";
/// Bytes every block ends with.
pub const TRAILER_MAGIC: &[u8; 4] = b"FPB1";
/// footer length, footer CRC-32, version, magic.
pub const TRAILER_LEN: usize = 16;
/// The version this code writes.
pub const FORMAT_VERSION: u32 = 1;
/// The versions this code reads.
pub const SUPPORTED_VERSIONS: &[u32] = &[1];

#[derive(Clone, PartialEq, prost::Message)]
pub struct BlockMeta {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub tenant: String,
    #[prost(uint32, tag = "3")]
    pub level: u32,
    #[prost(int64, tag = "4")]
    pub min_time_ns: i64,
    #[prost(int64, tag = "5")]
    pub max_time_ns: i64,
    #[prost(message, repeated, tag = "6")]
    pub datasets: Vec<Dataset>,
    #[prost(string, tag = "7")]
    pub created_by: String,
    #[prost(uint64, tag = "8")]
    pub profile_count: u64,
    #[prost(uint64, tag = "9")]
    pub sample_count: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Dataset {
    #[prost(string, tag = "1")]
    pub service_name: String,
    #[prost(int64, tag = "2")]
    pub min_time_ns: i64,
    #[prost(int64, tag = "3")]
    pub max_time_ns: i64,
    #[prost(string, repeated, tag = "4")]
    pub profile_types: Vec<String>,
    #[prost(message, optional, tag = "5")]
    pub index: Option<SectionRef>,
    #[prost(message, optional, tag = "6")]
    pub symbols: Option<SectionRef>,
    #[prost(message, optional, tag = "7")]
    pub samples: Option<SectionRef>,
    #[prost(uint64, tag = "8")]
    pub profile_count: u64,
    #[prost(uint64, tag = "9")]
    pub sample_count: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct SectionRef {
    #[prost(uint64, tag = "1")]
    pub offset: u64,
    #[prost(uint64, tag = "2")]
    pub length: u64,
    #[prost(uint64, tag = "3")]
    pub uncompressed_length: u64,
    #[prost(uint32, tag = "4")]
    pub crc32: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SeriesIndex {
    #[prost(message, repeated, tag = "1")]
    pub series: Vec<Series>,
    #[prost(uint32, repeated, tag = "2")]
    pub profile_series: Vec<u32>,
    #[prost(sint64, repeated, tag = "3")]
    pub profile_timestamp_ns: Vec<i64>,
    #[prost(int64, repeated, tag = "4")]
    pub profile_duration_ns: Vec<i64>,
    #[prost(int64, repeated, tag = "5")]
    pub profile_period: Vec<i64>,
    #[prost(uint32, repeated, tag = "6")]
    pub profile_sample_count: Vec<u32>,
    #[prost(sint64, repeated, tag = "7")]
    pub profile_total: Vec<i64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Series {
    #[prost(string, repeated, tag = "1")]
    pub label_names: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub label_values: Vec<String>,
    #[prost(string, tag = "3")]
    pub profile_type: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SymbolTable {
    #[prost(string, repeated, tag = "1")]
    pub strings: Vec<String>,
    #[prost(uint64, repeated, tag = "2")]
    pub mapping_memory_start: Vec<u64>,
    #[prost(uint64, repeated, tag = "3")]
    pub mapping_memory_limit: Vec<u64>,
    #[prost(uint64, repeated, tag = "4")]
    pub mapping_file_offset: Vec<u64>,
    #[prost(uint32, repeated, tag = "5")]
    pub mapping_filename: Vec<u32>,
    #[prost(uint32, repeated, tag = "6")]
    pub mapping_build_id: Vec<u32>,
    #[prost(uint32, repeated, tag = "7")]
    pub function_name: Vec<u32>,
    #[prost(uint32, repeated, tag = "8")]
    pub function_system_name: Vec<u32>,
    #[prost(uint32, repeated, tag = "9")]
    pub function_filename: Vec<u32>,
    #[prost(int64, repeated, tag = "10")]
    pub function_start_line: Vec<i64>,
    #[prost(uint32, repeated, tag = "11")]
    pub location_mapping: Vec<u32>,
    #[prost(uint64, repeated, tag = "12")]
    pub location_address: Vec<u64>,
    #[prost(uint32, repeated, tag = "13")]
    pub location_line_count: Vec<u32>,
    #[prost(uint32, repeated, tag = "14")]
    pub line_function: Vec<u32>,
    #[prost(int64, repeated, tag = "15")]
    pub line_number: Vec<i64>,
    #[prost(uint32, repeated, tag = "16")]
    pub stack_length: Vec<u32>,
    #[prost(uint32, repeated, tag = "17")]
    pub stack_location: Vec<u32>,
    #[prost(uint32, repeated, tag = "18")]
    pub label_set_length: Vec<u32>,
    #[prost(uint32, repeated, tag = "19")]
    pub label_key: Vec<u32>,
    #[prost(uint32, repeated, tag = "20")]
    pub label_str: Vec<u32>,
    #[prost(int64, repeated, tag = "21")]
    pub label_num: Vec<i64>,
    #[prost(uint32, repeated, tag = "22")]
    pub label_num_unit: Vec<u32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SampleColumns {
    #[prost(uint32, repeated, tag = "1")]
    pub stack_delta: Vec<u32>,
    #[prost(sint64, repeated, tag = "2")]
    pub value: Vec<i64>,
    #[prost(uint32, repeated, tag = "3")]
    pub label_set: Vec<u32>,
}
