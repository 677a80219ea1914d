//! Enricher templates: text with `${...}` references to the record being
//! enriched and to the daemon's environment.
//!
//! | reference | detection records | correlation records |
//! | --- | --- | --- |
//! | `${detection.rule.title}` / `.id` / `.level`, `${correlation.rule.…}` | the rule's | the rule's |
//! | `${detection.tags}`, `${correlation.tags}` | tags joined by `,` | tags joined by `,` |
//! | `${detection.fields.NAME}` | the first matched value of field `NAME` | |
//! | `${detection.event.PATH}` | a value of the event (with `--include-event`) | |
//! | `${correlation.type}`, `.aggregated_value`, `.timespan_secs` | | the correlation's |
//! | `${correlation.group_key}` / `${correlation.group_key.FIELD}` | | `f=v,f=v` / one field's value |
//! | `${NAME}` | the environment variable, read when the file is loaded | the same |
//!
//! A template is checked when the enrichers file loads: a reference to the
//! other kind's namespace, an unknown reference or an unset environment
//! variable is an error naming it. At render time a reference that resolves
//! to nothing (a field the rule did not match, an event without the path)
//! is an error, which the enricher's `on_error` handles.

use serde_json::Value;

use super::config::Kind;

/// A parsed template.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    segments: Vec<Segment>,
}

#[derive(Debug, Clone)]
enum Segment {
    Text(String),
    Reference(Reference),
}

/// What a `${...}` reference reads from a record.
#[derive(Debug, Clone)]
enum Reference {
    RuleTitle,
    RuleId,
    RuleLevel,
    Tags,
    MatchedField(String),
    EventPath(Vec<String>),
    CorrelationType,
    AggregatedValue,
    TimespanSecs,
    GroupKey,
    GroupKeyField(String),
}

impl Template {
    /// Parses `text` for an enricher of `kind`; `${NAME}` is read from the
    /// environment now.
    pub(crate) fn parse(text: &str, kind: Kind) -> Result<Template, String> {
        Template::parse_with(text, Some(kind), |name| std::env::var(name).ok())
    }

    /// Expands a text that may refer to environment variables only (a
    /// dynamic source's settings).
    pub(crate) fn expand_env(text: &str) -> Result<String, String> {
        Template::parse_with(text, None, |name| std::env::var(name).ok())?
            .render_plain(&Value::Null)
    }

    /// A template without references.
    pub(crate) fn literal(text: &str) -> Template {
        let mut segments = Vec::new();
        push_text(&mut segments, text);
        Template { segments }
    }

    fn parse_with(
        text: &str,
        kind: Option<Kind>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Template, String> {
        let mut segments = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            push_text(&mut segments, &rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| format!("unclosed `${{` in {text:?}"))?;
            let name = &after[..end];
            match reference(name, kind)? {
                Some(reference) => segments.push(Segment::Reference(reference)),
                None => {
                    let value = env(name).ok_or_else(|| {
                        format!("${{{name}}} is not set in the daemon's environment")
                    })?;
                    push_text(&mut segments, &value);
                }
            }
            rest = &after[end + 1..];
        }
        push_text(&mut segments, rest);
        Ok(Template { segments })
    }

    /// Renders the template for `record`; each reference's value passes
    /// through `encode` (URLs percent-encode them).
    pub(crate) fn render(
        &self,
        record: &Value,
        encode: impl Fn(&str, &mut String),
    ) -> Result<String, String> {
        let mut out = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Text(text) => out.push_str(text),
                Segment::Reference(reference) => encode(&resolve(reference, record)?, &mut out),
            }
        }
        Ok(out)
    }

    /// Renders without encoding.
    pub(crate) fn render_plain(&self, record: &Value) -> Result<String, String> {
        self.render(record, |value, out| out.push_str(value))
    }
}

