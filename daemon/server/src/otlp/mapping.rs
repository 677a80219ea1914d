//! One OTLP LogRecord as one event (docs/otlp.md, "Mapping").
//!
//! A map body's entries go to the top level, so that a Windows event sent
//! as a structured body (`EventID: 4625`) matches Sigma rules exactly as the
//! same event read from NDJSON; any other body is `body`. Attributes go to
//! the top level too; an attribute whose key the body already holds goes
//! under `attributes` instead (the body is the event, an attribute is what
//! the pipeline added). Resource attributes are under `resource`, the
//! scope under `scope`, then the record's own fields.

use chrono::{DateTime, SecondsFormat};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::resource::v1::Resource;
use serde_json::{Map, Value, json};

/// The event of `record`, sent with `resource` by `scope`.
pub fn log_record_event(
    resource: Option<&Resource>,
    scope: Option<&InstrumentationScope>,
    record: &LogRecord,
) -> Map<String, Value> {
    let mut event = match record.body.as_ref().and_then(|body| body.value.as_ref()) {
        Some(Any::KvlistValue(list)) => key_values(&list.values),
        Some(other) => Map::from_iter([("body".to_owned(), any_value(other))]),
        None => Map::new(),
    };
    let mut shadowed = Map::new();
    for attribute in &record.attributes {
        let value = attribute.value.as_ref().map_or(Value::Null, any);
        if event.contains_key(&attribute.key) {
            shadowed.insert(attribute.key.clone(), value);
        } else {
            event.insert(attribute.key.clone(), value);
        }
    }
    let mut put = |key: &str, value: Value| {
        // A body or attribute of that name wins: it is the event's own.
        event.entry(key.to_owned()).or_insert(value);
    };
    if !shadowed.is_empty() {
        put("attributes", Value::Object(shadowed));
    }
    if let Some(resource) = resource.filter(|r| !r.attributes.is_empty()) {
        put("resource", Value::Object(key_values(&resource.attributes)));
    }
    if let Some(scope) = scope.filter(|s| !s.name.is_empty() || !s.version.is_empty()) {
        put(
            "scope",
            json!({"name": scope.name, "version": scope.version}),
        );
    }
    if let Some(time) = rfc3339(record.time_unix_nano) {
        put("timestamp", Value::String(time));
    }
    if let Some(time) = rfc3339(record.observed_time_unix_nano) {
        put("observed_timestamp", Value::String(time));
    }
    if !record.severity_text.is_empty() {
        put("severity_text", Value::String(record.severity_text.clone()));
    }
    if record.severity_number != 0 {
        put("severity_number", json!(record.severity_number));
    }
    if !record.event_name.is_empty() {
        put("event_name", Value::String(record.event_name.clone()));
    }
    if !record.trace_id.is_empty() {
        put("trace_id", Value::String(hex(&record.trace_id)));
    }
    if !record.span_id.is_empty() {
        put("span_id", Value::String(hex(&record.span_id)));
    }
    event
}

fn key_values(values: &[KeyValue]) -> Map<String, Value> {
    values
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.as_ref().map_or(Value::Null, any)))
        .collect()
}

fn any(value: &AnyValue) -> Value {
    value.value.as_ref().map_or(Value::Null, any_value)
}

