//! Sinks: where output records go. One task writes every chunk of records to
//! every configured sink (fan-out); records a sink fails to take go to the
//! dead-letter queue, as do input lines that could not be decoded.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use chrono::Utc;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::SinkSpec;
use crate::context::DaemonContext;

/// Output records ready to write: NDJSON lines.
#[derive(Debug, Default)]
pub struct OutputChunk {
    /// The records, each ending in a newline.
    pub bytes: Vec<u8>,
    /// How many records.
    pub records: usize,
}

/// Longest part of a rejected line kept in a dead letter.
const DEAD_LETTER_LINE_LIMIT: usize = 64 * 1024;

/// A record for the dead-letter queue.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// When it was rejected (RFC 3339).
    pub time: String,
    /// `parse_error` or `delivery_error`.
    pub kind: &'static str,
    /// Why.
    pub reason: String,
    /// The input line (parse errors), cut at 64 KiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<String>,
    /// The output records that could not be delivered (delivery errors).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records: Option<String>,
    /// The sink that failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sink: Option<String>,
}

fn cut(text: &str, limit: usize) -> String {
    let mut end = text.len().min(limit);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

impl DeadLetter {
    /// An input line that could not be decoded.
    pub fn parse(line: &str, reason: impl ToString) -> DeadLetter {
        DeadLetter {
            time: Utc::now().to_rfc3339(),
            kind: "parse_error",
            reason: reason.to_string(),
            line: Some(cut(line, DEAD_LETTER_LINE_LIMIT)),
            records: None,
            sink: None,
        }
    }

    /// Records a sink failed to take.
    pub fn delivery(sink: &SinkSpec, records: &[u8], reason: impl ToString) -> DeadLetter {
        DeadLetter {
            time: Utc::now().to_rfc3339(),
            kind: "delivery_error",
            reason: reason.to_string(),
            line: None,
            records: Some(String::from_utf8_lossy(records).into_owned()),
            sink: Some(sink.to_string()),
        }
    }
}

/// An open sink. Writes are synchronous and unbuffered: the sink thread
/// gathers every chunk waiting in the queue into one write, so a failed write
/// or flush is known at once and its records go to the dead-letter queue.
pub struct Sink {
    spec: SinkSpec,
    writer: Box<dyn Write + Send>,
}

impl Sink {
    fn open(spec: &SinkSpec) -> std::io::Result<Sink> {
        let writer: Box<dyn Write + Send> = match spec {
            SinkSpec::Stdout => Box::new(std::io::stdout()),
            SinkSpec::File(path) => Box::new(open_append(path)?),
        };
        Ok(Sink {
            spec: spec.clone(),
            writer,
        })
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(bytes)?;
        self.writer.flush()
    }
}

fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

/// Opens every sink; an error names the sink (a configuration error at startup).
pub fn open_all(specs: &[SinkSpec]) -> Result<Vec<Sink>, String> {
    specs
        .iter()
        .map(|spec| Sink::open(spec).map_err(|err| format!("cannot open sink {spec}: {err}")))
        .collect()
}

/// Most bytes gathered into one write.
const WRITE_BATCH_BYTES: usize = 1024 * 1024;

/// Writes output chunks to every sink until the queue closes (run it on a
/// thread of its own). A failed write counts, and its records go to the
/// dead-letter queue.
pub fn run_outputs(
    context: Arc<DaemonContext>,
    mut sinks: Vec<Sink>,
    mut chunks: mpsc::Receiver<OutputChunk>,
    dead_letters: mpsc::Sender<DeadLetter>,
) {
    let depth = context.metrics.queue_depth.with_label_values(&["output"]);
    let mut batch = Vec::with_capacity(64 * 1024);
    while let Some(first) = chunks.blocking_recv() {
        batch.clear();
        batch.extend_from_slice(&first.bytes);
        while batch.len() < WRITE_BATCH_BYTES {
            match chunks.try_recv() {
                Ok(chunk) => batch.extend_from_slice(&chunk.bytes),
                Err(_) => break,
            }
        }
        depth.set(chunks.len() as i64);
        for sink in &mut sinks {
            if let Err(err) = sink.write(&batch) {
                context
                    .metrics
                    .sink_errors
                    .with_label_values(&[&sink.spec.to_string()])
                    .inc();
                tracing::error!(sink = %sink.spec, error = %err, "sink write failed; records sent to the dead-letter queue");
                let _ = dead_letters.blocking_send(DeadLetter::delivery(&sink.spec, &batch, err));
            }
        }
    }
}

/// Writes dead letters to the DLQ sink, or logs and drops them without one
/// (run it on a thread of its own).
pub fn run_dead_letters(
    context: Arc<DaemonContext>,
    mut sink: Option<Sink>,
    mut letters: mpsc::Receiver<DeadLetter>,
) {
    while let Some(letter) = letters.blocking_recv() {
        match &mut sink {
            Some(sink) => {
                let mut line = serde_json::to_vec(&letter).expect("dead letters serialize");
                line.push(b'\n');
                match sink.write(&line) {
                    Ok(()) => context.metrics.dlq_events.inc(),
                    Err(err) => tracing::error!(
                        sink = %sink.spec,
                        error = %err,
                        "dead-letter queue write failed; record dropped"
                    ),
                }
            }
            None => tracing::warn!(
                kind = letter.kind,
                reason = %letter.reason,
                "rejected input discarded (no --dlq)"
            ),
        }
    }
}
