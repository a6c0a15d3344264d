//! Times as senders and query clients write them, parsed to unix nanoseconds.
//!
//! Pyroscope's `attime` rules, which both its ingest API (`from`/`until`) and its query API
//! use: all digits are unix time in seconds, or milliseconds (13 digits), microseconds (16)
//! or nanoseconds (19); `now`, `now-1h`, `-30m` and the like are relative to now. RFC 3339
//! (`2026-11-22T03:00:00Z`) is accepted too, as query clients send it.

const NS_PER_SEC: i64 = 1_000_000_000;

/// Parses `value` to unix nanoseconds; `None` when it is none of the accepted forms.
pub fn parse_time(value: &str, now_ns: i64) -> Option<i64> {
    let value = value.trim();
    if value.is_empty() || value == "now" {
        return Some(now_ns);
    }
    if value.bytes().all(|b| b.is_ascii_digit()) {
        let n: i64 = value.parse().ok()?;
        return match value.len() {
            13 => n.checked_mul(1_000_000),
            16 => n.checked_mul(1_000),
            19 => Some(n),
            _ => n.checked_mul(NS_PER_SEC),
        };
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(value) {
        let since = t.duration_since(std::time::UNIX_EPOCH).ok()?;
        return i64::try_from(since.as_nanos()).ok();
    }
    let relative = value.strip_prefix("now").unwrap_or(value);
    let (sign, rest) = match relative.as_bytes().first() {
        Some(b'-') => (-1, &relative[1..]),
        Some(b'+') => (1, &relative[1..]),
        _ => return None,
    };
    let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    let (count, unit) = rest.split_at(digits);
    let count: i64 = count.parse().ok()?;
    const DAY: i64 = 86_400 * NS_PER_SEC;
    let unit_ns = match unit {
        "s" | "sec" | "secs" | "second" | "seconds" => NS_PER_SEC,
        "m" | "min" | "mins" | "minute" | "minutes" => 60 * NS_PER_SEC,
        "h" | "hour" | "hours" => 3_600 * NS_PER_SEC,
        "d" | "day" | "days" => DAY,
        "w" | "week" | "weeks" => 7 * DAY,
        "mon" | "month" | "months" => 30 * DAY,
        "y" | "year" | "years" => 365 * DAY,
        _ => return None,
    };
    now_ns.checked_add(sign * count.checked_mul(unit_ns)?)
}

/// Now, in unix nanoseconds.
pub fn now_ns() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_nanos()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        let now = 1_800_000_000_000_000_000;
        assert_eq!(parse_time("now", now), Some(now));
        assert_eq!(parse_time("1700000000", now), Some(1_700_000_000_000_000_000));
        assert_eq!(parse_time("1700000000123", now), Some(1_700_000_000_123_000_000));
        assert_eq!(parse_time("1700000000123456789", now), Some(1_700_000_000_123_456_789));
        assert_eq!(parse_time("now-1h", now), Some(now - 3_600 * NS_PER_SEC));
        assert_eq!(parse_time("-15m", now), Some(now - 900 * NS_PER_SEC));
        assert_eq!(parse_time("2023-11-14T22:13:20Z", now), Some(1_700_000_000_000_000_000));
        assert_eq!(
            parse_time("2023-11-14T22:13:20.5Z", now),
            Some(1_700_000_000_500_000_000)
        );
        assert_eq!(parse_time("yesterday", now), None);
        assert_eq!(parse_time("now-1parsec", now), None);
    }
}
