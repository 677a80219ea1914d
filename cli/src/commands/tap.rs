//! `rsigma engine tap`: record a bounded window of a running daemon's live
//! event stream into a replayable NDJSON fixture.
//!
//! Sends `GET {base}/api/v1/tap?duration=D&stage=S[&limit=N][&redact_fields=P]`
//! to the daemon's HTTP API (address from `--addr`, the config file's
//! `daemon.api.addr`, or `127.0.0.1:9090`) and streams the NDJSON answer:
//! one event per line, then a summary record
//! `{"rsigma_tap_summary":{"captured":N,"dropped":M,"duration_ms":T,...}}`,
//! then the end of the body.
//!
//! - Decoded stage: every event line is written to the output as received.
//! - Raw stage: every line is a JSON string holding one input line as the
//!   daemon received it; its decoded content is written, so the fixture holds
//!   the original lines.
//!
//! The summary stays out of the fixture; it feeds the statistics line on
//! stderr and, for a raw capture to a file, the replay hint. Lines are written
//! as they arrive (the output is flushed whenever no more data is buffered),
//! never collected in memory. With `-o`, the file is created only once the
//! daemon answered 200.
//!
//! Exit codes: 0 when the summary was received (even with zero events); 3 when
//! the daemon cannot be reached, answers non-2xx, or sends a stream that cannot
//! be read (a line that is not JSON, a raw-stage line that is not a JSON string,
//! no summary at the end).

use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::{Args, ValueEnum};
use reqwest::Url;
use reqwest::header::ACCEPT;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;

use crate::client::{
    CONNECT_TIMEOUT, ClientArgs, Connection, causes, excerpt, parse_duration, request_target,
};
use crate::diag::Diagnostics;
use crate::exit::{CliError, Code};
use crate::k8s::Purpose;

/// Arguments of `rsigma engine tap`.
#[derive(Debug, Args)]
pub struct TapArgs {
    #[command(flatten)]
    pub client: ClientArgs,

    /// Capture window (humantime: 10s, 1m, 1h 30m). The daemon caps it at
    /// daemon.tap.max_duration.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_window)]
    pub duration: Window,

    /// Stop after N events, before the end of the window if reached first.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,

    /// Write the fixture to this file (created, or truncated, once the daemon
    /// accepted the tap). Default: stdout.
    #[arg(short = 'o', long = "output", value_name = "PATH")]
    pub output: Option<PathBuf>,

    /// Comma-separated dotted paths (e.g. user.email,src_ip) whose values the
    /// daemon replaces with per-session tokens before they leave it.
    #[arg(long, value_name = "a.b,c")]
    pub redact_fields: Option<String>,

    /// Where the daemon captures: decoded (the events the engine evaluated) or
    /// raw (the input lines as received, before parsing).
    #[arg(long, value_enum, value_name = "STAGE", default_value_t = Stage::Decoded)]
    pub stage: Stage,
}

/// `--duration`: the text as given (sent to the daemon unchanged) and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// The flag value, trimmed, as sent in the query string.
    pub text: String,
    /// The parsed duration (never zero).
    pub duration: Duration,
}

/// Parses `--duration`: a non-zero humantime duration.
fn parse_window(text: &str) -> Result<Window, String> {
    let text = text.trim();
    let duration = parse_duration(text)?;
    if duration.is_zero() {
        return Err("the capture window must be longer than zero".to_owned());
    }
    Ok(Window {
        text: text.to_owned(),
        duration,
    })
}

/// `--stage`: where on the decode path the daemon captures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Stage {
    /// Post-parse, post-filter: exactly the events the engine evaluated.
    Decoded,
    /// The input lines as received, before parsing.
    Raw,
}

