//! Tenant ids: the `X-Scope-OrgID` header, checked as Mimir and Pyroscope check it.
//!
//! Ingest and query read the tenant the same way, so one tenant can never address
//! another's data by a spelling the other side reads differently.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue};

use crate::DEFAULT_TENANT;

/// The header that names the tenant.
pub const TENANT_HEADER: &str = "x-scope-orgid";
const MAX_TENANT_LEN: usize = 150;

/// The headers an exporter sends for one batch: the `configured` ones, plus the batch's
/// `tenant` as `X-Scope-OrgID` unless they set it themselves.
pub fn with_tenant(configured: &HeaderMap, tenant: &str) -> HeaderMap {
    let mut headers = configured.clone();
    if !headers.contains_key(TENANT_HEADER)
        && let Ok(value) = HeaderValue::from_str(tenant)
    {
        headers.insert(TENANT_HEADER, value);
    }
    headers
}

/// The tenant named by `X-Scope-OrgID` (default `anonymous`): letters, digits and
/// `!-_.*'()`, at most 150 characters, not `.` or `..`. Tenant ids end up in object keys,
/// where anything else would be escaped or collide. The error says what is wrong.
pub fn tenant(headers: &HeaderMap) -> Result<Arc<str>, &'static str> {
    let Some(value) = headers.get(TENANT_HEADER) else {
        return Ok(Arc::from(DEFAULT_TENANT));
    };
    let id = value.to_str().map_err(|_| "must be visible ascii")?;
    if id.is_empty() {
        return Err("must not be empty");
    }
    if id.len() > MAX_TENANT_LEN {
        return Err("longer than 150 characters");
    }
    if !id.chars().all(|c| c.is_ascii_alphanumeric() || "!-_.*'()".contains(c)) {
        return Err("may hold only letters, digits and !-_.*'()");
    }
    if id == "." || id == ".." {
        return Err("must not be \".\" or \"..\"");
    }
    Ok(Arc::from(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_batch_tenant_is_sent_unless_the_config_names_one() {
        let none = HeaderMap::new();
        assert_eq!(with_tenant(&none, "team-a")[TENANT_HEADER], "team-a");
        let mut configured = HeaderMap::new();
        configured.insert(TENANT_HEADER, HeaderValue::from_static("fixed"));
        assert_eq!(with_tenant(&configured, "team-a")[TENANT_HEADER], "fixed");
    }
}
