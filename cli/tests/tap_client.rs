//! `rsigma engine tap` against a fake daemon streaming NDJSON.

mod common;
mod fake_daemon;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fake_daemon::{FakeDaemon, Reply, Sandbox, Sink, closed_port};
use predicates::prelude::*;

/// The daemon's default input settings, as the summary reports them.
const DEFAULT_INPUT: &str =
    r#"{"format":"auto","jq":null,"jsonpath":null,"syslog_tz":"+00:00","input":"http"}"#;

const EVENT_A: &str = r#"{"EventID":1,"Image":"C:\\Windows\\System32\\whoami.exe","user":{"email":"rsigma:redacted:5f2a"}}"#;
const EVENT_B: &str = r#"{"EventID":3,"DestinationIp":"10.0.0.1","tags":["a","b"]}"#;

/// A summary record line (with its newline).
fn summary(captured: u64, dropped: u64, duration_ms: u64, stage: &str, input: &str) -> String {
    summary_with_limit(captured, dropped, duration_ms, stage, false, input)
}

/// A summary record line (with its newline), with `limit_reached`.
fn summary_with_limit(
    captured: u64,
    dropped: u64,
    duration_ms: u64,
    stage: &str,
    limit_reached: bool,
    input: &str,
) -> String {
    format!(
        "{{\"rsigma_tap_summary\":{{\"captured\":{captured},\"dropped\":{dropped},\"duration_ms\":{duration_ms},\"stage\":\"{stage}\",\"limit_reached\":{limit_reached},\"input\":{input}}}}}\n"
    )
}

/// `line` and a newline.
fn nl(line: &str) -> String {
    format!("{line}\n")
}

/// A raw-stage line: `raw` as a JSON string, with a newline.
fn raw(raw: &str) -> String {
    nl(&serde_json::to_string(raw).unwrap())
}

/// `rsigma engine tap --addr <daemon> <args...>` in `sandbox`.
fn tap(sandbox: &Sandbox, daemon: &FakeDaemon, args: &[&str]) -> assert_cmd::Command {
    let addr = daemon.addr().to_string();
    let mut all = vec!["engine", "tap", "--addr", &addr];
    all.extend_from_slice(args);
    sandbox.rsigma(&all)
}

/// The fixture path `name` in the sandbox's working directory.
fn fixture(sandbox: &Sandbox, name: &str) -> PathBuf {
    sandbox.cwd.path().join(name)
}

#[test]
fn decoded_capture_to_a_file_keeps_the_summary_out() {
    let daemon = FakeDaemon::always(Reply::ndjson_chunked(vec![
        nl(EVENT_A),
        nl(EVENT_B),
        summary(2, 0, 30_000, "decoded", DEFAULT_INPUT),
    ]));
    let sandbox = Sandbox::new();
    tap(&sandbox, &daemon, &["-o", "fixture.ndjson"])
        .assert()
        .success()
        .stdout("")
        .stderr("Captured 2 events (0 dropped) in 30.0s from the decoded stage.\n");
    let written = std::fs::read_to_string(fixture(&sandbox, "fixture.ndjson")).unwrap();
    assert_eq!(written, format!("{EVENT_A}\n{EVENT_B}\n"));
    assert_eq!(
        daemon.lines(),
        ["GET /api/v1/tap?duration=30s&stage=decoded"]
    );
}

