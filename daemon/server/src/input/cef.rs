//! ArcSight Common Event Format (CEF) lines as events.
//!
//! `CEF:Version|Device Vendor|Device Product|Device Version|Signature ID|Name|Severity|Extension`
//!
//! No maintained Rust CEF parser exists (the `rust-cef` crate only writes
//! CEF), so the format is implemented here, after the ArcSight CEF
//! implementation standard:
//!
//! - the seven header fields go under `cef` (`cef.version`,
//!   `cef.device_vendor`, `cef.device_product`, `cef.device_version`,
//!   `cef.signature_id`, `cef.name`, `cef.severity`); in them `\|` is `|` and
//!   `\\` is `\`;
//! - every extension pair `key=value` is a top-level field; a value runs to
//!   the space before the next `key=` (values hold spaces), and in it `\=` is
//!   `=`, `\\` is `\`, `\n` and `\r` are line breaks; other backslashes are
//!   kept as written (Windows paths are often not escaped);
//! - an extension named `cef` or `syslog`, or given twice, keeps its first
//!   value at the top level and the others under `cef.extensions` (a
//!   string, or a list when there are several);
//! - text before `CEF:` (a syslog header, as CEF is usually sent) is parsed
//!   as syslog and its fields go under `syslog`;
//! - every value is a string, as in the format.

use serde_json::{Map, Value};

use super::DecodeError;
use super::syslog::SyslogParser;

const HEADER_FIELDS: [&str; 7] = [
    "version",
    "device_vendor",
    "device_product",
    "device_version",
    "signature_id",
    "name",
    "severity",
];

/// Where `CEF:<digit>` starts in `line`, if anywhere.
pub(super) fn find_start(line: &str) -> Option<usize> {
    line.match_indices("CEF:")
        .map(|(at, _)| at)
        .find(|&at| line.as_bytes().get(at + 4).is_some_and(u8::is_ascii_digit))
}

/// Parses one line: optional syslog header, CEF header, extension.
pub(super) fn parse(line: &str, syslog: &SyslogParser) -> Result<Value, DecodeError> {
    let start = find_start(line).ok_or(DecodeError::NotCef("no CEF:<version> header"))?;
    let (prefix, cef) = line.split_at(start);
    let parts = split_header(&cef[4..]);
    if parts.len() < 8 {
        return Err(DecodeError::NotCef(
            "the header has fewer than its 7 |-separated fields",
        ));
    }
    if !parts[0].bytes().all(|b| b.is_ascii_digit()) {
        return Err(DecodeError::NotCef("the version is not a number"));
    }
    let mut header = Map::new();
    for (name, raw) in HEADER_FIELDS.iter().zip(&parts) {
        header.insert((*name).to_owned(), Value::String(unescape_header(raw)));
    }
    let mut event = Map::new();
    let mut collided = Map::new();
    for (key, value) in extensions(parts[7])? {
        if key == "cef" || key == "syslog" || event.contains_key(key) {
            // The first collision is a string; more make it a list.
            match collided.get_mut(key) {
                None => {
                    collided.insert(key.to_owned(), Value::String(value));
                }
                Some(Value::Array(values)) => values.push(Value::String(value)),
                Some(first) => {
                    let first = first.take();
                    collided.insert(
                        key.to_owned(),
                        Value::Array(vec![first, Value::String(value)]),
                    );
                }
            }
        } else {
            event.insert(key.to_owned(), Value::String(value));
        }
    }
    if !collided.is_empty() {
        header.insert("extensions".to_owned(), Value::Object(collided));
    }
    event.insert("cef".to_owned(), Value::Object(header));
    if !prefix.trim().is_empty() {
        event.insert("syslog".to_owned(), syslog_header(prefix.trim(), syslog));
    }
    Ok(Value::Object(event))
}

/// The fields of the syslog header before `CEF:` (its empty message left
/// out); a prefix that is not syslog is kept as `{"message": prefix}`.
fn syslog_header(prefix: &str, syslog: &SyslogParser) -> Value {
    match syslog.parse(prefix) {
        Ok(Value::Object(mut fields)) => {
            if fields.get("message").is_some_and(|m| m == "") {
                fields.remove("message");
            }
            Value::Object(fields)
        }
        _ => {
            let mut fields = Map::new();
            fields.insert("message".to_owned(), Value::String(prefix.to_owned()));
            Value::Object(fields)
        }
    }
}

/// Splits the text after `CEF:` at its first seven unescaped `|`: eight
/// parts when the header is complete, the last being the extension.
fn split_header(text: &str) -> Vec<&str> {
    let mut parts = Vec::with_capacity(8);
    let mut start = 0;
    let mut escaped = false;
    for (at, b) in text.bytes().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' => escaped = true,
            b'|' if parts.len() < 7 => {
                parts.push(&text[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn unescape_header(raw: &str) -> String {
    unescape(raw, |c| matches!(c, '|' | '\\').then_some(c))
}

fn unescape_value(raw: &str) -> String {
    unescape(raw, |c| match c {
        '=' | '\\' | '|' => Some(c),
        'n' => Some('\n'),
        'r' => Some('\r'),
        _ => None,
    })
}

/// Replaces `\c` by `escape(c)`; a backslash before anything else stays.
fn unescape(raw: &str, escape: impl Fn(char) -> Option<char>) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\'
            && let Some(replaced) = chars.peek().copied().and_then(&escape)
        {
            out.push(replaced);
            chars.next();
        } else {
            out.push(c);
        }
    }
    out
}

fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'[' | b']')
}