impl Stage {
    /// The stage's name, as in the query string and the summary.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Decoded => "decoded",
            Stage::Raw => "raw",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Slack added to `--duration` for the whole request (connecting, the answer
/// headers, the summary): past `--duration` + this, the client gives up.
pub const DEADLINE_SLACK: Duration = Duration::from_secs(30);

/// Size of the read buffer over the response body.
const INPUT_BUFFER: usize = 64 * 1024;

/// Size of the output buffer (flushed whenever the input buffer is empty).
const OUTPUT_BUFFER: usize = 64 * 1024;

/// Most bytes of a non-2xx body read for the error message.
const ERROR_BODY_LIMIT: u64 = 64 * 1024;

/// The key of the summary record that ends every tap stream.
const SUMMARY_KEY: &str = "rsigma_tap_summary";

/// The daemon's default `--input-format`.
const DEFAULT_FORMAT: &str = "auto";

/// The daemon's default `--syslog-tz`.
const DEFAULT_SYSLOG_TZ: &str = "+00:00";

/// Runs `rsigma engine tap`.
pub fn run(args: &TapArgs, diag: &Diagnostics) -> Result<Code, CliError> {
    let config = args.client.config.load()?;
    let connection = Connection::open(&args.client, &config, None, Purpose::Tap)?;
    let http = &connection.http;
    let base = connection.describe();
    let url = tap_url(&connection.base, args)?;
    let target = request_target(&url);
    let deadline = args.duration.duration.checked_add(DEADLINE_SLACK);

    let mut request = http.get(url).header(ACCEPT, "application/x-ndjson");
    if let Some(deadline) = deadline {
        request = request.timeout(deadline);
    }
    let response = request.send().map_err(|err| {
        CliError::config(anyhow!(
            "could not reach the rsigma daemon at {base}: {}",
            connection.failure(reason(&err, deadline))
        ))
    })?;
    let status = response.status();
    if !status.is_success() {
        let mut body = Vec::new();
        let read = response.take(ERROR_BODY_LIMIT).read_to_end(&mut body);
        let text = match read {
            Ok(_) => excerpt(&body),
            Err(err) => format!(
                "(the body could not be read: {})",
                io_reason(&err, deadline)
            ),
        };
        return Err(CliError::config(anyhow!(
            "the rsigma daemon at {base} answered {status} to GET {target}: {text}"
        )));
    }

    // Only now, with the tap accepted, create (or truncate) the fixture.
    let sink: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(File::create(path).map_err(|err| {
            CliError::config(anyhow::Error::new(err).context(format!(
                "the fixture '{}' could not be created",
                path.display()
            )))
        })?),
        None => Box::new(io::stdout().lock()),
    };
    let mut out = BufWriter::with_capacity(OUTPUT_BUFFER, sink);
    let mut reader = BufReader::with_capacity(INPUT_BUFFER, response);
    let mut capture = Capture::new(args.stage);
    let outcome = capture
        .stream(&mut reader, &mut out)
        .and_then(|summary| out.flush().map(|()| summary).map_err(Stop::Write));

    let summary = match outcome {
        Ok(summary) => summary,
        Err(Stop::Write(err)) => {
            return match &args.output {
                // The reader of stdout went away (e.g. `| head`): stop quietly.
                None if err.kind() == io::ErrorKind::BrokenPipe => Ok(Code::Success),
                None => Err(CliError::config(
                    anyhow::Error::new(err).context("writing the capture to stdout failed"),
                )),
                Some(path) => Err(CliError::config(
                    anyhow::Error::new(err)
                        .context(format!("writing the fixture '{}' failed", path.display())),
                )),
            };
        }
        Err(Stop::Stream(problem)) => {
            let mut message = match problem {
                StreamError::Read(err) => format!(
                    "reading the tap stream from the rsigma daemon at {base} failed after {} events: {}",
                    capture.written,
                    io_reason(&err, deadline)
                ),
                StreamError::Unreadable(what) => {
                    format!("the rsigma daemon at {base} sent an unreadable tap stream: {what}")
                }
                StreamError::NoSummary => format!(
                    "the tap stream from the rsigma daemon at {base} ended without its summary record after {} events; the capture is incomplete",
                    capture.written
                ),
            };
            if let Some(path) = &args.output {
                message.push_str(&format!(
                    "; the fixture '{}' holds only the {} events received before that",
                    path.display(),
                    capture.written
                ));
            }
            return Err(CliError::config(anyhow!(message)));
        }
    };

    report(&summary, args, diag);
    Ok(Code::Success)
}

/// Prints the statistics line, the warnings and (raw stage, `-o`) the replay hint.
fn report(summary: &Summary, args: &TapArgs, diag: &Diagnostics) {
    diag.stats(stats_line(summary, args.stage));
    if summary.dropped > 0 {
        diag.warning(format_args!(
            "{} events were dropped (the tap buffer filled under load, or a redacting raw capture met lines that are not JSON); the fixture has gaps",
            summary.dropped
        ));
    }
    let requested = args.duration.duration.as_millis();
    if !summary.limit_reached && u128::from(summary.duration_ms) + 1000 < requested {
        diag.warning(format_args!(
            "the capture ended after {}, before the requested --duration {}: the daemon caps tap sessions at daemon.tap.max_duration",
            seconds(summary.duration_ms),
            args.duration.text
        ));
    }
    if let (Stage::Raw, Some(path)) = (args.stage, &args.output) {
        diag.stats(replay_hint(summary.input.as_ref(), path));
    }
}

/// `Captured N events (M dropped) in T from the S stage.`, plus
/// ` (limit reached)` before the period when `--limit` ended the capture.
fn stats_line(summary: &Summary, requested: Stage) -> String {
    let stage = summary.stage.as_deref().unwrap_or(requested.as_str());
    let limit = if summary.limit_reached {
        " (limit reached)"
    } else {
        ""
    };
    format!(
        "Captured {} events ({} dropped) in {} from the {stage} stage{limit}.",
        summary.captured,
        summary.dropped,
        seconds(summary.duration_ms)
    )
}

/// Milliseconds as seconds with one decimal: `30.0s`.
fn seconds(ms: u64) -> String {
    format!("{}.{}s", ms / 1000, (ms % 1000) / 100)
}

/// `Replay with: rsigma engine daemon -r RULES --input stdin [input flags]
/// --api-addr 127.0.0.1:0 < PATH`, with only the daemon's input flags that
/// differ from their defaults.
fn replay_hint(input: Option<&InputFlags>, path: &Path) -> String {
    let mut command = String::from("Replay with: rsigma engine daemon -r RULES --input stdin");
    if let Some(input) = input {
        let mut flag = |name: &str, value: &str| {
            command.push_str(&format!(" --{name} {}", shell_quote(value)));
        };
        if let Some(format) = input.format.as_deref().filter(|f| *f != DEFAULT_FORMAT) {
            flag("input-format", format);
        }
        if let Some(tz) = input
            .syslog_tz
            .as_deref()
            .filter(|tz| *tz != DEFAULT_SYSLOG_TZ)
        {
            flag("syslog-tz", tz);
        }
        if let Some(jq) = &input.jq {
            flag("jq", jq);
        }
        if let Some(jsonpath) = &input.jsonpath {
            flag("jsonpath", jsonpath);
        }
    }
    command.push_str(" --api-addr 127.0.0.1:0 < ");
    command.push_str(&shell_quote(&path.to_string_lossy()));
    if input.is_none() {
        command.push_str(
            " (add the daemon's --input-format, --syslog-tz, --jq or --jsonpath flags, if any)",
        );
    }
    command
}

/// `text` as one POSIX shell word: unchanged when it holds only characters
/// that need no quoting, else in single quotes.
fn shell_quote(text: &str) -> Cow<'_, str> {
    let plain = !text.is_empty()
        && text.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'_' | b'-' | b'+' | b'.' | b',' | b'/' | b':' | b'=' | b'@' | b'%'
                )
        });
    if plain {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(format!("'{}'", text.replace('\'', r"'\''")))
    }
}

