//! The JetStream sink: one message per record on the output (or DLQ)
//! subject. A write returns once JetStream acknowledged every record; the
//! records it did not acknowledge are published again with backoff, and
//! after the last attempt the write fails, so the chunk goes to the
//! dead-letter queue (or, for the DLQ itself, its inputs are redelivered).

use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use prometheus::IntCounter;
use tokio::runtime::Handle;

use crate::config::{NatsTarget, SinkSpec};
use crate::context::DaemonContext;
use crate::nats::{Clients, ensure_stream};
use crate::sink::{OutputChunk, Sink, SinkWriter};

/// Publish attempts per record before the write fails.
const ATTEMPTS: u32 = 4;
/// Pause before the second attempt; doubled before each next one.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// How long the acknowledgements of one attempt may take.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Publishes records to one subject.
struct Publisher {
    js: jetstream::Context,
    subject: String,
    runtime: Handle,
    failures: IntCounter,
}

/// Opens a sink on `target`, creating a stream for its subject when none
/// holds it (a publish nobody stores is never acknowledged).
pub async fn open(
    context: &DaemonContext,
    clients: &Clients,
    target: &NatsTarget,
) -> Result<Sink, String> {
    let js = jetstream::new(clients.get(&target.server));
    ensure_stream(&js, target).await?;
    let publisher = Publisher {
        js,
        subject: target.subject.clone(),
        runtime: Handle::current(),
        failures: clients
            .metrics
            .publish_failures
            .with_label_values(&[&target.subject]),
    };
    Ok(Sink::new(
        SinkSpec::Nats(target.clone()),
        Box::new(publisher),
        context,
    ))
}

impl SinkWriter for Publisher {
    fn write_chunk(&mut self, chunk: &OutputChunk) -> std::io::Result<()> {
        // The sink thread is not a runtime thread: it may block on one.
        self.runtime.block_on(self.publish_all(chunk))
    }
}

impl Publisher {
    async fn publish_all(&self, chunk: &OutputChunk) -> std::io::Result<()> {
        let mut pending: Vec<Bytes> = chunk.each_record().map(Bytes::copy_from_slice).collect();
        let total = pending.len();
        let mut backoff = FIRST_BACKOFF;
        let mut last_error = String::new();
        for attempt in 1..=ATTEMPTS {
            let mut acks = Vec::with_capacity(pending.len());
            let mut failed = Vec::new();
            // Publish everything first, then wait: the acknowledgements of
            // a batch arrive together instead of one round trip each.
            for record in pending {
                match self.js.publish(self.subject.clone(), record.clone()).await {
                    Ok(ack) => acks.push((record, ack)),
                    Err(err) => {
                        last_error = err.to_string();
                        failed.push(record);
                    }
                }
            }
            // One deadline for the whole attempt, not one per record.
            let deadline = tokio::time::Instant::now() + ACK_TIMEOUT;
            for (record, ack) in acks {
                match tokio::time::timeout_at(deadline, ack.into_future()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(err)) => {
                        last_error = err.to_string();
                        failed.push(record);
                    }
                    Err(_) => {
                        last_error = format!("no acknowledgement within {ACK_TIMEOUT:?}");
                        failed.push(record);
                    }
                }
            }
            if failed.is_empty() {
                return Ok(());
            }
            self.failures.inc_by(failed.len() as u64);
            pending = failed;
            if attempt < ATTEMPTS {
                tracing::warn!(
                    subject = %self.subject,
                    records = pending.len(),
                    attempt,
                    error = %last_error,
                    "JetStream publish failed; retrying"
                );
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
        Err(std::io::Error::other(format!(
            "JetStream did not acknowledge {} of {total} records on {} after {ATTEMPTS} attempts: {last_error}",
            pending.len(),
            self.subject
        )))
    }
}
