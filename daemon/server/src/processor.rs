//! The evaluation workers: OS threads that take batches of input lines,
//! decode them, evaluate them against the active rule set, feed the
//! correlation engine and hand the serialized records to the sinks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use prometheus::IntCounter;
use rsigma_engine::correlation::CorrelationMatch;
use rsigma_engine::{Detection, RouteStats, Scratch};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::context::DaemonContext;
use crate::input::{Decoder, decode_event};
use crate::metrics::Metrics;
use crate::sink::{DeadLetter, OutputChunk};
use crate::source::{InputLine, LineKind, Receipt};

/// The receiving end of the input queue, shared by the workers.
pub type SharedInput = Arc<Mutex<mpsc::Receiver<InputLine>>>;

/// Starts `count` workers. They stop when the input queue is closed and empty.
pub fn spawn_workers(
    count: usize,
    context: Arc<DaemonContext>,
    decoder: Arc<Decoder>,
    input: SharedInput,
    output: mpsc::Sender<OutputChunk>,
    dead_letters: mpsc::Sender<DeadLetter>,
) -> Vec<JoinHandle<()>> {
    (0..count.max(1))
        .map(|n| {
            let worker = Worker {
                context: Arc::clone(&context),
                decoder: Arc::clone(&decoder),
                input: Arc::clone(&input),
                output: output.clone(),
                dead_letters: dead_letters.clone(),
            };
            std::thread::Builder::new()
                .name(format!("rsigma-worker-{n}"))
                .spawn(move || worker.run())
                .expect("spawning a worker thread")
        })
        .collect()
}

struct Worker {
    context: Arc<DaemonContext>,
    decoder: Arc<Decoder>,
    input: SharedInput,
    output: mpsc::Sender<OutputChunk>,
    dead_letters: mpsc::Sender<DeadLetter>,
}

/// Counts an event's route in the routing metrics.
fn count_route(
    metrics: &Metrics,
    by_logsource: &mut HashMap<String, IntCounter>,
    routed: RouteStats<'_>,
) {
    match by_logsource.get(routed.logsource) {
        Some(counter) => counter.inc(),
        None => {
            let counter = metrics
                .events_by_logsource
                .with_label_values(&[routed.logsource]);
            counter.inc();
            by_logsource.insert(routed.logsource.to_owned(), counter);
        }
    }
    metrics
        .routing_skipped_rules
        .inc_by(routed.skipped_rules as u64);
}

/// Buffers reused across batches.
#[derive(Default)]
struct Buffers {
    batch: Vec<InputLine>,
    events: Vec<Value>,
    detections: Vec<Detection>,
    correlated: Vec<CorrelationMatch>,
    scratch: Scratch,
    /// `rsigma_events_by_logsource_total` per label, resolved once: label
    /// sets are bounded by the engine's route limit.
    by_logsource: HashMap<String, IntCounter>,
}

impl Worker {
    fn run(self) {
        let mut buffers = Buffers::default();
        let batch_size = self.context.config.batch_size;
        let depth = self
            .context
            .metrics
            .queue_depth
            .with_label_values(&["input"]);
        loop {
            buffers.batch.clear();
            {
                let mut input = self.input.lock().expect("input lock not poisoned");
                match input.blocking_recv() {
                    Some(line) => buffers.batch.push(line),
                    None => return,
                }
                while buffers.batch.len() < batch_size {
                    match input.try_recv() {
                        Ok(line) => buffers.batch.push(line),
                        Err(_) => break,
                    }
                }
                depth.set(input.len() as i64);
            }
            let chunk = self.process(&mut buffers);
            // A chunk without records settles its receipts as it is dropped:
            // nothing of those inputs is waiting for a sink.
            if chunk.records() > 0 {
                let send = match self.output.try_send(chunk) {
                    Ok(()) => Ok(()),
                    Err(mpsc::error::TrySendError::Full(chunk)) => {
                        self.context
                            .metrics
                            .backpressure
                            .with_label_values(&["output"])
                            .inc();
                        self.output.blocking_send(chunk).map_err(|unsent| unsent.0)
                    }
                    Err(mpsc::error::TrySendError::Closed(chunk)) => Err(chunk),
                };
                if let Err(unsent) = send {
                    tracing::error!("output queue closed; records not delivered");
                    unsent.receipts.iter().for_each(Receipt::fail);
                    return;
                }
            }
            for line in &buffers.batch {
                self.context
                    .metrics
                    .processing_latency
                    .observe(line.received.elapsed().as_secs_f64());
            }
        }
    }

