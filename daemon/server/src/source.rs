//! Event sources: they turn input into lines on the bounded input queue.
//! The HTTP source is the `POST /api/v1/events` route of [`crate::api`].

use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncBufReadExt, BufReader};
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

/// Reads lines from standard input until it ends. Lines longer than the
/// limit go to the dead-letter path as oversized.
pub async fn stdin(context: Arc<DaemonContext>, oversized: mpsc::Sender<crate::sink::DeadLetter>) {
    let Some(sender) = context.ingest() else {
        return;
    };
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        match lines.next_line().await {
            Ok(Some(line)) => {
                if line.trim().is_empty() {
                    continue;
                }
                if line.len() > context.config.max_line_bytes {
                    context.metrics.parse_errors.inc();
                    let _ = oversized
                        .send(crate::sink::DeadLetter::parse(
                            &line,
                            "line exceeds the maximum line size",
                        ))
                        .await;
                    continue;
                }
                if !submit(&context, &sender, InputLine::new(line)).await {
                    return;
                }
            }
            Ok(None) => return,
            Err(err) => {
                tracing::error!(error = %err, "reading standard input failed");
                return;
            }
        }
    }
}
