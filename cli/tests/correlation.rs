//! `engine eval` with correlation rules: records, stats line and flags.

mod common;

use common::{at, fixtures, ndjson, rsigma};
use serde_json::json;

fn rules() -> std::path::PathBuf {
    fixtures().join("correlation").join("rules")
}

fn events() -> String {
    at(&fixtures().join("correlation").join("events.ndjson"))
}

#[test]
fn correlation_matches_follow_their_detections() {
    let out = rsigma()
        .args(["engine", "eval", "-r"])
        .arg(rules())
        .args(["-e", &events()])
        .assert()
        .success();
    let output = out.get_output();
    let records = ndjson(&output.stdout);
    // Six failed logons are detected; alice's third (08:00:20) and fourth
    // (08:00:50, all four within one minute) fire the correlation; bob's two
    // are 85 s apart.
    let titles: Vec<&str> = records
        .iter()
        .map(|r| r["rule_title"].as_str().unwrap())
        .collect();
    assert_eq!(
        titles,
        vec![
            "Failed logon",
            "Failed logon",
            "Failed logon",
            "Failed logon",
            "Brute force against one account",
            "Failed logon",
            "Failed logon",
            "Brute force against one account",
        ]
    );
    assert_eq!(
        records[4],
        json!({
            "rule_title": "Brute force against one account",
            "rule_id": "5f0c7a2e-3b1d-4c55-9f7e-0a6e2b1c9d02",
            "level": "high",
            "tags": [],
            "correlation_type": "event_count",
            "group_key": [["TargetUserName", "alice"]],
            "aggregated_value": 3.0,
            "timespan_secs": 60
        })
    );
    assert_eq!(records[7]["aggregated_value"], json!(4.0));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("Processed 7 events, 6 detection matches, 2 correlation matches."),
        "{stderr}"
    );
}

#[test]
fn no_detections_suppress_and_event_refs() {
    let out = rsigma()
        .args(["engine", "eval", "--no-detections", "--suppress", "5m"])
        .args(["--correlation-event-mode", "refs", "-r"])
        .arg(rules())
        .args(["-e", &events()])
        .assert()
        .success();
    let output = out.get_output();
    let records = ndjson(&output.stdout);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["event_refs"].as_array().unwrap().len(), 3);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("Processed 7 events, 0 detection matches, 1 correlation matches."),
        "{stderr}"
    );
}

#[test]
fn bad_correlation_flags_are_configuration_errors() {
    rsigma()
        .args(["engine", "eval", "--suppress", "soon", "-r"])
        .arg(rules())
        .args(["-e", &events()])
        .assert()
        .code(3);
    rsigma()
        .args(["engine", "eval", "--action", "explode", "-r"])
        .arg(rules())
        .args(["-e", &events()])
        .assert()
        .code(3);
}

#[test]
fn a_correlation_naming_an_unknown_rule_is_a_rule_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("c.yml"),
        "title: Orphan\ncorrelation:\n  type: event_count\n  rules: [missing]\n  timespan: 1m\n  \
         condition: {gte: 1}\n",
    )
    .unwrap();
    let out = rsigma()
        .args(["rule", "validate"])
        .arg(dir.path())
        .assert()
        .code(2);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(
        stderr.contains("rule 'Orphan': references unknown rule 'missing'"),
        "{stderr}"
    );
}
