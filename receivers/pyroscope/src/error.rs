//! Why a request was refused: one enum for both APIs, each variant knowing its HTTP status,
//! its Connect error code and the stable `reason` label of the refused-requests metric.

use axum::http::StatusCode;
use flamepipe_core::body::BodyError;
use flamepipe_core::formats::folded::FoldedError;
use flamepipe_core::formats::pprof::PprofError;
use flamepipe_core::formats::speedscope::SpeedscopeError;
use flamepipe_core::labels::NameParseError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("request body exceeds the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("could not read the request body: {0}")]
    Read(String),
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
    /// A decoded profile fails the checks every stored profile passes (a `:` in its type,
    /// a label name, a time out of range).
    #[error("invalid {0}")]
    InvalidProfile(#[from] flamepipe_core::validate::InvalidProfile),
    #[error("no profiles received")]
    NoProfiles,
    #[error("unsupported format {0:?}")]
    Format(String),
    #[error("unsupported content type {0:?}: expected application/proto or application/json")]
    ContentType(String),
    #[error("invalid tenant id in X-Scope-OrgID: {0}")]
    Tenant(&'static str),
    /// Anything else the sender got wrong (multipart layout, folded syntax, labels, JSON).
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}, retry later")]
    PipelineFull(String),
    #[error("too many requests in flight, retry later")]
    Busy,
    #[error("{0}")]
    ShuttingDown(String),
    #[error("timed out waiting for durable write")]
    Timeout,
    #[error("durable write failed: {0}")]
    WriteFailed(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Error::BadRequest(message.into())
    }

    /// A short stable name for the `reason` label of the refused-requests metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::TooLarge { .. } => "too_large",
            Error::Read(_) => "bad_request",
            Error::Body(e) => e.reason(),
            Error::Pprof(e) => e.reason(),
            Error::Folded(e) => e.reason(),
            Error::Speedscope(e) => e.reason(),
            Error::Protobuf(_) => "bad_protobuf",
            Error::MissingName | Error::Name(_) => "bad_name",
            Error::NoProfiles => "empty_body",
            Error::InvalidProfile(_) => "invalid_profile",
            Error::Time { .. } => "bad_time",
            Error::Format(_) | Error::ContentType(_) => "unknown_format",
            Error::Tenant(_) => "bad_tenant",
            Error::BadRequest(_) => "bad_request",
            Error::PipelineFull(_) => "pipeline_full",
            Error::Busy => "too_many_requests",
            Error::ShuttingDown(_) => "shutting_down",
            Error::Timeout => "timeout",
            Error::WriteFailed(_) => "write_failed",
            Error::Internal(_) => "internal",
        }
    }

    pub fn status(&self) -> StatusCode {
        if let Error::ContentType(_) = self {
            return StatusCode::UNSUPPORTED_MEDIA_TYPE;
        }
        // By reason, so that body and pprof errors over a limit map like our own.
        match self.reason() {
            "too_large" => StatusCode::PAYLOAD_TOO_LARGE,
            "pipeline_full" | "too_many_requests" => StatusCode::TOO_MANY_REQUESTS,
            "shutting_down" | "timeout" | "write_failed" => StatusCode::SERVICE_UNAVAILABLE,
            "internal" => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The Connect protocol's error code. Too-large bodies answer HTTP 413 with
    /// `resource_exhausted`, as connect-go does for messages over its read limit; Connect
    /// clients take the code from the body, so the status only matters to plain HTTP tools.
    pub fn connect_code(&self) -> &'static str {
        match self.status() {
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::TOO_MANY_REQUESTS => "resource_exhausted",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            StatusCode::INTERNAL_SERVER_ERROR => "internal",
            _ => "invalid_argument",
        }
    }

    /// Server-side trouble (worth a warning); everything else is the sender's fault.
    pub(crate) fn is_server_side(&self) -> bool {
        self.status().is_server_error() || self.status() == StatusCode::TOO_MANY_REQUESTS
    }
}
