//! Sinks: where output records go. One task writes every chunk of records to
//! every configured sink (fan-out); records a sink fails to take go to the
//! dead-letter queue, as do input lines that could not be decoded.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;
use serde::Serialize;
use tokio::fs::OpenOptions;
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
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

/// An open sink.
struct Sink {
    spec: SinkSpec,
    writer: BufWriter<Box<dyn AsyncWrite + Send + Unpin>>,
}

impl Sink {
    async fn open(spec: &SinkSpec) -> std::io::Result<Sink> {
        let writer: Box<dyn AsyncWrite + Send + Unpin> = match spec {
            SinkSpec::Stdout => Box::new(tokio::io::stdout()),
            SinkSpec::File(path) => Box::new(open_append(path).await?),
        };
        Ok(Sink {
            spec: spec.clone(),
            writer: BufWriter::with_capacity(64 * 1024, writer),
        })
    }
}

async fn open_append(path: &PathBuf) -> std::io::Result<tokio::fs::File> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(parent).await?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
}

/// Opens every sink; an error names the sink (a configuration error at startup).
pub async fn open_all(specs: &[SinkSpec]) -> Result<Vec<SinkHandle>, String> {
    let mut sinks = Vec::with_capacity(specs.len());
    for spec in specs {
        let sink = Sink::open(spec)
            .await
            .map_err(|err| format!("cannot open sink {spec}: {err}"))?;
        sinks.push(SinkHandle(sink));
    }
    Ok(sinks)
}

/// An opened sink, handed to [`run_outputs`] or [`run_dead_letters`].
pub struct SinkHandle(Sink);

/// Writes output chunks to every sink until the queue closes, then flushes.
/// A failed write counts, and the records go to the dead-letter queue.
pub async fn run_outputs(
    context: Arc<DaemonContext>,
    mut sinks: Vec<SinkHandle>,
    mut chunks: mpsc::Receiver<OutputChunk>,
    dead_letters: mpsc::Sender<DeadLetter>,
) {
    let depth = context.metrics.queue_depth.with_label_values(&["output"]);
    while let Some(chunk) = chunks.recv().await {
        depth.set(chunks.len() as i64);
        for SinkHandle(sink) in &mut sinks {
            if let Err(err) = sink.writer.write_all(&chunk.bytes).await {
                context
                    .metrics
                    .sink_errors
                    .with_label_values(&[&sink.spec.to_string()])
                    .inc();
                let _ = dead_letters
                    .send(DeadLetter::delivery(&sink.spec, &chunk.bytes, err))
                    .await;
            }
        }
        // Flush when nothing else is waiting: prompt output for a trickle,
        // large writes under load.
        if chunks.is_empty() {
            flush_all(&context, &mut sinks).await;
        }
    }
    flush_all(&context, &mut sinks).await;
}

async fn flush_all(context: &DaemonContext, sinks: &mut [SinkHandle]) {
    for SinkHandle(sink) in sinks {
        if let Err(err) = sink.writer.flush().await {
            context
                .metrics
                .sink_errors
                .with_label_values(&[&sink.spec.to_string()])
                .inc();
            tracing::error!(sink = %sink.spec, error = %err, "flushing sink failed");
        }
    }
}

/// Writes dead letters to the DLQ sink, or logs and drops them without one.
pub async fn run_dead_letters(
    context: Arc<DaemonContext>,
    mut sink: Option<SinkHandle>,
    mut letters: mpsc::Receiver<DeadLetter>,
) {
    while let Some(letter) = letters.recv().await {
        match &mut sink {
            Some(SinkHandle(sink)) => {
                let mut line = serde_json::to_vec(&letter).expect("dead letters serialize");
                line.push(b'\n');
                let written = async {
                    sink.writer.write_all(&line).await?;
                    if letters.is_empty() {
                        sink.writer.flush().await?;
                    }
                    Ok::<(), std::io::Error>(())
                }
                .await;
                if written.is_ok() {
                    context.metrics.dlq_events.inc();
                } else if let Err(err) = written {
                    tracing::error!(sink = %sink.spec, error = %err, "dead-letter queue write failed; record dropped");
                }
            }
            None => {
                tracing::warn!(kind = letter.kind, reason = %letter.reason, "rejected input discarded (no --dlq)")
            }
        }
    }
    if let Some(SinkHandle(sink)) = &mut sink {
        let _ = sink.writer.flush().await;
    }
}
