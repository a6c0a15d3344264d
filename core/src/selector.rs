//! Pyroscope's selector syntax: `<profile type id>{label matchers}`, e.g.
//! `process_cpu:cpu:nanoseconds:cpu:nanoseconds{service_name="checkout", region=~"eu-.*"}`.
//!
//! The profile type is optional (`{service_name="x"}`), as Pyroscope's `label_selector`
//! fields carry it separately. Matchers are Prometheus's: `=`, `!=`, `=~`, `!~`, with values
//! in double or single quotes (escapes `\"`, `\'`, `\\`, `\n`, `\t`) or backticks (raw). Regexes
//! match the whole value, as in Prometheus; an absent label matches as the empty string.

use std::fmt;

use regex::Regex;

use crate::labels::Labels;
use crate::profile_type::ProfileType;

/// Why a selector did not parse: the byte position and what was expected there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid selector at position {position}: {message}")]
pub struct SelectorError {
    pub position: usize,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchOp {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

#[derive(Clone, Debug)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    /// For regex matchers: `^(?:value)$`.
    regex: Option<Regex>,
}

impl Matcher {
    pub fn new(name: impl Into<String>, op: MatchOp, value: impl Into<String>) -> Result<Self, regex::Error> {
        let value = value.into();
        let regex = match op {
            MatchOp::Regex | MatchOp::NotRegex => Some(Regex::new(&format!("^(?:{value})$"))?),
            MatchOp::Equal | MatchOp::NotEqual => None,
        };
        Ok(Matcher {
            name: name.into(),
            op,
            value,
            regex,
        })
    }

    pub fn matches(&self, value: Option<&str>) -> bool {
        let value = value.unwrap_or("");
        match (self.op, &self.regex) {
            (MatchOp::Equal, _) => value == self.value,
            (MatchOp::NotEqual, _) => value != self.value,
            (MatchOp::Regex, Some(re)) => re.is_match(value),
            (MatchOp::NotRegex, Some(re)) => !re.is_match(value),
            (MatchOp::Regex | MatchOp::NotRegex, None) => false,
        }
    }
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        (&self.name, self.op, &self.value) == (&other.name, other.op, &other.value)
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        };
        write!(f, "{}{op}{:?}", self.name, self.value)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Selector {
    pub profile_type: Option<ProfileType>,
    pub matchers: Vec<Matcher>,
}

impl Selector {
    /// Whether a series (its labels and profile type) is selected.
    pub fn matches(&self, labels: &Labels, profile_type: &ProfileType) -> bool {
        self.profile_type.as_ref().is_none_or(|t| t == profile_type)
            && self.matchers.iter().all(|m| m.matches(labels.get(&m.name)))
    }

    pub fn parse(input: &str) -> Result<Selector, SelectorError> {
        Parser { input, at: 0 }.selector()
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(t) = &self.profile_type {
            write!(f, "{t}")?;
        }
        f.write_str("{")?;
        for (i, m) in self.matchers.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{m}")?;
        }
        f.write_str("}")
    }
}

struct Parser<'a> {
    input: &'a str,
    at: usize,
}

