//! The JetStream source: a durable pull consumer on the input subject.
//!
//! Each message becomes one or more input lines (a payload may hold NDJSON)
//! sharing one [`Receipt`]. The message is acknowledged when the receipt
//! settles as delivered: every detection it produced was taken by every
//! sink, or by the dead-letter queue. A receipt that fails is handed back
//! (`nak`) for redelivery, and a message never settled (the daemon was
//! killed) is delivered again by JetStream after `--nats-ack-wait`.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer};
use futures_util::StreamExt;
use rsigma_engine::state::SourcePosition;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{NatsTarget, ReplayStart};
use crate::context::DaemonContext;
use crate::nats::{Clients, NatsMetrics, ensure_stream, name_part};
use crate::source::{InputLine, Receipt, Settled, check_line, payload_lines, submit};

/// Most messages one pull request asks for.
const PULL_BATCH: usize = 256;
/// How long a message handed back waits before its redelivery.
const NAK_DELAY: Duration = Duration::from_secs(1);
/// Pause before pulling again after the pull stream failed.
const REPULL_BACKOFF: Duration = Duration::from_secs(1);

/// A settled message on its way to the acknowledgement task.
struct Settlement {
    acker: jetstream::message::Acker,
    outcome: Settled,
    position: SourcePosition,
}

/// The running source.
pub struct NatsSource {
    stop: CancellationToken,
    pulling: JoinHandle<()>,
    acking: JoinHandle<()>,
}

impl NatsSource {
    /// Ensures the stream and the durable consumer exist, then starts
    /// pulling. Errors are startup errors (exit 3).
    pub async fn start(
        context: &Arc<DaemonContext>,
        clients: &Clients,
        target: &NatsTarget,
    ) -> Result<NatsSource, String> {
        let js = jetstream::new(clients.get(&target.server));
        let stream = ensure_stream(&js, target).await?;
        let consumer = ensure_consumer(context, &stream, target).await?;
        let (settled, settlements) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let acking = tokio::spawn(acknowledge(
            Arc::clone(context),
            clients.metrics.clone(),
            settlements,
        ));
        let pulling = tokio::spawn(pull(
            Arc::clone(context),
            clients.metrics.clone(),
            consumer,
            settled,
            stop.clone(),
        ));
        Ok(NatsSource {
            stop,
            pulling,
            acking,
        })
    }

    /// Stops pulling: messages the client holds but has not handed over are
    /// left unacknowledged, and JetStream delivers them again.
    pub async fn stop_pulling(&mut self) {
        self.stop.cancel();
        let _ = (&mut self.pulling).await;
    }

    /// Waits until every handed-over message is acknowledged (or handed
    /// back): call it once the workers and sinks have drained.
    pub async fn finish(self) {
        let _ = self.acking.await;
    }
}

/// The durable consumer's name: the consumer group, else one derived from
/// the subject, so that a restarted daemon resumes where it left off.
pub fn consumer_name(group: Option<&str>, subject: &str) -> String {
    match group {
        Some(group) => group.to_owned(),
        None => format!("rsigma_{}", name_part(subject)),
    }
}

async fn ensure_consumer(
    context: &DaemonContext,
    stream: &jetstream::stream::Stream,
    target: &NatsTarget,
) -> Result<consumer::Consumer<consumer::pull::Config>, String> {
    let nats = &context.config.nats;
    let name = consumer_name(nats.consumer_group.as_deref(), &target.subject);
    let deliver_policy = match nats.replay {
        ReplayStart::Resume => consumer::DeliverPolicy::All,
        ReplayStart::Sequence(start_sequence) => {
            consumer::DeliverPolicy::ByStartSequence { start_sequence }
        }
        ReplayStart::Time(time) => consumer::DeliverPolicy::ByStartTime {
            start_time: to_offset_date_time(time)?,
        },
        ReplayStart::Latest => consumer::DeliverPolicy::Last,
    };
    let config = consumer::pull::Config {
        durable_name: Some(name.clone()),
        description: Some("rsigma detection daemon".into()),
        filter_subject: target.subject.clone(),
        deliver_policy,
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: nats.ack_wait,
        max_ack_pending: context.config.buffer_size as i64,
        ..Default::default()
    };
    if nats.replay != ReplayStart::Resume {
        // A durable consumer keeps its start position: a replay starts over
        // with a new one of the same name.
        if stream.delete_consumer(&name).await.is_ok() {
            tracing::warn!(consumer = %name, "replay: deleted the existing durable consumer to start it over");
        }
    }
    let mut consumer = stream
        .get_or_create_consumer(&name, config)
        .await
        .map_err(|err| format!("{target}: creating the durable consumer {name} failed: {err}"))?;
    // An existing consumer keeps its settings: one reading another subject
    // would silently feed the daemon something else than it was told.
    let existing = &consumer
        .info()
        .await
        .map_err(|err| format!("{target}: reading the durable consumer {name} failed: {err}"))?
        .config;
    if existing.filter_subject != target.subject {
        return Err(format!(
            "{target}: the durable consumer {name} exists for the subject '{}'; use another              --consumer-group, or delete the consumer (nats consumer rm) to start it over",
            existing.filter_subject
        ));
    }
    if existing.ack_wait != nats.ack_wait {
        tracing::warn!(consumer = %name, ack_wait = ?existing.ack_wait, "the existing durable consumer keeps its ack wait");
    }
    tracing::info!(consumer = %name, subject = %target.subject, replay = ?nats.replay, "pulling from JetStream");
    Ok(consumer)
}