#[test]
fn the_fixture_replays_with_engine_eval() {
    let daemon = FakeDaemon::always(Reply::ndjson_chunked(vec![
        nl(EVENT_A),
        nl(EVENT_B),
        summary(2, 0, 1_000, "decoded", DEFAULT_INPUT),
    ]));
    let sandbox = Sandbox::new();
    tap(&sandbox, &daemon, &["--output", "fixture.ndjson"])
        .assert()
        .success();
    std::fs::write(
        sandbox.cwd.path().join("whoami.yml"),
        "title: Whoami\nlogsource:\n  product: windows\ndetection:\n  selection:\n    Image|endswith: '\\whoami.exe'\n  condition: selection\n",
    )
    .unwrap();
    sandbox
        .rsigma(&[
            "engine",
            "eval",
            "-r",
            "whoami.yml",
            "-e",
            "@fixture.ndjson",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("\"rule_title\":\"Whoami\""))
        .stderr("Processed 2 events, 1 matches.\n");
}

#[test]
fn decoded_capture_to_stdout() {
    let daemon = FakeDaemon::always(Reply::ndjson_chunked(vec![
        // Several lines in one chunk, and a line split across chunks.
        format!("{EVENT_A}\n{}", &EVENT_B[..10]),
        format!("{}\n", &EVENT_B[10..]),
        summary(2, 0, 1_234, "decoded", DEFAULT_INPUT),
    ]));
    let sandbox = Sandbox::new();
    tap(&sandbox, &daemon, &["--duration", "1s"])
        .assert()
        .success()
        .stdout(format!("{EVENT_A}\n{EVENT_B}\n"))
        .stderr("Captured 2 events (0 dropped) in 1.2s from the decoded stage.\n");
}

#[test]
fn quiet_and_no_stats_silence_the_stats_line() {
    let daemon = FakeDaemon::always(Reply::ndjson_chunked(vec![
        nl(EVENT_A),
        summary(1, 0, 1_000, "decoded", DEFAULT_INPUT),
    ]));
    let sandbox = Sandbox::new();
    for flag in ["--quiet", "--no-stats"] {
        tap(&sandbox, &daemon, &[flag, "--duration", "1s"])
            .assert()
            .success()
            .stdout(nl(EVENT_A))
            .stderr("");
    }
}

#[test]
fn raw_capture_writes_the_raw_lines_and_prints_the_replay_hint() {
    let syslog = "<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8";
    let odd = "tab\there \"quoted\" \\ back é ✓";
    let input =
        r#"{"format":"syslog","jq":null,"jsonpath":null,"syslog_tz":"+02:00","input":"http"}"#;
    let daemon = FakeDaemon::always(Reply::ndjson_chunked(vec![
        raw(syslog),
        raw(odd),
        raw("not even json {"),
        summary(3, 0, 10_000, "raw", input),
    ]));
    let sandbox = Sandbox::new();
    tap(&sandbox, &daemon, &["--stage", "raw", "--duration", "10s", "-o", "raw.ndjson"])
        .assert()
        .success()
        .stdout("")
        .stderr(
            "Captured 3 events (0 dropped) in 10.0s from the raw stage.\n\
             Replay with: rsigma engine daemon -r RULES --input stdin --input-format syslog --syslog-tz +02:00 --api-addr 127.0.0.1:0 < raw.ndjson\n",
        );
    let written = std::fs::read_to_string(fixture(&sandbox, "raw.ndjson")).unwrap();
    assert_eq!(written, format!("{syslog}\n{odd}\nnot even json {{\n"));
    assert_eq!(daemon.lines(), ["GET /api/v1/tap?duration=10s&stage=raw"]);
}

#[test]
fn raw_capture_with_default_input_flags_and_a_jq_filter() {
    let sandbox = Sandbox::new();
    let daemon = FakeDaemon::always(Reply::ndjson_chunked(vec![
        raw(r#"{"a":1}"#),
        summary(1, 0, 500, "raw", DEFAULT_INPUT),
    ]));
    tap(&sandbox, &daemon, &["--stage", "raw", "-o", "raw.ndjson"])
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "\nReplay with: rsigma engine daemon -r RULES --input stdin --api-addr 127.0.0.1:0 < raw.ndjson\n",
        ));

    let input = r#"{"format":"json","jq":".event | select(.x)","jsonpath":null,"syslog_tz":"+00:00","input":"stdin"}"#;
    let daemon = FakeDaemon::always(Reply::ndjson_chunked(vec![
        raw(r#"{"event":{"x":1}}"#),
        summary(1, 0, 500, "raw", input),
    ]));
    tap(&sandbox, &daemon, &["--stage", "raw", "-o", "raw.ndjson"])
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "Replay with: rsigma engine daemon -r RULES --input stdin --input-format json --jq '.event | select(.x)' --api-addr 127.0.0.1:0 < raw.ndjson\n",
        ));
}

