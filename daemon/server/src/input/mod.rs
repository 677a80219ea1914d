//! Input decoding: turns each input line into zero or more JSON events.
//!
//! A [`Decoder`] is built once from a [`DecoderConfig`] (the daemon's
//! `--input-format`, `--syslog-tz`, `--jq` and `--jsonpath` flags) and then
//! called for every line, from any number of threads.
//!
//! | format | a line becomes |
//! | --- | --- |
//! | [`InputFormat::Json`] | the JSON object on the line (or what `--jq` / `--jsonpath` extract from it) |
//! | [`InputFormat::Syslog`] | a flat object built from an RFC 5424 or RFC 3164 message (see below) |
//! | [`InputFormat::Logfmt`] | a flat object of the line's `key=value` pairs (see [`logfmt`]) |
//! | [`InputFormat::Cef`] | the CEF header under `cef`, extensions at the top level (see [`cef`]) |
//! | [`InputFormat::Plain`] | `{"message": line}` |
//! | [`InputFormat::Auto`] | JSON if the line starts with `{`; CEF if it starts with `CEF:<digit>`, or with `<digits>` and holds `CEF:<digit>`; syslog if it starts with `<digits>`; logfmt if it is made of `key=value` pairs only; plain otherwise |
//!
//! Syslog fields: `facility`, `severity` (names such as `auth`, `err`),
//! `timestamp` (RFC 3339), `hostname`, `app_name`, `proc_id`, `msg_id`,
//! `structured_data` (`{sd_id: {param: value}}`), `message`, and `json` when
//! the message is itself a JSON object. Fields the line doesn't carry are left
//! out. `docs/input-formats.md` has the full rules.
//!
//! Common to every format: one trailing `\r` is removed, and a blank line
//! (empty or whitespace only) yields no event and no error. A line that fails
//! to decode yields a [`DecodeError`] and leaves the output vector as it was.

mod cef;
pub(crate) mod extract;
mod logfmt;
mod syslog;

use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value};

use extract::{JqFilter, JsonPathQuery};
use syslog::SyslogParser;

pub use extract::MAX_JQ_OUTPUTS;

/// How input lines are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InputFormat {
    /// Detect per line: a line starting with `{` is JSON; one starting with
    /// `CEF:<digit>` (or with `<digits>` and holding `CEF:<digit>`) is CEF;
    /// one starting with `<digits>` is syslog; one made of `key=value`
    /// pairs only is logfmt; anything else is plain text.
    #[default]
    Auto,
    /// Every line is one JSON document (a JSON object unless `--jq` or
    /// `--jsonpath` extracts objects from it).
    Json,
    /// Every line is an RFC 5424 or RFC 3164 syslog message.
    Syslog,
    /// Every line is free text, decoded as `{"message": line}`.
    Plain,
    /// Every line is logfmt (`key=value key="quoted value"`).
    Logfmt,
    /// Every line is ArcSight CEF, optionally after a syslog header.
    Cef,
}

impl InputFormat {
    /// Every format, in the order the help lists them.
    pub const ALL: [InputFormat; 6] = [
        InputFormat::Auto,
        InputFormat::Json,
        InputFormat::Syslog,
        InputFormat::Plain,
        InputFormat::Logfmt,
        InputFormat::Cef,
    ];

    /// The flag value naming this format (`auto`, `json`, `syslog`,
    /// `plain`, `logfmt`, `cef`).
    pub fn as_str(self) -> &'static str {
        match self {
            InputFormat::Auto => "auto",
            InputFormat::Json => "json",
            InputFormat::Syslog => "syslog",
            InputFormat::Plain => "plain",
            InputFormat::Logfmt => "logfmt",
            InputFormat::Cef => "cef",
        }
    }

    /// Whether the format's lines can be JSON documents (for `--jq` and
    /// `--jsonpath`).
    fn has_json(self) -> bool {
        matches!(self, InputFormat::Auto | InputFormat::Json)
    }
}

impl fmt::Display for InputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for InputFormat {
    type Err = String;

