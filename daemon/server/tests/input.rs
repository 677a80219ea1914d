//! Input decoding through the public API: every format, auto detection,
//! syslog timestamps and structured data, `--jq` and `--jsonpath`
//! extraction, and configuration errors.

use chrono::{Datelike, FixedOffset, Utc};
use rsigma_daemon::input::{
    DecodeError, Decoder, DecoderConfig, Extract, InputConfigError, InputFormat, MAX_JQ_OUTPUTS,
};
use serde_json::{Value, json};

fn decoder(format: InputFormat, extract: Extract) -> Decoder {
    Decoder::new(&DecoderConfig {
        format,
        extract,
        ..DecoderConfig::default()
    })
    .expect("valid config")
}

fn decode(decoder: &Decoder, line: &str) -> Result<Vec<Value>, DecodeError> {
    let mut out = Vec::new();
    decoder.decode(line, &mut out).map(|()| out)
}

fn config_error(format: InputFormat, syslog_tz: &str, extract: Extract) -> String {
    Decoder::new(&DecoderConfig {
        format,
        syslog_tz: syslog_tz.to_owned(),
        extract,
    })
    .map(|_| ())
    .expect_err("invalid config")
    .to_string()
}

/// The current year at a UTC offset of `hours` (RFC 3164 has no year).
fn year_at(hours: i32) -> i32 {
    Utc::now()
        .with_timezone(&FixedOffset::east_opt(hours * 3600).unwrap())
        .year()
}

const RFC3164: &str =
    "<34>Oct 11 22:14:15 mymachine su[230]: 'su root' failed for lonvick on /dev/pts/8";
const RFC5424_SD: &str = r#"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog 1234 ID47 [exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"] An application event log entry"#;
const RFC5424_JSON: &str = r#"<134>1 2024-03-04T05:06:07.250+01:00 web01 nginx 77 access - {"status":404,"path":"/admin"}"#;

#[test]
fn defaults() {
    let config = DecoderConfig::default();
    assert_eq!(config.format, InputFormat::Auto);
    assert_eq!(config.syslog_tz, "+00:00");
    assert_eq!(config.extract, Extract::Whole);
    assert_eq!("syslog".parse::<InputFormat>(), Ok(InputFormat::Syslog));
    assert!("csv".parse::<InputFormat>().is_err());
}

