//! Integration tests for `rsigma rule validate`.

mod common;

use common::*;
use predicates::prelude::*;

#[test]
fn sample_rules_are_all_valid() {
    rsigma()
        .args(["rule", "validate"])
        .arg(sample_rules())
        .assert()
        .code(0)
        .stdout("")
        .stderr("Validated 7 rules: 7 valid, 0 failed.\n");
}

#[test]
fn a_single_rule_file_can_be_validated() {
    rsigma()
        .args(["rule", "validate"])
        .arg(sample_rules().join("encoded_powershell.yml"))
        .assert()
        .code(0)
        .stderr("Validated 1 rules: 1 valid, 0 failed.\n");
}

#[test]
fn bad_rules_are_each_reported_and_exit_2() {
    let output = rsigma()
        .args(["rule", "validate"])
        .arg(fixtures().join("bad-rules"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8(output.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    let errors = &lines[..2];
    assert!(errors.iter().all(|l| l.starts_with("error: ")), "{stderr}");
    assert!(
        errors
            .iter()
            .any(|l| l.contains("undefined_selection.yml: rule 'Broken Condition Rule': ")),
        "{stderr}"
    );
    assert!(
        errors.iter().any(|l| l.contains("invalid_yaml.yml")),
        "{stderr}"
    );
    assert_eq!(lines[2], "Validated 2 rules: 0 valid, 2 failed.");
}

#[test]
fn mixed_directory_counts_valid_and_failed_rules() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("nested").join("deeper");
    std::fs::create_dir_all(&nested).unwrap();
    for name in ["whoami_execution.yml", "certutil_download.yml"] {
        std::fs::copy(sample_rules().join(name), dir.path().join(name)).unwrap();
    }
    std::fs::copy(
        fixtures().join("bad-rules").join("undefined_selection.yml"),
        nested.join("undefined_selection.yaml"),
    )
    .unwrap();
    // Not a rule file: ignored.
    std::fs::write(dir.path().join("README.txt"), "not: [a rule").unwrap();
    rsigma()
        .args(["rule", "validate"])
        .arg(dir.path())
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "undefined_selection.yaml: rule 'Broken Condition Rule': ",
        ))
        .stderr(predicate::str::ends_with(
            "Validated 3 rules: 2 valid, 1 failed.\n",
        ));
}

#[test]
fn quiet_keeps_errors_but_drops_the_summary() {
    for flag in ["--quiet", "--no-stats"] {
        rsigma()
            .args(["rule", "validate", flag])
            .arg(fixtures().join("bad-rules"))
            .assert()
            .code(2)
            .stderr(predicate::str::contains("error: "))
            .stderr(predicate::str::contains("Validated").not());
        rsigma()
            .args([flag, "rule", "validate"])
            .arg(sample_rules())
            .assert()
            .code(0)
            .stderr("");
    }
}

#[test]
fn missing_path_exits_2_with_a_clear_message() {
    rsigma()
        .args(["rule", "validate", "/nonexistent/rsigma-rules"])
        .assert()
        .code(2)
        .stdout("")
        .stderr(
            "error: the rules path '/nonexistent/rsigma-rules' could not be read: \
             No such file or directory (os error 2)\n",
        );
}

#[test]
fn missing_path_argument_is_a_usage_error() {
    rsigma()
        .args(["rule", "validate"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("PATH"));
}

#[test]
fn a_symbolic_link_loop_in_the_rules_is_read_once_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    for entry in std::fs::read_dir(sample_rules()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), rules.join(entry.file_name())).unwrap();
    }
    std::os::unix::fs::symlink(".", rules.join("loop")).unwrap();
    rsigma()
        .args(["rule", "validate"])
        .arg(&rules)
        .assert()
        .code(0)
        .stderr(predicate::str::contains("loop: skipped"))
        .stderr(predicate::str::contains("symbolic link loop"))
        .stderr(predicate::str::contains(
            "Validated 7 rules: 7 valid, 0 failed.",
        ));
}
