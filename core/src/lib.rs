//! flamepipe-core: the pieces every flamepipe crate shares.
//!
//! The binary (`src/`) depends on the component crates, and they all depend on this one: the
//! profile model, the component contract, the pprof codec and the block format live here so
//! that no component has to depend on another.
//!
//! # Layout
//!
//! - [`metric`]: the metrics signal (cumulative counter points) that `metrics/…` pipelines carry.
//! - [`model`]: a profile = series labels + one sample type + time + samples (stack -> value).
//! - [`split`]: sample labels (pprof labels, OTLP sample attributes) made series labels.
//! - [`symbols`]: interned strings, functions, locations, mappings, stacks and sample label sets.
//! - [`profile_type`]: Pyroscope-style profile type ids (`process_cpu:cpu:nanoseconds:cpu:nanoseconds`).
//! - [`labels`]: series labels and the `app{k=v}` selector-like syntax senders use.
//! - [`fingerprint`]: what makes two profiles the same (series, and content blind to symbol
//!   ids and sample order), for the dedup processor and compaction.
//! - [`formats`]: the profile formats any receiver can decode (pprof, folded, speedscope), and
//!   telling them apart by content.
//! - [`selector`]: Pyroscope's `<profile type>{label matchers}` selector syntax, parsed and matched.
//! - [`block`]: the immutable block format (builder, reader, object keys) and the tenant
//!   manifest that says which blocks are live.
//! - [`body`]: gzip sniffing and bounded inflation of request bodies.
//! - [`store`]: object stores declared by id, opened once per process, with retries,
//!   timeouts and metrics around every request; a faulty store for tests.
//! - [`clock`]: wall-clock time that tests can set (leases, grace periods).
//! - [`component`]: signals, batches, acknowledgements, the component traits, the build context
//!   and component errors.
//! - [`exporter_helper`]: the sending queue, retries and timeout every exporter shares.
//! - [`intake`]: the receiving steps every receiver shares (admit, read, decode, deliver) and
//!   the one table from a kind of failure to its HTTP, gRPC and Connect codes.
//! - [`config`]: shared config value types (durations, byte sizes) and config errors with paths.
//! - [`telemetry`]: the metrics every component reports into.
//! - [`tenant`]: the `X-Scope-OrgID` tenant id and its checks.
//! - [`time`]: times as senders and query clients write them (unix s/ms/ns, RFC 3339, `now-1h`).
//! - [`validate`]: one definition of a valid profile, applied at ingest and by the block reader.

pub mod block;
pub mod body;
pub mod clock;
pub mod component;
pub mod config;
pub mod exporter_helper;
pub mod fingerprint;
pub mod formats;
pub mod intake;
pub mod labels;
pub mod metric;
pub mod model;
pub mod profile_type;
pub mod selector;
pub mod split;
pub mod store;
pub mod symbols;
pub mod telemetry;
pub mod tenant;
pub mod time;
pub mod validate;

pub use labels::Labels;
pub use model::{Profile, Sample};
pub use profile_type::ProfileType;
pub use symbols::{Symbols, SymbolsBuilder};

/// The tenant used when a request names none (Pyroscope and Mimir use the same).
pub const DEFAULT_TENANT: &str = "anonymous";
