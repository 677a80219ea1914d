//! Reading points in time from event values: RFC 3339 strings, common
//! `YYYY-MM-DD HH:MM:SS` forms (taken as UTC), and epoch seconds or
//! milliseconds as numbers or digit strings.

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde_json::Value;

/// Epoch values at or above this are taken as milliseconds (year 5138 in seconds).
const EPOCH_MILLIS_THRESHOLD: f64 = 1e11;

/// Parses a timestamp from a JSON value, or `None` when it is not one.
pub fn parse_timestamp(value: &Value) -> Option<DateTime<Utc>> {
    match value {
        Value::String(s) => parse_timestamp_str(s),
        Value::Number(n) => n.as_f64().and_then(from_epoch),
        _ => None,
    }
}

/// Parses a timestamp from text.
pub fn parse_timestamp_str(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f %z",
    ] {
        if let Ok(t) = DateTime::parse_from_str(text, format) {
            return Some(t.with_timezone(&Utc));
        }
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Some(Utc.from_utc_datetime(&t));
        }
    }
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return text.parse::<f64>().ok().and_then(from_epoch);
    }
    None
}

fn from_epoch(value: f64) -> Option<DateTime<Utc>> {
    if !value.is_finite() || value < 0.0 {
        return None;
    }
    let millis = if value >= EPOCH_MILLIS_THRESHOLD {
        value
    } else {
        value * 1000.0
    };
    DateTime::from_timestamp_millis(millis as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, Timelike};
    use serde_json::json;

    #[test]
    fn formats() {
        let expected = Utc.with_ymd_and_hms(2024, 3, 5, 14, 30, 0).unwrap();
        for value in [
            json!("2024-03-05T14:30:00Z"),
            json!("2024-03-05T16:30:00+02:00"),
            json!("2024-03-05 14:30:00"),
            json!("2024-03-05T14:30:00.000"),
            json!(1709649000),
            json!(1709649000000_u64),
            json!("1709649000"),
        ] {
            assert_eq!(parse_timestamp(&value), Some(expected), "{value}");
        }
        let t = parse_timestamp(&json!("2024-03-05T14:30:00Z")).unwrap();
        assert_eq!((t.hour(), t.day()), (14, 5));
    }

    #[test]
    fn rejects_non_timestamps() {
        for value in [
            json!("yesterday"),
            json!(true),
            json!(null),
            json!(-5),
            json!(""),
        ] {
            assert_eq!(parse_timestamp(&value), None, "{value}");
        }
    }
}