/// Checks that every `${...}` of `text` sits inside a string literal
/// delimited by one of `quotes` (with backslash escapes): what a `lookup`
/// enricher's `extract` needs, so that a record's value, escaped by
/// [`escape_in_string`], stays data and never becomes query code. What
/// would let text inside a string, or a quote, be code is refused: jq's
/// string interpolation `\(...)` and `#` comments outside strings.
pub(crate) fn check_references_quoted(text: &str, quotes: &[char]) -> Result<(), String> {
    let mut open: Option<char> = None;
    let mut chars = text.char_indices();
    while let Some((at, c)) = chars.next() {
        match open {
            Some(_) if c == '\\' => {
                if let Some((_, '(')) = chars.next() {
                    return Err(
                        "string interpolation `\\(...)` cannot be used in a lookup's extract"
                            .to_owned(),
                    );
                }
            }
            Some(quote) if c == quote => open = None,
            Some(_) => {}
            None if quotes.contains(&c) => open = Some(c),
            None if c == '#' => {
                return Err("comments (`#`) cannot be used in a lookup's extract".to_owned());
            }
            None if text[at..].starts_with("${") => {
                let end = text[at..].find('}').map_or(text.len(), |e| at + e + 1);
                return Err(format!(
                    "{} must be inside a quoted string (a record's value is inserted as string content)",
                    &text[at..end]
                ));
            }
            None => {}
        }
    }
    Ok(())
}

/// Escapes a value for the inside of a `"` or `'` string literal of jq or
/// JSONPath: quotes as `\u` escapes (valid in both languages and both
/// quote styles), backslashes doubled, control characters as `\u` escapes.
pub(crate) fn escape_in_string(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\u0022"),
            '\'' => out.push_str("\\u0027"),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
}

fn push_text(segments: &mut Vec<Segment>, text: &str) {
    if text.is_empty() {
        return;
    }
    if let Some(Segment::Text(last)) = segments.last_mut() {
        last.push_str(text);
    } else {
        segments.push(Segment::Text(text.to_owned()));
    }
}

/// The reference `name` names, `None` for an environment variable.
fn reference(name: &str, kind: Option<Kind>) -> Result<Option<Reference>, String> {
    let (namespace, path) = match name.split_once('.') {
        Some((ns @ ("detection" | "correlation"), path)) => (ns, path),
        _ if is_env_name(name) => return Ok(None),
        _ => {
            return Err(format!(
                "${{{name}}} is neither a record reference nor a variable name"
            ));
        }
    };
    let Some(kind) = kind else {
        return Err(format!(
            "${{{name}}}: only environment variables can be used here"
        ));
    };
    if namespace != kind.as_str() {
        return Err(format!(
            "${{{name}}} refers to {namespace} records, but the enricher has kind: {}",
            kind.as_str()
        ));
    }
    let common = match path {
        "rule.title" => Some(Reference::RuleTitle),
        "rule.id" => Some(Reference::RuleId),
        "rule.level" => Some(Reference::RuleLevel),
        "tags" => Some(Reference::Tags),
        _ => None,
    };
    if let Some(reference) = common {
        return Ok(Some(reference));
    }
    let specific = match kind {
        Kind::Detection => {
            if let Some(field) = path.strip_prefix("fields.").filter(|f| !f.is_empty()) {
                Some(Reference::MatchedField(field.to_owned()))
            } else {
                path.strip_prefix("event.")
                    .filter(|p| !p.is_empty())
                    .map(|p| Reference::EventPath(p.split('.').map(str::to_owned).collect()))
            }
        }
        Kind::Correlation => match path {
            "type" => Some(Reference::CorrelationType),
            "aggregated_value" => Some(Reference::AggregatedValue),
            "timespan_secs" => Some(Reference::TimespanSecs),
            "group_key" => Some(Reference::GroupKey),
            _ => path
                .strip_prefix("group_key.")
                .filter(|f| !f.is_empty())
                .map(|f| Reference::GroupKeyField(f.to_owned())),
        },
    };
    specific.map(Some).ok_or_else(|| {
        format!("${{{name}}} is not a {namespace} reference (see docs/enrichers.md)")
    })
}

fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A JSON value as template text: strings as they are, others as JSON.
fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn resolve(reference: &Reference, record: &Value) -> Result<String, String> {
    let present = |key: &str| {
        record
            .get(key)
            .filter(|v| !v.is_null())
            .map(text_of)
            .ok_or_else(|| format!("the record has no {key}"))
    };
    match reference {
        Reference::RuleTitle => present("rule_title"),
        Reference::RuleId => present("rule_id"),
        Reference::RuleLevel => present("level"),
        Reference::Tags => Ok(record["tags"]
            .as_array()
            .map(|tags| tags.iter().map(text_of).collect::<Vec<_>>().join(","))
            .unwrap_or_default()),
        Reference::MatchedField(name) => record["matched_fields"]
            .as_array()
            .and_then(|fields| fields.iter().find(|f| f["field"] == name.as_str()))
            .map(|f| text_of(&f["value"]))
            .ok_or_else(|| format!("the rule matched no field {name}")),
        Reference::EventPath(path) => {
            event_value(&record["event"], path)
                .map(text_of)
                .ok_or_else(|| {
                    format!(
                        "the record's event has no {} (is --include-event on?)",
                        path.join(".")
                    )
                })
        }
        Reference::CorrelationType => present("correlation_type"),
        Reference::AggregatedValue => present("aggregated_value"),
        Reference::TimespanSecs => present("timespan_secs"),
        Reference::GroupKey => Ok(group_key(record)
            .map(|(field, value)| format!("{field}={}", text_of(value)))
            .collect::<Vec<_>>()
            .join(",")),
        Reference::GroupKeyField(name) => group_key(record)
            .find(|(field, _)| field == name)
            .map(|(_, value)| text_of(value))
            .ok_or_else(|| format!("the correlation does not group by {name}")),
    }
}

/// The `[field, value]` pairs of a correlation record's `group_key`.
fn group_key(record: &Value) -> impl Iterator<Item = (&str, &Value)> {
    record["group_key"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|pair| Some((pair.get(0)?.as_str()?, pair.get(1)?)))
}

