//! `engine eval` and `rule validate` with logsource routing, the prefilter
//! strategy flags, keyword lists and undefined placeholders, through the real
//! binary.

mod common;

use std::path::Path;

use common::*;
use serde_json::json;

/// A Zeek rule that holds on any event without an `rdp` cookie (`not`), a
/// Windows process rule and a keyword list of five values.
const RULES: &str = "title: Publicly Accessible RDP Service
logsource: {product: zeek, service: rdp}
detection:
  selection:
    id.resp_h|cidr: ['10.0.0.0/8']
  condition: not selection
---
title: Whoami
logsource: {product: windows, category: process_creation}
detection:
  selection:
    Image|endswith: '\\whoami.exe'
  condition: selection
---
title: Mimikatz Keywords
logsource: {product: windows}
detection:
  keywords:
    - 'sekurlsa::'
    - 'kerberos::'
    - 'lsadump::'
    - 'privilege::debug'
    - 'crypto::'
  condition: keywords
";

fn write_rules(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("rules.yml");
    std::fs::write(&path, text).unwrap();
    path
}

fn eval(
    rules: &Path,
    events: &[serde_json::Value],
    extra: &[&str],
) -> (Option<i32>, Vec<String>, String) {
    let mut command = rsigma();
    command
        .args(["engine", "eval", "-r"])
        .arg(rules)
        .args(extra);
    for event in events {
        command.args(["-e", &event.to_string()]);
    }
    let output = command.output().expect("rsigma runs");
    let titles = ndjson(&output.stdout)
        .iter()
        .map(|r| title(r).to_owned())
        .collect();
    (
        output.status.code(),
        titles,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn sysmon_whoami() -> serde_json::Value {
    json!({"Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": 1,
           "Image": "C:\\Windows\\System32\\whoami.exe",
           "CommandLine": "whoami && mimikatz privilege::debug"})
}

#[test]
fn routing_is_on_by_default_and_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let rules = write_rules(dir.path(), RULES);
    // The Zeek rule cannot apply to a Windows event: skipped.
    let (code, titles, _) = eval(&rules, &[sysmon_whoami()], &[]);
    assert_eq!(code, Some(0));
    assert_eq!(titles, ["Whoami", "Mimikatz Keywords"]);
    // Off: every rule sees every event, and the `not` rule fires.
    let (_, titles, _) = eval(&rules, &[sysmon_whoami()], &["--no-logsource-routing"]);
    assert_eq!(
        titles,
        [
            "Publicly Accessible RDP Service",
            "Whoami",
            "Mimikatz Keywords"
        ]
    );
    // An event nothing is known of: nothing can be ruled out.
    let plain = json!({"Image": "C:\\Windows\\System32\\whoami.exe"});
    let (_, titles, _) = eval(&rules, &[plain], &[]);
    assert_eq!(titles, ["Publicly Accessible RDP Service", "Whoami"]);
}

#[test]
fn static_and_mapped_logsources_route() {
    let dir = tempfile::tempdir().unwrap();
    let rules = write_rules(dir.path(), RULES);
    let plain = json!({"Image": "C:\\Windows\\System32\\whoami.exe"});
    let (_, titles, _) = eval(
        &rules,
        std::slice::from_ref(&plain),
        &[
            "--event-logsource",
            "product=windows,category=process_creation",
        ],
    );
    assert_eq!(titles, ["Whoami"]);
    let (_, titles, _) = eval(
        &rules,
        std::slice::from_ref(&plain),
        &["--event-logsource", "product=zeek"],
    );
    assert_eq!(titles, ["Publicly Accessible RDP Service"]);
    let mapped = json!({"os": "Windows", "Image": "C:\\Windows\\System32\\whoami.exe"});
    let (_, titles, _) = eval(&rules, &[mapped], &["--logsource-field-map", "product=os"]);
    assert_eq!(titles, ["Whoami"]);
    // A bad pair is a usage error.
    let (code, _, stderr) = eval(&rules, &[plain], &["--event-logsource", "product"]);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("DIMENSION=VALUE"), "{stderr}");
}

#[test]
fn prefilter_strategies_give_the_same_detections() {
    let dir = tempfile::tempdir().unwrap();
    let rules = write_rules(dir.path(), RULES);
    let events = [
        sysmon_whoami(),
        json!({"Channel": "Security", "EventID": 4688, "x": "sekurlsa::logonpasswords"}),
    ];
    let (_, expected, _) = eval(&rules, &events, &[]);
    assert_eq!(
        expected,
        ["Whoami", "Mimikatz Keywords", "Mimikatz Keywords"]
    );
    for flags in [
        &["--cross-rule-ac"][..],
        &["--bloom-prefilter"],
        &[
            "--bloom-prefilter",
            "--bloom-max-bytes",
            "64",
            "--cross-rule-ac",
        ],
    ] {
        let (code, titles, stderr) = eval(&rules, &events, flags);
        assert_eq!(code, Some(0), "{flags:?}: {stderr}");
        assert_eq!(titles, expected, "{flags:?}");
    }
    for bad in ["0", "63", "1073741825", "18446744073709551616", "-1", "x"] {
        let (code, _, stderr) = eval(
            &rules,
            &events,
            &["--bloom-prefilter", "--bloom-max-bytes", bad],
        );
        assert_eq!(code, Some(3), "--bloom-max-bytes {bad}: {stderr}");
    }
}

#[test]
fn undefined_placeholders_are_rejected_with_the_fix_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let rules = write_rules(
        dir.path(),
        "title: Admin Logon\nlogsource: {product: windows, service: security}\ndetection:\n  sel:\n    TargetUserName|expand: '%admins%'\n  other:\n    EventID: 4625\n  condition: sel or other\n",
    );
    let output = rsigma()
        .args(["rule", "validate"])
        .arg(&rules)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("rules.yml"), "{stderr}");
    assert!(stderr.contains("Admin Logon"), "{stderr}");
    assert!(
        stderr.contains("placeholder '%admins%' is not defined"),
        "{stderr}"
    );
    let output = rsigma()
        .args(["rule", "validate", "--allow-undefined-placeholders"])
        .arg(&rules)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");

    let event = json!({"Channel": "Security", "EventID": 4625, "TargetUserName": "%admins%"});
    let (code, titles, stderr) = eval(&rules, std::slice::from_ref(&event), &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(titles.is_empty());
    let (code, titles, _) = eval(&rules, &[event], &["--allow-undefined-placeholders"]);
    assert_eq!(code, Some(0));
    assert_eq!(titles, ["Admin Logon"]);
}