#[test]
fn raw_capture_to_stdout_prints_no_hint() {
    let daemon = FakeDaemon::always(Reply::ndjson_chunked(vec![
        raw("line one"),
        summary(1, 0, 500, "raw", DEFAULT_INPUT),
    ]));
    let sandbox = Sandbox::new();
    tap(
        &sandbox,
        &daemon,
        &["--stage", "raw", "--duration", "500ms"],
    )
    .assert()
    .success()
    .stdout("line one\n")
    .stderr("Captured 1 events (0 dropped) in 0.5s from the raw stage.\n");
}

#[test]
fn dropped_events_warn_about_gaps() {
    let daemon = FakeDaemon::always(Reply::ndjson_chunked(vec![
        nl(EVENT_A),
        summary(842, 3, 30_000, "decoded", DEFAULT_INPUT),
    ]));
    let sandbox = Sandbox::new();
    tap(&sandbox, &daemon, &["-o", "f.ndjson"])
        .assert()
        .success()
        .stderr(predicate::str::starts_with(
            "Captured 842 events (3 dropped) in 30.0s from the decoded stage.\nwarning: 3 events were dropped",
        ))
        .stderr(predicate::str::contains("the fixture has gaps"));
    // --no-stats keeps the warning, --quiet silences it.
    tap(&sandbox, &daemon, &["-o", "f.ndjson", "--no-stats"])
        .assert()
        .success()
        .stderr(predicate::str::starts_with(
            "warning: 3 events were dropped",
        ));
    tap(&sandbox, &daemon, &["-o", "f.ndjson", "--quiet"])
        .assert()
        .success()
        .stderr("");
}

#[test]
fn limit_reached_and_capped_duration_are_reported() {
    let daemon = FakeDaemon::always(Reply::ndjson_chunked(vec![
        nl(EVENT_A),
        summary_with_limit(1, 0, 2_345, "decoded", true, DEFAULT_INPUT),
    ]));
    let sandbox = Sandbox::new();
    tap(
        &sandbox,
        &daemon,
        &["--limit", "1", "--duration", "1m", "-o", "f.ndjson"],
    )
    .assert()
    .success()
    .stderr("Captured 1 events (0 dropped) in 2.3s from the decoded stage (limit reached).\n");

    // The daemon ended the window early (daemon.tap.max_duration).
    let daemon = FakeDaemon::always(Reply::ndjson_chunked(vec![summary(
        0,
        0,
        300_000,
        "decoded",
        DEFAULT_INPUT,
    )]));
    tap(&sandbox, &daemon, &["--duration", "1h", "-o", "f.ndjson"])
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "warning: the capture ended after 300.0s, before the requested --duration 1h",
        ))
        .stderr(predicate::str::contains("daemon.tap.max_duration"));
}