/// The `rsigma_tap_summary` record that ends every tap stream.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct Summary {
    /// Events streamed.
    captured: u64,
    /// Events the session dropped (full buffer, or unparseable redacted raw lines).
    dropped: u64,
    /// How long the capture ran.
    duration_ms: u64,
    /// The capture stage.
    #[serde(default)]
    stage: Option<String>,
    /// Whether `limit` ended the capture.
    #[serde(default)]
    limit_reached: bool,
    /// The daemon's input settings, for the replay hint.
    #[serde(default)]
    input: Option<InputFlags>,
}

/// The daemon's input-selection settings, as reported in the summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
struct InputFlags {
    /// `--input-format`.
    #[serde(default)]
    format: Option<String>,
    /// `--jq`.
    #[serde(default)]
    jq: Option<String>,
    /// `--jsonpath`.
    #[serde(default)]
    jsonpath: Option<String>,
    /// `--syslog-tz`.
    #[serde(default)]
    syslog_tz: Option<String>,
    /// `--input` (where the daemon reads events).
    #[serde(default)]
    input: Option<String>,
}

/// Why streaming stopped before a complete capture.
#[derive(Debug)]
enum Stop {
    /// Writing the output failed.
    Write(io::Error),
    /// The stream failed or is not a tap stream.
    Stream(StreamError),
}

