//! Request parameters -> engine queries, with the checks that make a bad query a clear
//! `invalid_argument` / 400 naming the problem.

use flamepipe_core::ProfileType;
use flamepipe_core::selector::Selector;
use flamepipe_core::time::{now_ns, parse_time};

use crate::connect::ConnectError;
use crate::engine::Query;

const NS_PER_MS: i64 = 1_000_000;
const HOUR_NS: i64 = 3_600 * 1_000_000_000;
/// Prometheus's limit on points per series.
pub const MAX_POINTS: i64 = 11_000;

/// Pyroscope's timeline: at least 10 s per point, about 1,500 points.
const TIMELINE_POINTS: i64 = 1_500;
const TIMELINE_MIN_STEP_NS: i64 = 10 * 1_000_000_000;

/// A flame graph, pprof or series query: one profile type, one selector, one time range.
pub struct Selection {
    pub query: Query,
    pub profile_type: ProfileType,
}

/// A Connect time range in unix milliseconds, to inclusive nanoseconds. `end` 0 means now and
/// `start` 0 an hour before `end`.
pub fn range_ms(start: i64, end: i64) -> Result<(i64, i64), ConnectError> {
    let to_ns = |ms: i64, what: &str| {
        ms.checked_mul(NS_PER_MS)
            .ok_or_else(|| ConnectError::invalid(format!("{what} {ms} is out of range (unix milliseconds)")))
    };
    let end_ns = if end == 0 {
        now_ns()
    } else {
        to_ns(end, "end")? + (NS_PER_MS - 1)
    };
    let start_ns = if start == 0 {
        end_ns - HOUR_NS
    } else {
        to_ns(start, "start")?
    };
    check_order(start_ns, end_ns)?;
    Ok((start_ns, end_ns))
}

fn check_order(start_ns: i64, end_ns: i64) -> Result<(), ConnectError> {
    if start_ns > end_ns {
        return Err(ConnectError::invalid(format!(
            "start ({} ms) is after end ({} ms)",
            start_ns.div_euclid(NS_PER_MS),
            end_ns.div_euclid(NS_PER_MS)
        )));
    }
    Ok(())
}

/// HTTP `from` / `until` (unix s/ms/µs/ns, RFC 3339, `now-1h`), defaults `now-1h` and `now`.
pub fn range_http(from: Option<&str>, until: Option<&str>) -> Result<(i64, i64), ConnectError> {
    let now = now_ns();
    let parse = |value: Option<&str>, name: &str, default: &str| {
        let value = value.unwrap_or(default);
        parse_time(value, now).ok_or_else(|| {
            ConnectError::invalid(format!(
                "{name}={value:?} is not a time: use unix seconds or milliseconds, RFC 3339, or now-1h"
            ))
        })
    };
    let start = parse(from, "from", "now-1h")?;
    let end = parse(until, "until", "now")?;
    if start > end {
        return Err(ConnectError::invalid(format!(
            "from ({start} ns) is after until ({end} ns)"
        )));
    }
    Ok((start, end))
}

fn parse_selector(text: &str, what: &str) -> Result<Selector, ConnectError> {
    let text = if text.trim().is_empty() { "{}" } else { text };
    Selector::parse(text).map_err(|e| ConnectError::invalid(format!("{what}: {e}: {text}")))
}

/// A selection from Connect's `profile_typeID` and `label_selector`, or from one selector
/// holding both (`query=` on HTTP, with `profile_type_id` empty).
pub fn selection(
    tenant: &str,
    profile_type_id: &str,
    label_selector: &str,
    (start_ns, end_ns): (i64, i64),
) -> Result<Selection, ConnectError> {
    let what = if profile_type_id.is_empty() {
        "query"
    } else {
        "label_selector"
    };
    let mut selector = parse_selector(label_selector, what)?;
    let profile_type = if profile_type_id.is_empty() {
        selector.profile_type.clone().ok_or_else(|| {
            ConnectError::invalid(format!(
                "{what}: a profile type is required, e.g. process_cpu:cpu:nanoseconds:cpu:nanoseconds{{service_name=\"app\"}}: {label_selector}"
            ))
        })?
    } else {
        ProfileType::parse(profile_type_id).map_err(|e| ConnectError::invalid(format!("profile_typeID: {e}")))?
    };
    selector.profile_type = Some(profile_type.clone());
    Ok(Selection {
        query: Query {
            tenant: tenant.to_string(),
            selectors: vec![selector],
            start_ns,
            end_ns,
        },
        profile_type,
    })
}

