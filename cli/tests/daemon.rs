//! End-to-end tests of `rsigma engine daemon`: each starts the real binary on
//! a free loopback port and checks its behaviour from the outside (stdin and
//! HTTP ingest, sinks and DLQ, health/readiness/metrics/status, hot reload by
//! every trigger, graceful drain, persisted correlation state, startup errors,
//! and the `engine status` / `config reload` clients).
//!
//! Helpers live in `daemon_support`; every wait there is bounded (10 s).

mod common;
mod daemon_support;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tempfile::TempDir;

use common::{expected_sample_detections, json_stream, titles_by_record_id};
use daemon_support::{
    DaemonCommand, documented_rules_digest, install_fixture, is_sha256_hex, multiset, parse_ndjson,
    read_ndjson, rsigma_in, rule_title, write_atomically,
};

/// The metric families the daemon documents.
const DOCUMENTED_METRICS: &[&str] = &[
    "rsigma_events_processed_total",
    "rsigma_parse_errors_total",
    "rsigma_detection_matches_total",
    "rsigma_rules_loaded",
    "rsigma_reloads_total",
    "rsigma_reloads_failed_total",
    "rsigma_queue_depth",
    "rsigma_dlq_events_total",
    "rsigma_event_processing_seconds",
    "rsigma_uptime_seconds",
];

fn tempdir() -> TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

fn sample_rules() -> PathBuf {
    common::sample_rules()
}

fn sample_events() -> PathBuf {
    common::sample_events()
}

fn correlation_rules() -> PathBuf {
    common::fixtures().join("correlation").join("rules")
}

/// `file://<path>`.
fn file_url(path: &Path) -> String {
    format!("file://{}", path.display())
}

/// A rules directory `<dir>/rules` holding the given fixtures of `tests/fixtures/daemon`.
fn rules_dir(dir: &Path, fixtures: &[&str]) -> PathBuf {
    let rules = dir.join("rules");
    fs::create_dir_all(&rules).unwrap();
    for name in fixtures {
        install_fixture(name, &rules.join(name));
    }
    rules
}

/// An event matching only `marker_<marker>.yml`, numbered by `n`.
fn marker_event(marker: &str, n: u64) -> String {
    json!({"Marker": marker, "n": n}).to_string() + "\n"
}

/// What `rsigma engine eval` prints for `events` (with `--include-event`).
fn eval_records(dir: &Path, rules: &Path, events: &Path) -> Vec<Value> {
    let eval = rsigma_in(
        dir,
        &[
            "engine",
            "eval",
            "--include-event",
            "-r",
            rules.to_str().unwrap(),
            "-e",
            &format!("@{}", events.display()),
        ],
    );
    assert_eq!(eval.code, Some(0), "engine eval failed: {}", eval.stderr);
    parse_ndjson(&eval.stdout)
}

/// `(rule_title, event.n)` of marker detections, sorted.
fn marker_hits(records: &[Value]) -> Vec<(String, u64)> {
    let mut hits: Vec<(String, u64)> = records
        .iter()
        .map(|r| {
            (
                rule_title(r).to_owned(),
                r["event"]["n"].as_u64().expect("event.n"),
            )
        })
        .collect();
    hits.sort();
    hits
}

fn hit(title: &str, n: u64) -> (String, u64) {
    (title.to_owned(), n)
}

const ALPHA: &str = "Daemon Test Alpha";
const BETA: &str = "Daemon Test Beta";

// Standard input ────────────────────────────────────────────────────────────

#[test]
fn stdin_input_with_exit_on_eof_drains_at_end_of_input_and_matches_eval() {
    let dir = tempdir();
    let mut daemon = DaemonCommand::new(dir.path())
        .arg("-r")
        .arg(sample_rules())
        .args(["--include-event", "--exit-on-eof"])
        .piped_stdin()
        .start();

    // Without --input http there is no HTTP event source.
    let answer = daemon.post("/api/v1/events", "{\"EventID\": 1}\n");
    assert_eq!(answer.status, 404, "POST /api/v1/events: {}", answer.body);

    let mut stdin = daemon.stdin();
    stdin
        .write_all(&fs::read(sample_events()).unwrap())
        .unwrap();
    drop(stdin);
    let status = daemon.wait_exit();
    assert_eq!(
        status.code(),
        Some(0),
        "end of stdin stops the daemon with --exit-on-eof\n{}",
        daemon.logs()
    );

    let records = parse_ndjson(&daemon.stdout());
    let expected = eval_records(dir.path(), &sample_rules(), &sample_events());
    assert_eq!(multiset(&records), multiset(&expected));
    assert_eq!(titles_by_record_id(&records), expected_sample_detections());
}

// HTTP ingest and fan-out ───────────────────────────────────────────────────

#[test]
fn http_ingest_fans_out_to_file_and_stdout_and_rejects_long_lines() {
    let dir = tempdir();
    let out = dir.path().join("sinks").join("detections.ndjson");
    let mut daemon = DaemonCommand::new(dir.path())
        .arg("-r")
        .arg(sample_rules())
        .args(["--input", "http", "--include-event", "--output", "stdout"])
        .args(["--output", &file_url(&out), "--max-line-bytes", "4096"])
        .start();

    // Blank and whitespace-only lines are not events; CRLF line ends are fine.
    let mut body = String::new();
    for (i, line) in fs::read_to_string(sample_events())
        .unwrap()
        .lines()
        .enumerate()
    {
        body.push_str(line);
        body.push_str(if i % 2 == 0 { "\r\n" } else { "\n" });
        if i % 5 == 0 {
            body.push_str("\n \t \n");
        }
    }
    daemon.post_events(body, 20);

    let expected = eval_records(dir.path(), &sample_rules(), &sample_events());
    assert_eq!(expected.len(), 14);
    let in_file = daemon.wait_records(&out, expected.len());
    assert_eq!(multiset(&in_file), multiset(&expected), "file sink");
    let on_stdout = daemon.wait_for("14 records on stdout", |d| {
        let records = parse_ndjson(&d.stdout());
        (records.len() >= 14).then_some(records)
    });
    assert_eq!(multiset(&on_stdout), multiset(&expected), "stdout sink");

    // Each line of a body stands alone: one over --max-line-bytes and one
    // that is not UTF-8 go to the DLQ, the good lines around them are
    // evaluated, and the answer counts both.
    let whoami = json!({"EventRecordID": 100, "Image": "C:\\Windows\\System32\\whoami.exe"});
    let long = json!({"EventRecordID": 101, "Image": "C:\\Windows\\System32\\whoami.exe",
                      "Padding": "x".repeat(5000)});
    let next = json!({"EventRecordID": 102, "Image": "C:\\Windows\\System32\\whoami.exe"});
    let mut body = format!("{whoami}\n{long}\n").into_bytes();
    body.extend_from_slice(b"{\"EventRecordID\": 103, \"Image\": \"\xff\"}\n");
    body.extend_from_slice(format!("{next}\n").as_bytes());
    let answer = daemon.post("/api/v1/events", body);
    assert_eq!(answer.status, 200, "{}", answer.body);
    let counts = answer.json();
    assert_eq!(
        (&counts["accepted"], &counts["rejected"]),
        (&json!(2), &json!(2)),
        "{counts}"
    );
    assert_eq!(counts["errors"][0]["line"], json!(2), "{counts}");
    assert_eq!(counts["errors"][1]["line"], json!(3), "{counts}");
    let in_file = daemon.wait_records(&out, 16);
    let mut ids: Vec<u64> = in_file
        .iter()
        .filter_map(|r| r["event"]["EventRecordID"].as_u64())
        .filter(|id| *id >= 100)
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        vec![100, 102],
        "the good lines of the body were evaluated"
    );
    // A body whose every line is rejected is an error.
    let answer = daemon.post("/api/v1/events", format!("{long}\n"));
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert_eq!(answer.json()["accepted"], json!(0), "{}", answer.body);
    let status = daemon.status();
    assert_eq!(status["events_processed"], json!(22), "{status}");
    assert_eq!(status["detection_matches"], json!(16), "{status}");
    assert_eq!(status["parse_errors"], json!(3), "{status}");
    daemon.stop();
    assert_eq!(read_ndjson(&out).len(), 16);
    assert_eq!(parse_ndjson(&daemon.stdout()).len(), 16);
}