    /// Parses a format's name (ASCII case-insensitive).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        InputFormat::ALL
            .into_iter()
            .find(|format| format.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let names: Vec<&str> = InputFormat::ALL.iter().map(|f| f.as_str()).collect();
                format!(
                    "unknown input format {s:?} (expected one of: {})",
                    names.join(", ")
                )
            })
    }
}

/// Where the event is in each decoded JSON document.
///
/// Extraction applies to JSON documents only: every line with
/// [`InputFormat::Json`], and the lines that [`InputFormat::Auto`] decodes as
/// JSON. Other lines are never filtered (a syslog message's `json` member
/// included), and [`Decoder::new`] rejects `Jq`/`JsonPath` together with a
/// format other than [`InputFormat::Json`] and [`InputFormat::Auto`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Extract {
    /// The document itself is the event; it must be a JSON object.
    #[default]
    Whole,
    /// A jq filter (`--jq`), run by jaq; every output is one event. No output
    /// means no event; a runtime error is a [`DecodeError::Jq`].
    Jq(String),
    /// An RFC 9535 JSONPath query (`--jsonpath`); every selected node is one
    /// event.
    JsonPath(String),
}

/// The decoding settings, as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecoderConfig {
    /// `--input-format`.
    pub format: InputFormat,
    /// `--syslog-tz`: the UTC offset (`+HH:MM` or `-HH:MM`) given to RFC 3164
    /// timestamps, which carry none.
    pub syslog_tz: String,
    /// `--jq` or `--jsonpath` (they are mutually exclusive), or neither.
    pub extract: Extract,
}

impl Default for DecoderConfig {
    /// `auto`, `+00:00`, no extraction: the daemon's defaults.
    fn default() -> Self {
        DecoderConfig {
            format: InputFormat::Auto,
            syslog_tz: "+00:00".to_owned(),
            extract: Extract::Whole,
        }
    }
}

/// A decoding setting that can't be used. The message starts with the flag
/// it is about, so the CLI can print it as is.
#[derive(Debug, thiserror::Error)]
pub enum InputConfigError {
    /// The jq filter doesn't parse or uses an undefined filter or variable.
    #[error("--jq: {0}")]
    Jq(String),
    /// The JSONPath query doesn't parse.
    #[error("--jsonpath: {0}")]
    JsonPath(String),
    /// The syslog offset is not `+HH:MM` or `-HH:MM`.
    #[error("--syslog-tz: {0}")]
    SyslogTz(String),
    /// `--jq` or `--jsonpath` was given with a format that has no JSON
    /// documents to apply it to.
    #[error(
        "{flag}: applies to JSON input only (--input-format json or auto), not --input-format {format}"
    )]
    ExtractNeedsJson {
        /// `--jq` or `--jsonpath`.
        flag: &'static str,
        /// The configured format (`syslog` or `plain`).
        format: InputFormat,
    },
}

/// Which extraction produced a result that is not an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtractKind {
    /// `--jq`.
    Jq,
    /// `--jsonpath`.
    JsonPath,
}

impl fmt::Display for ExtractKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExtractKind::Jq => "jq",
            ExtractKind::JsonPath => "jsonpath",
        })
    }
}