/// What is wrong with the tap stream.
#[derive(Debug)]
enum StreamError {
    /// Reading the body failed (connection reset, timeout, truncated chunk).
    Read(io::Error),
    /// A line that cannot be part of a tap stream.
    Unreadable(String),
    /// The body ended without the summary record.
    NoSummary,
}

/// The state of one capture: the stage and what has been written.
struct Capture {
    stage: Stage,
    /// Events written to the output.
    written: u64,
    /// Reused per line.
    line: Vec<u8>,
}

impl Capture {
    /// A capture of `stage` that has written nothing yet.
    fn new(stage: Stage) -> Capture {
        Capture {
            stage,
            written: 0,
            line: Vec::with_capacity(8 * 1024),
        }
    }

    /// Copies the events of the stream `reader` to `out` and returns the summary.
    ///
    /// A summary-shaped line is held until the next line: only the last line of
    /// the stream is the summary (on the decoded stage an event could, in
    /// theory, look like one). `out` is flushed whenever `reader` has no more
    /// buffered data, so events reach the output as they arrive.
    fn stream<R: Read, W: Write>(
        &mut self,
        reader: &mut BufReader<R>,
        out: &mut W,
    ) -> Result<Summary, Stop> {
        let mut number: u64 = 0;
        let mut held: Option<(Summary, Vec<u8>)> = None;
        loop {
            if reader.buffer().is_empty() {
                out.flush().map_err(Stop::Write)?;
            }
            self.line.clear();
            let read = reader
                .read_until(b'\n', &mut self.line)
                .map_err(|err| Stop::Stream(StreamError::Read(err)))?;
            if read == 0 {
                return held
                    .map(|(summary, _)| summary)
                    .ok_or(Stop::Stream(StreamError::NoSummary));
            }
            number += 1;
            let line = self.line.trim_ascii();
            if line.is_empty() {
                continue;
            }
            if let Some((_, previous)) = held.take() {
                // What looked like the summary was followed by more lines.
                match self.stage {
                    Stage::Decoded => {
                        write_line(out, &previous)?;
                        self.written += 1;
                    }
                    Stage::Raw => {
                        return Err(unreadable(format!(
                            "line {number} follows the summary record: {}",
                            excerpt(line)
                        )));
                    }
                }
            }
            if let Some(summary) =
                summary_record(line).map_err(|err| unreadable(format!("line {number}: {err}")))?
            {
                held = Some((summary, line.to_vec()));
                continue;
            }
            match self.stage {
                Stage::Decoded => {
                    if let Err(err) = serde_json::from_slice::<IgnoredAny>(line) {
                        return Err(unreadable(format!(
                            "line {number} is not JSON ({err}): {}",
                            excerpt(line)
                        )));
                    }
                    write_line(out, line)?;
                }
                Stage::Raw => {
                    let text = match serde_json::from_slice::<String>(line) {
                        Ok(text) => text,
                        Err(err) => {
                            let what = if serde_json::from_slice::<IgnoredAny>(line).is_ok() {
                                "is not a JSON string (the raw stage sends each input line as one)"
                                    .to_owned()
                            } else {
                                format!("is not JSON ({err})")
                            };
                            return Err(unreadable(format!(
                                "line {number} {what}: {}",
                                excerpt(line)
                            )));
                        }
                    };
                    write_line(out, text.as_bytes())?;
                }
            }
            self.written += 1;
        }
    }
}

