//! Sinks: where output records go. One thread writes every chunk of records
//! to every configured sink (fan-out); records a sink fails to take go to
//! the dead-letter queue, as do input lines that could not be decoded.
//!
//! Records carry the [`Receipt`]s of the inputs they came from. A receipt
//! settles when the last record holding it was written by every sink, or
//! taken by the dead-letter queue; a record neither could take fails it, so
//! a redelivering source (JetStream) delivers the input again.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use chrono::Utc;
use prometheus::IntCounter;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::SinkSpec;
use crate::context::DaemonContext;
use crate::source::Receipt;

/// Output records ready to write: NDJSON lines, with where each ends (a
/// pretty-printed record spans several lines, and a message sink sends one
/// message per record).
#[derive(Debug, Default)]
pub struct OutputChunk {
    /// The records, each ending in a newline.
    pub bytes: Vec<u8>,
    /// The end offset (after the newline) of each record in `bytes`.
    pub ends: Vec<usize>,
    /// The receipts of the inputs these records came from.
    pub receipts: Vec<Receipt>,
}

impl OutputChunk {
    /// How many records.
    pub fn records(&self) -> usize {
        self.ends.len()
    }

    /// Appends one serialized record (without its newline).
    pub fn push_record(&mut self, record: &[u8]) {
        self.bytes.extend_from_slice(record);
        self.bytes.push(b'\n');
        self.ends.push(self.bytes.len());
    }

    /// Appends `record` serialized as JSON (pretty-printed with `pretty`).
    pub fn write_record(&mut self, record: &impl Serialize, pretty: bool) {
        let written = if pretty {
            serde_json::to_writer_pretty(&mut self.bytes, record)
        } else {
            serde_json::to_writer(&mut self.bytes, record)
        };
        written.expect("records serialize to JSON");
        self.bytes.push(b'\n');
        self.ends.push(self.bytes.len());
    }

    /// Appends another chunk's records and receipts.
    pub fn append(&mut self, other: OutputChunk) {
        let base = self.bytes.len();
        self.bytes.extend_from_slice(&other.bytes);
        self.ends.extend(other.ends.iter().map(|end| base + end));
        self.receipts.extend(other.receipts);
    }

    /// Each record without its trailing newline.
    pub fn each_record(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let record = &self.bytes[start..end - 1];
            start = end;
            record
        })
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
        self.receipts.clear();
    }
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
    /// The output record that could not be delivered (delivery errors), as
    /// an NDJSON line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records: Option<String>,
    /// The sink that failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sink: Option<String>,
    /// The receipts of the inputs behind this letter.
    #[serde(skip)]
    pub receipts: Vec<Receipt>,
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
            receipts: Vec::new(),
        }
    }

    /// The records a sink failed to take, one letter per record: a letter
    /// stays about the size of its record, which a message DLQ can carry
    /// (a whole batch would exceed a broker's payload limit). Each letter
    /// holds every receipt of the chunk, so one letter the DLQ cannot take
    /// fails them all.
    pub fn delivery(
        sink: &SinkSpec,
        chunk: &OutputChunk,
        reason: impl ToString,
    ) -> Vec<DeadLetter> {
        let (time, reason, sink) = (
            Utc::now().to_rfc3339(),
            reason.to_string(),
            sink.to_string(),
        );
        chunk
            .each_record()
            .map(|record| DeadLetter {
                time: time.clone(),
                kind: "delivery_error",
                reason: reason.clone(),
                line: None,
                records: Some(format!("{}\n", String::from_utf8_lossy(record))),
                sink: Some(sink.clone()),
                receipts: chunk.receipts.clone(),
            })
            .collect()
    }

    /// The same letter, settling `receipt` too.
    pub fn with_receipt(mut self, receipt: Option<Receipt>) -> DeadLetter {
        self.receipts.extend(receipt);
        self
    }

    /// Marks the inputs behind the letter undelivered (see [`Receipt::fail`]).
    pub fn fail(&self) {
        self.receipts.iter().for_each(Receipt::fail);
    }

    /// Whether the input behind the letter may be settled when no DLQ is
    /// configured: an undecodable line never decodes, so it is discarded
    /// (the documented behaviour without `--dlq`); undelivered records are
    /// delivered again instead.
    fn discardable(&self) -> bool {
        self.kind == "parse_error"
    }
}