/// Follows `path` into `node`: at an object the longest dotted key present
/// wins (as the engine reads fields), a numeric segment indexes an array.
pub(crate) fn event_value<'v>(node: &'v Value, path: &[String]) -> Option<&'v Value> {
    if path.is_empty() {
        return Some(node).filter(|v| !v.is_null());
    }
    match node {
        Value::Object(map) => (1..=path.len()).rev().find_map(|take| {
            let child = map.get(&path[..take].join("."))?;
            event_value(child, &path[take..])
        }),
        Value::Array(items) => {
            let index: usize = path[0].parse().ok()?;
            event_value(items.get(index)?, &path[1..])
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(text: &str, kind: Kind) -> Result<Template, String> {
        Template::parse_with(text, Some(kind), |name| {
            (name == "API_HOST").then(|| "intel.test".to_owned())
        })
    }

    fn detection() -> Value {
        json!({
            "rule_title": "Whoami", "rule_id": "r-1", "level": "high",
            "tags": ["attack.discovery", "attack.t1033"],
            "matched_fields": [{"field": "Image", "value": "C:\\w.exe"}, {"field": "Pid", "value": 42}],
            "event": {"host": {"name": "wks-1"}, "ips": ["10.0.0.1", "10.0.0.2"], "a.b": "flat"},
        })
    }

    #[test]
    fn detection_references() {
        let t = parse(
            "${detection.rule.title}/${detection.rule.id}/${detection.rule.level} [${detection.tags}] ${detection.fields.Image} ${detection.fields.Pid} ${detection.event.host.name} ${detection.event.ips.1} ${detection.event.a.b} https://${API_HOST}/",
            Kind::Detection,
        )
        .unwrap();
        assert_eq!(
            t.render_plain(&detection()).unwrap(),
            "Whoami/r-1/high [attack.discovery,attack.t1033] C:\\w.exe 42 wks-1 10.0.0.2 flat https://intel.test/"
        );
    }

    #[test]
    fn correlation_references() {
        let record = json!({
            "rule_title": "Brute force", "tags": [], "correlation_type": "event_count",
            "aggregated_value": 12.0, "timespan_secs": 300,
            "group_key": [["User", "bob"], ["Host", "dc1"]],
        });
        let t = parse(
            "${correlation.type} ${correlation.aggregated_value} ${correlation.timespan_secs} ${correlation.group_key} ${correlation.group_key.Host}",
            Kind::Correlation,
        )
        .unwrap();
        assert_eq!(
            t.render_plain(&record).unwrap(),
            "event_count 12.0 300 User=bob,Host=dc1 dc1"
        );
        let err = parse("${correlation.rule.id}", Kind::Correlation)
            .unwrap()
            .render_plain(&record)
            .unwrap_err();
        assert_eq!(err, "the record has no rule_id");
    }

    #[test]
    fn load_time_errors() {
        for (text, kind, error) in [
            (
                "${correlation.type}",
                Kind::Detection,
                "${correlation.type} refers to correlation records, but the enricher has kind: detection",
            ),
            (
                "${detection.fields.X}",
                Kind::Correlation,
                "${detection.fields.X} refers to detection records, but the enricher has kind: correlation",
            ),
            (
                "${detection.nope}",
                Kind::Detection,
                "${detection.nope} is not a detection reference (see docs/enrichers.md)",
            ),
            (
                "${NO_SUCH_VAR}",
                Kind::Detection,
                "${NO_SUCH_VAR} is not set in the daemon's environment",
            ),
            (
                "a ${detection.tags",
                Kind::Detection,
                "unclosed `${` in \"a ${detection.tags\"",
            ),
            (
                "${bad name}",
                Kind::Detection,
                "${bad name} is neither a record reference nor a variable name",
            ),
        ] {
            assert_eq!(parse(text, kind).unwrap_err(), error, "{text}");
        }
    }

    #[test]
    fn references_in_queries_must_be_quoted_and_are_escaped() {
        assert!(check_references_quoted(r#".["${detection.fields.User}"]"#, &['"']).is_ok());
        assert!(check_references_quoted("$['${detection.fields.User}']", &['"', '\'']).is_ok());
        assert!(check_references_quoted(r#"."a\"${x}""#, &['"']).is_ok());
        let err = check_references_quoted(".[${detection.fields.User}]", &['"']).unwrap_err();
        assert!(
            err.starts_with("${detection.fields.User} must be inside a quoted string"),
            "{err}"
        );
        for (text, error) in [
            (r#""\(${detection.fields.User})""#, "string interpolation"),
            ("# comment \"\n.[\"${x}\"]", "comments"),
        ] {
            let err = check_references_quoted(text, &['"']).unwrap_err();
            assert!(err.contains(error), "{text}: {err}");
        }
        let mut out = String::new();
        escape_in_string("a\"b'c\\d\ne", &mut out);
        assert_eq!(out, r#"a\u0022b\u0027c\\d\u000ae"#);
        assert_eq!(
            Template::expand_env("${detection.rule.id}").unwrap_err(),
            "${detection.rule.id}: only environment variables can be used here"
        );
    }

    #[test]
    fn render_errors_and_encoding() {
        let t = parse("${detection.fields.User}", Kind::Detection).unwrap();
        assert_eq!(
            t.render_plain(&detection()).unwrap_err(),
            "the rule matched no field User"
        );
        let t = parse("${detection.event.host.missing}", Kind::Detection).unwrap();
        assert!(
            t.render_plain(&detection())
                .unwrap_err()
                .contains("--include-event")
        );
        let t = parse("q=${detection.fields.Image}&x", Kind::Detection).unwrap();
        let upper = t
            .render(&detection(), |value, out| {
                out.push_str(&value.to_uppercase())
            })
            .unwrap();
        assert_eq!(upper, "q=C:\\W.EXE&x");
    }
}