/// Why a line could not be decoded. The caller counts it and sends the line
/// to the dead-letter queue.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The line (JSON format, or an auto line starting with `{`) is not valid
    /// JSON.
    #[error("not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    /// The line is valid JSON but not an object (and nothing extracts objects
    /// from it).
    #[error("not a JSON object: found {found}")]
    NotObject {
        /// What was found instead, e.g. `an array`.
        found: &'static str,
    },
    /// The jq filter failed at run time (including `error(...)` and `halt`).
    #[error("jq: {0}")]
    Jq(String),
    /// The jq filter produced more than [`MAX_JQ_OUTPUTS`] results.
    #[error("jq: more than {limit} results")]
    TooManyResults {
        /// The limit that was exceeded ([`MAX_JQ_OUTPUTS`]).
        limit: usize,
    },
    /// A jq or JSONPath result is not a JSON object.
    #[error("{via}: result {index} is {found}, not a JSON object")]
    ResultNotObject {
        /// The extraction that produced it.
        via: ExtractKind,
        /// The result's position, counting from 1.
        index: usize,
        /// What it is, e.g. `a string`.
        found: &'static str,
    },
    /// The line has no valid RFC 5424 or RFC 3164 header.
    #[error("not syslog: {0}")]
    NotSyslog(&'static str),
    /// The line (`--input-format logfmt`) is not logfmt.
    #[error("not logfmt: {0}")]
    NotLogfmt(&'static str),
    /// The line (`--input-format cef`, or an auto line with a CEF header)
    /// is not valid CEF.
    #[error("not CEF: {0}")]
    NotCef(&'static str),
}

impl DecodeError {
    /// A short, stable name for the error's kind, usable as a metric label:
    /// `json`, `not_object`, `jq`, `jq_results`, `result_not_object`,
    /// `syslog`, `logfmt`, `cef`.
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::NotJson(_) => "json",
            DecodeError::NotObject { .. } => "not_object",
            DecodeError::Jq(_) => "jq",
            DecodeError::TooManyResults { .. } => "jq_results",
            DecodeError::ResultNotObject { .. } => "result_not_object",
            DecodeError::NotSyslog(_) => "syslog",
            DecodeError::NotLogfmt(_) => "logfmt",
            DecodeError::NotCef(_) => "cef",
        }
    }
}

/// The compiled extraction.
enum Extractor {
    Whole,
    Jq(JqFilter),
    JsonPath(JsonPathQuery),
}

/// Decodes input lines into events. Compiled once by [`Decoder::new`];
/// [`Decoder::decode`] is called for every line, from many threads.
pub struct Decoder {
    format: InputFormat,
    syslog: SyslogParser,
    extractor: Extractor,
}

// `decode` runs on many threads at once.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Decoder>();
};

impl fmt::Debug for Decoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let extract = match &self.extractor {
            Extractor::Whole => "whole",
            Extractor::Jq(_) => "jq",
            Extractor::JsonPath(_) => "jsonpath",
        };
        f.debug_struct("Decoder")
            .field("format", &self.format)
            .field("syslog", &self.syslog)
            .field("extract", &extract)
            .finish()
    }
}

impl Decoder {
    /// Compiles the configuration: parses the syslog offset and compiles the
    /// jq filter or JSONPath query. An unusable setting is an
    /// [`InputConfigError`] whose message names the flag.
    pub fn new(config: &DecoderConfig) -> Result<Decoder, InputConfigError> {
        let syslog = SyslogParser::new(&config.syslog_tz).map_err(InputConfigError::SyslogTz)?;
        let flag = match config.extract {
            Extract::Whole => None,
            Extract::Jq(_) => Some("--jq"),
            Extract::JsonPath(_) => Some("--jsonpath"),
        };
        if let Some(flag) = flag
            && !config.format.has_json()
        {
            return Err(InputConfigError::ExtractNeedsJson {
                flag,
                format: config.format,
            });
        }
        let extractor = match &config.extract {
            Extract::Whole => Extractor::Whole,
            Extract::Jq(code) => {
                Extractor::Jq(JqFilter::compile(code).map_err(InputConfigError::Jq)?)
            }
            Extract::JsonPath(query) => Extractor::JsonPath(
                JsonPathQuery::compile(query).map_err(InputConfigError::JsonPath)?,
            ),
        };
        Ok(Decoder {
            format: config.format,
            syslog,
            extractor,
        })
    }

    /// The configured input format.
    pub fn format(&self) -> InputFormat {
        self.format
    }

    /// True when a successfully decoded `line` is its own event's JSON text:
    /// a JSON object taken whole. Parsing the text again gives exactly the
    /// event, so the tap can stream the text instead of re-serializing.
    pub fn is_verbatim_json(&self, line: &str) -> bool {
        matches!(self.extractor, Extractor::Whole)
            && match self.format {
                InputFormat::Json => true,
                InputFormat::Auto => line.trim_start().starts_with('{'),
                InputFormat::Syslog
                | InputFormat::Plain
                | InputFormat::Logfmt
                | InputFormat::Cef => false,
            }
    }