#[test]
fn error_statuses_are_exit_3_with_the_body_and_leave_no_fixture() {
    for (status, body) in [
        (
            503,
            r#"{"error":"tap disabled: start the daemon with --enable-tap"}"#,
        ),
        (409, r#"{"error":"too many tap sessions (max 4)"}"#),
        (400, r#"{"error":"invalid redact path 'a..b'"}"#),
    ] {
        let daemon = FakeDaemon::always(Reply::json(status, body));
        let sandbox = Sandbox::new();
        tap(&sandbox, &daemon, &["-o", "fixture.ndjson"])
            .assert()
            .code(3)
            .stdout("")
            .stderr(predicate::str::contains(format!(
                "error: the rsigma daemon at http://{}/ answered {status}",
                daemon.addr()
            )))
            .stderr(predicate::str::contains(
                "to GET /api/v1/tap?duration=30s&stage=decoded",
            ))
            .stderr(predicate::str::contains(body));
        assert!(
            !fixture(&sandbox, "fixture.ndjson").exists(),
            "a failed tap must not create the fixture"
        );
    }
}

#[test]
fn a_stream_without_the_summary_is_exit_3() {
    for reply in [
        Reply::ndjson_chunked(vec![nl(EVENT_A), nl(EVENT_B)]),
        Reply::ndjson_until_close(vec![nl(EVENT_A), nl(EVENT_B)]),
    ] {
        let daemon = FakeDaemon::always(reply);
        let sandbox = Sandbox::new();
        tap(&sandbox, &daemon, &["-o", "fixture.ndjson"])
            .assert()
            .code(3)
            .stderr(predicate::str::contains(
                "ended without its summary record after 2 events",
            ))
            .stderr(predicate::str::contains(
                "the fixture 'fixture.ndjson' holds only the 2 events received before that",
            ));
        // What arrived is kept.
        assert_eq!(
            std::fs::read_to_string(fixture(&sandbox, "fixture.ndjson")).unwrap(),
            format!("{EVENT_A}\n{EVENT_B}\n")
        );
    }
}

#[test]
fn a_truncated_chunked_body_is_exit_3() {
    let daemon = FakeDaemon::always(Reply::streamed(
        true,
        Arc::new(|sink: &mut Sink<'_>| {
            sink.send(&nl(EVENT_A));
            sink.send("{\"partial\":");
            sink.abort();
        }),
    ));
    let sandbox = Sandbox::new();
    tap(&sandbox, &daemon, &[])
        .assert()
        .code(3)
        .stdout(nl(EVENT_A))
        .stderr(predicate::str::contains(
            "reading the tap stream from the rsigma daemon",
        ))
        .stderr(predicate::str::contains("failed after 1 events"));
}

#[test]
fn unreadable_lines_are_exit_3() {
    for (stage, lines, expected) in [
        (
            "decoded",
            vec![nl(EVENT_A), nl("<html>oops</html>")],
            "line 2 is not JSON",
        ),
        (
            "raw",
            vec![raw("fine"), nl(r#"{"not":"a string"}"#)],
            "line 2 is not a JSON string",
        ),
    ] {
        let mut pieces = lines;
        pieces.push(summary(2, 0, 1_000, stage, DEFAULT_INPUT));
        let daemon = FakeDaemon::always(Reply::ndjson_chunked(pieces));
        let sandbox = Sandbox::new();
        tap(&sandbox, &daemon, &["--stage", stage])
            .assert()
            .code(3)
            .stderr(predicate::str::contains(format!(
                "error: the rsigma daemon at http://{}/ sent an unreadable tap stream: {expected}",
                daemon.addr()
            )));
    }
}

#[test]
fn the_query_string_carries_every_parameter() {
    let daemon = FakeDaemon::always(Reply::ndjson_chunked(vec![summary(
        0,
        0,
        120_000,
        "raw",
        DEFAULT_INPUT,
    )]));
    let sandbox = Sandbox::new();
    tap(
        &sandbox,
        &daemon,
        &[
            "--duration",
            "2m",
            "--limit",
            "5",
            "--stage",
            "raw",
            "--redact-fields",
            "user.email,src_ip",
        ],
    )
    .assert()
    .success();
    tap(
        &sandbox,
        &daemon,
        &["--duration", "1h 30m", "--redact-fields", "a.0.b , c&d"],
    )
    .assert()
    .success();
    assert_eq!(
        daemon.lines(),
        [
            "GET /api/v1/tap?duration=2m&stage=raw&limit=5&redact_fields=user.email%2Csrc_ip",
            "GET /api/v1/tap?duration=1h+30m&stage=decoded&redact_fields=a.0.b+%2C+c%26d",
        ]
    );
}

#[test]
fn zero_events_is_success_with_an_empty_fixture() {
    let daemon = FakeDaemon::always(Reply::ndjson_chunked(vec![summary(
        0,
        0,
        30_000,
        "decoded",
        DEFAULT_INPUT,
    )]));
    let sandbox = Sandbox::new();
    std::fs::write(fixture(&sandbox, "fixture.ndjson"), "old content\n").unwrap();
    tap(&sandbox, &daemon, &["-o", "fixture.ndjson"])
        .assert()
        .success()
        .stderr("Captured 0 events (0 dropped) in 30.0s from the decoded stage.\n");
    assert_eq!(
        std::fs::read_to_string(fixture(&sandbox, "fixture.ndjson")).unwrap(),
        ""
    );
}

#[test]
fn unreachable_daemon_is_exit_3() {
    let port = closed_port();
    let sandbox = Sandbox::new();
    sandbox
        .rsigma(&[
            "engine",
            "tap",
            "--addr",
            &format!("127.0.0.1:{port}"),
            "-o",
            "fixture.ndjson",
        ])
        .assert()
        .code(3)
        .stdout("")
        .stderr(predicate::str::contains(format!(
            "could not reach the rsigma daemon at http://127.0.0.1:{port}/"
        )));
    assert!(!fixture(&sandbox, "fixture.ndjson").exists());
}

#[test]
fn the_address_comes_from_the_config_file() {
    let daemon = FakeDaemon::always(Reply::ndjson_chunked(vec![summary(
        0,
        0,
        1_000,
        "decoded",
        DEFAULT_INPUT,
    )]));
    let sandbox = Sandbox::new();
    let config = sandbox.cwd.path().join("tap.yaml");
    std::fs::write(
        &config,
        format!("daemon:\n  api:\n    addr: 0.0.0.0:{}\n", daemon.port()),
    )
    .unwrap();
    sandbox
        .rsigma(&["engine", "tap", "-c", config.to_str().unwrap()])
        .assert()
        .success();
    assert_eq!(daemon.lines().len(), 1);
}

#[test]
fn events_reach_the_fixture_as_they_arrive() {
    // The fake daemon sends one event, then waits until it shows up in the
    // fixture before sending the summary. A client that buffered the capture
    // would never let it appear: the daemon then ends the body without a
    // summary and the tap fails.
    let sandbox = Sandbox::new();
    let path = fixture(&sandbox, "live.ndjson");
    let seen = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen_by_daemon = Arc::clone(&seen);
    let daemon = FakeDaemon::always(Reply::streamed(
        true,
        Arc::new(move |sink: &mut Sink<'_>| {
            sink.send(&nl(EVENT_A));
            if wait_for_content(&path, &nl(EVENT_A), Duration::from_secs(10)) {
                seen_by_daemon.store(true, std::sync::atomic::Ordering::SeqCst);
                sink.send(&summary(1, 0, 1_000, "decoded", DEFAULT_INPUT));
            }
        }),
    ));
    tap(&sandbox, &daemon, &["-o", "live.ndjson"])
        .assert()
        .success();
    assert!(seen.load(std::sync::atomic::Ordering::SeqCst));
}

/// Polls `path` until it holds exactly `expected`; false after `limit`.
fn wait_for_content(path: &Path, expected: &str, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if std::fs::read_to_string(path).is_ok_and(|text| text == expected) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn bad_flags_are_usage_errors() {
    let sandbox = Sandbox::new();
    for args in [
        &["engine", "tap", "--duration", "soon"][..],
        &["engine", "tap", "--duration", "0s"],
        &["engine", "tap", "--limit", "0"],
        &["engine", "tap", "--stage", "parsed"],
    ] {
        sandbox
            .rsigma(args)
            .assert()
            .code(3)
            .stdout("")
            .stderr(predicate::str::contains("error:"));
    }
}