/// Writes one fixture line: `line` and a newline.
fn write_line<W: Write>(out: &mut W, line: &[u8]) -> Result<(), Stop> {
    out.write_all(line)
        .and_then(|()| out.write_all(b"\n"))
        .map_err(Stop::Write)
}

/// An [`StreamError::Unreadable`] stop.
fn unreadable(what: String) -> Stop {
    Stop::Stream(StreamError::Unreadable(what))
}

/// The summary when `line` is a summary record: a JSON object whose only key
/// is `rsigma_tap_summary`. `Ok(None)` for any other line; an error when the
/// record is there but malformed.
fn summary_record(line: &[u8]) -> Result<Option<Summary>, String> {
    // Cheap pre-check: most lines are events without the key.
    if !line.starts_with(b"{") || !contains(line, SUMMARY_KEY.as_bytes()) {
        return Ok(None);
    }
    let Ok(Value::Object(mut object)) = serde_json::from_slice::<Value>(line) else {
        return Ok(None);
    };
    if object.len() != 1 {
        return Ok(None);
    }
    let Some(record) = object.remove(SUMMARY_KEY) else {
        return Ok(None);
    };
    serde_json::from_value(record)
        .map(Some)
        .map_err(|err| format!("malformed summary record ({err}): {}", excerpt(line)))
}

/// Whether `haystack` contains `needle`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// `{base}api/v1/tap?duration=D&stage=S[&limit=N][&redact_fields=P]`.
fn tap_url(base: &Url, args: &TapArgs) -> Result<Url, CliError> {
    let mut url = base
        .join("api/v1/tap")
        .with_context(|| format!("invalid API URL {base}api/v1/tap"))
        .map_err(CliError::config)?;
    {
        let mut query = url.query_pairs_mut();
        query.append_pair("duration", &args.duration.text);
        query.append_pair("stage", args.stage.as_str());
        if let Some(limit) = args.limit {
            query.append_pair("limit", &limit.to_string());
        }
        if let Some(fields) = &args.redact_fields {
            query.append_pair("redact_fields", fields);
        }
    }
    Ok(url)
}

/// What a timeout means here: the connect timeout or the capture deadline.
fn timed_out(deadline: Option<Duration>) -> String {
    match deadline {
        Some(deadline) => format!(
            "timed out (connect timeout {}s; the whole capture must end within --duration + {}s = {})",
            CONNECT_TIMEOUT.as_secs(),
            DEADLINE_SLACK.as_secs(),
            humantime::format_duration(deadline)
        ),
        None => format!("timed out (connect timeout {}s)", CONNECT_TIMEOUT.as_secs()),
    }
}

/// Why a request failed, without reqwest's "error sending request for url
/// (…)" preamble (the caller names the address): the chain of causes.
fn reason(err: &reqwest::Error, deadline: Option<Duration>) -> String {
    if err.is_timeout() {
        return timed_out(deadline);
    }
    match StdError::source(err) {
        Some(source) => causes(source),
        None => err.to_string(),
    }
}