/// Where a sink puts records. Implementations return only once the
/// destination has taken the records (written and flushed, or acknowledged),
/// so a failure is known at once and the records go to the dead-letter queue.
pub trait SinkWriter: Send {
    /// Writes every record of the chunk.
    fn write_chunk(&mut self, chunk: &OutputChunk) -> std::io::Result<()>;
}

/// A byte stream sink: standard output or an appended file.
struct StreamWriter(Box<dyn Write + Send>);

impl SinkWriter for StreamWriter {
    fn write_chunk(&mut self, chunk: &OutputChunk) -> std::io::Result<()> {
        self.0.write_all(&chunk.bytes)?;
        self.0.flush()
    }
}

/// An open sink.
pub struct Sink {
    spec: SinkSpec,
    writer: Box<dyn SinkWriter>,
    errors: IntCounter,
}

impl Sink {
    /// A sink writing through `writer`; its failures count in
    /// `rsigma_sink_errors_total`, labelled with the sink's name and type
    /// (never a secret: see [`SinkSpec`]'s `Display`).
    pub fn new(spec: SinkSpec, writer: Box<dyn SinkWriter>, context: &DaemonContext) -> Sink {
        let errors = context
            .metrics
            .sink_errors
            .with_label_values(&[&spec.to_string(), spec.kind()]);
        Sink {
            spec,
            writer,
            errors,
        }
    }

    /// Standard output.
    pub fn stdout(context: &DaemonContext) -> Sink {
        let writer = StreamWriter(Box::new(std::io::stdout()));
        Sink::new(SinkSpec::Stdout, Box::new(writer), context)
    }

    /// A file, appended to (created with its directory when missing).
    pub fn file(path: &Path, context: &DaemonContext) -> std::io::Result<Sink> {
        let writer = StreamWriter(Box::new(open_append(path)?));
        Ok(Sink::new(
            SinkSpec::File(path.to_path_buf()),
            Box::new(writer),
            context,
        ))
    }

    fn write(&mut self, chunk: &OutputChunk) -> std::io::Result<()> {
        self.writer
            .write_chunk(chunk)
            .inspect_err(|_| self.errors.inc())
    }
}

fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
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
    let mut batch = OutputChunk::default();
    while let Some(first) = chunks.blocking_recv() {
        batch.clear();
        batch.append(first);
        while batch.bytes.len() < WRITE_BATCH_BYTES {
            match chunks.try_recv() {
                Ok(chunk) => batch.append(chunk),
                Err(_) => break,
            }
        }
        depth.set(chunks.len() as i64);
        for sink in &mut sinks {
            if let Err(err) = sink.write(&batch) {
                tracing::error!(sink = %sink.spec, error = %err, "sink write failed; records sent to the dead-letter queue");
                for letter in DeadLetter::delivery(&sink.spec, &batch, err) {
                    if let Err(unsent) = dead_letters.blocking_send(letter) {
                        unsent.0.fail();
                    }
                }
            }
        }
        // Written everywhere (or handed to the DLQ): the batch's receipts
        // are dropped here.
        batch.receipts.clear();
    }
}

/// Writes dead letters to the DLQ sink, or logs and drops them without one
/// (run it on a thread of its own). A letter the DLQ cannot take fails its
/// receipts, so its input is delivered again.
pub fn run_dead_letters(
    context: Arc<DaemonContext>,
    mut sink: Option<Sink>,
    mut letters: mpsc::Receiver<DeadLetter>,
) {
    let mut record = OutputChunk::default();
    while let Some(letter) = letters.blocking_recv() {
        match &mut sink {
            Some(sink) => {
                record.clear();
                record.push_record(&serde_json::to_vec(&letter).expect("dead letters serialize"));
                match sink.write(&record) {
                    Ok(()) => context.metrics.dlq_events.inc(),
                    Err(err) => {
                        context.metrics.dlq_write_errors.inc();
                        letter.fail();
                        tracing::error!(
                            sink = %sink.spec,
                            error = %err,
                            "dead-letter queue write failed; record dropped"
                        );
                    }
                }
            }
            None => {
                if !letter.discardable() {
                    letter.fail();
                }
                tracing::warn!(
                    kind = letter.kind,
                    reason = %letter.reason,
                    "rejected input discarded (no --dlq)"
                );
            }
        }
    }
}
