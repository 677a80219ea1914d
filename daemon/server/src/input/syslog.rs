//! RFC 5424 and RFC 3164 syslog lines, parsed by `syslog_loose` and mapped to
//! stable field names.

use chrono::{DateTime, Datelike, FixedOffset, SecondsFormat, Utc};
use serde_json::{Map, Value};
use syslog_loose::{IncompleteDate, Message, Protocol, Variant};

use super::DecodeError;

/// Parses syslog lines; RFC 3164 timestamps get `tz`.
#[derive(Debug, Clone, Copy)]
pub(super) struct SyslogParser {
    tz: FixedOffset,
}

impl SyslogParser {
    /// `tz` is `--syslog-tz`: `+HH:MM` or `-HH:MM`.
    pub(super) fn new(tz: &str) -> Result<SyslogParser, String> {
        parse_offset(tz).map(|tz| SyslogParser { tz })
    }

    /// Parses one line into the flat syslog event.
    pub(super) fn parse(&self, line: &str) -> Result<Value, DecodeError> {
        let tz = self.tz;
        // RFC 3164 has no year: the current one at `tz`, see `year_for`
        let get_year = move |(month, ..): IncompleteDate| {
            let now = Utc::now().with_timezone(&tz);
            year_for(month, now.year(), now.month())
        };
        // Parsed at UTC, then given `tz` below: syslog_loose 0.23 shifts the
        // wall-clock time of `Mmm dd yyyy hh:mm:ss` by the offset it is given
        // instead of keeping it, but reads both RFC 3164 forms right at UTC.
        let mut message = syslog_loose::parse_message_with_year_exact_tz(
            line,
            get_year,
            Some(Utc),
            Variant::Either,
        )
        .map_err(|_| DecodeError::NotSyslog("no valid RFC 5424 or RFC 3164 header"))?;
        if message.protocol == Protocol::RFC3164 && has_bsd_timestamp(line) {
            message.timestamp = message.timestamp.map(|utc| {
                utc.naive_utc()
                    .and_local_timezone(tz)
                    .single()
                    .unwrap_or(utc)
            });
        }
        Ok(to_event(message))
    }
}

/// Whether the timestamp after the optional priority is an RFC 3164 one
/// (`Mmm dd ...`, no offset) rather than RFC 3339 (`yyyy-...`, with one) or
/// nil (`-`).
fn has_bsd_timestamp(line: &str) -> bool {
    let rest = line.trim_start();
    let rest = match rest.strip_prefix('<') {
        Some(pri) => pri.trim_start_matches(|c: char| c.is_ascii_digit()),
        None => rest,
    };
    let rest = rest.strip_prefix('>').unwrap_or(rest).trim_start();
    rest.starts_with(|c: char| c.is_ascii_alphabetic())
}

/// The year of an RFC 3164 timestamp in `month`, received when it is
/// `now_month` of `now_year`: the current year, except that December
/// messages received in January are from the year before.
fn year_for(month: u32, now_year: i32, now_month: u32) -> i32 {
    if month == 12 && now_month == 1 {
        now_year - 1
    } else {
        now_year
    }
}

/// Parses `+HH:MM` or `-HH:MM` (hours 00-23, minutes 00-59).
fn parse_offset(text: &str) -> Result<FixedOffset, String> {
    let invalid = || format!("invalid UTC offset {text:?}: expected +HH:MM or -HH:MM");
    let bytes = text.as_bytes();
    let [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] = *bytes else {
        return Err(invalid());
    };
    let digits = [h1, h2, m1, m2];
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(invalid());
    }
    let [h1, h2, m1, m2] = digits.map(|d| i32::from(d - b'0'));
    let (hours, minutes) = (h1 * 10 + h2, m1 * 10 + m2);
    if hours > 23 || minutes > 59 {
        return Err(invalid());
    }
    let seconds = (hours * 60 + minutes) * 60;
    let seconds = if sign == b'-' { -seconds } else { seconds };
    FixedOffset::east_opt(seconds).ok_or_else(invalid)
}

