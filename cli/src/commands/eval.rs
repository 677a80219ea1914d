//! `rsigma engine eval`: evaluate JSON events against Sigma rules.
//!
//! Events come from `-e` values (a literal JSON object, `@path` to an NDJSON file,
//! or `@-` for stdin) in the order given, or from stdin when no `-e` is given.
//! NDJSON input is streamed line by line with a reused buffer; blank lines are
//! skipped and malformed lines are warned about, counted and skipped.
//!
//! Each detection is written to stdout as one JSON record (NDJSON, or pretty JSON
//! with `--pretty`). At the end a statistics line goes to stderr.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::PathBuf;

use anyhow::{Context, anyhow};
use clap::Args;
use rsigma_engine::correlation::{CorrelationEngine, CorrelationMatch};
use rsigma_engine::{Detection, Engine, Scratch};
use serde::Serialize;
use serde_json::Value;

use crate::config::{CorrelationSection, EngineSection};
use crate::diag::Diagnostics;
use crate::exit::{CliError, Code};
use crate::options::{CorrelationArgs, EngineArgs};

/// Arguments of `rsigma engine eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Sigma rule file, or a directory searched recursively for .yml/.yaml rules.
    #[arg(short = 'r', long = "rules", value_name = "RULES_FILE_OR_DIR")]
    pub rules: PathBuf,

    /// An event: a literal JSON object, `@path` to an NDJSON file, or `@-` for stdin.
    /// Repeatable; sources are read in order. Without -e, NDJSON is read from stdin.
    #[arg(short = 'e', long = "event", value_name = "JSON|@FILE")]
    pub events: Vec<String>,

    /// Add the full event to each detection record, as the `event` field.
    #[arg(long)]
    pub include_event: bool,

    /// Pretty-print each detection record (a stream of multi-line JSON objects).
    #[arg(long)]
    pub pretty: bool,

    /// Exit with code 1 when at least one detection or correlation match was emitted.
    #[arg(long)]
    pub fail_on_detection: bool,

    /// Processing pipeline: builtin name (ecs_windows, sysmon) or YAML file. Repeatable; applied by priority.
    #[arg(short = 'p', long = "pipeline", value_name = "PIPELINE")]
    pub pipelines: Vec<String>,

    #[command(flatten)]
    pub engine: EngineArgs,

    #[command(flatten)]
    pub correlation: CorrelationArgs,
}

/// Name used for stdin in warnings.
const STDIN_NAME: &str = "<stdin>";

/// Size of the read buffer of each NDJSON source.
const INPUT_BUFFER: usize = 64 * 1024;

/// Size of the stdout buffer.
const OUTPUT_BUFFER: usize = 64 * 1024;

/// Runs `rsigma engine eval`.
pub fn run(args: &EvalArgs, diag: &Diagnostics) -> Result<Code, CliError> {
    // Check every event source before loading rules, so bad arguments fail fast
    // and nothing is written to stdout.
    let sources = open_sources(&args.events)?;

    let file = CorrelationSection::default();
    let engine = args
        .engine
        .options(&EngineSection::default())
        .map_err(|err| CliError::config(anyhow!(err)))?;
    let compiled = super::load_and_compile(
        &args.rules,
        &args.pipelines,
        &engine,
        &args.correlation.options(&file),
    )?;
    if !compiled.errors.is_empty() {
        for error in &compiled.errors {
            diag.error(error);
        }
        let count = compiled.errors.len();
        let noun = if count == 1 { "error" } else { "errors" };
        return Err(CliError::rules(anyhow!(
            "{count} rule {noun} in '{}'; no events were evaluated",
            args.rules.display()
        )));
    }
    if compiled.engine.rule_count() == 0 {
        diag.warning(format_args!(
            "no rules found in '{}'; nothing can match",
            args.rules.display()
        ));
    }

    let has_correlations = compiled.correlations.is_some();
    let stdout = io::stdout();
    let mut run = Evaluation {
        engine: &compiled.engine,
        correlations: compiled.correlations,
        correlation_matches: Vec::new(),
        no_detections: args.correlation.no_detections(&file),
        correlated: 0,
        scratch: compiled.engine.new_scratch(),
        detections: Vec::new(),
        line: Vec::with_capacity(8 * 1024),
        out: BufWriter::with_capacity(OUTPUT_BUFFER, stdout.lock()),
        include_event: args.include_event,
        pretty: args.pretty,
        diag,
        events: 0,
        matches: 0,
        malformed: 0,
    };

    let outcome = run
        .process(sources)
        .and_then(|()| run.out.flush().map_err(Stop::write));
    match outcome {
        Ok(()) => {}
        // The reader of our output went away (e.g. `| head`): stop quietly.
        Err(Stop::BrokenPipe) => return Ok(run.exit_code(args.fail_on_detection)),
        Err(Stop::Fatal(error)) => return Err(error),
    }

    if has_correlations {
        diag.stats(format_args!(
            "Processed {} events, {} detection matches, {} correlation matches.",
            run.events, run.matches, run.correlated
        ));
    } else {
        diag.stats(format_args!(
            "Processed {} events, {} matches.",
            run.events, run.matches
        ));
    }
    if run.malformed > 0 {
        diag.stats(format_args!("Skipped {} malformed events.", run.malformed));
    }
    Ok(run.exit_code(args.fail_on_detection))
}