#[test]
fn the_daemon_keeps_serving_after_the_end_of_stdin() {
    let dir = tempdir();
    let mut daemon = DaemonCommand::new(dir.path())
        .arg("-r")
        .arg(sample_rules())
        .arg("--include-event")
        .piped_stdin()
        .start();
    let mut stdin = daemon.stdin();
    stdin
        .write_all(&fs::read(sample_events()).unwrap())
        .unwrap();
    drop(stdin);
    daemon.wait_processed(20);
    // Well after the end of input, the daemon still runs and answers.
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(!daemon.has_exited(), "{}", daemon.logs());
    assert_eq!(daemon.get("/readyz").status, 200);
    assert!(
        daemon
            .logs()
            .contains("standard input ended; serving until SIGTERM")
    );
    daemon.stop();
    let records = parse_ndjson(&daemon.stdout());
    let expected = eval_records(dir.path(), &sample_rules(), &sample_events());
    assert_eq!(multiset(&records), multiset(&expected));
}

#[test]
fn an_invalid_utf8_line_on_stdin_goes_to_the_dlq_and_the_next_line_is_evaluated() {
    let dir = tempdir();
    let dlq = dir.path().join("dlq.ndjson");
    let mut daemon = DaemonCommand::new(dir.path())
        .arg("-r")
        .arg(sample_rules())
        .args(["--dlq", &file_url(&dlq)])
        .piped_stdin()
        .start();
    let mut stdin = daemon.stdin();
    let whoami = |id: u64| {
        json!({"EventRecordID": id, "Image": "C:\\Windows\\System32\\whoami.exe"}).to_string()
    };
    let mut input = Vec::new();
    input.extend_from_slice(format!("{}\n", whoami(1)).as_bytes());
    input.extend_from_slice(b"{\"Image\": \"bad \xff\xfe byte\"}\n");
    input.extend_from_slice(format!("{}\n", whoami(3)).as_bytes());
    stdin.write_all(&input).unwrap();
    stdin.flush().unwrap();
    daemon.wait_processed(2);
    let letters = daemon.wait_for("the bad line in the DLQ", |_| {
        let letters = read_ndjson(&dlq);
        (!letters.is_empty()).then_some(letters)
    });
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["kind"], json!("parse_error"));
    assert_eq!(
        letters[0]["line"],
        json!("{\"Image\": \"bad \\xff\\xfe byte\"}"),
        "invalid bytes are escaped"
    );
    assert!(
        letters[0]["reason"]
            .as_str()
            .unwrap()
            .contains("not valid UTF-8"),
        "{}",
        letters[0]
    );
    let records = daemon.wait_for("two detections", |d| {
        let records = parse_ndjson(&d.stdout());
        (records.len() >= 2).then_some(records)
    });
    assert_eq!(records.len(), 2, "{records:?}");
    assert_eq!(daemon.status()["parse_errors"], json!(1));
    drop(stdin);
    daemon.stop();
}

#[test]
fn numeric_flags_out_of_range_are_configuration_errors_not_panics() {
    let dir = tempdir();
    for (flag, value) in [
        ("--buffer-size", "18446744073709551615"),
        ("--buffer-size", "0"),
        ("--batch-size", "100000000"),
        ("--workers", "0"),
        ("--drain-timeout", "18446744073709551615"),
        ("--max-line-bytes", "0"),
        ("--state-save-interval", "0"),
        ("--nats-ack-wait", "0"),
    ] {
        let mut command = DaemonCommand::new(dir.path())
            .arg("-r")
            .arg(sample_rules())
            .args([flag, value]);
        if flag == "--state-save-interval" {
            command = command.args(["--state-db", "state.db"]);
        }
        if flag == "--nats-ack-wait" {
            command = command.args(["--input", "nats://127.0.0.1:1/events"]);
        }
        let finished = command.run_to_exit();
        assert_eq!(
            finished.code,
            Some(3),
            "{flag} {value}: {}",
            finished.stderr
        );
        assert!(
            finished.stderr.contains("must be between"),
            "{flag} {value}: {}",
            finished.stderr
        );
    }
}

#[test]
fn tls_flags_are_checked_and_tls_metrics_exported_only_with_tls() {
    let dir = tempdir();
    let finished = DaemonCommand::new(dir.path())
        .arg("-r")
        .arg(sample_rules())
        .args(["--tls-min-version", "1.1"])
        .run_to_exit();
    assert_eq!(finished.code, Some(3), "{}", finished.stderr);
    assert!(
        finished.stderr.contains("invalid TLS version '1.1'"),
        "{}",
        finished.stderr
    );
    let mut plaintext = DaemonCommand::new(dir.path())
        .arg("-r")
        .arg(sample_rules())
        .args(["--input", "http"])
        .start();
    let metrics = plaintext.metrics();
    assert!(metrics.has_family("rsigma_events_processed_total"));
    assert!(
        !metrics.has_family("rsigma_tls_certificate_expiry_seconds")
            && !metrics.has_family("rsigma_tls_active_connections"),
        "a plaintext daemon exports no TLS metric"
    );
    plaintext.stop();
}

#[test]
fn dead_letters_the_dlq_cannot_take_are_counted() {
    if !Path::new("/dev/full").exists() {
        return;
    }
    let dir = tempdir();
    let daemon = DaemonCommand::new(dir.path())
        .arg("-r")
        .arg(sample_rules())
        .args(["--input", "http", "--dlq", "file:///dev/full"])
        .start();
    let answer = daemon.post("/api/v1/events", "{not json\n{\"EventID\": 1}\n");
    assert_eq!(answer.status, 200, "{}", answer.body);
    let mut daemon = daemon;
    daemon.wait_for("a counted DLQ write failure", |d| {
        (d.metrics().get("rsigma_dlq_write_errors_total") >= 1.0).then_some(())
    });
    assert_eq!(daemon.metrics().get("rsigma_dlq_events_total"), 0.0);
    daemon.stop();
}

// Health, readiness, metrics, status, rules ─────────────────────────────────