impl Parser<'_> {
    fn error(&self, message: impl Into<String>) -> SelectorError {
        SelectorError {
            position: self.at,
            message: message.into(),
        }
    }

    fn rest(&self) -> &str {
        &self.input[self.at..]
    }

    fn skip_space(&mut self) {
        let trimmed = self.rest().trim_start();
        self.at = self.input.len() - trimmed.len();
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_space();
        if self.rest().starts_with(token) {
            self.at += token.len();
            true
        } else {
            false
        }
    }

    fn selector(&mut self) -> Result<Selector, SelectorError> {
        self.skip_space();
        let type_end = self.rest().find('{').unwrap_or(self.rest().len());
        let type_text = self.rest()[..type_end].trim();
        let profile_type = if type_text.is_empty() {
            None
        } else {
            Some(ProfileType::parse(type_text).map_err(|e| self.error(e.to_string()))?)
        };
        self.at += type_end;
        if !self.eat("{") {
            if profile_type.is_some() && self.rest().trim().is_empty() {
                return Ok(Selector {
                    profile_type,
                    matchers: Vec::new(),
                });
            }
            return Err(self.error("expected '{'"));
        }
        let mut matchers = Vec::new();
        loop {
            if self.eat("}") {
                break;
            }
            matchers.push(self.matcher()?);
            if self.eat(",") {
                continue;
            }
            if self.eat("}") {
                break;
            }
            return Err(self.error("expected ',' or '}'"));
        }
        self.skip_space();
        if !self.rest().is_empty() {
            return Err(self.error("unexpected text after '}'"));
        }
        Ok(Selector { profile_type, matchers })
    }

    fn matcher(&mut self) -> Result<Matcher, SelectorError> {
        self.skip_space();
        let name_len = self
            .rest()
            .char_indices()
            .find(|&(i, c)| !(c.is_ascii_alphabetic() || c == '_' || (i > 0 && (c.is_ascii_digit() || c == '.'))))
            .map_or(self.rest().len(), |(i, _)| i);
        if name_len == 0 {
            return Err(self.error("expected a label name"));
        }
        let name = self.rest()[..name_len].to_string();
        self.at += name_len;
        let op = if self.eat("=~") {
            MatchOp::Regex
        } else if self.eat("!~") {
            MatchOp::NotRegex
        } else if self.eat("!=") {
            MatchOp::NotEqual
        } else if self.eat("=") {
            MatchOp::Equal
        } else {
            return Err(self.error("expected one of =, !=, =~, !~"));
        };
        self.skip_space();
        let value_at = self.at;
        let value = self.quoted()?;
        Matcher::new(name, op, value).map_err(|e| SelectorError {
            position: value_at,
            message: format!("invalid regex: {e}"),
        })
    }

    fn quoted(&mut self) -> Result<String, SelectorError> {
        let mut chars = self.rest().char_indices();
        let quote = match chars.next() {
            Some((_, q @ ('"' | '\'' | '`'))) => q,
            _ => return Err(self.error("expected a quoted value")),
        };
        let mut value = String::new();
        let mut escaped = false;
        for (i, c) in chars {
            if escaped {
                value.push(match c {
                    'n' => '\n',
                    't' => '\t',
                    other => other,
                });
                escaped = false;
            } else if c == '\\' && quote != '`' {
                escaped = true;
            } else if c == quote {
                self.at += i + c.len_utf8();
                return Ok(value);
            } else {
                value.push(c);
            }
        }
        Err(self.error("unterminated quoted value"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().copied().collect()
    }

    #[test]
    fn parses_pyroscope_selectors() {
        let s = Selector::parse(
            r#"process_cpu:cpu:nanoseconds:cpu:nanoseconds{service_name="checkout", region=~"eu-.*", pod!="a\"b",}"#,
        )
        .unwrap();
        assert_eq!(s.profile_type.as_ref().unwrap().name, "process_cpu");
        assert_eq!(s.matchers.len(), 3);
        assert_eq!(s.matchers[2].value, "a\"b");
        assert_eq!(
            s.to_string(),
            r#"process_cpu:cpu:nanoseconds:cpu:nanoseconds{service_name="checkout", region=~"eu-.*", pod!="a\"b"}"#
        );
        let cpu = ProfileType::parse("process_cpu:cpu:nanoseconds:cpu:nanoseconds").unwrap();
        let heap = ProfileType::parse("memory:alloc_space:bytes:space:bytes").unwrap();
        let eu = labels(&[("service_name", "checkout"), ("region", "eu-west")]);
        assert!(s.matches(&eu, &cpu));
        assert!(!s.matches(&eu, &heap));
        assert!(!s.matches(&labels(&[("service_name", "checkout"), ("region", "us-east")]), &cpu));
        // Regexes match whole values.
        assert!(!s.matches(&labels(&[("service_name", "checkout"), ("region", "xeu-west")]), &cpu));
    }

    #[test]
    fn bare_matchers_and_bare_types() {
        let s = Selector::parse("{ service_name = 'a', env!~`prod|stage` }").unwrap();
        assert!(s.profile_type.is_none());
        assert!(s.matches(
            &labels(&[("service_name", "a")]),
            &ProfileType::parse("a:b:c:d:e").unwrap()
        ));
        assert!(Selector::parse("{}").unwrap().matchers.is_empty());
        let t = Selector::parse("memory:inuse_space:bytes:space:bytes").unwrap();
        assert!(t.matchers.is_empty() && t.profile_type.is_some());
    }

    #[test]
    fn errors_point_at_the_problem() {
        let cases = [
            ("process_cpu{service_name=\"a\"}", 0, "invalid profile type"),
            ("{service_name=\"a\"", 17, "expected ',' or '}'"),
            ("{service_name}", 13, "expected one of"),
            ("{=\"a\"}", 1, "expected a label name"),
            ("{a=b}", 3, "expected a quoted value"),
            ("{a=\"b}", 3, "unterminated"),
            ("{a=~\"(\"}", 4, "invalid regex"),
            ("{a=\"b\"} extra", 8, "unexpected text"),
        ];
        for (input, position, message) in cases {
            let e = Selector::parse(input).unwrap_err();
            assert_eq!(e.position, position, "{input}: {e}");
            assert!(e.to_string().contains(message), "{input}: {e}");
        }
    }
}
