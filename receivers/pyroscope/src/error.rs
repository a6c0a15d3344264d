//! Why a request was refused: one enum for both APIs. Each variant says which kind of
//! failure it is, and the shared table ([`flamepipe_core::intake::Kind`]) gives its HTTP
//! status, Connect code and metrics reason; some variants name a finer reason.

use flamepipe_core::body::BodyError;
use flamepipe_core::formats::folded::FoldedError;
use flamepipe_core::formats::pprof::PprofError;
use flamepipe_core::formats::speedscope::SpeedscopeError;
use flamepipe_core::intake::{Kind, Refusal};
use flamepipe_core::labels::NameParseError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error(transparent)]
    Pprof(#[from] PprofError),
    #[error(transparent)]
    Folded(#[from] FoldedError),
    #[error(transparent)]
    Speedscope(#[from] SpeedscopeError),
    #[error("invalid push request: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("missing query parameter name (the application name)")]
    MissingName,
    #[error("invalid application name: {0}")]
    Name(#[from] NameParseError),
    #[error(
        "invalid {param} time {value:?}: expected unix seconds, milliseconds, microseconds or nanoseconds, or now, now-1h and the like"
    )]
    Time { param: &'static str, value: String },
    #[error("no profiles received")]
    NoProfiles,
    #[error("unsupported format {0:?}")]
    Format(String),
    #[error("unsupported content type {0:?}: expected application/proto or application/json")]
    ContentType(String),
    #[error("unsupported content encoding {0:?}: expected gzip or identity")]
    ContentEncoding(String),
    #[error("invalid tenant id in X-Scope-OrgID: {0}")]
    Tenant(&'static str),
    /// Anything else the sender got wrong (multipart layout, labels, JSON).
    #[error("{0}")]
    BadRequest(String),
    /// A failure of the shared intake (limits, load, delivery).
    #[error(transparent)]
    Refused(#[from] Refusal),
}

impl Error {
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Error::BadRequest(message.into())
    }
}

impl From<Error> for Refusal {
    fn from(e: Error) -> Refusal {
        let message = e.to_string();
        let (kind, reason) = match &e {
            Error::Refused(r) => return r.clone(),
            Error::Body(b) => (kind_of(b.reason()), b.reason()),
            Error::Pprof(p) => (kind_of(p.reason()), p.reason()),
            Error::Folded(f) => (kind_of(f.reason()), f.reason()),
            Error::Speedscope(s) => (kind_of(s.reason()), s.reason()),
            Error::Protobuf(_) => (Kind::Invalid, "bad_protobuf"),
            Error::MissingName | Error::Name(_) => (Kind::Invalid, "bad_name"),
            Error::Time { .. } => (Kind::Invalid, "bad_time"),
            Error::NoProfiles => (Kind::Invalid, "empty_body"),
            Error::Format(_) => (Kind::Invalid, "unknown_format"),
            Error::ContentType(_) => (Kind::Unsupported, "unknown_format"),
            Error::ContentEncoding(_) => (Kind::Unsupported, "unsupported"),
            Error::Tenant(_) => (Kind::Invalid, "bad_tenant"),
            Error::BadRequest(_) => (Kind::Invalid, "bad_request"),
        };
        Refusal { kind, reason, message }
    }
}

/// Decoders name their failures by reason; only "too large" is not the sender's mistake.
fn kind_of(reason: &str) -> Kind {
    if reason == "too_large" {
        Kind::TooLarge
    } else {
        Kind::Invalid
    }
}