/// The extension's pairs, in order, values unescaped.
///
/// A pair starts at an unescaped `=` whose key (a run of key characters
/// right before it) starts the extension or follows a space; any other
/// `=` (`url=http://x/?a=b`) is part of the value before it.
fn extensions(text: &str) -> Result<Vec<(&str, String)>, DecodeError> {
    let text = text.trim();
    let bytes = text.as_bytes();
    // (key start, position of its `=`)
    let mut starts: Vec<(usize, usize)> = Vec::new();
    let mut escaped = false;
    for (at, &b) in bytes.iter().enumerate() {
        if escaped {
            escaped = false;
            continue;
        }
        match b {
            b'\\' => escaped = true,
            b'=' => {
                let key_start = bytes[..at]
                    .iter()
                    .rposition(|&b| !is_key_byte(b))
                    .map_or(0, |p| p + 1);
                if key_start < at && (key_start == 0 || bytes[key_start - 1] == b' ') {
                    starts.push((key_start, at));
                }
            }
            _ => {}
        }
    }
    match starts.first() {
        None if text.is_empty() => return Ok(Vec::new()),
        Some((0, _)) => {}
        _ => {
            return Err(DecodeError::NotCef(
                "the extension does not start with key=value",
            ));
        }
    }
    let mut pairs = Vec::with_capacity(starts.len());
    for (n, &(key_start, equals)) in starts.iter().enumerate() {
        let value_end = starts.get(n + 1).map_or(text.len(), |&(next, _)| next);
        let value = text[equals + 1..value_end].trim_end_matches(' ');
        pairs.push((&text[key_start..equals], unescape_value(value)));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cef(line: &str) -> Result<Value, DecodeError> {
        parse(line, &SyslogParser::new("+00:00").unwrap())
    }

    #[test]
    fn header_and_extensions() {
        let event = cef(
            r"CEF:0|Security|threatmanager|1.0|100|worm successfully stopped|10|src=10.0.0.1 dst=2.1.2.2 spt=1232 msg=Detected a threat. No action needed",
        )
        .unwrap();
        assert_eq!(
            event,
            json!({
                "cef": {
                    "version": "0", "device_vendor": "Security", "device_product": "threatmanager",
                    "device_version": "1.0", "signature_id": "100",
                    "name": "worm successfully stopped", "severity": "10",
                },
                "src": "10.0.0.1", "dst": "2.1.2.2", "spt": "1232",
                "msg": "Detected a threat. No action needed",
            })
        );
    }

    #[test]
    fn escapes_in_header_and_values() {
        let event = cef(
            r"CEF:0|security|threatmanager|1.0|100|detected a \| in message|10|act=blocked a \= sign filePath=C:\Windows\cmd.exe cs1=line1\nline2 \\ end",
        )
        .unwrap();
        assert_eq!(event["cef"]["name"], "detected a | in message");
        assert_eq!(event["act"], "blocked a = sign");
        assert_eq!(event["filePath"], r"C:\Windows\cmd.exe");
        assert_eq!(event["cs1"], "line1\nline2 \\ end");
    }

    #[test]
    fn unescaped_equals_and_pipes_stay_in_values() {
        let event = cef("CEF:1|V|P|2|sig|N|High|request=https://x.test/?a=b&c=d suser=bob | admin")
            .unwrap();
        assert_eq!(event["request"], "https://x.test/?a=b&c=d");
        assert_eq!(event["suser"], "bob | admin");
        assert_eq!(event["cef"]["severity"], "High");
    }

    #[test]
    fn syslog_header_before_cef() {
        let event = cef("<134>1 2024-05-14T08:00:00Z fw01 cef - - - CEF:0|V|P|1|s|n|3|src=1.2.3.4")
            .unwrap();
        assert_eq!(event["src"], "1.2.3.4");
        assert_eq!(event["syslog"]["hostname"], "fw01");
        assert_eq!(event["syslog"]["facility"], "local0");
        assert!(event["syslog"].get("message").is_none());
        let event = cef("Sep 19 08:26:10 host CEF:0|V|P|1|s|n|3|").unwrap();
        assert!(event["syslog"].is_object(), "{event}");
    }

    #[test]
    fn collisions_and_empty_extension() {
        let event = cef("CEF:0|V|P|1|s|n|3|cef=x src=a src=b syslog=y src=c").unwrap();
        assert_eq!(event["src"], "a");
        assert_eq!(
            event["cef"]["extensions"],
            json!({"cef": "x", "src": ["b", "c"], "syslog": "y"})
        );
        assert_eq!(
            cef("CEF:0|V|P|1|s|n|3|")
                .unwrap()
                .as_object()
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn malformed_lines() {
        for (line, reason) in [
            ("hello", "no CEF:<version> header"),
            (
                "CEF:0|V|P|1|s|n",
                "the header has fewer than its 7 |-separated fields",
            ),
            ("CEF:0x|V|P|1|s|n|3|", "the version is not a number"),
            (
                "CEF:0|V|P|1|s|n|3|just text",
                "the extension does not start with key=value",
            ),
            (
                "CEF:0|V|P|1|s|n|3|text a=b",
                "the extension does not start with key=value",
            ),
        ] {
            match cef(line) {
                Err(DecodeError::NotCef(got)) => assert_eq!(got, reason, "{line}"),
                other => panic!("{line}: {other:?}"),
            }
        }
    }
}