#[test]
fn health_readiness_metrics_status_and_rules() {
    let dir = tempdir();
    let out = dir.path().join("detections.ndjson");
    let mut daemon = DaemonCommand::new(dir.path())
        .arg("-r")
        .arg(sample_rules())
        .args(["--input", "http", "--output", &file_url(&out)])
        .start();

    let health = daemon.get("/healthz");
    assert_eq!(health.status, 200, "{}", health.body);
    let ready = daemon.get("/readyz");
    assert_eq!(ready.status, 200, "{}", ready.body);

    let before = daemon.metrics();
    for name in DOCUMENTED_METRICS {
        assert!(before.has_family(name), "metric {name} missing: {before:?}");
    }
    assert_eq!(before.get("rsigma_events_processed_total"), 0.0);
    assert_eq!(before.get("rsigma_detection_matches_total"), 0.0);
    assert_eq!(before.get("rsigma_parse_errors_total"), 0.0);
    assert_eq!(before.get("rsigma_dlq_events_total"), 0.0);
    assert_eq!(before.get("rsigma_reloads_total"), 0.0);
    assert_eq!(before.get("rsigma_reloads_failed_total"), 0.0);
    assert_eq!(before.get("rsigma_rules_loaded{kind=\"detection\"}"), 7.0);
    assert_eq!(before.get("rsigma_rules_loaded{kind=\"correlation\"}"), 0.0);
    assert_eq!(before.get("rsigma_event_processing_seconds_count"), 0.0);
    assert!(before.get("rsigma_uptime_seconds") >= 0.0);

    let status = daemon.status();
    assert_eq!(
        status["rules"],
        json!({"detection": 7, "correlation": 0, "filters": 0})
    );
    let hash = status["rules_hash"]
        .as_str()
        .expect("rules_hash")
        .to_owned();
    assert!(is_sha256_hex(&hash), "rules_hash {hash:?}");
    assert_eq!(hash, documented_rules_digest(&sample_rules()));
    assert_eq!(status["ready"], json!(true));
    assert_eq!(status["input"], json!("http"));
    assert_eq!(status["last_reload"], Value::Null);
    assert_eq!(status["events_processed"], json!(0));
    assert_eq!(status["detection_matches"], json!(0));

    daemon.post_events(fs::read(sample_events()).unwrap(), 20);
    daemon.wait_records(&out, 14);
    let after = daemon.wait_for("every event observed in the metrics", |d| {
        let m = d.try_metrics()?;
        (m.get("rsigma_event_processing_seconds_count") >= 20.0).then_some(m)
    });
    assert_eq!(after.get("rsigma_events_processed_total"), 20.0);
    assert_eq!(after.get("rsigma_detection_matches_total"), 14.0);
    assert_eq!(after.get("rsigma_event_processing_seconds_count"), 20.0);
    assert!(after.get("rsigma_event_processing_seconds_sum") > 0.0);
    assert_eq!(after.get("rsigma_parse_errors_total"), 0.0);
    assert_eq!(after.get("rsigma_queue_depth{queue=\"input\"}"), 0.0);

    let status = daemon.status();
    assert_eq!(status["events_processed"], json!(20), "{status}");
    assert_eq!(status["detection_matches"], json!(14), "{status}");
    assert_eq!(status["parse_errors"], json!(0), "{status}");
    assert_eq!(status["rules_hash"], json!(hash));

    let rules = daemon.get("/api/v1/rules");
    assert_eq!(rules.status, 200, "{}", rules.body);
    let rules = rules.json();
    assert_eq!(rules["rules_hash"], json!(hash));
    let listed = rules["rules"].as_array().expect("a rules array");
    assert_eq!(listed.len(), 7, "{rules}");
    let titles: BTreeSet<&str> = listed.iter().map(rule_title_of_summary).collect();
    let expected: BTreeSet<String> = expected_sample_detections()
        .into_values()
        .flatten()
        .collect();
    assert_eq!(
        titles,
        expected.iter().map(String::as_str).collect::<BTreeSet<_>>()
    );
    for rule in listed {
        assert_eq!(rule["kind"], json!("detection"), "{rule}");
        assert!(rule["id"].is_string(), "{rule}");
    }
    daemon.stop();
}

fn rule_title_of_summary(summary: &Value) -> &str {
    summary["title"].as_str().expect("a title")
}

// Hot reload by file change ─────────────────────────────────────────────────

#[test]
fn a_new_rule_file_is_picked_up_by_the_watcher() {
    let dir = tempdir();
    let rules = rules_dir(dir.path(), &["marker_alpha.yml"]);
    let out = dir.path().join("detections.ndjson");
    let mut daemon = DaemonCommand::new(dir.path())
        .arg("-r")
        .arg(&rules)
        .args([
            "--input",
            "http",
            "--include-event",
            "--output",
            &file_url(&out),
        ])
        .start();
    daemon.wait_watching();
    let before = daemon.status();
    assert_eq!(before["rules"]["detection"], json!(1));

    daemon.post_events(marker_event("beta", 1), 1);
    daemon.wait_processed(1);

    install_fixture("marker_beta.yml", &rules.join("marker_beta.yml"));
    let status = daemon.wait_for("the new rule to be loaded", |d| {
        let status = d.try_status()?;
        (status["rules"]["detection"] == json!(2)).then_some(status)
    });
    assert_eq!(status["last_reload"]["trigger"], json!("watch"), "{status}");
    assert_eq!(status["last_reload"]["ok"], json!(true), "{status}");
    assert_eq!(status["ready"], json!(true));
    assert_eq!(
        status["rules_hash"],
        json!(documented_rules_digest(&rules)),
        "{status}"
    );
    assert_ne!(status["rules_hash"], before["rules_hash"]);

    daemon.post_events(marker_event("beta", 2), 1);
    let records = daemon.wait_records(&out, 1);
    assert_eq!(marker_hits(&records), vec![hit(BETA, 2)]);
    assert_eq!(daemon.metrics().get("rsigma_reloads_failed_total"), 0.0);
    daemon.stop();
}

#[test]
fn file_events_over_unchanged_content_are_no_reload() {
    let dir = tempdir();
    let rules = rules_dir(dir.path(), &["marker_alpha.yml"]);
    let mut daemon = DaemonCommand::new(dir.path())
        .arg("-r")
        .arg(&rules)
        .args(["--input", "http", "--output", "stdout"])
        .start();
    daemon.wait_watching();
    // A real change first, so that last_reload is set.
    install_fixture("marker_beta.yml", &rules.join("marker_beta.yml"));
    let reloaded = daemon.wait_for("the new rule to be loaded", |d| {
        let status = d.try_status()?;
        (status["rules"]["detection"] == json!(2)).then_some(status)
    });
    let reloads = daemon.metrics().get("rsigma_reloads_total");

    // What the kubelet does on every volume sync: the same content written
    // again (atomic replace) and its mode changed.
    let file = rules.join("marker_alpha.yml");
    let content = std::fs::read(&file).unwrap();
    write_atomically(&file, &content);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    daemon.wait_for("the unchanged file events to be counted", |d| {
        (d.metrics().get("rsigma_reloads_unchanged_total") >= 1.0).then_some(())
    });
    let status = daemon.status();
    assert_eq!(status["last_reload"], reloaded["last_reload"], "{status}");
    assert_eq!(status["rules_hash"], reloaded["rules_hash"]);
    assert_eq!(daemon.metrics().get("rsigma_reloads_total"), reloads);

    // A change of content still reloads.
    fs::remove_file(rules.join("marker_beta.yml")).unwrap();
    daemon.wait_for("the removed rule to be unloaded", |d| {
        let status = d.try_status()?;
        (status["rules"]["detection"] == json!(1)).then_some(())
    });
    assert!(daemon.metrics().get("rsigma_reloads_total") > reloads);
    daemon.stop();
}

// Failed reloads, by every trigger; expected_hash ───────────────────────────

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Signal,
    Api,
    Watch,
}

impl Trigger {
    /// The `last_reload.trigger` of a reload it caused.
    fn name(self) -> &'static str {
        match self {
            Trigger::Signal => "signal",
            Trigger::Api => "api",
            Trigger::Watch => "watch",
        }
    }
}

