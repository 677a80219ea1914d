//! Event sources: they turn input into lines on the bounded input queue.
//! The HTTP source is the `POST /api/v1/events` route of [`crate::api`];
//! the NATS JetStream source is [`crate::nats::source`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use std::io::BufRead;

use tokio::sync::mpsc;

use crate::context::DaemonContext;
use crate::sink::DeadLetter;

/// One input line with the time it arrived (for latency).
#[derive(Debug)]
pub struct InputLine {
    /// The line without its line break.
    pub text: String,
    /// When it was received.
    pub received: Instant,
    /// Settles the line with its source once its outputs are delivered
    /// (sources that redeliver, such as JetStream, hand one out).
    pub receipt: Option<Receipt>,
    /// How the line is decoded.
    pub kind: LineKind,
}

/// How an input line becomes events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineKind {
    /// A record as received: decoded by `--input-format`, `--jq`, `--jsonpath`.
    Input,
    /// One event as a JSON object, already decoded by its transport (an
    /// OTLP log record): taken as it is.
    Event,
}

impl InputLine {
    /// A line received now.
    pub fn new(text: String) -> InputLine {
        InputLine {
            text,
            received: Instant::now(),
            receipt: None,
            kind: LineKind::Input,
        }
    }

    /// An event a transport decoded, received now.
    pub fn event(text: String) -> InputLine {
        InputLine {
            kind: LineKind::Event,
            ..InputLine::new(text)
        }
    }

    /// A line received now that settles `receipt` once delivered.
    pub fn with_receipt(text: String, receipt: Receipt) -> InputLine {
        InputLine {
            receipt: Some(receipt),
            ..InputLine::new(text)
        }
    }
}

/// How an input ended: everything it produced was delivered (or taken by
/// the dead-letter queue), or some of it could not be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Delivered: the source may forget the input.
    Delivered,
    /// Not delivered: the source should deliver the input again.
    Failed,
}

/// An input's promise to its source, shared by everything the input
/// produced: the lines of a message, their detections in the sink queue,
/// their dead letters. When the last clone is dropped the source hears
/// [`Settled::Delivered`], unless a holder called [`Receipt::fail`].
///
/// Settling on drop keeps the bookkeeping out of the hot path: whoever holds
/// the records holds their receipts, and a path that gives up on records
/// calls [`Receipt::fail`] before dropping them.
#[derive(Clone)]
pub struct Receipt(Arc<Settlement>);

/// What a source does once an input is settled.
type Settle = Box<dyn FnOnce(Settled) + Send>;

struct Settlement {
    failed: AtomicBool,
    settle: Mutex<Option<Settle>>,
}

impl Receipt {
    /// A receipt that calls `settle` once, when the last clone is dropped.
    pub fn new(settle: impl FnOnce(Settled) + Send + 'static) -> Receipt {
        Receipt(Arc::new(Settlement {
            failed: AtomicBool::new(false),
            settle: Mutex::new(Some(Box::new(settle))),
        }))
    }

    /// Marks the input undelivered: it settles as [`Settled::Failed`].
    pub fn fail(&self) {
        self.0.failed.store(true, Ordering::Release);
    }
}

impl std::fmt::Debug for Receipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Receipt")
    }
}

impl Drop for Settlement {
    fn drop(&mut self) {
        // A receipt dropped while a thread unwinds (a panicking worker or
        // sink, or a queue dropped with its items) stands for outputs that
        // may not have been written.
        let outcome = if *self.failed.get_mut() || std::thread::panicking() {
            Settled::Failed
        } else {
            Settled::Delivered
        };
        let settle = self.settle.get_mut().map(Option::take).unwrap_or_default();
        if let Some(settle) = settle {
            settle(outcome);
        }
    }
}

/// Escapes bytes that are not valid UTF-8 for a dead letter: valid text is
/// kept, every invalid byte becomes `\xNN`.
pub fn escape_invalid_utf8(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        text.push_str(chunk.valid());
        for byte in chunk.invalid() {
            text.push_str(&format!("\\x{byte:02x}"));
        }
    }
    text
}

/// Queues a line, waiting while the queue is full (and counting that).
/// Returns false when the queue is closed.
pub async fn submit(
    context: &DaemonContext,
    sender: &mpsc::Sender<InputLine>,
    line: InputLine,
) -> bool {
    match sender.try_send(line) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(line)) => {
            context
                .metrics
                .backpressure
                .with_label_values(&["input"])
                .inc();
            sender.send(line).await.is_ok()
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

/// Reads lines from standard input until it ends, on a thread of its own
/// (a blocking read cannot be cancelled, so the thread is never joined: at
/// shutdown it is simply left behind). Lines that are not UTF-8 or longer
/// than the limit go to the dead-letter queue, and reading goes on. `ended`
/// fires at the end of input.
pub fn stdin(context: Arc<DaemonContext>, ended: tokio::sync::oneshot::Sender<()>) {
    let read = move || {
        let limit = context.config.max_line_bytes;
        let mut input = std::io::stdin().lock();
        let mut line = Vec::new();
        loop {
            line.clear();
            match input.read_until(b'\n', &mut line) {
                Ok(0) => return,
                Ok(_) => {}
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    tracing::error!(error = %err, "reading standard input failed");
                    return;
                }
            }
            let bytes = line.trim_ascii_end();
            if bytes.trim_ascii().is_empty() {
                continue;
            }
            // The queues are taken per line, so that a read blocked on an
            // open stdin does not keep them open at shutdown.
            let Some(ingest) = context.ingest() else {
                return;
            };
            let text = match check_line(bytes, limit) {
                Ok(text) => text,
                Err(letter) => {
                    context.metrics.parse_errors.inc();
                    let _ = ingest.rejected.blocking_send(*letter);
                    continue;
                }
            };
            let sender = ingest.lines;
            let line = InputLine::new(text.to_owned());
            let sent = match sender.try_send(line) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(line)) => {
                    context
                        .metrics
                        .backpressure
                        .with_label_values(&["input"])
                        .inc();
                    sender.blocking_send(line).is_ok()
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            };
            if !sent {
                return;
            }
        }
    };
    std::thread::Builder::new()
        .name("rsigma-stdin".into())
        .spawn(move || {
            read();
            let _ = ended.send(());
        })
        .expect("spawning the stdin thread");
}

/// The lines of a body or message payload with their 1-based numbers: split
/// at `\n`, a trailing `\r` removed, blank lines left out.
pub fn payload_lines(payload: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    payload
        .split(|byte| *byte == b'\n')
        .enumerate()
        .map(|(index, line)| (index + 1, line.strip_suffix(b"\r").unwrap_or(line)))
        .filter(|(_, line)| !line.trim_ascii().is_empty())
}

/// The line as text, or the dead letter it becomes: over `limit` bytes, or
/// not UTF-8 (kept with its invalid bytes escaped).
pub fn check_line(bytes: &[u8], limit: usize) -> Result<&str, Box<DeadLetter>> {
    if bytes.len() > limit {
        return Err(Box::new(DeadLetter::parse(
            &escape_invalid_utf8(&bytes[..limit.min(bytes.len())]),
            format!(
                "line of {} bytes exceeds the maximum line size ({limit})",
                bytes.len()
            ),
        )));
    }
    std::str::from_utf8(bytes).map_err(|err| {
        Box::new(DeadLetter::parse(
            &escape_invalid_utf8(bytes),
            format!("line is not valid UTF-8 (byte {})", err.valid_up_to()),
        ))
    })
}
