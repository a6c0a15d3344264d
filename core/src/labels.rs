//! Series labels: a small sorted set of `name=value` pairs that identifies a series.
//!
//! Receivers build them from what senders say (`service_name`, tags, the Push API's label pairs);
//! the block index stores them; queries match on them. Names are unique and kept sorted so two
//! equal sets compare and hash equal whatever order the sender used.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

/// The label every series has: which service sent it (Pyroscope's convention).
pub const SERVICE_NAME: &str = "service_name";
/// The profile type id label, `<name>:<sample type>:<unit>:<period type>:<period unit>`.
pub const PROFILE_TYPE: &str = "__profile_type__";
/// The profile name label (`process_cpu`, `memory`, ...).
pub const METRIC_NAME: &str = "__name__";
/// The service of senders that name none (the OpenTelemetry SDKs' and Pyroscope's default).
pub const UNKNOWN_SERVICE: &str = "unknown_service";

/// A sorted set of label pairs; setting a name twice keeps the last value. Names and values
/// are shared strings: the series of one request (one per sample label set) copy them by
/// reference.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels(Vec<(Arc<str>, Arc<str>)>);

impl Labels {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `name` to `value`, replacing an earlier value. Empty values remove the label,
    /// as in Prometheus, where an empty label is the same as an absent one.
    pub fn set(&mut self, name: impl Into<Arc<str>>, value: impl Into<Arc<str>>) {
        let (name, value): (Arc<str>, Arc<str>) = (name.into(), value.into());
        match self.0.binary_search_by(|(n, _)| (**n).cmp(&*name)) {
            Ok(i) if value.is_empty() => {
                self.0.remove(i);
            }
            Ok(i) => self.0[i].1 = value,
            Err(_) if value.is_empty() => {}
            Err(i) => self.0.insert(i, (name, value)),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(n, _)| (**n).cmp(name))
            .ok()
            .map(|i| &*self.0[i].1)
    }

    /// The pairs as shared strings, to copy into other label sets without copying the text.
    pub fn shared(&self) -> impl Iterator<Item = (&Arc<str>, &Arc<str>)> {
        self.0.iter().map(|(n, v)| (n, v))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (&**n, &**v))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<N: Into<Arc<str>>, V: Into<Arc<str>>> FromIterator<(N, V)> for Labels {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        let mut labels = Labels::new();
        for (n, v) in iter {
            labels.set(n, v);
        }
        labels
    }
}

impl fmt::Display for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (n, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{n}={v:?}")?;
        }
        f.write_str("}")
    }
}

/// Why an `app.name{k=v,...}` string could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameParseError {
    #[error("empty application name")]
    EmptyName,
    #[error("missing closing '}}' in {0:?}")]
    Unclosed(String),
    #[error("unexpected text after '}}' in {0:?}")]
    TrailingText(String),
    #[error("label {0:?} is not of the form key=value")]
    NotKeyValue(String),
    #[error("invalid label name {0:?}: must match [a-zA-Z_][a-zA-Z0-9_.]*")]
    InvalidLabelName(String),
}

/// Parses the legacy `/ingest` `name` parameter: `app.cpu{env=prod,region=eu}`.
///
/// Returns the application name and its tags. Pyroscope accepts values without quotes
/// and ignores surrounding spaces; so do we. Label names must be identifiers.
pub fn parse_app_name(input: &str) -> Result<(String, Vec<(String, String)>), NameParseError> {
    let (app, rest) = match input.find('{') {
        Some(i) => (&input[..i], Some(&input[i + 1..])),
        None => (input, None),
    };
    let app = app.trim();
    if app.is_empty() {
        return Err(NameParseError::EmptyName);
    }
    let mut tags = Vec::new();
    if let Some(rest) = rest {
        let Some(close) = rest.rfind('}') else {
            return Err(NameParseError::Unclosed(input.to_string()));
        };
        if !rest[close + 1..].trim().is_empty() {
            return Err(NameParseError::TrailingText(input.to_string()));
        }
        for pair in rest[..close].split(',') {
            let pair = pair.trim();
            if pair.is_empty() {
                continue;
            }
            let Some((key, value)) = pair.split_once('=') else {
                return Err(NameParseError::NotKeyValue(pair.to_string()));
            };
            let key = key.trim();
            if !is_sender_label_name(key) {
                return Err(NameParseError::InvalidLabelName(key.to_string()));
            }
            let value = value.trim().trim_matches('"');
            tags.push((key.to_string(), value.to_string()));
        }
    }
    Ok((app.to_string(), tags))
}