#[test]
fn json_format() {
    let d = decoder(InputFormat::Json, Extract::Whole);
    assert_eq!(
        decode(
            &d,
            r#"{"EventID": 4688, "Image": "C:\\Windows\\System32\\whoami.exe"}"#
        )
        .unwrap(),
        vec![json!({"EventID": 4688, "Image": "C:\\Windows\\System32\\whoami.exe"})]
    );
    // in json format a line is JSON whatever it starts with
    let err = decode(&d, "hello").unwrap_err();
    assert!(matches!(err, DecodeError::NotJson(_)), "{err:?}");
    assert!(
        err.to_string().starts_with("not JSON: expected value"),
        "{err}"
    );
    let err = decode(&d, r#""just a string""#).unwrap_err();
    assert_eq!(err.to_string(), "not a JSON object: found a string");
    let err = decode(&d, "<34>Oct 11 22:14:15 host app: x").unwrap_err();
    assert!(matches!(err, DecodeError::NotJson(_)), "{err:?}");
}

#[test]
fn plain_format() {
    let d = decoder(InputFormat::Plain, Extract::Whole);
    for line in [
        "hello world",
        r#"{"a":1}"#,
        "<34>Oct 11 22:14:15 host app: x",
    ] {
        assert_eq!(decode(&d, line).unwrap(), vec![json!({"message": line})]);
    }
}

#[test]
fn syslog_format_rfc3164_with_offset() {
    let d = Decoder::new(&DecoderConfig {
        format: InputFormat::Syslog,
        syslog_tz: "+02:00".to_owned(),
        extract: Extract::Whole,
    })
    .unwrap();
    // <34> = facility 4 (auth) * 8 + severity 2 (crit)
    assert_eq!(
        decode(&d, RFC3164).unwrap(),
        vec![json!({
            "facility": "auth",
            "severity": "crit",
            "timestamp": format!("{}-10-11T22:14:15+02:00", year_at(2)),
            "hostname": "mymachine",
            "app_name": "su",
            "proc_id": "230",
            "message": "'su root' failed for lonvick on /dev/pts/8",
        })]
    );
    // with a year (a common RFC 3164 variant): fully given, offset from --syslog-tz
    assert_eq!(
        decode(&d, "<13>Oct 11 2024 22:14:15 host app: x").unwrap()[0]["timestamp"],
        json!("2024-10-11T22:14:15+02:00")
    );
    // the same line at the default offset: the same wall-clock time, two hours later
    let utc = decoder(InputFormat::Syslog, Extract::Whole);
    let event = &decode(&utc, RFC3164).unwrap()[0];
    assert_eq!(
        event["timestamp"],
        json!(format!("{}-10-11T22:14:15Z", year_at(0)))
    );
    let shifted = |event: &Value| {
        chrono::DateTime::parse_from_rfc3339(event["timestamp"].as_str().unwrap()).unwrap()
    };
    let plus_two = &decode(&d, RFC3164).unwrap()[0];
    if year_at(0) == year_at(2) {
        assert_eq!(
            shifted(event) - shifted(plus_two),
            chrono::Duration::hours(2)
        );
    }
}

#[test]
fn syslog_format_rfc5424_structured_data() {
    let d = decoder(InputFormat::Syslog, Extract::Whole);
    // <165> = facility 20 (local4) * 8 + severity 5 (notice)
    assert_eq!(
        decode(&d, RFC5424_SD).unwrap(),
        vec![json!({
            "facility": "local4",
            "severity": "notice",
            "timestamp": "2003-10-11T22:14:15.003Z",
            "hostname": "mymachine.example.com",
            "app_name": "evntslog",
            "proc_id": "1234",
            "msg_id": "ID47",
            "structured_data": {
                "exampleSDID@32473": {"iut": "3", "eventSource": "Application", "eventID": "1011"}
            },
            "message": "An application event log entry",
        })]
    );
}

#[test]
fn syslog_format_rfc5424_json_message() {
    let d = decoder(InputFormat::Syslog, Extract::Whole);
    // <134> = facility 16 (local0) * 8 + severity 6 (info)
    assert_eq!(
        decode(&d, RFC5424_JSON).unwrap(),
        vec![json!({
            "facility": "local0",
            "severity": "info",
            "timestamp": "2024-03-04T05:06:07.250+01:00",
            "hostname": "web01",
            "app_name": "nginx",
            "proc_id": "77",
            "msg_id": "access",
            "message": r#"{"status":404,"path":"/admin"}"#,
            "json": {"status": 404, "path": "/admin"},
        })]
    );
}

#[test]
fn syslog_format_rejects_non_syslog() {
    let d = decoder(InputFormat::Syslog, Extract::Whole);
    let err = decode(&d, "just some text").unwrap_err();
    assert!(matches!(err, DecodeError::NotSyslog(_)), "{err:?}");
    assert!(err.to_string().starts_with("not syslog: "), "{err}");
}

#[test]
fn auto_detection() {
    let d = decoder(InputFormat::Auto, Extract::Whole);
    // `{` → JSON (leading whitespace allowed)
    assert_eq!(decode(&d, r#"  {"a": 1}"#).unwrap(), vec![json!({"a": 1})]);
    // `<digits>` → syslog
    let syslog = decoder(InputFormat::Syslog, Extract::Whole);
    for line in [RFC3164, RFC5424_SD, RFC5424_JSON] {
        assert_eq!(decode(&d, line).unwrap(), decode(&syslog, line).unwrap());
    }
    // anything else → plain
    for line in [
        "hello",
        "[1, 2]",
        "<html>",
        "<>x",
        "Oct 11 22:14:15 host app: no priority",
    ] {
        assert_eq!(decode(&d, line).unwrap(), vec![json!({"message": line})]);
    }
    // broken JSON is malformed, not plain text
    let err = decode(&d, r#"{"a": 1"#).unwrap_err();
    assert!(matches!(err, DecodeError::NotJson(_)), "{err:?}");
    // a priority without a syslog header is malformed, not plain text
    let err = decode(&d, "<13>no header here").unwrap_err();
    assert!(matches!(err, DecodeError::NotSyslog(_)), "{err:?}");
    // blank lines: no event, no error
    assert!(decode(&d, "").unwrap().is_empty());
    assert!(decode(&d, " \t").unwrap().is_empty());
}

const RECORDS: &str = r#"{"records": [{"eventName": "ConsoleLogin", "n": 1}, {"eventName": "GetObject", "n": 2}, {"eventName": "PutObject", "n": 3}], "event": {"id": "e1", "user": {"name": "bob"}}}"#;

#[test]
fn jq_records_yield_several_events() {
    let d = decoder(InputFormat::Json, Extract::Jq(".records[]".to_owned()));
    assert_eq!(
        decode(&d, RECORDS).unwrap(),
        vec![
            json!({"eventName": "ConsoleLogin", "n": 1}),
            json!({"eventName": "GetObject", "n": 2}),
            json!({"eventName": "PutObject", "n": 3}),
        ]
    );
    // auto mode: JSON lines are filtered too
    let auto = decoder(InputFormat::Auto, Extract::Jq(".records[]".to_owned()));
    assert_eq!(decode(&auto, RECORDS).unwrap().len(), 3);
    // the input may be any JSON document, only results must be objects
    let d = decoder(InputFormat::Json, Extract::Jq(".[] | {v: .}".to_owned()));
    assert_eq!(
        decode(&d, "[1, \"x\"]").unwrap(),
        vec![json!({"v": 1}), json!({"v": "x"})]
    );
}

#[test]
fn jq_builds_and_filters_events() {
    let d = decoder(
        InputFormat::Json,
        Extract::Jq(
            r#".records[] | select(.n > 1) | {name: .eventName, double: (.n * 2)}"#.to_owned(),
        ),
    );
    assert_eq!(
        decode(&d, RECORDS).unwrap(),
        vec![
            json!({"name": "GetObject", "double": 4}),
            json!({"name": "PutObject", "double": 6}),
        ]
    );
    // no output: zero events, not an error
    let d = decoder(
        InputFormat::Json,
        Extract::Jq(".records[] | select(.n > 10)".to_owned()),
    );
    assert_eq!(decode(&d, RECORDS).unwrap(), Vec::<Value>::new());
}

#[test]
fn jq_runtime_errors() {
    let d = decoder(InputFormat::Json, Extract::Jq(".records[]".to_owned()));
    let err = decode(&d, r#"{"records": 5}"#).unwrap_err();
    assert!(matches!(err, DecodeError::Jq(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "jq: cannot use 5 as iterable (array or object)"
    );

    let d = decoder(
        InputFormat::Json,
        Extract::Jq(r#"error("bad record")"#.to_owned()),
    );
    assert_eq!(decode(&d, "{}").unwrap_err().to_string(), "jq: bad record");

    // `halt` fails the line; it never exits the process
    let d = decoder(InputFormat::Json, Extract::Jq("halt".to_owned()));
    assert!(matches!(decode(&d, "{}"), Err(DecodeError::Jq(_))));

    let d = decoder(InputFormat::Json, Extract::Jq(".".to_owned()));
    assert!(matches!(decode(&d, "{oops"), Err(DecodeError::NotJson(_))));

    let d = decoder(InputFormat::Json, Extract::Jq("repeat({})".to_owned()));
    let err = decode(&d, "{}").unwrap_err();
    assert!(matches!(err, DecodeError::TooManyResults { limit } if limit == MAX_JQ_OUTPUTS));
}

#[test]
fn jq_result_not_an_object() {
    let d = decoder(
        InputFormat::Json,
        Extract::Jq(".records[].eventName".to_owned()),
    );
    let err = decode(&d, RECORDS).unwrap_err();
    assert_eq!(
        err.to_string(),
        "jq: result 1 is a string, not a JSON object"
    );

    // objects first, then a non-object: the whole line fails, nothing is kept
    let d = decoder(InputFormat::Json, Extract::Jq(".records[], 42".to_owned()));
    let mut out = vec![json!({"earlier": true})];
    let err = d.decode(RECORDS, &mut out).unwrap_err();
    assert_eq!(
        err.to_string(),
        "jq: result 4 is a number, not a JSON object"
    );
    assert_eq!(out, vec![json!({"earlier": true})]);
}

#[test]
fn jsonpath_extraction() {
    let d = decoder(
        InputFormat::Json,
        Extract::JsonPath("$.records[*]".to_owned()),
    );
    assert_eq!(
        decode(&d, RECORDS).unwrap(),
        vec![
            json!({"eventName": "ConsoleLogin", "n": 1}),
            json!({"eventName": "GetObject", "n": 2}),
            json!({"eventName": "PutObject", "n": 3}),
        ]
    );
    let d = decoder(InputFormat::Json, Extract::JsonPath("$.event".to_owned()));
    assert_eq!(
        decode(&d, RECORDS).unwrap(),
        vec![json!({"id": "e1", "user": {"name": "bob"}})]
    );
    // filter selector (RFC 9535)
    let d = decoder(
        InputFormat::Auto,
        Extract::JsonPath("$.records[?@.n >= 2]".to_owned()),
    );
    assert_eq!(
        decode(&d, RECORDS).unwrap(),
        vec![
            json!({"eventName": "GetObject", "n": 2}),
            json!({"eventName": "PutObject", "n": 3}),
        ]
    );
    // nothing selected: zero events
    let d = decoder(InputFormat::Json, Extract::JsonPath("$.missing".to_owned()));
    assert_eq!(decode(&d, RECORDS).unwrap(), Vec::<Value>::new());
    // a selected node that is not an object
    let d = decoder(
        InputFormat::Json,
        Extract::JsonPath("$.event.id".to_owned()),
    );
    assert_eq!(
        decode(&d, RECORDS).unwrap_err().to_string(),
        "jsonpath: result 1 is a string, not a JSON object"
    );
}

#[test]
fn config_errors_name_the_flag() {
    let err = config_error(
        InputFormat::Json,
        "+00:00",
        Extract::Jq(".records[".to_owned()),
    );
    assert_eq!(err, "--jq: expected closing bracket at end of input");
    let err = config_error(
        InputFormat::Json,
        "+00:00",
        Extract::Jq("nosuch".to_owned()),
    );
    assert_eq!(err, "--jq: undefined filter `nosuch/0`");

    let err = config_error(
        InputFormat::Json,
        "+00:00",
        Extract::JsonPath("$.records[".to_owned()),
    );
    assert!(err.starts_with("--jsonpath: "), "{err}");
    let err = config_error(
        InputFormat::Json,
        "+00:00",
        Extract::JsonPath("records".to_owned()),
    );
    assert!(err.starts_with("--jsonpath: "), "{err}");

    for tz in ["", "UTC", "+2", "+0200", "+24:00", "-01:60"] {
        let err = config_error(InputFormat::Syslog, tz, Extract::Whole);
        assert_eq!(
            err,
            format!("--syslog-tz: invalid UTC offset {tz:?}: expected +HH:MM or -HH:MM")
        );
    }
    // checked whatever the format
    assert!(config_error(InputFormat::Json, "bad", Extract::Whole).starts_with("--syslog-tz: "));

    let err = config_error(InputFormat::Syslog, "+00:00", Extract::Jq(".".to_owned()));
    assert_eq!(
        err,
        "--jq: applies to JSON input only (--input-format json or auto), not --input-format syslog"
    );
    let err = Decoder::new(&DecoderConfig {
        format: InputFormat::Plain,
        extract: Extract::JsonPath("$".to_owned()),
        ..DecoderConfig::default()
    })
    .unwrap_err();
    assert!(matches!(
        err,
        InputConfigError::ExtractNeedsJson {
            flag: "--jsonpath",
            format: InputFormat::Plain
        }
    ));
}

#[test]
fn decoder_is_shared_across_threads() {
    let d = decoder(InputFormat::Auto, Extract::Jq(".records[]".to_owned()));
    let total: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let mut out = Vec::new();
                    for _ in 0..100 {
                        d.decode(RECORDS, &mut out).unwrap();
                        d.decode("plain line", &mut out).unwrap();
                    }
                    out.len()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(total, 4 * 100 * (3 + 1));
}