/// A rule set that breaks and is then fixed, reloading by `trigger`: the
/// failed reload keeps the previous rules active and the daemon unready; the
/// fix makes it ready with the new rules.
fn failed_reload_keeps_the_previous_rules(trigger: Trigger) {
    let dir = tempdir();
    let rules = rules_dir(dir.path(), &["marker_alpha.yml"]);
    let out = dir.path().join("detections.ndjson");
    let mut command = DaemonCommand::new(dir.path()).arg("-r").arg(&rules).args([
        "--input",
        "http",
        "--include-event",
        "--output",
        &file_url(&out),
    ]);
    if trigger != Trigger::Watch {
        command = command.arg("--no-watch");
    }
    let mut daemon = command.start();
    if trigger == Trigger::Watch {
        daemon.wait_watching();
    }
    let fire = |daemon: &mut daemon_support::Daemon, hash: &Value| match trigger {
        Trigger::Signal => daemon.signal("HUP"),
        Trigger::Api => {
            let answer = daemon.post("/api/v1/reload", "");
            assert_eq!(answer.status, 202, "POST /api/v1/reload: {}", answer.body);
            assert_eq!(
                answer.json(),
                json!({"status": "accepted", "rules_hash": hash})
            );
        }
        Trigger::Watch => {}
    };

    daemon.post_events(marker_event("alpha", 1), 1);
    daemon.wait_records(&out, 1);
    let metrics = daemon.metrics();
    let (reloads, failed) = (
        metrics.get("rsigma_reloads_total"),
        metrics.get("rsigma_reloads_failed_total"),
    );
    let initial = daemon.status();
    let old_hash = initial["rules_hash"].clone();

    // Break the rule set.
    let extra = rules.join("extra_rule.yml");
    install_fixture("broken.yml", &extra);
    fire(&mut daemon, &old_hash);
    let last = daemon.wait_reload_after(&initial["last_reload"]);
    assert_eq!(last["ok"], json!(false), "{last}");
    assert_eq!(last["trigger"], json!(trigger.name()), "{last}");
    let error = last["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("extra_rule.yml"),
        "the error names the file: {last}"
    );
    let ready = daemon.get("/readyz");
    assert_eq!(
        ready.status, 503,
        "readyz after a failed reload: {}",
        ready.body
    );
    assert_eq!(daemon.get("/healthz").status, 200);
    let metrics = daemon.metrics();
    assert_eq!(metrics.get("rsigma_reloads_total"), reloads + 1.0);
    assert_eq!(metrics.get("rsigma_reloads_failed_total"), failed + 1.0);
    let status = daemon.status();
    assert_eq!(status["ready"], json!(false), "{status}");
    assert_eq!(status["rules"]["detection"], json!(1), "{status}");
    assert_eq!(status["rules_hash"], old_hash, "the old rules stay active");

    // The old rules still match.
    daemon.post_events(marker_event("alpha", 2), 1);
    let records = daemon.wait_records(&out, 2);
    assert_eq!(marker_hits(&records), vec![hit(ALPHA, 1), hit(ALPHA, 2)]);

    // Fix it: the same file now holds a valid rule.
    install_fixture("marker_beta.yml", &extra);
    fire(&mut daemon, &old_hash);
    let last = daemon.wait_reload_after(&last);
    assert_eq!(last["ok"], json!(true), "{last}");
    assert_eq!(last["error"], Value::Null, "{last}");
    assert_eq!(last["trigger"], json!(trigger.name()), "{last}");
    let ready = daemon.get("/readyz");
    assert_eq!(ready.status, 200, "readyz after the fix: {}", ready.body);
    let status = daemon.status();
    assert_eq!(status["ready"], json!(true), "{status}");
    assert_eq!(status["rules"]["detection"], json!(2), "{status}");
    assert_eq!(status["rules_hash"], json!(documented_rules_digest(&rules)));
    let metrics = daemon.metrics();
    assert_eq!(metrics.get("rsigma_reloads_total"), reloads + 2.0);
    assert_eq!(metrics.get("rsigma_reloads_failed_total"), failed + 1.0);

    daemon.post_events(marker_event("beta", 3) + &marker_event("alpha", 4), 2);
    let records = daemon.wait_records(&out, 4);
    assert_eq!(
        marker_hits(&records),
        vec![hit(ALPHA, 1), hit(ALPHA, 2), hit(ALPHA, 4), hit(BETA, 3)]
    );
    daemon.stop();
}

#[test]
fn failed_reload_by_sighup_keeps_the_previous_rules() {
    failed_reload_keeps_the_previous_rules(Trigger::Signal);
}

#[test]
fn failed_reload_by_api_keeps_the_previous_rules() {
    failed_reload_keeps_the_previous_rules(Trigger::Api);
}

#[test]
fn failed_reload_by_file_change_keeps_the_previous_rules() {
    failed_reload_keeps_the_previous_rules(Trigger::Watch);
}

#[test]
fn reload_with_expected_hash_refuses_stale_files() {
    let dir = tempdir();
    let rules = rules_dir(dir.path(), &["marker_alpha.yml"]);
    let mut daemon = DaemonCommand::new(dir.path())
        .arg("-r")
        .arg(&rules)
        .args(["--input", "http", "--no-watch", "--output", "stdout"])
        .start();
    let h0 = daemon.status()["rules_hash"]
        .as_str()
        .expect("rules_hash")
        .to_owned();
    assert_eq!(h0, documented_rules_digest(&rules));

    let wrong = "0".repeat(64);
    let answer = daemon.post(&format!("/api/v1/reload?expected_hash={wrong}"), "");
    assert_eq!(answer.status, 409, "{}", answer.body);
    assert_eq!(
        answer.json(),
        json!({"status": "stale", "expected_hash": wrong, "disk_hash": h0})
    );

    // New files on disk: the loaded hash is now stale too.
    install_fixture("marker_beta.yml", &rules.join("marker_beta.yml"));
    let h1 = documented_rules_digest(&rules);
    assert_ne!(h0, h1);
    let answer = daemon.post(&format!("/api/v1/reload?expected_hash={h0}"), "");
    assert_eq!(answer.status, 409, "{}", answer.body);
    assert_eq!(answer.json()["disk_hash"], json!(h1), "{}", answer.body);

    let answer = daemon.post(&format!("/api/v1/reload?expected_hash={h1}"), "");
    assert_eq!(answer.status, 202, "{}", answer.body);
    assert_eq!(answer.json()["status"], json!("accepted"));
    let last = daemon.wait_reload_after(&Value::Null);
    assert_eq!(last["ok"], json!(true), "{last}");
    assert_eq!(last["trigger"], json!("api"), "{last}");
    let status = daemon.status();
    assert_eq!(status["rules_hash"], json!(h1), "{status}");
    assert_eq!(status["rules"]["detection"], json!(2), "{status}");
    // The two 409s did not reload.
    assert_eq!(daemon.metrics().get("rsigma_reloads_total"), 1.0);
    daemon.stop();
}

// Graceful drain ────────────────────────────────────────────────────────────

#[test]
fn sigterm_drains_every_accepted_event() {
    const LINES: u64 = 20_000;
    let dir = tempdir();
    let out = dir.path().join("detections.ndjson");
    let mut daemon = DaemonCommand::new(dir.path())
        .arg("-r")
        .arg(sample_rules())
        .args(["--input", "http", "--buffer-size", "50000"])
        .args(["--drain-timeout", "30", "--include-event"])
        .args(["--output", &file_url(&out)])
        .start();

    // Every fourth line runs whoami.exe (one detection); the others run
    // notepad.exe, which no sample rule matches.
    let mut body = String::new();
    let mut expected = BTreeSet::new();
    for seq in 0..LINES {
        let image = if seq % 4 == 0 {
            expected.insert(seq);
            "C:\\Windows\\System32\\whoami.exe"
        } else {
            "C:\\Windows\\System32\\notepad.exe"
        };
        body.push_str(&json!({"EventID": 1, "Image": image, "seq": seq}).to_string());
        body.push('\n');
    }
    daemon.post_events(body, LINES);
    daemon.signal("TERM");
    let status = daemon.wait_exit();
    assert_eq!(status.code(), Some(0), "{}", daemon.logs());

    let records = read_ndjson(&out);
    assert_eq!(records.len(), expected.len(), "every detection was written");
    let mut seen = BTreeSet::new();
    for record in &records {
        assert_eq!(rule_title(record), "Whoami Execution", "{record}");
        let seq = record["event"]["seq"].as_u64().expect("event.seq");
        assert!(seen.insert(seq), "event {seq} detected twice");
    }
    assert_eq!(seen, expected);
    assert!(
        !daemon.stderr().contains("drain timed out"),
        "{}",
        daemon.logs()
    );
}

