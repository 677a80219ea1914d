//! OTLP log ingestion (`/v1/logs` over HTTP, `LogsService/Export` over
//! gRPC) of the real daemon, with the official OpenTelemetry SDK and OTLP
//! exporters as clients, and the error answers a raw HTTP client sees.

mod common;
mod daemon_support;
#[path = "../../tests/support/pki.rs"]
mod pki;

use std::path::Path;
use std::time::{Duration, Instant};

use opentelemetry::logs::{AnyValue, LogRecord, Logger, LoggerProvider};
use opentelemetry_otlp::{
    LogExporter, Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue as ProtoAnyValue, any_value};
use opentelemetry_sdk::logs::SdkLoggerProvider;
use serde_json::Value;

use daemon_support::{Daemon, DaemonCommand, read_ndjson};

/// A daemon on the sample rules (reading stdin: OTLP is served whatever
/// `--input` is), detections with their events to `out`.
fn daemon(dir: &Path, out: &Path, extra: &[&str]) -> Daemon {
    DaemonCommand::new(dir)
        .arg("-r")
        .arg(common::sample_rules())
        .piped_stdin()
        .args(["--include-event", "--output"])
        .arg(format!("file://{}", out.display()))
        .args(extra)
        .start()
}

/// Waits up to 30 s for `count` detections in `out`.
fn detections(out: &Path, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let records = if out.exists() {
            read_ndjson(out)
        } else {
            Vec::new()
        };
        if records.len() >= count || Instant::now() > deadline {
            return records;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends, through `exporter`, one process-creation log record per image
/// with a map body, as a Windows event collector would.
fn send(exporter: LogExporter, tag: &str, images: &[&str]) {
    let provider = SdkLoggerProvider::builder()
        .with_simple_exporter(exporter)
        .build();
    let logger = provider.logger("rsigma-test");
    for image in images {
        let mut record = logger.create_log_record();
        record.set_body(AnyValue::Map(Box::new(
            [
                ("EventID".into(), AnyValue::Int(1)),
                ("Image".into(), AnyValue::String(image.to_string().into())),
                ("tag".into(), AnyValue::String(tag.to_owned().into())),
            ]
            .into_iter()
            .collect(),
        )));
        record.add_attribute("host.name", "ws-17");
        logger.emit(record);
    }
    provider
        .shutdown()
        .expect("the exporter delivered every record");
}

const WHOAMI: &str = "C:\\Windows\\System32\\whoami.exe";
const NOTEPAD: &str = "C:\\Windows\\System32\\notepad.exe";

fn tags(records: &[Value]) -> Vec<&str> {
    let mut tags: Vec<&str> = records
        .iter()
        .map(|r| r["event"]["tag"].as_str().expect("event.tag"))
        .collect();
    tags.sort_unstable();
    tags
}

#[test]
fn sdk_exporters_over_http_protobuf_http_json_and_grpc_give_detections() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.ndjson");
    let mut daemon = daemon(dir.path(), &out, &[]);
    let base = format!("http://{}", daemon.addr());

    for (tag, protocol) in [
        ("proto", Protocol::HttpBinary),
        ("json", Protocol::HttpJson),
    ] {
        let exporter = LogExporter::builder()
            .with_http()
            .with_protocol(protocol)
            .with_endpoint(format!("{base}/v1/logs"))
            .build()
            .unwrap();
        send(exporter, tag, &[WHOAMI, NOTEPAD]);
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let exporter = {
        let _entered = runtime.enter();
        LogExporter::builder()
            .with_tonic()
            .with_endpoint(&base)
            .with_compression(opentelemetry_otlp::Compression::Gzip)
            .build()
            .unwrap()
    };
    {
        let _entered = runtime.enter();
        send(exporter, "grpc", &[WHOAMI, NOTEPAD, WHOAMI]);
    }

    let records = detections(&out, 4);
    assert_eq!(
        tags(&records),
        ["grpc", "grpc", "json", "proto"],
        "{records:#?}"
    );
    let event = &records[0]["event"];
    assert_eq!(event["EventID"], 1);
    assert_eq!(event["host.name"], "ws-17");
    assert!(
        event["timestamp"].is_string() || event["observed_timestamp"].is_string(),
        "{event}"
    );

    let metrics = daemon.metrics();
    for transport in ["http", "grpc"] {
        assert!(
            metrics.get(&format!(
                "rsigma_otlp_requests_total{{outcome=\"ok\",transport=\"{transport}\"}}"
            )) >= 1.0,
            "{transport}"
        );
    }
    assert_eq!(
        metrics.get("rsigma_otlp_log_records_total{transport=\"http\"}"),
        4.0
    );
    assert_eq!(
        metrics.get("rsigma_otlp_log_records_total{transport=\"grpc\"}"),
        3.0
    );
    daemon.stop();
}

/// An encoded OTLP request of one resource and scope, one record per body.
fn request_of(bodies: Vec<any_value::Value>) -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use prost::Message;
    let log_records = bodies
        .into_iter()
        .map(|body| LogRecord {
            body: Some(ProtoAnyValue { value: Some(body) }),
            ..LogRecord::default()
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records,
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    }
    .encode_to_vec()
}

/// An OTLP request holding `bodies` as string bodies.
fn request(bodies: &[String]) -> Vec<u8> {
    request_of(
        bodies
            .iter()
            .map(|body| any_value::Value::StringValue(body.clone()))
            .collect(),
    )
}

/// An OTLP request of one record whose map body is a whoami.exe process
/// creation (a detection of the sample rules) padded with `pad` bytes.
fn whoami_request(pad: usize) -> Vec<u8> {
    use opentelemetry_proto::tonic::common::v1::{KeyValue, KeyValueList};
    let entry = |key: &str, value: any_value::Value| KeyValue {
        key: key.to_owned(),
        value: Some(ProtoAnyValue { value: Some(value) }),
        ..KeyValue::default()
    };
    request_of(vec![any_value::Value::KvlistValue(KeyValueList {
        values: vec![
            entry("EventID", any_value::Value::IntValue(1)),
            entry("Image", any_value::Value::StringValue(WHOAMI.to_owned())),
            entry("pad", any_value::Value::StringValue("x".repeat(pad))),
        ],
    })])
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// POSTs `body` to `/v1/logs`: (status, body).
fn post(daemon: &Daemon, body: Vec<u8>, headers: &[(&str, &str)]) -> (u16, Vec<u8>) {
    let client = reqwest::blocking::Client::new();
    let mut request = client
        .post(format!("http://{}/v1/logs", daemon.addr()))
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().expect("the daemon answers");
    let status = response.status().as_u16();
    (status, response.bytes().unwrap().to_vec())
}

fn partial_success(body: &[u8]) -> (i64, String) {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
    use prost::Message;
    let response = ExportLogsServiceResponse::decode(body).expect("an OTLP response");
    response
        .partial_success
        .map(|p| (p.rejected_log_records, p.error_message))
        .unwrap_or_default()
}

#[test]
fn gzip_empty_undecodable_oversized_and_partially_rejected_requests() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.ndjson");
    let dlq = dir.path().join("dlq.ndjson");
    let dlq_url = format!("file://{}", dlq.display());
    let mut daemon = daemon(
        dir.path(),
        &out,
        &["--max-line-bytes", "200", "--dlq", &dlq_url],
    );

    // gzip, no Content-Type (protobuf is the default): a string body is `body`.
    let good = request(&["whoami.exe from a gzip body".to_owned()]);
    let (status, body) = post(&daemon, gzip(&good), &[("Content-Encoding", "gzip")]);
    assert_eq!(status, 200);
    assert_eq!(partial_success(&body), (0, String::new()));

    // An empty request is a success with nothing to do.
    let (status, _) = post(
        &daemon,
        request(&[]),
        &[("Content-Type", "application/x-protobuf")],
    );
    assert_eq!(status, 200);

    // Undecodable: 400 with a google.rpc.Status, nothing queued.
    let (status, body) = post(&daemon, b"\xff\xff not protobuf".to_vec(), &[]);
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("not an OTLP ExportLogsServiceRequest"));
    let (status, _) = post(
        &daemon,
        b"{".to_vec(),
        &[("Content-Type", "application/json")],
    );
    assert_eq!(status, 400);
    let (status, _) = post(&daemon, good.clone(), &[("Content-Type", "text/plain")]);
    assert_eq!(status, 415);
    let (status, _) = post(&daemon, good.clone(), &[("Content-Encoding", "gzip")]);
    assert_eq!(status, 400, "a body that is not gzip");

    // Over the size limit once inflated: 413.
    let huge = gzip(&vec![0_u8; 65 * 1024 * 1024]);
    let (status, _) = post(&daemon, huge, &[("Content-Encoding", "gzip")]);
    assert_eq!(status, 413);

    // One record too long for --max-line-bytes: partial success, to the DLQ.
    let mixed = request(&["short".to_owned(), "x".repeat(500), "also short".to_owned()]);
    let (status, body) = post(&daemon, mixed, &[]);
    assert_eq!(status, 200);
    let (rejected, message) = partial_success(&body);
    assert_eq!(rejected, 1, "{message}");
    assert!(
        message.contains("exceeds the maximum line size"),
        "{message}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !dlq.exists() || read_ndjson(&dlq).is_empty() {
        assert!(Instant::now() < deadline, "no dead letter");
        std::thread::sleep(Duration::from_millis(100));
    }
    let metrics = daemon.metrics();
    assert_eq!(
        metrics.get("rsigma_otlp_rejected_log_records_total{transport=\"http\"}"),
        1.0
    );
    assert_eq!(
        metrics.get("rsigma_otlp_requests_total{outcome=\"invalid\",transport=\"http\"}"),
        4.0
    );
    assert_eq!(
        metrics.get("rsigma_otlp_requests_total{outcome=\"too_large\",transport=\"http\"}"),
        1.0
    );
    assert_eq!(
        metrics.get("rsigma_otlp_requests_total{outcome=\"partial\",transport=\"http\"}"),
        1.0
    );
    daemon.stop();
}

/// A blocking HTTPS client trusting the test CA, with the client
/// certificate when `identity`.
fn tls_client(pki: &pki::Pki, identity: bool) -> reqwest::blocking::Client {
    let mut builder = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap());
    if identity {
        builder =
            builder.identity(reqwest::Identity::from_pem(pki.client_identity.as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

#[test]
fn sdk_exporters_over_mutual_tls_on_http_and_grpc() {
    use opentelemetry_otlp::tonic_types::transport::{Certificate, ClientTlsConfig, Identity};
    let dir = tempfile::tempdir().unwrap();
    let pki = pki::make_pki(dir.path(), "127.0.0.1", "collector");
    let out = dir.path().join("out.ndjson");
    let mut daemon = DaemonCommand::new(dir.path())
        .arg("-r")
        .arg(common::sample_rules())
        .piped_stdin()
        .args(["--include-event", "--output"])
        .arg(format!("file://{}", out.display()))
        .args([
            "--tls-cert",
            "cert.pem",
            "--tls-key",
            "key.pem",
            "--tls-client-ca",
            "ca.pem",
        ])
        .spawn();
    let base = format!("https://{}", daemon.addr());
    let trusted = tls_client(&pki, true);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !trusted
        .get(format!("{base}/readyz"))
        .send()
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(
            Instant::now() < deadline,
            "not ready over TLS\n{}",
            daemon.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Without a client certificate the handshake fails, OTLP included.
    let refused = tls_client(&pki, false)
        .post(format!("{base}/v1/logs"))
        .body(request(&["whoami.exe".to_owned()]))
        .send();
    assert!(refused.is_err(), "{refused:?}");

    let exporter = LogExporter::builder()
        .with_http()
        .with_http_client(trusted)
        .with_endpoint(format!("{base}/v1/logs"))
        .build()
        .unwrap();
    send(exporter, "https", &[WHOAMI, NOTEPAD]);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _entered = runtime.enter();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca_pem))
        .identity(Identity::from_pem(
            &pki.client_identity,
            &pki.client_identity,
        ))
        .domain_name("127.0.0.1");
    let exporter = LogExporter::builder()
        .with_tonic()
        .with_endpoint(&base)
        .with_tls_config(tls)
        .build()
        .unwrap();
    send(exporter, "grpcs", &[WHOAMI]);

    let records = detections(&out, 2);
    assert_eq!(
        tags(&records),
        ["grpcs", "https"],
        "{records:#?}\n{}",
        daemon.logs()
    );
    daemon.stop();
}

/// The OpenTelemetry Python SDK's interpreter: `RSIGMA_OTEL_PYTHON` (set by
/// `.ci/run`), else the venv `tests/otlp/python-sdk.sh` makes.
fn otel_python() -> std::path::PathBuf {
    std::env::var_os("RSIGMA_OTEL_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_default();
            Path::new(&home).join(".cache/rsigma/otel-venv/bin/python")
        })
}

#[test]
fn the_python_sdk_exporters_over_http_and_grpc_give_detections() {
    let python = otel_python();
    assert!(
        python.exists(),
        "no OpenTelemetry Python SDK at {}: run `bash tests/otlp/python-sdk.sh` (PyPI) or set RSIGMA_OTEL_PYTHON",
        python.display()
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/otlp/export_logs.py");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.ndjson");
    let mut daemon = daemon(dir.path(), &out, &[]);
    for (tag, transport, endpoint) in [
        (
            "python-http",
            "http",
            format!("http://{}/v1/logs", daemon.addr()),
        ),
        ("python-grpc", "grpc", format!("http://{}", daemon.addr())),
    ] {
        let output = std::process::Command::new(&python)
            .arg(&script)
            .args([transport, &endpoint, tag])
            .output()
            .expect("running the Python exporter");
        assert!(
            output.status.success(),
            "{transport}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let records = detections(&out, 2);
    assert_eq!(
        tags(&records),
        ["python-grpc", "python-http"],
        "{records:#?}"
    );
    let event = &records[0]["event"];
    assert_eq!(event["severity_text"], "INFO", "{event}");
    assert!(
        event["resource"]["telemetry.sdk.language"] == "python",
        "{event}"
    );
    daemon.stop();
}

#[test]
fn a_full_input_queue_answers_retry_later_and_takes_again_once_drained() {
    use std::io::Read;
    use std::process::{Command, Stdio};
    // Detections go to a stdout pipe nobody reads: once the pipe and the
    // one-slot queues are full, the workers wait, and so does the input.
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", common::free_port());
    let mut command = Command::new(daemon_support::binary());
    command
        .args(["engine", "daemon", "--no-watch", "--include-event", "-r"])
        .arg(common::sample_rules())
        .args([
            "--input",
            "http",
            "--buffer-size",
            "1",
            "--workers",
            "1",
            "--api-addr",
            &addr,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    common::isolate(&mut command, dir.path());
    let mut child = command.spawn().unwrap();
    let http = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http
        .get(format!("http://{addr}/readyz"))
        .send()
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(Instant::now() < deadline, "the daemon did not become ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    let body = whoami_request(2_000);
    // Until every stage waits, a request may still be taken.
    let mut refused = None;
    for _ in 0..5_000 {
        let answer = http
            .post(format!("http://{addr}/v1/logs"))
            .body(body.clone())
            .send()
            .unwrap();
        if answer.status().as_u16() == 429 {
            refused = Some(answer);
            break;
        }
        assert_eq!(answer.status().as_u16(), 200);
    }
    let refused = refused.expect("the queue never filled");
    assert_eq!(refused.headers()["retry-after"], "1");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let grpc = runtime.block_on(async {
        use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
        use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
        use prost::Message;
        let mut client = LogsServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let request = ExportLogsServiceRequest::decode(&body[..]).unwrap();
        // A worker may still take a line or two before every stage waits.
        for _ in 0..5_000 {
            if let Err(status) = client.export(request.clone()).await {
                return Some(status);
            }
        }
        None
    });
    let grpc = grpc.expect("gRPC exports were never refused");
    assert_eq!(grpc.code(), tonic::Code::Unavailable, "{grpc}");

    // Reading the detections frees the queues: the same request is taken.
    let mut stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        let mut sink = [0_u8; 65536];
        while stdout.read(&mut sink).is_ok_and(|n| n > 0) {}
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = http
            .post(format!("http://{addr}/v1/logs"))
            .body(body.clone())
            .send()
            .unwrap();
        if answer.status().is_success() {
            break;
        }
        assert!(Instant::now() < deadline, "still refused after draining");
        std::thread::sleep(Duration::from_millis(100));
    }
    let metrics = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("rsigma_otlp_requests_total{outcome=\"busy\",transport=\"http\"}"),
        "{metrics}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn the_tap_sees_otlp_events_at_the_decoded_stage() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.ndjson");
    let daemon = daemon(dir.path(), &out, &["--enable-tap"]);
    let tap_url = format!("http://{}/api/v1/tap?duration=20s&limit=2", daemon.addr());
    let tap = std::thread::spawn(move || {
        reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap()
            .get(tap_url)
            .send()
            .and_then(|r| r.text())
            .expect("the tap answers")
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while daemon.metrics().get("rsigma_tap_sessions_active") < 1.0 {
        assert!(Instant::now() < deadline, "the tap session did not open");
        std::thread::sleep(Duration::from_millis(50));
    }
    let exporter = LogExporter::builder()
        .with_http()
        .with_endpoint(format!("http://{}/v1/logs", daemon.addr()))
        .build()
        .unwrap();
    send(exporter, "tapped", &[WHOAMI, NOTEPAD]);
    let captured: Vec<Value> = tap
        .join()
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .filter(|record: &Value| record.get("rsigma_tap_summary").is_none())
        .collect();
    assert_eq!(captured.len(), 2, "{captured:#?}");
    for event in &captured {
        assert_eq!(event["tag"], "tapped", "{event}");
        assert_eq!(event["EventID"], 1, "{event}");
        assert_eq!(event["host.name"], "ws-17", "{event}");
    }
}
