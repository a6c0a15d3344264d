//! The `otlp` receiver: OpenTelemetry profiles (`profiles/v1development`, proto v1.10/v1.11)
//! over gRPC (`ProfilesService/Export`, 127.0.0.1:4317) and OTLP/HTTP
//! (`POST /v1development/profiles`, 127.0.0.1:4318).
//!
//! It sits at the start of a pipeline like the `pyroscope` receiver: each request is decoded
//! into the core model and handed on as one batch, answered once durably written (by default).
//!
//! # Layout
//!
//! - [`config`]: the YAML config (the Collector's `protocols: {grpc, http}` shape).
//! - `receiver`: the gRPC and HTTP endpoints, errors and their codes, delivery.
//! - [`version`]: detects older `v1development` layouts that would otherwise be misread.
//! - [`convert`]: OTLP -> the core model (dictionary, attributes, profile types).
//! - [`json`]: OTLP/JSON bodies, read by hand to the OTLP JSON rules.

pub mod config;
pub mod convert;
pub mod json;
mod receiver;
pub mod version;

pub use config::Config;
pub use receiver::{BodyFormat, Error, GRPC_PATH, HTTP_PATH, decode_export};