// Correlation state across restarts ─────────────────────────────────────────

fn failed_logon(second: u32) -> String {
    json!({"EventID": 4625, "TargetUserName": "alice", "IpAddress": "10.0.0.5",
           "@timestamp": format!("2024-05-14T08:00:{second:02}Z")})
    .to_string()
        + "\n"
}

/// Two failed logons for alice (threshold 3), a restart with the same state
/// database, a third: the correlation fires unless the state was cleared.
fn correlation_after_restart(clear_state: bool) -> (Vec<Value>, Value) {
    let dir = tempdir();
    let db = dir.path().join("state.db");
    let first_out = dir.path().join("first.ndjson");
    let second_out = dir.path().join("second.ndjson");
    let command = |out: &Path| {
        DaemonCommand::new(dir.path())
            .arg("-r")
            .arg(correlation_rules())
            .args(["--input", "http", "--state-db"])
            .arg(&db)
            .args(["--output", &file_url(out)])
    };

    let mut daemon = command(&first_out).start();
    daemon.post_events(failed_logon(0) + &failed_logon(10), 2);
    let records = daemon.wait_records(&first_out, 2);
    assert!(records.iter().all(|r| rule_title(r) == "Failed logon"));
    assert_eq!(daemon.status()["correlation_matches"], json!(0));
    daemon.stop();
    assert!(db.exists(), "the state database was written");

    let mut second = command(&second_out);
    if clear_state {
        second = second.arg("--clear-state");
    }
    let mut daemon = second.start();
    daemon.post_events(failed_logon(20), 1);
    // The correlation match is written together with the detection that fires it.
    daemon.wait_records(&second_out, 1);
    let status = daemon.status();
    daemon.stop();
    (read_ndjson(&second_out), status)
}

#[test]
fn correlation_state_survives_a_restart() {
    let (records, status) = correlation_after_restart(false);
    let titles: Vec<&str> = records.iter().map(rule_title).collect();
    assert_eq!(
        titles,
        vec!["Failed logon", "Brute force against one account"],
        "{records:?}"
    );
    assert_eq!(
        records[1]["group_key"],
        json!([["TargetUserName", "alice"]])
    );
    assert_eq!(records[1]["aggregated_value"], json!(3.0));
    assert_eq!(status["correlation_matches"], json!(1), "{status}");
}

#[test]
fn clear_state_discards_the_stored_correlation_state() {
    let (records, status) = correlation_after_restart(true);
    let titles: Vec<&str> = records.iter().map(rule_title).collect();
    assert_eq!(titles, vec!["Failed logon"], "{records:?}");
    assert_eq!(status["correlation_matches"], json!(0), "{status}");
}

// Dead-letter queue ─────────────────────────────────────────────────────────

#[test]
fn undecodable_lines_go_to_the_dead_letter_queue() {
    let dir = tempdir();
    let out = dir.path().join("detections.ndjson");
    let dlq = dir.path().join("dlq.ndjson");
    let mut daemon = DaemonCommand::new(dir.path())
        .arg("-r")
        .arg(sample_rules())
        .args([
            "--input",
            "http",
            "--input-format",
            "json",
            "--include-event",
        ])
        .args(["--output", &file_url(&out), "--dlq", &file_url(&dlq)])
        .start();

    let not_json = "this is not json";
    let array = r#"["not", "an", "object"]"#;
    let truncated = r#"{"EventID": 1, "Image": "#;
    let good = [
        json!({"EventRecordID": 1, "Image": "C:\\Windows\\System32\\whoami.exe"}),
        json!({"EventRecordID": 2, "Image": "C:\\Windows\\System32\\notepad.exe"}),
    ];
    let body = format!(
        "{}\n{not_json}\n{array}\n{truncated}\n{}\n",
        good[0], good[1]
    );
    daemon.post_events(body, 5);

    let letters = daemon.wait_records(&dlq, 3);
    assert_eq!(letters.len(), 3, "{letters:?}");
    let mut lines = Vec::new();
    for letter in &letters {
        assert_eq!(letter["kind"], json!("parse_error"), "{letter}");
        assert!(
            letter["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{letter}"
        );
        assert!(letter["time"].is_string(), "{letter}");
        lines.push(letter["line"].as_str().expect("the line").to_owned());
        if letter["line"] == json!(array) {
            assert!(
                letter["reason"]
                    .as_str()
                    .unwrap()
                    .contains("not a JSON object"),
                "{letter}"
            );
        }
    }
    lines.sort();
    let mut expected = vec![not_json.to_owned(), array.to_owned(), truncated.to_owned()];
    expected.sort();
    assert_eq!(lines, expected);

    let metrics = daemon.wait_for("the DLQ metrics", |d| {
        let m = d.try_metrics()?;
        (m.get("rsigma_dlq_events_total") >= 3.0 && m.get("rsigma_events_processed_total") >= 2.0)
            .then_some(m)
    });
    assert_eq!(metrics.get("rsigma_parse_errors_total"), 3.0);
    assert_eq!(metrics.get("rsigma_dlq_events_total"), 3.0);
    assert_eq!(metrics.get("rsigma_events_processed_total"), 2.0);

    let records = daemon.wait_records(&out, 1);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(rule_title(&records[0]), "Whoami Execution");
    assert_eq!(records[0]["event"]["EventRecordID"], json!(1));
    assert_eq!(daemon.status()["parse_errors"], json!(3));
    daemon.stop();
}

// logfmt and CEF input ─────────────────────────────────────────────────────

const LOGFMT_RULE: &str = r#"
title: Expired token logfmt
id: 0b3f7a59-7c1e-4a55-9f0e-3c7f4a6d1a01
logsource: {product: custom}
detection:
    selection:
        level: warn
        msg|contains: token expired
    condition: selection
level: medium
"#;

const CEF_RULE: &str = r#"
title: Blocked by threat manager CEF
id: 0b3f7a59-7c1e-4a55-9f0e-3c7f4a6d1a02
logsource: {product: custom}
detection:
    selection:
        cef.device_product: threatmanager
        act|startswith: blocked
        spt|gt: 1000
    condition: selection
level: high
"#;

fn logfmt_and_cef_rules(dir: &Path) -> PathBuf {
    let rules = dir.join("rules");
    fs::create_dir_all(&rules).unwrap();
    fs::write(rules.join("logfmt.yml"), LOGFMT_RULE).unwrap();
    fs::write(rules.join("cef.yml"), CEF_RULE).unwrap();
    rules
}

#[test]
fn auto_input_decodes_logfmt_and_cef_and_sends_broken_cef_to_the_dlq() {
    let dir = tempdir();
    let out = dir.path().join("detections.ndjson");
    let dlq = dir.path().join("dlq.ndjson");
    let mut daemon = DaemonCommand::new(dir.path())
        .arg("-r")
        .arg(logfmt_and_cef_rules(dir.path()))
        .args(["--input", "http", "--include-event"])
        .args(["--output", &file_url(&out), "--dlq", &file_url(&dlq)])
        .start();
    let lines = [
        r#"ts=2024-05-14T08:00:00Z level=warn msg="token expired for \"bob\"" user=bob"#,
        // Not only pairs: plain text, which the logfmt rule cannot match.
        "level=warn msg=token expired",
        r"<134>Sep 19 08:26:10 fw01 CEF:0|Security|threatmanager|1.0|100|detected a \| in message|10|src=10.0.0.1 spt=1232 act=blocked a \= sign",
        "CEF:0|Security|threatmanager|1.0|100|low port|10|spt=80 act=blocked",
        "CEF:0|Security|threatmanager",
    ];
    daemon.post_events(lines.join("\n") + "\n", 5);

    let records = daemon.wait_records(&out, 2);
    let mut by_title: Vec<(&str, &Value)> = records
        .iter()
        .map(|r| (rule_title(r), &r["event"]))
        .collect();
    by_title.sort_by_key(|(title, _)| *title);
    assert_eq!(by_title.len(), 2, "{records:?}");
    let (title, cef) = by_title[0];
    assert_eq!(title, "Blocked by threat manager CEF");
    assert_eq!(cef["cef"]["name"], "detected a | in message");
    assert_eq!(cef["act"], "blocked a = sign");
    assert_eq!(cef["syslog"]["hostname"], "fw01");
    let (title, logfmt) = by_title[1];
    assert_eq!(title, "Expired token logfmt");
    assert_eq!(
        logfmt,
        &json!({"ts": "2024-05-14T08:00:00Z", "level": "warn", "msg": "token expired for \"bob\"", "user": "bob"})
    );

    let letters = daemon.wait_records(&dlq, 1);
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["line"], lines[4]);
    assert_eq!(
        letters[0]["reason"],
        "not CEF: the header has fewer than its 7 |-separated fields"
    );
    let metrics = daemon.wait_for("every line counted", |d| {
        let m = d.try_metrics()?;
        (m.get("rsigma_events_processed_total") >= 4.0).then_some(m)
    });
    assert_eq!(metrics.get("rsigma_parse_errors_total"), 1.0);
    daemon.stop();
}