/// One place events are read from.
enum Source {
    /// A literal event given with `-e`, already parsed.
    Literal(Value),
    /// An NDJSON file given with `-e @path`.
    File {
        name: String,
        reader: BufReader<File>,
    },
    /// NDJSON on stdin (`-e @-`, or no `-e` at all).
    Stdin,
}

/// Parses the `-e` values and opens every file, in order.
fn open_sources(values: &[String]) -> Result<Vec<Source>, CliError> {
    if values.is_empty() {
        return Ok(vec![Source::Stdin]);
    }
    let mut sources = Vec::with_capacity(values.len());
    let mut stdin_used = false;
    for value in values {
        let source = if let Some(path) = value.strip_prefix('@') {
            if path == "-" {
                if stdin_used {
                    return Err(CliError::config(anyhow!(
                        "-e @- (stdin) can be given only once"
                    )));
                }
                stdin_used = true;
                Source::Stdin
            } else if path.is_empty() {
                return Err(CliError::config(anyhow!(
                    "invalid -e value '@': expected a path after '@'"
                )));
            } else {
                let file = File::open(path)
                    .with_context(|| format!("cannot open events file '{path}'"))
                    .map_err(CliError::config)?;
                Source::File {
                    name: path.to_owned(),
                    reader: BufReader::with_capacity(INPUT_BUFFER, file),
                }
            }
        } else {
            let event: Value = serde_json::from_str(value)
                .with_context(|| {
                    format!(
                        "invalid -e value '{}': neither a JSON object nor @path",
                        preview(value)
                    )
                })
                .map_err(CliError::config)?;
            if !event.is_object() {
                return Err(CliError::config(anyhow!(
                    "invalid -e value '{}': the event must be a JSON object, found {}",
                    preview(value),
                    kind(&event)
                )));
            }
            Source::Literal(event)
        };
        sources.push(source);
    }
    Ok(sources)
}

/// At most 60 characters of an argument, for error messages.
fn preview(value: &str) -> String {
    const MAX: usize = 60;
    match value.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}...", &value[..end]),
        None => value.to_owned(),
    }
}

/// The JSON type of a value, for error messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Why processing stopped early.
enum Stop {
    /// stdout was closed by its reader; exit quietly.
    BrokenPipe,
    /// Any other failure, reported by `main`.
    Fatal(CliError),
}

impl Stop {
    /// Classifies a failure to write to stdout.
    fn write(error: io::Error) -> Stop {
        if error.kind() == io::ErrorKind::BrokenPipe {
            Stop::BrokenPipe
        } else {
            Stop::Fatal(CliError::config(
                anyhow::Error::new(error).context("failed to write detections to stdout"),
            ))
        }
    }
}

/// The state of one `eval` run.
struct Evaluation<'a, W: Write> {
    engine: &'a Engine,
    correlations: Option<CorrelationEngine>,
    /// Reused per event.
    correlation_matches: Vec<CorrelationMatch>,
    /// `--no-detections`: leave out detections of correlation-only rules.
    no_detections: bool,
    /// Correlation records emitted.
    correlated: u64,
    scratch: Scratch,
    /// Reused per event.
    detections: Vec<Detection>,
    /// Reused per input line.
    line: Vec<u8>,
    out: W,
    include_event: bool,
    pretty: bool,
    diag: &'a Diagnostics,
    /// Well-formed events evaluated.
    events: u64,
    /// Detection records emitted.
    matches: u64,
    /// Malformed lines skipped.
    malformed: u64,
}