    /// Decodes and evaluates one batch against the rule set active now.
    fn process(&self, buffers: &mut Buffers) -> OutputChunk {
        let ruleset = self.context.ruleset.load();
        let config = &self.context.config;
        let metrics = &self.context.metrics;
        let mut chunk = OutputChunk::default();
        let Buffers {
            batch,
            events,
            detections,
            correlated,
            scratch,
            by_logsource,
        } = buffers;
        let mut tap = self.context.tap.batch();
        if let Some(tap) = tap.as_mut() {
            tap.expect_bytes(batch.iter().map(|line| line.text.len() + 1).sum());
        }
        for line in batch.iter_mut() {
            events.clear();
            let decoded = match line.kind {
                LineKind::Input => self.decoder.decode(&line.text, events),
                LineKind::Event => decode_event(&line.text, events),
            };
            // The raw stage sees every line, except those the DLQ takes.
            if let Some(tap) = tap.as_mut()
                && (decoded.is_ok() || config.dlq.is_none())
            {
                tap.raw(&line.text);
            }
            if let Err(err) = decoded {
                metrics.parse_errors.inc();
                let letter = DeadLetter::parse(&line.text, err).with_receipt(line.receipt.take());
                if let Err(unsent) = self.dead_letters.blocking_send(letter) {
                    unsent.0.fail();
                }
                continue;
            }
            chunk.receipts.extend(line.receipt.take());
            let verbatim = tap.is_some()
                && (line.kind == LineKind::Event || self.decoder.is_verbatim_json(&line.text));
            for event in events.iter() {
                metrics.events_processed.inc();
                if let Some(tap) = tap.as_mut() {
                    tap.decoded(event, verbatim.then(|| line.text.trim()));
                }
                detections.clear();
                let routed = ruleset.engine.evaluate_into(event, scratch, detections);
                count_route(metrics, by_logsource, routed);
                if detections.is_empty() {
                    continue;
                }
                let included = config.include_event.then_some(event);
                let mut correlations = ruleset.correlations.lock().expect("not poisoned");
                for detection in detections.iter() {
                    if config.no_detections
                        && correlations
                            .as_ref()
                            .is_some_and(|c| c.is_correlation_only(detection.rule.index))
                    {
                        continue;
                    }
                    chunk.write_record(&detection.record(included), config.pretty);
                    metrics.detection_matches.inc();
                    metrics
                        .detection_matches_by_rule
                        .with_label_values(&[rule_label(&detection.rule_title, &detection.rule_id)])
                        .inc();
                }
                if let Some(engine) = correlations.as_mut() {
                    correlated.clear();
                    engine.process(event, detections, correlated);
                    let stats = engine.stats();
                    drop(correlations);
                    metrics
                        .correlation_state_entries
                        .set(stats.state_entries as i64);
                    metrics.correlation_evictions.set(stats.evicted as i64);
                    for found in correlated.iter() {
                        chunk.write_record(found, config.pretty);
                        metrics.correlation_matches.inc();
                        metrics
                            .correlation_matches_by_rule
                            .with_label_values(&[rule_label(&found.rule_title, &found.rule_id)])
                            .inc();
                    }
                }
            }
        }
        if let Some(tap) = tap {
            tap.flush(metrics);
        }
        chunk
    }
}

/// The per-rule metric label: the id when there is one, else the title.
fn rule_label<'a>(title: &'a str, id: &'a Option<String>) -> &'a str {
    id.as_deref().unwrap_or(title)
}