#[test]
fn explicit_logfmt_input_takes_bare_keys_and_dead_letters_broken_lines() {
    let dir = tempdir();
    let out = dir.path().join("detections.ndjson");
    let dlq = dir.path().join("dlq.ndjson");
    let mut daemon = DaemonCommand::new(dir.path())
        .arg("-r")
        .arg(logfmt_and_cef_rules(dir.path()))
        .args([
            "--input",
            "http",
            "--input-format",
            "logfmt",
            "--include-event",
        ])
        .args(["--output", &file_url(&out), "--dlq", &file_url(&dlq)])
        .start();
    let broken = r#"level=warn msg="token expired"#;
    daemon.post_events(
        format!("level=warn audit msg=\"token expired\"\n{broken}\n"),
        2,
    );
    let records = daemon.wait_records(&out, 1);
    assert_eq!(rule_title(&records[0]), "Expired token logfmt");
    assert_eq!(records[0]["event"]["audit"], json!(true));
    let letters = daemon.wait_records(&dlq, 1);
    assert_eq!(letters[0]["line"], broken);
    assert_eq!(
        letters[0]["reason"],
        "not logfmt: an unterminated quoted value"
    );
    daemon.stop();
}

// Startup errors ────────────────────────────────────────────────────────────

/// Runs the daemon expecting it to fail at startup with `code` and a message
/// on stderr containing every one of `needles`; nothing goes to stdout.
fn assert_startup_error(dir: &Path, args: &[&str], code: i32, needles: &[&str]) {
    let mut command = DaemonCommand::new(dir).args(args);
    if args.contains(&"--api-addr") {
        command = command.listen_on(None);
    }
    let finished = command.run_to_exit();
    assert_eq!(
        finished.code,
        Some(code),
        "{args:?}: exit code\n{}",
        finished.stderr
    );
    for needle in needles {
        assert!(
            finished.stderr.contains(needle),
            "{args:?}: stderr should mention {needle:?}:\n{}",
            finished.stderr
        );
    }
    assert_eq!(finished.stdout, "", "{args:?}: nothing on stdout");
}

#[test]
fn startup_errors_exit_with_the_documented_codes() {
    let dir = tempdir();
    let sample = sample_rules();
    let sample = sample.to_str().unwrap();
    let missing = dir.path().join("no-such-rules");
    let broken = rules_dir(dir.path(), &["marker_alpha.yml"]);
    install_fixture("broken.yml", &broken.join("broken.yml"));
    let public = format!("0.0.0.0:{}", common::free_port());

    // Exit 2: the rules cannot be read or loaded.
    assert_startup_error(
        dir.path(),
        &["-r", missing.to_str().unwrap()],
        2,
        &["no-such-rules"],
    );
    assert_startup_error(
        dir.path(),
        &["-r", broken.to_str().unwrap()],
        2,
        &["broken.yml"],
    );

    // Exit 3: configuration errors.
    assert_startup_error(
        dir.path(),
        &["-r", sample, "--input", "kafka://broker:9092/events"],
        3,
        &["--input", "kafka://broker:9092/events"],
    );
    assert_startup_error(
        dir.path(),
        &["-r", sample, "--output", "ftp://host/detections"],
        3,
        &["ftp://host/detections"],
    );
    assert_startup_error(
        dir.path(),
        &["-r", sample, "--dlq", "ftp://host/dlq"],
        3,
        &["--dlq", "ftp://host/dlq"],
    );
    assert_startup_error(
        dir.path(),
        &["-r", sample, "--jq", ".event", "--jsonpath", "$.event"],
        3,
        &["--jq", "--jsonpath"],
    );
    assert_startup_error(
        dir.path(),
        &["-r", sample, "-p", "no_such_pipeline"],
        3,
        &["no_such_pipeline"],
    );
    assert_startup_error(
        dir.path(),
        &[
            "-r",
            sample,
            "-p",
            daemon_fixture_str("pipeline_broken.yml").as_str(),
        ],
        3,
        &["pipeline_broken.yml", "no_such_transformation"],
    );
    assert_startup_error(
        dir.path(),
        &["-r", sample, "--api-addr", &public],
        3,
        &["--allow-plaintext", &public],
    );
    for (flags, needle) in [
        (&["--input-format", "xml"][..], "--input-format"),
        (&["--syslog-tz", "+0200"], "--syslog-tz"),
        (&["--jq", ".["], "--jq"),
        (&["--suppress", "soon"], "--suppress"),
        (&["--action", "explode"], "--action"),
        (&["--buffer-size", "0"], "--buffer-size"),
        (
            &["--state-db", "state.db", "--clear-state", "--keep-state"],
            "--keep-state",
        ),
    ] {
        let mut args = vec!["-r", sample];
        args.extend_from_slice(flags);
        assert_startup_error(dir.path(), &args, 3, &[needle]);
    }
}

fn daemon_fixture_str(name: &str) -> String {
    daemon_support::daemon_fixture(name)
        .to_str()
        .unwrap()
        .to_owned()
}

#[test]
fn allow_plaintext_permits_a_wildcard_address_and_sigint_stops() {
    let dir = tempdir();
    let mut daemon = DaemonCommand::new(dir.path())
        .arg("-r")
        .arg(sample_rules())
        .args(["--input", "http", "--allow-plaintext"])
        .listen_on(Some("0.0.0.0"))
        .start();
    assert_eq!(daemon.status()["ready"], json!(true));
    daemon.signal("INT");
    let status = daemon.wait_exit();
    assert_eq!(
        status.code(),
        Some(0),
        "SIGINT drains and exits 0\n{}",
        daemon.logs()
    );
}

