//! Throughput of OTLP log ingestion (`/v1/logs` over HTTP, `LogsService/Export`
//! over gRPC) into `rsigma engine daemon`, compared with NDJSON over the HTTP
//! input in the same run.
//!
//! Run with `cargo bench -p rsigma-cli --bench otlp_throughput` (release
//! build; needs the SigmaHQ corpus beside the checkout or in
//! `RSIGMA_SIGMAHQ_DIR`).
//!
//! The deterministic Windows stream of the engine benchmarks (200,000
//! events) is evaluated against SigmaHQ's `rules/windows` with routing on.
//! Each event becomes a LogRecord whose body is the event as a map (what a
//! collector sends for structured Windows logs); requests of 1,000 records
//! are encoded before the clock starts, sent one after the other (resent
//! after 5 ms when the daemon answers that its queue is full), and the time
//! runs until the daemon reports every event processed.

#[path = "support/corpus.rs"]
mod corpus;

#[path = "support/daemon.rs"]
mod daemon;

#[path = "../../daemon/engine/benches/support/windows_events.rs"]
#[allow(dead_code)]
mod windows_events;

use std::path::Path;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use prost::Message;
use serde_json::Value;

const EVENTS: usize = 200_000;
const RECORDS_PER_REQUEST: usize = 1_000;

fn any_value(value: &Value) -> AnyValue {
    let value = match value {
        Value::Null => None,
        Value::Bool(b) => Some(any_value::Value::BoolValue(*b)),
        Value::Number(n) => Some(match n.as_i64() {
            Some(i) => any_value::Value::IntValue(i),
            None => any_value::Value::DoubleValue(n.as_f64().unwrap_or_default()),
        }),
        Value::String(s) => Some(any_value::Value::StringValue(s.clone())),
        Value::Array(items) => Some(any_value::Value::ArrayValue(ArrayValue {
            values: items.iter().map(any_value).collect(),
        })),
        Value::Object(map) => Some(any_value::Value::KvlistValue(KeyValueList {
            values: map
                .iter()
                .map(|(key, value)| KeyValue {
                    key: key.clone(),
                    value: Some(any_value(value)),
                    ..KeyValue::default()
                })
                .collect(),
        })),
    };
    AnyValue { value }
}

/// The events as export requests of [`RECORDS_PER_REQUEST`] map-bodied records.
fn requests(events: &[Value]) -> Vec<ExportLogsServiceRequest> {
    events
        .chunks(RECORDS_PER_REQUEST)
        .map(|chunk| ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: chunk
                        .iter()
                        .map(|event| LogRecord {
                            time_unix_nano: 1_715_673_600_000_000_000,
                            body: Some(any_value(event)),
                            ..LogRecord::default()
                        })
                        .collect(),
                    ..ScopeLogs::default()
                }],
                ..ResourceLogs::default()
            }],
        })
        .collect()
}

/// Events per second over OTLP/HTTP (protobuf); prints the retries.
fn over_http(rules: &Path, requests: &[ExportLogsServiceRequest], events: usize) -> f64 {
    let bodies: Vec<Vec<u8>> = requests.iter().map(Message::encode_to_vec).collect();
    let (child, base) = daemon::start(rules, &["--input", "http"]);
    let http = reqwest::blocking::Client::new();
    let mut retries = 0;
    let started = Instant::now();
    for body in bodies {
        loop {
            let answer = http
                .post(format!("{base}/v1/logs"))
                .header("Content-Type", "application/x-protobuf")
                .body(body.clone())
                .send()
                .expect("posting");
            if answer.status().as_u16() == 429 {
                retries += 1;
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            assert!(answer.status().is_success(), "{}", answer.status());
            break;
        }
    }
    daemon::wait_processed(&base, events);
    let elapsed = started.elapsed();
    daemon::stop(child);
    println!(
        "  OTLP/HTTP: {:.2} s, {retries} requests resent after a 429",
        elapsed.as_secs_f64()
    );
    events as f64 / elapsed.as_secs_f64()
}

/// Events per second over OTLP/gRPC; prints the retries.
fn over_grpc(rules: &Path, requests: Vec<ExportLogsServiceRequest>, events: usize) -> f64 {
    let (child, base) = daemon::start(rules, &["--input", "http"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (elapsed, retries) = runtime.block_on(async {
        let mut client = LogsServiceClient::connect(base.clone())
            .await
            .expect("a gRPC connection")
            .max_encoding_message_size(64 * 1024 * 1024);
        let mut retries = 0;
        let started = Instant::now();
        for request in requests {
            loop {
                match client.export(request.clone()).await {
                    Ok(_) => break,
                    Err(status) if status.code() == tonic::Code::Unavailable => {
                        retries += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err(status) => panic!("export failed: {status}"),
                }
            }
        }
        tokio::task::spawn_blocking({
            let base = base.clone();
            move || daemon::wait_processed(&base, events)
        })
        .await
        .unwrap();
        (started.elapsed(), retries)
    });
    daemon::stop(child);
    println!(
        "  OTLP/gRPC: {:.2} s, {retries} requests resent after UNAVAILABLE",
        elapsed.as_secs_f64()
    );
    events as f64 / elapsed.as_secs_f64()
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: skip then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let Some(rules) = corpus::windows_rules_dir() else {
        eprintln!("otlp_throughput: SigmaHQ rules not found (set RSIGMA_SIGMAHQ_DIR); skipping");
        return;
    };
    let events = windows_events::generate(0x5167_4D41, EVENTS);
    let lines: Vec<String> = events.iter().map(Value::to_string).collect();
    let requests = requests(&events);
    println!("OTLP in ({} rules dir, {EVENTS} events):", rules.display());
    let http = over_http(&rules, &requests, EVENTS);
    let grpc = over_grpc(&rules, requests, EVENTS);
    let ndjson = daemon::ndjson_over_http(&rules, &lines);
    println!("OTLP/HTTP (protobuf):   {http:>9.0} events/s");
    println!("OTLP/gRPC:              {grpc:>9.0} events/s");
    println!("NDJSON over HTTP input: {ndjson:>9.0} events/s");
}
