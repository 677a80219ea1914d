//! OTLP log ingestion on the API listener (docs/otlp.md): `POST /v1/logs`
//! with protobuf or JSON bodies ([`http`]) and the gRPC
//! `opentelemetry.proto.collector.logs.v1.LogsService/Export` ([`grpc`]),
//! plain or gzip, whatever `--input` is. Each LogRecord becomes one event
//! ([`mapping`]) and joins the input queue beside the other sources.

mod grpc;
mod http;
pub mod mapping;

use std::sync::Arc;

use axum::Router;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use prometheus::{IntCounterVec, Opts};
use tokio::sync::mpsc::error::TrySendError;

use crate::context::DaemonContext;
use crate::source::{InputLine, check_line, submit};

/// Largest accepted request, compressed or not (the API's body limit).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;

/// The OTLP endpoints of both transports, to merge into the API's router.
pub fn router(context: Arc<DaemonContext>) -> Router {
    let ingest = Arc::new(OtlpIngest {
        metrics: OtlpMetrics::register(&context),
        context,
    });
    http::router(Arc::clone(&ingest)).merge(grpc::router(ingest))
}

/// What both transports share: the daemon and the OTLP metrics.
struct OtlpIngest {
    context: Arc<DaemonContext>,
    metrics: OtlpMetrics,
}

/// Counters per transport (`http`, `grpc`).
struct OtlpMetrics {
    /// Export requests, by transport and outcome (`ok`, `partial`,
    /// `invalid`, `too_large`, `busy`, `unavailable`).
    requests: IntCounterVec,
    /// Log records received.
    records: IntCounterVec,
    /// Log records rejected (sent to the dead-letter queue).
    rejected: IntCounterVec,
}

impl OtlpMetrics {
    fn register(context: &DaemonContext) -> OtlpMetrics {
        let registry = context.metrics.registry();
        let add = |name: &str, help: &str, labels: &[&str]| {
            let metric = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(metric.clone()))
                .expect("unique metric");
            metric
        };
        OtlpMetrics {
            requests: add(
                "rsigma_otlp_requests_total",
                "OTLP export requests, by transport and outcome",
                &["transport", "outcome"],
            ),
            records: add(
                "rsigma_otlp_log_records_total",
                "OTLP log records received, by transport",
                &["transport"],
            ),
            rejected: add(
                "rsigma_otlp_rejected_log_records_total",
                "OTLP log records rejected to the dead-letter queue, by transport",
                &["transport"],
            ),
        }
    }

    fn outcome(&self, transport: Transport, outcome: &str) {
        self.requests
            .with_label_values(&[transport.name(), outcome])
            .inc();
    }
}

/// The transport of a request, for metrics and messages.
#[derive(Debug, Clone, Copy)]
enum Transport {
    Http,
    Grpc,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Http => "http",
            Transport::Grpc => "grpc",
        }
    }
}

/// Why a request was not taken at all; the exporter should retry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    /// The input queue has no room for the request's records now.
    Busy,
    /// The daemon is shutting down.
    ShuttingDown,
}

impl OtlpIngest {
    /// Queues every record of `request` as an event. A record that cannot
    /// be taken (its event is longer than `--max-line-bytes`) goes to the
    /// dead-letter queue and is reported in `partial_success`. A request
    /// whose records do not fit in the queue's free room is refused as a
    /// whole ([`Refused::Busy`]), so that a retry duplicates nothing; one
    /// larger than the whole queue waits for room record by record.
    async fn export(
        &self,
        transport: Transport,
        request: &ExportLogsServiceRequest,
    ) -> Result<ExportLogsServiceResponse, Refused> {
        let context = &self.context;
        let Some(ingest) = context.ingest() else {
            self.metrics.outcome(transport, "unavailable");
            return Err(Refused::ShuttingDown);
        };
        let limit = context.config.max_line_bytes;
        let (mut lines, mut letters) = (Vec::new(), Vec::new());
        for text in event_texts(request) {
            match check_line(text.as_bytes(), limit) {
                Ok(_) => lines.push(InputLine::event(text)),
                Err(letter) => letters.push(*letter),
            }
        }
        self.metrics
            .records
            .with_label_values(&[transport.name()])
            .inc_by((lines.len() + letters.len()) as u64);
        if lines.len() <= ingest.lines.max_capacity() {
            let mut permits = match ingest.lines.try_reserve_many(lines.len()) {
                Ok(permits) => permits,
                Err(TrySendError::Full(())) => {
                    context
                        .metrics
                        .backpressure
                        .with_label_values(&["input"])
                        .inc();
                    self.metrics.outcome(transport, "busy");
                    return Err(Refused::Busy);
                }
                Err(TrySendError::Closed(())) => {
                    self.metrics.outcome(transport, "unavailable");
                    return Err(Refused::ShuttingDown);
                }
            };
            for line in lines {
                permits.next().expect("one permit per line").send(line);
            }
        } else {
            for line in lines {
                if !submit(context, &ingest.lines, line).await {
                    self.metrics.outcome(transport, "unavailable");
                    return Err(Refused::ShuttingDown);
                }
            }
        }
        // Dead letters only once the request is taken: a refused one is
        // retried whole, and would otherwise leave them twice.
        let rejected = letters.len();
        let first_reason = letters.first().map(|letter| letter.reason.clone());
        for letter in letters {
            context.metrics.parse_errors.inc();
            let _ = ingest.rejected.send(letter).await;
        }
        let partial_success = first_reason.map(|reason| {
            self.metrics
                .rejected
                .with_label_values(&[transport.name()])
                .inc_by(rejected as u64);
            ExportLogsPartialSuccess {
                rejected_log_records: rejected as i64,
                error_message: format!(
                    "{rejected} log record(s) rejected to the dead-letter queue; first: {reason}"
                ),
            }
        });
        self.metrics.outcome(
            transport,
            if partial_success.is_some() {
                "partial"
            } else {
                "ok"
            },
        );
        Ok(ExportLogsServiceResponse { partial_success })
    }
}

/// Every LogRecord of `request` as its event's JSON text.
fn event_texts(request: &ExportLogsServiceRequest) -> impl Iterator<Item = String> + '_ {
    request.resource_logs.iter().flat_map(|resource_logs| {
        resource_logs.scope_logs.iter().flat_map(move |scope_logs| {
            scope_logs.log_records.iter().map(move |record| {
                let event = mapping::log_record_event(
                    resource_logs.resource.as_ref(),
                    scope_logs.scope.as_ref(),
                    record,
                );
                serde_json::Value::Object(event).to_string()
            })
        })
    })
}