    /// Decodes one line (without its newline) into zero or more events,
    /// appended to `out`. Every event is a JSON object.
    ///
    /// On error nothing is appended, even if a jq filter or JSONPath query
    /// had already produced some events for this line.
    pub fn decode(&self, line: &str, out: &mut Vec<Value>) -> Result<(), DecodeError> {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let start = line.trim_start();
        if start.is_empty() {
            return Ok(());
        }
        let before = out.len();
        let result = match self.format {
            InputFormat::Json => self.decode_json(line, out),
            InputFormat::Syslog => self.decode_syslog(line, out),
            InputFormat::Plain => {
                out.push(plain(line));
                Ok(())
            }
            InputFormat::Logfmt => logfmt::parse(line)
                .map(|event| out.push(event))
                .map_err(DecodeError::NotLogfmt),
            InputFormat::Cef => self.decode_cef(line, out),
            InputFormat::Auto => self.decode_detected(line, start, out),
        };
        if result.is_err() {
            out.truncate(before);
        }
        result
    }

    fn decode_json(&self, line: &str, out: &mut Vec<Value>) -> Result<(), DecodeError> {
        match &self.extractor {
            Extractor::Whole => decode_event(line, out),
            Extractor::Jq(filter) => filter.run(line, out),
            Extractor::JsonPath(query) => {
                let value: Value = serde_json::from_str(line).map_err(DecodeError::NotJson)?;
                query.run(value, out)
            }
        }
    }

    fn decode_syslog(&self, line: &str, out: &mut Vec<Value>) -> Result<(), DecodeError> {
        out.push(self.syslog.parse(line)?);
        Ok(())
    }

    fn decode_cef(&self, line: &str, out: &mut Vec<Value>) -> Result<(), DecodeError> {
        out.push(cef::parse(line, &self.syslog)?);
        Ok(())
    }

    /// `--input-format auto`: picks the format from the line's start
    /// (`start` is `line` without leading whitespace).
    fn decode_detected(
        &self,
        line: &str,
        start: &str,
        out: &mut Vec<Value>,
    ) -> Result<(), DecodeError> {
        if start.starts_with('{') {
            self.decode_json(line, out)
        } else if cef::find_start(start) == Some(0) {
            self.decode_cef(line, out)
        } else if starts_with_pri(start) {
            // CEF over syslog; a syslog message that merely mentions
            // `CEF:0` stays syslog.
            if cef::find_start(start).is_some() && self.decode_cef(line, out).is_ok() {
                Ok(())
            } else {
                self.decode_syslog(line, out)
            }
        } else if logfmt::looks_like_logfmt(start) {
            logfmt::parse(line)
                .map(|event| out.push(event))
                .map_err(DecodeError::NotLogfmt)
        } else {
            out.push(plain(line));
            Ok(())
        }
    }
}

/// `{"message": line}`.
fn plain(line: &str) -> Value {
    let mut map = Map::new();
    map.insert("message".to_owned(), Value::String(line.to_owned()));
    Value::Object(map)
}