impl<W: Write> Evaluation<'_, W> {
    /// Evaluates every source in order.
    fn process(&mut self, sources: Vec<Source>) -> Result<(), Stop> {
        for source in sources {
            match source {
                Source::Literal(event) => self.evaluate(&event)?,
                Source::File { name, mut reader } => self.stream(&name, &mut reader)?,
                Source::Stdin => {
                    let mut reader = BufReader::with_capacity(INPUT_BUFFER, io::stdin().lock());
                    self.stream(STDIN_NAME, &mut reader)?
                }
            }
        }
        Ok(())
    }

    /// Reads NDJSON events from `reader` one line at a time.
    ///
    /// Output is flushed whenever the input buffer is empty, i.e. before a read
    /// that may block: detections from a live stream (`tail -f | rsigma ...`)
    /// appear promptly, while bulk input is still written in large chunks.
    fn stream<R: Read>(&mut self, name: &str, reader: &mut BufReader<R>) -> Result<(), Stop> {
        let mut line_number: u64 = 0;
        loop {
            if reader.buffer().is_empty() {
                self.out.flush().map_err(Stop::write)?;
            }
            self.line.clear();
            let read = reader.read_until(b'\n', &mut self.line).map_err(|e| {
                Stop::Fatal(CliError::config(
                    anyhow::Error::new(e).context(format!("failed to read events from {name}")),
                ))
            })?;
            if read == 0 {
                return Ok(());
            }
            line_number += 1;
            let line = self.line.trim_ascii();
            if line.is_empty() {
                continue;
            }
            match parse_event(line) {
                Ok(event) => self.evaluate(&event)?,
                Err(reason) => {
                    self.malformed += 1;
                    self.diag.warning(format_args!(
                        "{name}:{line_number}: malformed event: {reason}"
                    ));
                }
            }
        }
    }

    /// Evaluates one event and writes its detections.
    fn evaluate(&mut self, event: &Value) -> Result<(), Stop> {
        self.events += 1;
        self.detections.clear();
        self.engine
            .evaluate_into(event, &mut self.scratch, &mut self.detections);
        let included = self.include_event.then_some(event);
        for detection in &self.detections {
            if self.no_detections
                && self
                    .correlations
                    .as_ref()
                    .is_some_and(|c| c.is_correlation_only(detection.rule.index))
            {
                continue;
            }
            write_record(&mut self.out, detection, included, self.pretty).map_err(Stop::write)?;
            self.matches += 1;
        }
        if let Some(correlations) = &mut self.correlations {
            self.correlation_matches.clear();
            correlations.process(event, &self.detections, &mut self.correlation_matches);
            for found in &self.correlation_matches {
                write_json(&mut self.out, found, self.pretty).map_err(Stop::write)?;
                self.correlated += 1;
            }
        }
        Ok(())
    }

    /// The exit code of a run that was not stopped by an error.
    fn exit_code(&self, fail_on_detection: bool) -> Code {
        if fail_on_detection && self.matches + self.correlated > 0 {
            Code::Detections
        } else {
            Code::Success
        }
    }
}

/// Parses one NDJSON line into an event, which must be a JSON object.
fn parse_event(line: &[u8]) -> Result<Value, String> {
    // One UTF-8 check of the whole line: from a slice, serde_json checks
    // every string on its own, which measured 9% of parsing.
    let line = std::str::from_utf8(line).map_err(|err| format!("invalid UTF-8: {err}"))?;
    match serde_json::from_str::<Value>(line) {
        Ok(event) if event.is_object() => Ok(event),
        Ok(other) => Err(format!("expected a JSON object, found {}", kind(&other))),
        Err(error) => Err(error.to_string()),
    }
}

/// Writes one detection record followed by a newline.
fn write_record(
    out: &mut impl Write,
    detection: &Detection,
    event: Option<&Value>,
    pretty: bool,
) -> io::Result<()> {
    write_json(out, &detection.record(event), pretty)
}

/// Writes one record followed by a newline.
fn write_json(out: &mut impl Write, record: &impl Serialize, pretty: bool) -> io::Result<()> {
    if pretty {
        serde_json::to_writer_pretty(&mut *out, record)?;
    } else {
        serde_json::to_writer(&mut *out, record)?;
    }
    out.write_all(b"\n")
}