fn any_value(value: &Any) -> Value {
    match value {
        Any::StringValue(text) => Value::String(text.clone()),
        Any::BoolValue(flag) => Value::Bool(*flag),
        Any::IntValue(number) => json!(number),
        // JSON has no NaN or infinity: those become null.
        Any::DoubleValue(number) => json!(number),
        Any::ArrayValue(array) => Value::Array(array.values.iter().map(any).collect()),
        Any::KvlistValue(list) => Value::Object(key_values(&list.values)),
        // As the OTLP JSON encoding writes bytes.
        Any::BytesValue(bytes) => {
            use base64::Engine;
            Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
        // An index into a dictionary this transport does not send.
        _ => Value::Null,
    }
}

/// Nanoseconds since the epoch in RFC 3339 (UTC, nanoseconds); 0 is unset.
fn rfc3339(unix_nanos: u64) -> Option<String> {
    let nanos = i64::try_from(unix_nanos).ok().filter(|n| *n > 0)?;
    Some(DateTime::from_timestamp_nanos(nanos).to_rfc3339_opts(SecondsFormat::Nanos, true))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};

    fn kv(key: &str, value: Any) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue { value: Some(value) }),
            ..KeyValue::default()
        }
    }

    fn text(value: &str) -> Any {
        Any::StringValue(value.to_owned())
    }

    #[test]
    fn a_map_body_is_the_event_and_the_rest_is_around_it() {
        let record = LogRecord {
            time_unix_nano: 1_715_673_600_123_456_789,
            observed_time_unix_nano: 1_715_673_601_000_000_000,
            severity_number: 9,
            severity_text: "INFO".into(),
            body: Some(AnyValue {
                value: Some(Any::KvlistValue(KeyValueList {
                    values: vec![
                        kv("EventID", Any::IntValue(4625)),
                        kv("Channel", text("Security")),
                        kv(
                            "Tags",
                            Any::ArrayValue(ArrayValue {
                                values: vec![AnyValue {
                                    value: Some(text("a")),
                                }],
                            }),
                        ),
                    ],
                })),
            }),
            attributes: vec![
                kv("host", text("ws-1")),
                kv("Channel", text("from-attribute")),
            ],
            trace_id: vec![0xab; 16],
            span_id: vec![0x01, 0x02, 0, 0, 0, 0, 0, 0xff],
            ..LogRecord::default()
        };
        let resource = Resource {
            attributes: vec![kv("service.name", text("winlogbeat"))],
            ..Resource::default()
        };
        let scope = InstrumentationScope {
            name: "eventlog".into(),
            version: "1.0".into(),
            ..InstrumentationScope::default()
        };
        let event = Value::Object(log_record_event(Some(&resource), Some(&scope), &record));
        assert_eq!(
            event,
            json!({
                "EventID": 4625,
                "Channel": "Security",
                "Tags": ["a"],
                "host": "ws-1",
                "attributes": {"Channel": "from-attribute"},
                "resource": {"service.name": "winlogbeat"},
                "scope": {"name": "eventlog", "version": "1.0"},
                "timestamp": "2024-05-14T08:00:00.123456789Z",
                "observed_timestamp": "2024-05-14T08:00:01.000000000Z",
                "severity_text": "INFO",
                "severity_number": 9,
                "trace_id": "abababababababababababababababab",
                "span_id": "01020000000000ff",
            })
        );
    }

    #[test]
    fn other_bodies_are_body_and_unset_fields_are_left_out() {
        for (body, expected) in [
            (text("disk full"), json!("disk full")),
            (Any::BoolValue(true), json!(true)),
            (Any::DoubleValue(1.5), json!(1.5)),
            (Any::DoubleValue(f64::NAN), Value::Null),
            (Any::BytesValue(vec![0xff, 0x00]), json!("/wA=")),
        ] {
            let record = LogRecord {
                body: Some(AnyValue { value: Some(body) }),
                ..LogRecord::default()
            };
            assert_eq!(
                Value::Object(log_record_event(None, None, &record)),
                json!({ "body": expected })
            );
        }
        let empty = log_record_event(None, None, &LogRecord::default());
        assert!(empty.is_empty(), "{empty:?}");
    }

    #[test]
    fn body_and_attribute_keys_win_over_the_record_fields() {
        let record = LogRecord {
            severity_text: "WARN".into(),
            attributes: vec![kv("severity_text", text("custom"))],
            ..LogRecord::default()
        };
        let event = log_record_event(None, None, &record);
        assert_eq!(event["severity_text"], json!("custom"));
    }
}
