//! `engine eval` and `rule validate` with processing pipelines.

mod common;

use common::{ndjson, rsigma, sample_rules};

fn whoami_rule() -> std::path::PathBuf {
    sample_rules().join("whoami_execution.yml")
}

fn titles(output: &[u8]) -> Vec<String> {
    ndjson(output)
        .iter()
        .map(|r| r["rule_title"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn sysmon_pipeline_adds_the_event_id_condition() {
    let run = |event: &str, pipeline: Option<&str>| {
        let mut cmd = rsigma();
        cmd.args(["engine", "eval", "-r"]).arg(whoami_rule());
        if let Some(pipeline) = pipeline {
            cmd.args(["-p", pipeline]);
        }
        let out = cmd.args(["-e", event]).assert().success();
        titles(&out.get_output().stdout)
    };
    let sysmon = r#"{"EventID": 1, "Image": "C:\\Windows\\System32\\whoami.exe"}"#;
    let security = r#"{"EventID": 4688, "Image": "C:\\Windows\\System32\\whoami.exe"}"#;
    assert_eq!(run(sysmon, None), vec!["Whoami Execution"]);
    assert_eq!(run(security, None), vec!["Whoami Execution"]);
    assert_eq!(run(sysmon, Some("sysmon")), vec!["Whoami Execution"]);
    assert!(run(security, Some("sysmon")).is_empty());
}

#[test]
fn ecs_windows_pipeline_matches_ecs_shaped_events() {
    let ecs = r#"{"process": {"executable": "C:\\Windows\\System32\\whoami.exe"}}"#;
    let out = rsigma()
        .args(["engine", "eval", "-p", "ecs_windows", "-r"])
        .arg(whoami_rule())
        .args(["-e", ecs])
        .assert()
        .success();
    assert_eq!(titles(&out.get_output().stdout), vec!["Whoami Execution"]);
}

#[test]
fn a_pipeline_file_that_cannot_be_parsed_is_a_configuration_error_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = dir.path().join("bad.yml");
    std::fs::write(
        &pipeline,
        "name: bad\npriority: 10\ntransformations:\n  - id: x\n    type: frobnicate\n",
    )
    .unwrap();
    for command in [
        &["engine", "eval", "-e", "{}"][..],
        &["rule", "validate"][..],
    ] {
        let mut cmd = rsigma();
        cmd.args(command).arg("-p").arg(&pipeline);
        if command[0] == "engine" {
            cmd.arg("-r");
        }
        let out = cmd.arg(whoami_rule()).assert().code(3);
        let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
        assert!(stderr.contains("bad.yml:4"), "{stderr}");
        assert!(stderr.contains("frobnicate"), "{stderr}");
    }
    let out = rsigma()
        .args(["engine", "eval", "-p", "no_such_builtin", "-e", "{}", "-r"])
        .arg(whoami_rule())
        .assert()
        .code(3);
    assert!(String::from_utf8_lossy(&out.get_output().stderr).contains("no_such_builtin"));
}