// The status and reload clients ─────────────────────────────────────────────

#[test]
fn status_and_reload_clients_talk_to_the_running_daemon() {
    let dir = tempdir();
    let rules = rules_dir(dir.path(), &["marker_alpha.yml"]);
    let mut daemon = DaemonCommand::new(dir.path())
        .arg("-r")
        .arg(&rules)
        .args(["--input", "http", "--no-watch", "--output", "stdout"])
        .start();
    let addr = daemon.addr();
    let hash = daemon.status()["rules_hash"].clone();

    let status = rsigma_in(dir.path(), &["engine", "status", "--addr", &addr]);
    assert_eq!(status.code, Some(0), "{}", status.stderr);
    let shown: Value = serde_json::from_str(&status.stdout).expect("status prints JSON");
    assert_eq!(shown["rules_hash"], hash);
    assert_eq!(shown["rules"]["detection"], json!(1));
    assert_eq!(shown["input"], json!("http"));
    assert_eq!(shown["ready"], json!(true));

    let reload = rsigma_in(
        dir.path(),
        &[
            "config",
            "reload",
            "--addr",
            &addr,
            "--wait",
            "--timeout",
            "10s",
        ],
    );
    assert_eq!(reload.code, Some(0), "{}", reload.stderr);
    let documents = json_stream(reload.stdout.as_bytes());
    assert_eq!(documents.len(), 2, "{}", reload.stdout);
    assert_eq!(
        documents[0],
        json!({"status": "accepted", "rules_hash": hash})
    );
    assert_eq!(documents[1]["ok"], json!(true), "{}", documents[1]);
    assert_eq!(documents[1]["trigger"], json!("api"), "{}", documents[1]);

    let stale = rsigma_in(
        dir.path(),
        &[
            "config",
            "reload",
            "--addr",
            &addr,
            "--expected-hash",
            &"0".repeat(64),
        ],
    );
    assert_eq!(stale.code, Some(3), "{}", stale.stderr);
    assert!(stale.stderr.contains("409"), "{}", stale.stderr);
    assert!(
        stale.stderr.contains(hash.as_str().unwrap()),
        "{}",
        stale.stderr
    );

    daemon.stop();
    for args in [
        &["engine", "status", "--addr", &addr][..],
        &["config", "reload", "--addr", &addr][..],
    ] {
        let finished = rsigma_in(dir.path(), args);
        assert_eq!(finished.code, Some(3), "{args:?}: {}", finished.stderr);
        assert!(
            finished.stderr.contains("could not reach"),
            "{args:?}: {}",
            finished.stderr
        );
        assert_eq!(finished.stdout, "", "{args:?}");
    }
}

// Pipelines, correlation state across reloads, sink failures ───────────────

#[test]
fn pipeline_changes_are_hot_reloaded_and_a_broken_pipeline_keeps_the_old_one() {
    let dir = tempdir();
    let rules = rules_dir(dir.path(), &["marker_alpha.yml"]);
    let pipelines = dir.path().join("pipelines");
    fs::create_dir_all(&pipelines).unwrap();
    let site = pipelines.join("site.yml");
    install_fixture("pipeline_tag.yml", &site);
    let out = dir.path().join("detections.ndjson");
    let mut daemon = DaemonCommand::new(dir.path())
        .arg("-r")
        .arg(&rules)
        .arg("-p")
        .arg(&site)
        .args([
            "--input",
            "http",
            "--include-event",
            "--output",
            &file_url(&out),
        ])
        .start();
    daemon.wait_watching();
    let event = |field: &str, n: u64| json!({field: "alpha", "n": n}).to_string() + "\n";

    // The pipeline renamed the rule's field Marker to tag.
    daemon.post_events(event("Marker", 1) + &event("tag", 2), 2);
    daemon.wait_records(&out, 1);

    install_fixture("pipeline_broken.yml", &site);
    let last = daemon.wait_reload_after(&Value::Null);
    assert_eq!(last["ok"], json!(false), "{last}");
    assert_eq!(last["trigger"], json!("watch"), "{last}");
    assert!(
        last["error"]
            .as_str()
            .is_some_and(|e| e.contains("site.yml")),
        "{last}"
    );
    assert_eq!(daemon.get("/readyz").status, 503);
    daemon.post_events(event("tag", 3), 1);
    daemon.wait_records(&out, 2);

    install_fixture("pipeline_label.yml", &site);
    let last = daemon.wait_reload_after(&last);
    assert_eq!(last["ok"], json!(true), "{last}");
    assert_eq!(daemon.get("/readyz").status, 200);
    daemon.post_events(event("tag", 4) + &event("label", 5), 2);
    let records = daemon.wait_records(&out, 3);
    daemon.stop();
    assert_eq!(
        marker_hits(&records),
        vec![hit(ALPHA, 2), hit(ALPHA, 3), hit(ALPHA, 5)]
    );
}

#[test]
fn correlation_state_survives_a_reload_and_no_detections_hides_base_rules() {
    let dir = tempdir();
    let rules = dir.path().join("rules");
    fs::create_dir_all(&rules).unwrap();
    for entry in fs::read_dir(correlation_rules()).unwrap() {
        let path = entry.unwrap().path();
        fs::copy(&path, rules.join(path.file_name().unwrap())).unwrap();
    }
    let out = dir.path().join("detections.ndjson");
    let mut daemon = DaemonCommand::new(dir.path())
        .arg("-r")
        .arg(&rules)
        .args(["--input", "http", "--no-watch", "--no-detections"])
        .args(["--output", &file_url(&out)])
        .start();
    daemon.post_events(failed_logon(0) + &failed_logon(10), 2);
    daemon.wait_processed(2);

    // A reload (another rule added) keeps the windows of unchanged correlations.
    install_fixture("marker_alpha.yml", &rules.join("marker_alpha.yml"));
    let answer = daemon.post("/api/v1/reload", "");
    assert_eq!(answer.status, 202, "{}", answer.body);
    let last = daemon.wait_reload_after(&Value::Null);
    assert_eq!(last["ok"], json!(true), "{last}");
    assert_eq!(daemon.status()["rules"]["detection"], json!(2));

    daemon.post_events(failed_logon(20), 1);
    daemon.wait_records(&out, 1);
    daemon.stop();
    let records = read_ndjson(&out);
    let titles: Vec<&str> = records.iter().map(rule_title).collect();
    assert_eq!(
        titles,
        vec!["Brute force against one account"],
        "only the correlation is written with --no-detections: {records:?}"
    );
    assert_eq!(records[0]["aggregated_value"], json!(3.0));
}

#[test]