/// Why reading the body failed.
fn io_reason(err: &io::Error, deadline: Option<Duration>) -> String {
    let timeout = err.kind() == io::ErrorKind::TimedOut
        || err
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<reqwest::Error>())
            .is_some_and(reqwest::Error::is_timeout);
    if timeout {
        timed_out(deadline)
    } else {
        causes(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Streams `body` through a capture of `stage`: the output and the outcome.
    fn capture(stage: Stage, body: &str) -> (String, Result<Summary, Stop>, u64) {
        let mut capture = Capture::new(stage);
        let mut reader = BufReader::with_capacity(16, body.as_bytes());
        let mut out = Vec::new();
        let outcome = capture.stream(&mut reader, &mut out);
        (String::from_utf8(out).unwrap(), outcome, capture.written)
    }

    const SUMMARY: &str = r#"{"rsigma_tap_summary":{"captured":2,"dropped":0,"duration_ms":1234,"stage":"decoded","limit_reached":false,"input":{"format":"auto","jq":null,"jsonpath":null,"syslog_tz":"+00:00","input":"http"}}}"#;

    #[test]
    fn decoded_events_are_copied_and_the_summary_kept_out() {
        let body = format!("{{\"a\":1}}\r\n\n{{\"b\":\"x\"}}\n{SUMMARY}\n");
        let (out, outcome, written) = capture(Stage::Decoded, &body);
        assert_eq!(out, "{\"a\":1}\n{\"b\":\"x\"}\n");
        assert_eq!(written, 2);
        let summary = outcome.unwrap();
        assert_eq!((summary.captured, summary.dropped), (2, 0));
        assert_eq!(summary.input.unwrap().input.as_deref(), Some("http"));
    }

    #[test]
    fn summary_without_trailing_newline_and_minimal_fields() {
        let body = r#"{"rsigma_tap_summary":{"captured":0,"dropped":0,"duration_ms":5}}"#;
        let (out, outcome, _) = capture(Stage::Raw, body);
        assert_eq!(out, "");
        let summary = outcome.unwrap();
        assert_eq!(summary.stage, None);
        assert!(summary.input.is_none());
    }

    #[test]
    fn raw_lines_are_decoded_strings() {
        let body = format!(
            "{}\n{}\n{SUMMARY}\n",
            serde_json::to_string("<13>Oct 11 22:14:15 host app: \"quoted\"\ttab é").unwrap(),
            serde_json::to_string("{\"user\":\"rsigma:redacted:ab12\"}").unwrap(),
        );
        let (out, outcome, _) = capture(Stage::Raw, &body);
        outcome.unwrap();
        assert_eq!(
            out,
            "<13>Oct 11 22:14:15 host app: \"quoted\"\ttab é\n{\"user\":\"rsigma:redacted:ab12\"}\n"
        );
    }

    #[test]
    fn a_summary_shaped_event_followed_by_more_lines_is_an_event() {
        let fake = r#"{"rsigma_tap_summary":{"captured":9,"dropped":9,"duration_ms":9}}"#;
        let body = format!("{fake}\n{{\"a\":1}}\n{SUMMARY}\n");
        let (out, outcome, written) = capture(Stage::Decoded, &body);
        assert_eq!(out, format!("{fake}\n{{\"a\":1}}\n"));
        assert_eq!(written, 2);
        assert_eq!(outcome.unwrap().captured, 2);
        // An object with more keys is an event, not a summary.
        let other = r#"{"rsigma_tap_summary":{},"x":1}"#;
        let (out, _, _) = capture(Stage::Decoded, &format!("{other}\n{SUMMARY}\n"));
        assert_eq!(out, format!("{other}\n"));
    }

    #[test]
    fn unreadable_streams() {
        for (stage, body, expected) in [
            (
                Stage::Decoded,
                "{\"a\":1}\nnot json\n",
                "line 2 is not JSON",
            ),
            (Stage::Raw, "{\"a\":1}\n", "line 1 is not a JSON string"),
            (Stage::Raw, "\"ok\"\n\"unterminated\n", "line 2 is not JSON"),
            (
                Stage::Decoded,
                "{\"rsigma_tap_summary\":{\"captured\":\"x\"}}\n",
                "line 1: malformed summary record",
            ),
            (
                Stage::Raw,
                &format!("{SUMMARY}\n\"late\"\n"),
                "line 2 follows the summary record",
            ),
        ] {
            let (_, outcome, _) = capture(stage, body);
            match outcome {
                Err(Stop::Stream(StreamError::Unreadable(what))) => {
                    assert!(
                        what.contains(expected),
                        "{what:?} should contain {expected:?}"
                    )
                }
                other => panic!("{body:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn missing_summary() {
        for body in ["", "{\"a\":1}\n", "{\"a\":1}"] {
            let (_, outcome, _) = capture(Stage::Decoded, body);
            assert!(
                matches!(outcome, Err(Stop::Stream(StreamError::NoSummary))),
                "{body:?}: {outcome:?}"
            );
        }
    }

    #[test]
    fn stats_lines() {
        let mut summary: Summary = serde_json::from_str(
            r#"{"captured":842,"dropped":3,"duration_ms":30000,"stage":"decoded"}"#,
        )
        .unwrap();
        assert_eq!(
            stats_line(&summary, Stage::Decoded),
            "Captured 842 events (3 dropped) in 30.0s from the decoded stage."
        );
        summary.stage = None;
        summary.limit_reached = true;
        summary.duration_ms = 1999;
        assert_eq!(
            stats_line(&summary, Stage::Raw),
            "Captured 842 events (3 dropped) in 1.9s from the raw stage (limit reached)."
        );
    }

    #[test]
    fn replay_hints_name_only_non_default_input_flags() {
        let path = Path::new("raw.ndjson");
        let defaults: InputFlags = serde_json::from_str(
            r#"{"format":"auto","jq":null,"jsonpath":null,"syslog_tz":"+00:00","input":"http"}"#,
        )
        .unwrap();
        assert_eq!(
            replay_hint(Some(&defaults), path),
            "Replay with: rsigma engine daemon -r RULES --input stdin --api-addr 127.0.0.1:0 < raw.ndjson"
        );
        let syslog = InputFlags {
            format: Some("syslog".into()),
            syslog_tz: Some("+02:00".into()),
            ..defaults.clone()
        };
        assert_eq!(
            replay_hint(Some(&syslog), path),
            "Replay with: rsigma engine daemon -r RULES --input stdin --input-format syslog --syslog-tz +02:00 --api-addr 127.0.0.1:0 < raw.ndjson"
        );
        let jq = InputFlags {
            jq: Some(".event | select(.x != \"it's\")".into()),
            ..defaults
        };
        assert_eq!(
            replay_hint(Some(&jq), Path::new("my dir/raw.ndjson")),
            r#"Replay with: rsigma engine daemon -r RULES --input stdin --jq '.event | select(.x != "it'\''s")' --api-addr 127.0.0.1:0 < 'my dir/raw.ndjson'"#
        );
        assert!(replay_hint(None, path).contains("add the daemon's --input-format"));
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("-05:00"), "-05:00");
        assert_eq!(shell_quote("$.event"), "'$.event'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
    }

    #[test]
    fn windows() {
        assert_eq!(
            parse_window(" 1m30s ").unwrap(),
            Window {
                text: "1m30s".into(),
                duration: Duration::from_secs(90)
            }
        );
        assert!(parse_window("0s").is_err());
        assert!(parse_window("soon").is_err());
        assert_eq!(seconds(0), "0.0s");
        assert_eq!(seconds(30_049), "30.0s");
        assert_eq!(seconds(61_250), "61.2s");
    }

    #[test]
    fn query_string() {
        let base = crate::client::resolve_base("https://proxy.example/rsigma", false).unwrap();
        let args = TapArgs {
            client: ClientArgs {
                config: Default::default(),
                addr: None,
                kube: Default::default(),
                ca_cert: None,
                client_cert: None,
                client_key: None,
            },
            duration: parse_window("1h 30m").unwrap(),
            limit: Some(7),
            output: None,
            redact_fields: Some("user.email,src_ip".into()),
            stage: Stage::Raw,
        };
        assert_eq!(
            tap_url(&base, &args).unwrap().as_str(),
            "https://proxy.example/rsigma/api/v1/tap?duration=1h+30m&stage=raw&limit=7&redact_fields=user.email%2Csrc_ip"
        );
    }
}