/// RFC 3339, with `Z` for UTC and as many fraction digits as needed (0, 3, 6
/// or 9).
fn rfc3339(timestamp: &DateTime<FixedOffset>) -> String {
    timestamp.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn to_event(message: Message<&str>) -> Value {
    let mut event = Map::new();
    let mut put = |key: &str, value: Value| {
        event.insert(key.to_owned(), value);
    };
    let string = |s: &str| Value::String(s.to_owned());
    if let Some(facility) = message.facility {
        put("facility", string(facility.as_str()));
    }
    if let Some(severity) = message.severity {
        put("severity", string(severity.as_str()));
    }
    if let Some(timestamp) = &message.timestamp {
        put("timestamp", Value::String(rfc3339(timestamp)));
    }
    if let Some(hostname) = message.hostname {
        put("hostname", string(hostname));
    }
    if let Some(app_name) = message.appname {
        put("app_name", string(app_name));
    }
    if let Some(proc_id) = &message.procid {
        put("proc_id", Value::String(proc_id.to_string()));
    }
    if let Some(msg_id) = message.msgid {
        put("msg_id", string(msg_id));
    }
    if !message.structured_data.is_empty() {
        let mut elements = Map::new();
        for element in &message.structured_data {
            let params: Map<String, Value> = element
                .params()
                .map(|(name, value)| ((*name).to_owned(), Value::String(value)))
                .collect();
            // an SD-ID given twice: its params are merged
            match elements.get_mut(element.id) {
                Some(Value::Object(existing)) => existing.extend(params),
                _ => {
                    elements.insert(element.id.to_owned(), Value::Object(params));
                }
            }
        }
        put("structured_data", Value::Object(elements));
    }
    // RFC 5424 allows a UTF-8 BOM before the message
    let text = message.msg.strip_prefix('\u{feff}').unwrap_or(message.msg);
    if text.trim_start().starts_with('{')
        && let Ok(json @ Value::Object(_)) = serde_json::from_str::<Value>(text)
    {
        put("json", json);
    }
    put("message", string(text));
    Value::Object(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(tz: &str, line: &str) -> Result<Value, DecodeError> {
        SyslogParser::new(tz).unwrap().parse(line)
    }

    fn this_year(tz: &str) -> i32 {
        Utc::now().with_timezone(&parse_offset(tz).unwrap()).year()
    }

    #[test]
    fn offsets() {
        assert_eq!(parse_offset("+00:00").unwrap().local_minus_utc(), 0);
        assert_eq!(parse_offset("+02:00").unwrap().local_minus_utc(), 7200);
        assert_eq!(parse_offset("-05:30").unwrap().local_minus_utc(), -19800);
        assert_eq!(parse_offset("+23:59").unwrap().local_minus_utc(), 86340);
        assert_eq!(parse_offset("-00:00").unwrap().local_minus_utc(), 0);
        for bad in [
            "",
            "Z",
            "UTC",
            "02:00",
            "+2:00",
            "+0200",
            "+02:0",
            "+24:00",
            "+02:60",
            "+0a:00",
            "+02:00 ",
            "+02:00:00",
            "±02:00",
        ] {
            let err = parse_offset(bad).unwrap_err();
            assert_eq!(
                err,
                format!("invalid UTC offset {bad:?}: expected +HH:MM or -HH:MM")
            );
        }
    }

    #[test]
    fn year_rollover() {
        assert_eq!(year_for(12, 2025, 1), 2024);
        assert_eq!(year_for(12, 2025, 12), 2025);
        assert_eq!(year_for(1, 2025, 1), 2025);
        assert_eq!(year_for(11, 2025, 1), 2025);
        assert_eq!(year_for(6, 2025, 7), 2025);
    }

    #[test]
    fn rfc3164_with_offset() {
        // <34>: facility 4 (auth), severity 2 (crit)
        let line =
            "<34>Oct 11 22:14:15 mymachine su[123]: 'su root' failed for lonvick on /dev/pts/8";
        let year = this_year("+02:00");
        assert_eq!(
            parse("+02:00", line).unwrap(),
            json!({
                "facility": "auth",
                "severity": "crit",
                "timestamp": format!("{year}-10-11T22:14:15+02:00"),
                "hostname": "mymachine",
                "app_name": "su",
                "proc_id": "123",
                "message": "'su root' failed for lonvick on /dev/pts/8",
            })
        );
        let year = this_year("+00:00");
        assert_eq!(
            parse("+00:00", line).unwrap()["timestamp"],
            json!(format!("{year}-10-11T22:14:15Z"))
        );
        let year = this_year("-05:30");
        assert_eq!(
            parse("-05:30", line).unwrap()["timestamp"],
            json!(format!("{year}-10-11T22:14:15-05:30"))
        );
    }

    #[test]
    fn rfc3164_with_year_and_rfc3339_timestamps() {
        // the year form keeps its wall-clock time and gets the offset
        assert_eq!(
            parse("+02:00", "<34>Oct 11 2024 22:14:15 host app: x").unwrap()["timestamp"],
            json!("2024-10-11T22:14:15+02:00")
        );
        assert_eq!(
            parse("-07:00", "Dec 31 1999 23:59:59 host app: x").unwrap()["timestamp"],
            json!("1999-12-31T23:59:59-07:00")
        );
        // an RFC 3339 timestamp in an RFC 3164 line keeps its own offset
        assert_eq!(
            parse("+02:00", "<34>2024-10-11T22:14:15Z host app: x").unwrap()["timestamp"],
            json!("2024-10-11T22:14:15Z")
        );
        assert_eq!(
            parse("+02:00", "<34>2024-10-11T22:14:15.5-03:00 host app: x").unwrap()["timestamp"],
            json!("2024-10-11T22:14:15.500-03:00")
        );
        // nil timestamp: no field
        let event = parse("+02:00", "<34>- host app: x").unwrap();
        assert!(event.get("timestamp").is_none(), "{event}");
    }

    #[test]
    fn bsd_timestamp_detection() {
        assert!(has_bsd_timestamp("<34>Oct 11 22:14:15 h a: x"));
        assert!(has_bsd_timestamp("  <34> Oct 11 22:14:15 h a: x"));
        assert!(has_bsd_timestamp("Oct 11 22:14:15 h a: x"));
        assert!(!has_bsd_timestamp("<34>2024-10-11T22:14:15Z h a: x"));
        assert!(!has_bsd_timestamp("<34>- h a: x"));
        assert!(!has_bsd_timestamp("2024-10-11T22:14:15Z h a: x"));
    }

    #[test]
    fn rfc3164_without_pri_or_pid() {
        let year = this_year("+00:00");
        assert_eq!(
            parse(
                "+00:00",
                "Feb  5 17:32:18 web01 sshd: Accepted publickey for alice"
            )
            .unwrap(),
            json!({
                "timestamp": format!("{year}-02-05T17:32:18Z"),
                "hostname": "web01",
                "app_name": "sshd",
                "message": "Accepted publickey for alice",
            })
        );
    }

    #[test]
    fn rfc5424_full() {
        // <165>: facility 20 (local4), severity 5 (notice)
        let line = r#"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog 1234 ID47 [exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"][examplePriority@32473 class="high"] An application event log entry..."#;
        assert_eq!(
            parse("+02:00", line).unwrap(),
            json!({
                "facility": "local4",
                "severity": "notice",
                "timestamp": "2003-10-11T22:14:15.003Z",
                "hostname": "mymachine.example.com",
                "app_name": "evntslog",
                "proc_id": "1234",
                "msg_id": "ID47",
                "structured_data": {
                    "exampleSDID@32473": {"iut": "3", "eventSource": "Application", "eventID": "1011"},
                    "examplePriority@32473": {"class": "high"},
                },
                "message": "An application event log entry...",
            })
        );
    }

    #[test]
    fn rfc5424_nil_fields_escapes_and_offset() {
        let line = r#"<13>1 2024-05-06T07:08:09.5+05:00 - - - - [a x="q\"uote\]" y=""][a z="1"] "#;
        assert_eq!(
            parse("+00:00", line).unwrap(),
            json!({
                "facility": "user",
                "severity": "notice",
                "timestamp": "2024-05-06T07:08:09.500+05:00",
                "structured_data": {"a": {"x": "q\"uote]", "y": "", "z": "1"}},
                "message": "",
            })
        );
    }

    #[test]
    fn rfc5424_json_message() {
        let line =
            "<134>1 2024-01-02T03:04:05Z host app - - - \u{feff}{\"a\":1,\"b\":{\"c\":\"d\"}}";
        assert_eq!(
            parse("+00:00", line).unwrap(),
            json!({
                "facility": "local0",
                "severity": "info",
                "timestamp": "2024-01-02T03:04:05Z",
                "hostname": "host",
                "app_name": "app",
                "message": "{\"a\":1,\"b\":{\"c\":\"d\"}}",
                "json": {"a": 1, "b": {"c": "d"}},
            })
        );
        // not an object, or broken: no `json` member, and not an error
        for message in ["[1,2]", "{\"a\":", "{not json}"] {
            let line = format!("<134>1 2024-01-02T03:04:05Z host app - - - {message}");
            let event = parse("+00:00", &line).unwrap();
            assert_eq!(event["message"], json!(message));
            assert!(event.get("json").is_none(), "{event}");
        }
    }

    #[test]
    fn not_syslog() {
        for line in ["hello world", "<13>", "<13>hello", "Foo 11 22:14:15 host x"] {
            let err = parse("+00:00", line).unwrap_err();
            assert_eq!(
                err.to_string(),
                "not syslog: no valid RFC 5424 or RFC 3164 header",
                "{line}"
            );
            assert_eq!(err.kind(), "syslog");
        }
    }
}