fn records_a_sink_cannot_take_go_to_the_dead_letter_queue() {
    // /dev/full accepts open() and fails every write with ENOSPC.
    if !Path::new("/dev/full").exists() {
        return;
    }
    let dir = tempdir();
    let good = dir.path().join("detections.ndjson");
    let dlq = dir.path().join("dlq.ndjson");
    let mut daemon = DaemonCommand::new(dir.path())
        .arg("-r")
        .arg(sample_rules())
        .args(["--input", "http", "--include-event"])
        .args(["--output", "file:///dev/full", "--output", &file_url(&good)])
        .args(["--dlq", &file_url(&dlq)])
        .start();
    daemon.post_events(fs::read(sample_events()).unwrap(), 20);
    let expected = eval_records(dir.path(), &sample_rules(), &sample_events());

    // The healthy sink of the fan-out gets everything.
    let delivered = daemon.wait_records(&good, expected.len());
    assert_eq!(multiset(&delivered), multiset(&expected));

    // The failing one's records end up in the DLQ as delivery errors.
    let undelivered = daemon.wait_for("every undelivered record in the DLQ", |_| {
        let mut records = Vec::new();
        for letter in read_ndjson(&dlq) {
            assert_eq!(letter["kind"], json!("delivery_error"), "{letter}");
            assert_eq!(letter["sink"], json!("file:///dev/full"), "{letter}");
            records.extend(parse_ndjson(letter["records"].as_str().unwrap_or_default()));
        }
        (records.len() >= expected.len()).then_some(records)
    });
    assert_eq!(multiset(&undelivered), multiset(&expected));
    assert!(
        daemon
            .metrics()
            .get("rsigma_sink_errors_total{sink=\"file:///dev/full\",type=\"file\"}")
            >= 1.0
    );
    daemon.stop();
}

#[test]

fn sigterm_stops_a_daemon_whose_stdin_is_still_open() {
    let dir = tempdir();
    let mut daemon = DaemonCommand::new(dir.path())
        .arg("-r")
        .arg(sample_rules())
        .piped_stdin()
        .start();
    // Like `tail -f events | rsigma engine daemon`: stdin stays open.
    let mut stdin = daemon.stdin();
    let events = fs::read_to_string(sample_events()).unwrap();
    let first: String = events.lines().take(3).map(|l| format!("{l}\n")).collect();
    stdin.write_all(first.as_bytes()).unwrap();
    stdin.flush().unwrap();
    daemon.wait_processed(3);
    daemon.signal("TERM");
    let status = daemon.wait_exit();
    drop(stdin);
    assert_eq!(status.code(), Some(0), "{}", daemon.logs());
    let records = parse_ndjson(&daemon.stdout());
    assert_eq!(
        records.len(),
        2,
        "events 1 and 2 run whoami.exe: {records:?}"
    );
}

// Readiness vs. signal handling ─────────────────────────────────────────────

#[test]

fn signals_sent_as_soon_as_the_daemon_is_ready_are_handled() {
    // Readiness promises a running daemon: a reload signal or a shutdown
    // request sent the moment /readyz says 200 must be handled, not fatal
    // (the default action terminates: exit status 129 or 143). Restoring a
    // large correlation state happens after readiness, so a stored state of
    // 20,000 groups makes the window wide enough to hit every time.
    let dir = tempdir();
    let db = dir.path().join("state.db");
    let command = DaemonCommand::new(dir.path())
        .arg("-r")
        .arg(correlation_rules())
        .args(["--input", "http", "--no-watch", "--state-db"])
        .arg(&db)
        .args(["--output", &file_url(&dir.path().join("out.ndjson"))]);
    let mut daemon = command.start();
    let users = 20_000;
    let body: String = (0..users)
        .map(|n| {
            json!({"EventID": 4625, "TargetUserName": format!("user{n}"),
                   "@timestamp": "2024-05-14T08:00:00Z"})
            .to_string()
                + "\n"
        })
        .collect();
    daemon.post_events(body, users);
    daemon.wait_processed(users);
    daemon.stop();

    for signal in ["HUP", "TERM"] {
        let mut daemon = command.spawn();
        daemon.wait_ready_eagerly();
        let handled = match signal {
            "HUP" => daemon.catches_signal(1),
            _ => daemon.catches_signal(15),
        };
        daemon.signal_now(signal);
        assert!(
            handled,
            "/readyz answered 200 before the SIG{signal} handler was installed"
        );
        if signal == "HUP" {
            let last = daemon.wait_reload_after(&Value::Null);
            assert_eq!(last["trigger"], json!("signal"), "{last}");
            daemon.stop();
        } else {
            let status = daemon.wait_exit();
            assert_eq!(
                status.code(),
                Some(0),
                "SIGTERM right after readiness\n{}",
                daemon.logs()
            );
        }
    }
}

#[test]
fn logsource_routing_skips_rules_of_other_logsources_and_is_counted() {
    let dir = tempdir();
    let rules = dir.path().join("rules");
    fs::create_dir(&rules).unwrap();
    fs::write(
        rules.join("routing.yml"),
        "title: Not A Zeek Event\nlogsource: {product: zeek, service: rdp}\ndetection:\n  sel:\n    cookie: x\n  condition: not sel\n---\n\
         title: Whoami\nlogsource: {product: windows, category: process_creation}\ndetection:\n  sel:\n    Image|endswith: '\\whoami.exe'\n  condition: sel\n",
    )
    .unwrap();
    // Routing settings from the config file: the field map reads `os`.
    let config = dir.path().join("config.yaml");
    fs::write(
        &config,
        "daemon:\n  engine:\n    logsource:\n      field_map: {product: os}\n",
    )
    .unwrap();
    let out = dir.path().join("detections.ndjson");
    let mut daemon = DaemonCommand::new(dir.path())
        .arg("-r")
        .arg(&rules)
        .args(["-c", config.to_str().unwrap()])
        .args(["--input", "http", "--output", &file_url(&out)])
        .start();
    let sysmon = json!({"Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": 1, "Image": "C:\\Windows\\System32\\whoami.exe"});
    let mapped = json!({"os": "zeek"});
    let unknown = json!({"msg": "hello"});
    daemon.post_events(format!("{sysmon}\n{mapped}\n{unknown}\n"), 3);
    let records = daemon.wait_records(&out, 3);
    let mut titles: Vec<&str> = records.iter().map(rule_title).collect();
    titles.sort_unstable();
    // Sysmon: the Zeek rule is skipped; mapped zeek: the Windows rule is;
    // nothing known: both are evaluated, only the `not` rule holds.
    assert_eq!(titles, ["Not A Zeek Event", "Not A Zeek Event", "Whoami"]);
    let metrics = daemon.wait_for("the routed events in the metrics", |d| {
        let m = d.try_metrics()?;
        (m.get("rsigma_events_processed_total") >= 3.0).then_some(m)
    });
    assert_eq!(
        metrics.get(
            "rsigma_events_by_logsource_total{logsource=\"product=windows,service=sysmon,category=process_creation\"}"
        ),
        1.0
    );
    assert_eq!(
        metrics.get("rsigma_events_by_logsource_total{logsource=\"product=zeek\"}"),
        1.0
    );
    assert_eq!(
        metrics.get("rsigma_events_by_logsource_total{logsource=\"unknown\"}"),
        1.0
    );
    assert_eq!(metrics.get("rsigma_routing_skipped_rules_total"), 2.0);
}

#[test]
fn engine_flags_are_bounded_and_routing_pairs_validated() {
    let dir = tempdir();
    let rules = sample_rules();
    let rules = rules.to_str().unwrap();
    for (args, needle) in [
        (
            &["--bloom-max-bytes", "18446744073709551616"][..],
            "bloom-max-bytes",
        ),
        (&["--bloom-max-bytes", "0"], "bloom-max-bytes"),
        (&["--event-logsource", "product"], "DIMENSION=VALUE"),
        (
            &["--logsource-field-map", "product=os,product=x"],
            "named twice",
        ),
    ] {
        let mut full = vec!["-r", rules];
        full.extend_from_slice(args);
        assert_startup_error(dir.path(), &full, 3, &[needle]);
    }
    let config = dir.path().join("config.yaml");
    fs::write(&config, "daemon:\n  engine:\n    bloom_max_bytes: 1\n").unwrap();
    let args = ["-r", rules, "-c", config.to_str().unwrap()];
    assert_startup_error(dir.path(), &args, 3, &["bloom_max_bytes"]);
}
