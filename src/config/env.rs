//! `${env:NAME}` and `${env:NAME:-default}` substitution in config values.
//!
//! Substitution runs on the parsed YAML tree, string values only (never keys, never comments),
//! so an error can name the YAML path of the value that referenced a missing variable.
//! The syntax is the OpenTelemetry Collector's; `:-` behaves as in the shell (the default is
//! used when the variable is unset or empty). `$${` writes a literal `${`.
//!
//! A value that is exactly one reference takes the type its substituted text has in YAML
//! (`4040` becomes a number, `true` a boolean), as in the Collector, so `port: ${env:PORT}`
//! works; a reference inside a longer string always yields a string.

use yaml_serde::Value;

use super::YamlPath;

/// One failed reference: the YAML path of the value and what was wrong.
pub type EnvIssue = (String, String);

/// Expands every reference under `value` in place, reporting each bad one.
pub fn substitute(
    value: &mut Value,
    path: &YamlPath,
    lookup: &dyn Fn(&str) -> Option<String>,
    issues: &mut Vec<EnvIssue>,
) {
    match value {
        Value::String(s) => match expand(s, lookup) {
            Ok(Some(expanded)) => *value = expanded,
            Ok(None) => {}
            Err(message) => issues.push((path.to_string(), message)),
        },
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                substitute(item, &path.index(i), lookup, issues);
            }
        }
        Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                substitute(item, &path.key(&super::key_text(key)), lookup, issues);
            }
        }
        Value::Tagged(tagged) => substitute(&mut tagged.value, path, lookup, issues),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// The value `s` becomes, or `None` when it holds no reference or escape.
fn expand(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Option<Value>, String> {
    if !s.contains("${") {
        return Ok(None);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    let mut references = 0;
    let mut whole = false;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            let Some(end) = after.find('}') else {
                return Err(format!("unterminated \"${{\" in {s:?}; write $${{ for a literal ${{"));
            };
            let reference = &after[..end];
            whole = at == 0 && out.is_empty() && end + 1 == after.len();
            out.push_str(&resolve(reference, lookup)?);
            references += 1;
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    if references == 1 && whole && !out.is_empty() {
        if let Ok(typed @ (Value::Bool(_) | Value::Number(_))) = yaml_serde::from_str::<Value>(&out) {
            return Ok(Some(typed));
        }
    }
    Ok(Some(Value::String(out)))
}

fn resolve(reference: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let Some(spec) = reference.strip_prefix("env:") else {
        return Err(format!(
            "unsupported reference \"${{{reference}}}\"; expected ${{env:NAME}} or ${{env:NAME:-default}} (write $${{ for a literal ${{)"
        ));
    };
    let (name, default) = match spec.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (spec, None),
    };
    if !is_env_name(name) {
        return Err(format!(
            "invalid environment variable name {name:?} in \"${{{reference}}}\""
        ));
    }
    if default.is_some_and(|d| d.contains("${")) {
        return Err(format!("nested references are not supported in \"${{{reference}}}\""));
    }
    match (lookup(name), default) {
        (Some(v), Some(d)) if v.is_empty() => Ok(d.to_string()),
        (Some(v), _) => Ok(v),
        (None, Some(d)) => Ok(d.to_string()),
        (None, None) => Err(format!(
            "environment variable {name} is not set (write ${{env:{name}:-default}} to give a default)"
        )),
    }
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "PORT" => Some("4040".into()),
            "HOST" => Some("127.0.0.1".into()),
            "EMPTY" => Some(String::new()),
            "FLAG" => Some("true".into()),
            _ => None,
        }
    }

    fn run(s: &str) -> Result<Option<Value>, String> {
        expand(s, &env)
    }

    #[test]
    fn plain_strings_are_untouched() {
        assert_eq!(run("file://./data").unwrap(), None);
        assert_eq!(run("costs $5").unwrap(), None);
    }

    #[test]
    fn expands_embedded_references_as_strings() {
        assert_eq!(
            run("${env:HOST}:${env:PORT}").unwrap(),
            Some(Value::String("127.0.0.1:4040".into()))
        );
        assert_eq!(
            run("port ${env:PORT}").unwrap(),
            Some(Value::String("port 4040".into()))
        );
    }

    #[test]
    fn a_whole_value_reference_is_typed() {
        assert_eq!(run("${env:PORT}").unwrap(), Some(Value::Number(4040.into())));
        assert_eq!(run("${env:FLAG}").unwrap(), Some(Value::Bool(true)));
        assert_eq!(run("${env:HOST}").unwrap(), Some(Value::String("127.0.0.1".into())));
    }

    #[test]
    fn defaults_apply_when_unset_or_empty() {
        assert_eq!(run("${env:NOPE:-8888}").unwrap(), Some(Value::Number(8888.into())));
        assert_eq!(run("${env:EMPTY:-x}").unwrap(), Some(Value::String("x".into())));
        assert_eq!(run("${env:NOPE:-}").unwrap(), Some(Value::String(String::new())));
        assert_eq!(run("${env:PORT:-1}").unwrap(), Some(Value::Number(4040.into())));
        assert_eq!(
            run("${env:HOST:-a:-b}").unwrap(),
            Some(Value::String("127.0.0.1".into()))
        );
        assert_eq!(run("${env:NOPE:-a:-b}").unwrap(), Some(Value::String("a:-b".into())));
    }

    #[test]
    fn escapes_write_a_literal_reference() {
        assert_eq!(run("$${env:PORT}").unwrap(), Some(Value::String("${env:PORT}".into())));
        assert_eq!(
            run("a $${x} ${env:PORT}").unwrap(),
            Some(Value::String("a ${x} 4040".into()))
        );
    }

    #[test]
    fn reports_what_is_wrong() {
        assert_eq!(
            run("${env:NOPE}").unwrap_err(),
            "environment variable NOPE is not set (write ${env:NOPE:-default} to give a default)"
        );
        assert_eq!(
            run("${HOME}").unwrap_err(),
            "unsupported reference \"${HOME}\"; expected ${env:NAME} or ${env:NAME:-default} (write $${ for a literal ${)"
        );
        assert_eq!(
            run("x ${env:PORT").unwrap_err(),
            "unterminated \"${\" in \"x ${env:PORT\"; write $${ for a literal ${"
        );
        assert_eq!(
            run("${env:1X}").unwrap_err(),
            "invalid environment variable name \"1X\" in \"${env:1X}\""
        );
        assert_eq!(
            run("${env:A:-${env:B}}").unwrap_err(),
            "nested references are not supported in \"${env:A:-${env:B}\""
        );
    }

    #[test]
    fn substitutes_through_the_tree_and_names_paths() {
        let mut v: Value =
            yaml_serde::from_str("a:\n  b: [x, '${env:NOPE}', '${env:PORT}']\n  c: ${env:GONE}\n").unwrap();
        let mut issues = Vec::new();
        substitute(&mut v, &YamlPath::root(), &env, &mut issues);
        let paths: Vec<_> = issues.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["a.b[1]", "a.c"]);
        assert_eq!(v["a"]["b"][2], Value::Number(4040.into()));
    }
}
