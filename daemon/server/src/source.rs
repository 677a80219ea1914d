//! Event sources: they turn input into lines on the bounded input queue.
//! The HTTP source is the `POST /api/v1/events` route of [`crate::api`].

use std::sync::Arc;
use std::time::Instant;

use std::io::BufRead;

use tokio::sync::mpsc;

use crate::context::DaemonContext;

/// One input line with the time it arrived (for latency).
#[derive(Debug)]
pub struct InputLine {
    /// The line without its line break.
    pub text: String,
    /// When it was received.
    pub received: Instant,
}

impl InputLine {
    /// A line received now.
    pub fn new(text: String) -> InputLine {
        InputLine {
            text,
            received: Instant::now(),
        }
    }
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
/// shutdown it is simply left behind). Lines longer than the limit go to the
/// dead-letter queue. `ended` fires at the end of input.
pub fn stdin(
    context: Arc<DaemonContext>,
    oversized: mpsc::Sender<crate::sink::DeadLetter>,
    ended: tokio::sync::oneshot::Sender<()>,
) {
    let read = move || {
        let limit = context.config.max_line_bytes;
        let mut input = std::io::stdin().lock();
        let mut line = String::new();
        loop {
            line.clear();
            match input.read_line(&mut line) {
                Ok(0) => return,
                Ok(_) => {}
                Err(err) => {
                    tracing::error!(error = %err, "reading standard input failed");
                    return;
                }
            }
            let text = line.trim_end_matches(['\n', '\r']);
            if text.trim().is_empty() {
                continue;
            }
            if text.len() > limit {
                context.metrics.parse_errors.inc();
                let _ = oversized.blocking_send(crate::sink::DeadLetter::parse(
                    text,
                    "line exceeds the maximum line size",
                ));
                continue;
            }
            // The sender is taken per line, so that a read blocked on an
            // open stdin does not keep the input queue open at shutdown.
            let Some(sender) = context.ingest() else {
                return;
            };
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