/// Whether `s` starts with `<`, one or more ASCII digits, and `>`: a syslog
/// priority.
fn starts_with_pri(s: &str) -> bool {
    let Some(rest) = s.strip_prefix('<') else {
        return false;
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    digits > 0 && rest.as_bytes().get(digits) == Some(&b'>')
}

/// `a string`, `an array`, ... for error messages.
/// Decodes a line holding one event as a JSON object, as it is (no
/// format detection, no extraction): the whole-line JSON decoding, and how
/// events already decoded by their transport are read back.
pub fn decode_event(line: &str, out: &mut Vec<Value>) -> Result<(), DecodeError> {
    let value: Value = serde_json::from_str(line).map_err(DecodeError::NotJson)?;
    if !value.is_object() {
        return Err(DecodeError::NotObject {
            found: json_kind(&value),
        });
    }
    out.push(value);
    Ok(())
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decoder(format: InputFormat, extract: Extract) -> Decoder {
        Decoder::new(&DecoderConfig {
            format,
            extract,
            ..DecoderConfig::default()
        })
        .unwrap()
    }

    fn decode(decoder: &Decoder, line: &str) -> Result<Vec<Value>, DecodeError> {
        let mut out = Vec::new();
        decoder.decode(line, &mut out).map(|()| out)
    }

    #[test]
    fn format_from_str_and_display() {
        for (text, format) in [
            ("auto", InputFormat::Auto),
            ("json", InputFormat::Json),
            ("syslog", InputFormat::Syslog),
            ("plain", InputFormat::Plain),
            ("logfmt", InputFormat::Logfmt),
            ("CEF", InputFormat::Cef),
            ("JSON", InputFormat::Json),
        ] {
            assert_eq!(text.parse::<InputFormat>(), Ok(format));
            assert_eq!(format.to_string(), text.to_ascii_lowercase());
        }
        let err = "xml".parse::<InputFormat>().unwrap_err();
        assert_eq!(
            err,
            "unknown input format \"xml\" (expected one of: auto, json, syslog, plain, logfmt, cef)"
        );
        assert_eq!(InputFormat::default(), InputFormat::Auto);
    }

    #[test]
    fn pri_prefix_detection() {
        assert!(starts_with_pri("<1>x"));
        assert!(starts_with_pri("<134>1 2024"));
        assert!(!starts_with_pri("<>x"));
        assert!(!starts_with_pri("<a>x"));
        assert!(!starts_with_pri("<12"));
        assert!(!starts_with_pri("x<1>"));
    }

    #[test]
    fn blank_lines_and_crlf() {
        let d = decoder(InputFormat::Json, Extract::Whole);
        assert_eq!(decode(&d, "").unwrap(), Vec::<Value>::new());
        assert_eq!(decode(&d, "  \t\r").unwrap(), Vec::<Value>::new());
        assert_eq!(decode(&d, "{\"a\":1}\r").unwrap(), vec![json!({"a": 1})]);
        let d = decoder(InputFormat::Plain, Extract::Whole);
        assert_eq!(
            decode(&d, " hi \r").unwrap(),
            vec![json!({"message": " hi "})]
        );
    }

    #[test]
    fn json_whole() {
        let d = decoder(InputFormat::Json, Extract::Whole);
        assert_eq!(
            decode(&d, r#"{"a": {"b": [1, "x"]}}"#).unwrap(),
            vec![json!({"a": {"b": [1, "x"]}})]
        );
        let err = decode(&d, "[1]").unwrap_err();
        assert_eq!(err.to_string(), "not a JSON object: found an array");
        assert_eq!(err.kind(), "not_object");
        let err = decode(&d, "{\"a\":").unwrap_err();
        assert!(err.to_string().starts_with("not JSON: "), "{err}");
        assert_eq!(err.kind(), "json");
    }

    #[test]
    fn appends_and_rolls_back() {
        let d = decoder(InputFormat::Json, Extract::Jq(".[]".to_owned()));
        let mut out = vec![json!({"kept": true})];
        d.decode(r#"[{"a":1},{"b":2}]"#, &mut out).unwrap();
        assert_eq!(
            out,
            vec![json!({"kept": true}), json!({"a": 1}), json!({"b": 2})]
        );
        // the third result is not an object: the first two are taken back
        let err = d.decode(r#"[{"c":3},{"d":4},5]"#, &mut out).unwrap_err();
        assert_eq!(
            err.to_string(),
            "jq: result 3 is a number, not a JSON object"
        );
        assert_eq!(out.len(), 3);
    }

    #[test]
    fn extraction_needs_json_format() {
        for format in [InputFormat::Syslog, InputFormat::Plain] {
            let err = Decoder::new(&DecoderConfig {
                format,
                extract: Extract::Jq(".".to_owned()),
                ..DecoderConfig::default()
            })
            .unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "--jq: applies to JSON input only (--input-format json or auto), not --input-format {format}"
                )
            );
        }
        let err = Decoder::new(&DecoderConfig {
            format: InputFormat::Plain,
            extract: Extract::JsonPath("$".to_owned()),
            ..DecoderConfig::default()
        })
        .unwrap_err();
        assert!(err.to_string().starts_with("--jsonpath: "), "{err}");
    }

    #[test]
    fn auto_ignores_extraction_for_non_json_lines() {
        let d = decoder(InputFormat::Auto, Extract::Jq(".records[]".to_owned()));
        assert_eq!(
            decode(&d, "hello").unwrap(),
            vec![json!({"message": "hello"})]
        );
        assert_eq!(
            decode(&d, r#"{"records":[{"a":1}]}"#).unwrap(),
            vec![json!({"a": 1})]
        );
    }

    #[test]
    fn auto_detects_cef_and_logfmt() {
        let d = decoder(InputFormat::Auto, Extract::Whole);
        let cef = &decode(&d, "CEF:0|V|P|1|sig|Name|5|src=10.0.0.1").unwrap()[0];
        assert_eq!(cef["cef"]["signature_id"], "sig");
        assert_eq!(cef["src"], "10.0.0.1");
        let wrapped = &decode(&d, "<134>Sep 19 08:26:10 fw CEF:0|V|P|1|s|n|3|act=deny").unwrap()[0];
        assert_eq!(wrapped["act"], "deny");
        assert_eq!(wrapped["syslog"]["hostname"], "fw");
        let syslog = &decode(&d, "<134>Sep 19 08:26:10 fw sshd: accepted").unwrap()[0];
        assert_eq!(syslog["hostname"], "fw");
        let mention = "<13>Sep 19 08:26:10 host app: failed to forward CEF:0 record";
        let syslog = &decode(&d, mention).unwrap()[0];
        assert_eq!(syslog["message"], "failed to forward CEF:0 record");
        assert_eq!(
            decode(&d, r#"level=warn msg="token expired" user=bob"#).unwrap(),
            vec![json!({"level": "warn", "msg": "token expired", "user": "bob"})]
        );
        // Words that are not pairs keep the line plain text.
        assert_eq!(
            decode(&d, "x=1 is more than y").unwrap(),
            vec![json!({"message": "x=1 is more than y"})]
        );
        // An auto line with a broken CEF header is an error, not plain text.
        let err = decode(&d, "CEF:0|V|P").unwrap_err();
        assert_eq!(err.kind(), "cef");
    }

    #[test]
    fn explicit_logfmt_and_cef_reject_other_lines() {
        let d = decoder(InputFormat::Logfmt, Extract::Whole);
        assert_eq!(
            decode(&d, "debug user=bob").unwrap(),
            vec![json!({"debug": true, "user": "bob"})]
        );
        let err = decode(&d, r#"msg="open"#).unwrap_err();
        assert_eq!(err.to_string(), "not logfmt: an unterminated quoted value");
        assert_eq!(err.kind(), "logfmt");
        let d = decoder(InputFormat::Cef, Extract::Whole);
        let err = decode(&d, r#"{"a":1}"#).unwrap_err();
        assert_eq!(err.to_string(), "not CEF: no CEF:<version> header");
        for format in [InputFormat::Logfmt, InputFormat::Cef] {
            let err = Decoder::new(&DecoderConfig {
                format,
                extract: Extract::Jq(".".to_owned()),
                ..DecoderConfig::default()
            })
            .unwrap_err();
            assert!(
                err.to_string()
                    .ends_with(&format!("not --input-format {format}"))
            );
        }
    }

    #[test]
    fn decoder_debug_does_not_panic() {
        let d = decoder(InputFormat::Json, Extract::JsonPath("$.a".to_owned()));
        let text = format!("{d:?}");
        assert!(text.contains("jsonpath"), "{text}");
        assert_eq!(d.format(), InputFormat::Json);
    }
}