fn to_offset_date_time(
    time: chrono::DateTime<chrono::Utc>,
) -> Result<time::OffsetDateTime, String> {
    let nanos = time
        .timestamp_nanos_opt()
        .ok_or_else(|| format!("--replay-from-time {time} is out of range"))?;
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos))
        .map_err(|err| format!("--replay-from-time {time}: {err}"))
}

/// Pulls until stopped, handing each message's lines to the workers. A
/// failed pull stream (the server restarted, the connection dropped) is
/// opened again after a pause; the client reconnects on its own.
async fn pull(
    context: Arc<DaemonContext>,
    metrics: NatsMetrics,
    consumer: consumer::Consumer<consumer::pull::Config>,
    settled: mpsc::UnboundedSender<Settlement>,
    stop: CancellationToken,
) {
    loop {
        let messages = tokio::select! {
            messages = consumer.stream().max_messages_per_batch(PULL_BATCH).messages() => messages,
            _ = stop.cancelled() => return,
        };
        let mut messages = match messages {
            Ok(messages) => messages,
            Err(err) => {
                tracing::warn!(error = %err, "pulling from JetStream failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(REPULL_BACKOFF) => continue,
                    _ = stop.cancelled() => return,
                }
            }
        };
        loop {
            let next = tokio::select! {
                next = messages.next() => next,
                _ = stop.cancelled() => return,
            };
            match next {
                Some(Ok(message)) => {
                    if !hand_over(&context, &metrics, message, &settled, &stop).await {
                        return;
                    }
                }
                Some(Err(err)) => {
                    tracing::warn!(error = %err, "JetStream pull error");
                }
                None => break,
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(REPULL_BACKOFF) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Turns one message into input lines (or a dead letter) carrying its
/// receipt. Returns false once the daemon stops taking input; a message
/// not wholly handed over by then is handed back.
async fn hand_over(
    context: &DaemonContext,
    metrics: &NatsMetrics,
    message: jetstream::Message,
    settled: &mpsc::UnboundedSender<Settlement>,
    stop: &CancellationToken,
) -> bool {
    metrics.received.inc();
    let position = match message.info() {
        Ok(info) => {
            if info.delivered > 1 {
                metrics.redeliveries.inc();
            }
            SourcePosition {
                sequence: info.stream_sequence,
                time_ms: (info.published.unix_timestamp_nanos() / 1_000_000) as i64,
            }
        }
        Err(_) => SourcePosition {
            sequence: 0,
            time_ms: 0,
        },
    };
    let (message, acker) = message.split();
    metrics.pending_acks.inc();
    let sender = settled.clone();
    let receipt = Receipt::new(move |outcome| {
        let _ = sender.send(Settlement {
            acker,
            outcome,
            position,
        });
    });
    let Some(ingest) = context.ingest() else {
        receipt.fail();
        return false;
    };
    let limit = context.config.max_line_bytes;
    for (_, line) in payload_lines(&message.payload) {
        match check_line(line, limit) {
            Ok(text) => {
                let line = InputLine::with_receipt(text.to_owned(), receipt.clone());
                let submitted = tokio::select! {
                    submitted = submit(context, &ingest.lines, line) => submitted,
                    _ = stop.cancelled() => false,
                };
                if !submitted {
                    receipt.fail();
                    return false;
                }
            }
            Err(letter) => {
                context.metrics.parse_errors.inc();
                let letter = (*letter).with_receipt(Some(receipt.clone()));
                if let Err(unsent) = ingest.rejected.send(letter).await {
                    unsent.0.fail();
                    return false;
                }
            }
        }
    }
    true
}

/// Acknowledges settled messages (or hands failed ones back) until every
/// receipt is gone, recording the acknowledged position for the state
/// snapshot.
async fn acknowledge(
    context: Arc<DaemonContext>,
    metrics: NatsMetrics,
    mut settlements: mpsc::UnboundedReceiver<Settlement>,
) {
    let acked = metrics.settled.with_label_values(&["ack"]);
    let handed_back = metrics.settled.with_label_values(&["nak"]);
    while let Some(settlement) = settlements.recv().await {
        metrics.pending_acks.dec();
        let sent = match settlement.outcome {
            Settled::Delivered => settlement.acker.ack().await,
            Settled::Failed => {
                settlement
                    .acker
                    .ack_with(AckKind::Nak(Some(NAK_DELAY)))
                    .await
            }
        };
        match (sent, settlement.outcome) {
            (Ok(()), Settled::Delivered) => {
                acked.inc();
                context.advance_source_position(settlement.position);
            }
            (Ok(()), Settled::Failed) => handed_back.inc(),
            (Err(err), _) => tracing::warn!(
                error = %err,
                sequence = settlement.position.sequence,
                "acknowledging a JetStream message failed; it will be delivered again"
            ),
        }
    }
}