/// A metadata query: series matching any of `matchers` (all series when there are none).
pub fn matchers(tenant: &str, matchers: &[String], (start_ns, end_ns): (i64, i64)) -> Result<Query, ConnectError> {
    let selectors = matchers
        .iter()
        .map(|m| parse_selector(m, "matchers"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Query {
        tenant: tenant.to_string(),
        selectors,
        start_ns,
        end_ns,
    })
}

/// `max_nodes` as requested: absent or 0 is the default; negative or over the limit is refused.
pub fn max_nodes(requested: Option<i64>, default: u32, limit: u32) -> Result<usize, ConnectError> {
    match requested {
        None | Some(0) => Ok(default as usize),
        Some(n) if n < 0 => Err(ConnectError::invalid(format!("max_nodes {n} is negative"))),
        Some(n) if n > i64::from(limit) => Err(ConnectError::invalid(format!(
            "max_nodes {n} is over the limit of {limit} (max_nodes_limit of the query extension)"
        ))),
        Some(n) => Ok(n as usize),
    }
}

/// A series step in seconds; 0 picks Pyroscope's timeline step for the range.
pub fn step_ns(step_seconds: f64, (start_ns, end_ns): (i64, i64)) -> Result<i64, ConnectError> {
    if step_seconds == 0.0 {
        return Ok(timeline_step_ns(start_ns, end_ns));
    }
    if !step_seconds.is_finite() || step_seconds < 0.001 {
        return Err(ConnectError::invalid(format!(
            "step {step_seconds} must be at least 0.001 seconds"
        )));
    }
    let step = (step_seconds * 1e9) as i64;
    let points = (end_ns - start_ns) / step + 1;
    if points > MAX_POINTS {
        return Err(ConnectError::invalid(format!(
            "step {step_seconds}s gives {points} points per series, more than {MAX_POINTS}: use a larger step"
        )));
    }
    Ok(step)
}

/// The timeline step Pyroscope's UI uses: range / 1500, at least 10 s, whole seconds.
pub fn timeline_step_ns(start_ns: i64, end_ns: i64) -> i64 {
    let step = ((end_ns - start_ns) / TIMELINE_POINTS).max(TIMELINE_MIN_STEP_NS);
    (step + 999_999_999) / 1_000_000_000 * 1_000_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selections_name_the_problem() {
        let range = (0, 10);
        let e = selection("t", "", "{service_name=\"a\"}", range).err().unwrap();
        assert!(e.message.contains("a profile type is required"), "{}", e.message);
        let e = selection("t", "cpu", "{}", range).err().unwrap();
        assert!(
            e.message.starts_with("profile_typeID: invalid profile type \"cpu\""),
            "{}",
            e.message
        );
        let e = selection("t", "a:b:c:d:e", "{service_name=}", range).err().unwrap();
        assert!(
            e.message.starts_with("label_selector: invalid selector at position"),
            "{}",
            e.message
        );
        let s = selection("t", "", "a:b:c:d:e{x=\"1\"}", range).unwrap();
        assert_eq!(s.profile_type.id(), "a:b:c:d:e");
    }

    #[test]
    fn ranges_and_limits() {
        assert!(
            range_ms(2000, 1000)
                .err()
                .unwrap()
                .message
                .contains("start (2000 ms) is after end (1000 ms)")
        );
        assert_eq!(range_ms(1000, 2000).unwrap(), (1_000_000_000, 2_000_999_999));
        assert!(range_http(Some("now"), Some("now-1h")).is_err());
        assert!(
            range_http(Some("yesterday"), None)
                .err()
                .unwrap()
                .message
                .contains("from=\"yesterday\"")
        );
        assert_eq!(max_nodes(None, 8192, 100_000).unwrap(), 8192);
        assert!(max_nodes(Some(-1), 8192, 100_000).is_err());
        assert!(
            max_nodes(Some(1 << 40), 8192, 100_000)
                .err()
                .unwrap()
                .message
                .contains("over the limit")
        );
        assert!(step_ns(-1.0, (0, 10)).is_err());
        assert!(
            step_ns(1.0, (0, 86_400 * 1_000_000_000))
                .err()
                .unwrap()
                .message
                .contains("86401 points")
        );
        assert_eq!(timeline_step_ns(0, 3_600_000_000_000), 10_000_000_000);
    }
}
