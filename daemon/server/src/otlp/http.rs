//! OTLP/HTTP: `POST /v1/logs` (the OTLP specification's "OTLP/HTTP"):
//! `application/x-protobuf` (also when no Content-Type is given) or
//! `application/json` bodies, optionally `Content-Encoding: gzip`; the
//! answer is in the request's encoding.

use std::io::Read;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use prost::Message;

use super::{MAX_REQUEST_BYTES, OtlpIngest, Refused, Transport};

/// Seconds an exporter is asked to wait before retrying a refused request.
const RETRY_AFTER_SECONDS: &str = "1";

pub(super) fn router(ingest: Arc<OtlpIngest>) -> Router {
    Router::new()
        .route("/v1/logs", post(export))
        .with_state(ingest)
}

/// The two encodings of OTLP/HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

/// `google.rpc.Status`, the body of an OTLP/HTTP error (the OTLP
/// specification: "Failures"); its `details` are never sent here.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
struct Status {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

async fn export(
    State(ingest): State<Arc<OtlpIngest>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let encoding = match headers.get(header::CONTENT_TYPE).map(HeaderValue::to_str) {
        None => Encoding::Protobuf,
        Some(Ok(value)) => match value.split(';').next().unwrap_or("").trim() {
            "application/x-protobuf" => Encoding::Protobuf,
            "application/json" => Encoding::Json,
            other => {
                ingest.metrics.outcome(Transport::Http, "invalid");
                return failure(
                    Encoding::Protobuf,
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    format!(
                        "unsupported Content-Type '{other}': use application/x-protobuf or application/json"
                    ),
                );
            }
        },
        Some(Err(_)) => Encoding::Protobuf,
    };
    let body = match decompress(&headers, body) {
        Ok(body) => body,
        Err((status, message)) => {
            let outcome = if status == StatusCode::PAYLOAD_TOO_LARGE {
                "too_large"
            } else {
                "invalid"
            };
            ingest.metrics.outcome(Transport::Http, outcome);
            return failure(encoding, status, message);
        }
    };
    let request = match decode(encoding, &body) {
        Ok(request) => request,
        Err(message) => {
            ingest.metrics.outcome(Transport::Http, "invalid");
            return failure(encoding, StatusCode::BAD_REQUEST, message);
        }
    };
    match ingest.export(Transport::Http, &request).await {
        Ok(response) => {
            let body = match encoding {
                Encoding::Protobuf => response.encode_to_vec(),
                Encoding::Json => serde_json::to_vec(&response).expect("a response serializes"),
            };
            ([(header::CONTENT_TYPE, encoding.content_type())], body).into_response()
        }
        Err(refused) => {
            let (status, message) = match refused {
                Refused::Busy => (
                    StatusCode::TOO_MANY_REQUESTS,
                    "the input queue is full; retry later",
                ),
                Refused::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
            };
            let mut response = failure(encoding, status, message.to_owned());
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECONDS),
            );
            response
        }
    }
}

/// The body without its `Content-Encoding` (none, `identity` or `gzip`),
/// at most [`MAX_REQUEST_BYTES`] once inflated.
fn decompress(headers: &HeaderMap, body: Bytes) -> Result<Bytes, (StatusCode, String)> {
    let coding = headers
        .get(header::CONTENT_ENCODING)
        .map(|value| value.to_str().unwrap_or("").trim().to_ascii_lowercase());
    match coding.as_deref() {
        None | Some("" | "identity") => Ok(body),
        Some("gzip") => {
            let mut inflated = Vec::new();
            flate2::read::GzDecoder::new(&body[..])
                .take(MAX_REQUEST_BYTES as u64 + 1)
                .read_to_end(&mut inflated)
                .map_err(|err| (StatusCode::BAD_REQUEST, format!("invalid gzip body: {err}")))?;
            if inflated.len() > MAX_REQUEST_BYTES {
                return Err((
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the inflated body is over {MAX_REQUEST_BYTES} bytes"),
                ));
            }
            Ok(inflated.into())
        }
        Some(other) => Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("unsupported Content-Encoding '{other}': use gzip or none"),
        )),
    }
}

fn decode(encoding: Encoding, body: &[u8]) -> Result<ExportLogsServiceRequest, String> {
    match encoding {
        Encoding::Protobuf => ExportLogsServiceRequest::decode(body)
            .map_err(|err| format!("not an OTLP ExportLogsServiceRequest (protobuf): {err}")),
        Encoding::Json => serde_json::from_slice(body)
            .map_err(|err| format!("not an OTLP ExportLogsServiceRequest (JSON): {err}")),
    }
}

/// An error answer: a `google.rpc.Status` in the request's encoding.
fn failure(encoding: Encoding, status: StatusCode, message: String) -> Response {
    // gRPC codes of the Status body: the HTTP status says the rest.
    let code = match status {
        StatusCode::TOO_MANY_REQUESTS => 8,    // RESOURCE_EXHAUSTED
        StatusCode::SERVICE_UNAVAILABLE => 14, // UNAVAILABLE
        _ => 3,                                // INVALID_ARGUMENT
    };
    let status_body = Status { code, message };
    let body = match encoding {
        Encoding::Protobuf => status_body.encode_to_vec(),
        Encoding::Json => serde_json::to_vec(&status_body).expect("a status serializes"),
    };
    (
        status,
        [(header::CONTENT_TYPE, encoding.content_type())],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::mapping::log_record_event;
    use serde_json::json;

    /// The OTLP JSON encoding as the specification writes it (and the
    /// Collector's `otlphttp` exporter sends it): camelCase names, 64-bit
    /// integers as strings, hex trace and span ids, enums as numbers.
    #[test]
    fn the_otlp_json_encoding_decodes() {
        let body = br#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"winlogbeat"}}]},
            "scopeLogs":[{"scope":{"name":"eventlog","version":"1"},"logRecords":[{
              "timeUnixNano":"1544712660300000000","observedTimeUnixNano":"1544712660300000000",
              "severityNumber":10,"severityText":"Information",
              "traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
              "body":{"kvlistValue":{"values":[{"key":"EventID","value":{"intValue":"4625"}},
                                               {"key":"Channel","value":{"stringValue":"Security"}}]}},
              "attributes":[{"key":"host.name","value":{"stringValue":"dc-1"}}]}]}]}]}"#;
        let request = decode(Encoding::Json, body).expect("OTLP JSON");
        let resource_logs = &request.resource_logs[0];
        let scope_logs = &resource_logs.scope_logs[0];
        let event = log_record_event(
            resource_logs.resource.as_ref(),
            scope_logs.scope.as_ref(),
            &scope_logs.log_records[0],
        );
        assert_eq!(event["EventID"], json!(4625));
        assert_eq!(event["Channel"], json!("Security"));
        assert_eq!(event["host.name"], json!("dc-1"));
        assert_eq!(event["resource"]["service.name"], json!("winlogbeat"));
        assert_eq!(event["timestamp"], json!("2018-12-13T14:51:00.300000000Z"));
        assert_eq!(event["trace_id"], json!("5b8efff798038103d269b633813fc60c"));
        assert_eq!(event["severity_number"], json!(10));
    }
}