/// Label names as Pyroscope senders may write them: Prometheus' rule plus `.`, which
/// [`sanitize_label_name`] turns into `_` before the label is stored (stored names follow
/// [`crate::validate::is_valid_label_name`]).
pub fn is_sender_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// Pyroscope's rule for label names from senders: dots become underscores
/// (`otel.scope.name` -> `otel_scope_name`), since selectors cannot name them otherwise.
pub fn sanitize_label_name(name: &str) -> Cow<'_, str> {
    if name.contains('.') {
        Cow::Owned(name.replace('.', "_"))
    } else {
        Cow::Borrowed(name)
    }
}

/// An OpenTelemetry attribute key as a label name, as Prometheus' OTLP translation makes
/// one: every character outside `[a-zA-Z0-9_]` becomes `_` (`k8s.pod.name` ->
/// `k8s_pod_name`, `http-route` -> `http_route`), and a key that starts with a digit gets a
/// `key_` prefix. Empty keys stay empty (callers skip them).
pub fn otel_label_name(key: &str) -> Cow<'_, str> {
    let leading_digit = key.starts_with(|c: char| c.is_ascii_digit());
    if !leading_digit && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Cow::Borrowed(key);
    }
    let mut name = String::with_capacity(key.len() + 4);
    if leading_digit {
        name.push_str("key_");
    }
    name.extend(
        key.chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }),
    );
    Cow::Owned(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_stay_sorted_and_unique() {
        let mut l = Labels::new();
        l.set("b", "2");
        l.set("a", "1");
        l.set("b", "3");
        assert_eq!(l.iter().collect::<Vec<_>>(), vec![("a", "1"), ("b", "3")]);
        l.set("a", "");
        assert_eq!(l.get("a"), None);
        assert_eq!(l.to_string(), "{b=\"3\"}");
    }

    #[test]
    fn otel_keys_become_label_names() {
        assert_eq!(otel_label_name("thread.name"), "thread_name");
        assert_eq!(otel_label_name("http-route/v1"), "http_route_v1");
        assert_eq!(otel_label_name("2xx"), "key_2xx");
        assert_eq!(otel_label_name("zoné"), "zon_");
        assert!(matches!(otel_label_name("plain_name"), Cow::Borrowed(_)));
        for key in ["a.b", "9", "x y", "é"] {
            assert!(crate::validate::is_valid_label_name(&otel_label_name(key)), "{key}");
        }
    }

    #[test]
    fn parses_app_names() {
        assert_eq!(parse_app_name("app.cpu").unwrap(), ("app.cpu".into(), vec![]));
        let (app, tags) = parse_app_name("my-app.cpu{env=prod, region = \"eu\" ,}").unwrap();
        assert_eq!(app, "my-app.cpu");
        assert_eq!(
            tags,
            vec![("env".into(), "prod".into()), ("region".into(), "eu".into())]
        );
    }

    #[test]
    fn rejects_broken_app_names() {
        assert_eq!(parse_app_name("{a=b}"), Err(NameParseError::EmptyName));
        assert!(matches!(parse_app_name("app{a=b"), Err(NameParseError::Unclosed(_))));
        assert!(matches!(parse_app_name("app{a}"), Err(NameParseError::NotKeyValue(_))));
        assert!(matches!(
            parse_app_name("app{1a=b}"),
            Err(NameParseError::InvalidLabelName(_))
        ));
        assert!(matches!(
            parse_app_name("app{a=b}x"),
            Err(NameParseError::TrailingText(_))
        ));
    }
}
