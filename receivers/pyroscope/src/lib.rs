//! The `pyroscope` receiver: accepts profiles the way a Pyroscope server does, so that the
//! Pyroscope SDKs and Grafana Alloy (`pyroscope.write`) can send to flamepipe unchanged.
//!
//! It sits at the start of a pipeline: it decodes each request into the core model
//! ([`flamepipe_core::Profile`]), hands one [`flamepipe_core::component::Batch`] per request to
//! the pipelines it feeds, and (by default) answers only once the data is durably written.
//! Every request is all-or-nothing: it is decoded completely before anything is sent on, and a
//! request that fails anywhere sends nothing downstream.
//!
//! # Layout
//!
//! - [`config`]: the YAML config, its defaults and validation, and `build`.
//! - `receiver`: the axum routes, body limits, tenants, hand-off and acknowledgement.
//! - `ingest`: the legacy `POST /ingest` API: query parameters, time parsing, format dispatch
//!   (the decoders themselves are `flamepipe_core::formats`: pprof, folded, speedscope).
//! - `push`: the Connect `POST /push.v1.PusherService/Push` API (protobuf and JSON).
//! - `error`: why a request was refused, with its HTTP status and metrics reason.

pub mod config;
mod error;
mod ingest;
mod push;
mod receiver;

pub use config::{AckMode, Config};
pub use error::{Error, Result};
pub use push::{LabelPair, PushRequest, RawProfileSeries, RawSample};
pub use receiver::{INGEST_PATHS, PUSH_PATH, decode_ingest, decode_push, router};

#[cfg(test)]
mod tests;
