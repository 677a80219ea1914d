//! End-to-end tests of `--enrichers`: the real daemon, a real HTTP backend
//! on loopback (which can answer, be slow, fail, send huge bodies or count
//! requests), real programs for `command` enrichers, and hot reload of the
//! file.

mod common;
mod daemon_support;
mod http_backend;

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tempfile::TempDir;

use daemon_support::{DaemonCommand, rule_title, write_atomically};
use http_backend::{Backend, Seen};

const WHOAMI_RULE: &str = r#"
title: Whoami Execution
id: 11111111-2222-4333-8444-555555555555
logsource: {product: windows, category: process_creation}
tags: [attack.discovery, attack.t1033]
detection:
    selection:
        Image|endswith: '\whoami.exe'
    condition: selection
level: high
"#;

const NET_RULE: &str = r#"
title: Net User Enumeration
id: 66666666-7777-4888-8999-000000000000
logsource: {product: windows, category: process_creation}
tags: [attack.discovery]
detection:
    selection:
        Image|endswith: '\net.exe'
    condition: selection
level: medium
"#;

fn rules(dir: &Path) -> PathBuf {
    let rules = dir.join("rules");
    fs::create_dir_all(&rules).unwrap();
    fs::write(rules.join("whoami.yml"), WHOAMI_RULE).unwrap();
    fs::write(rules.join("net.yml"), NET_RULE).unwrap();
    rules
}

fn process(image: &str, n: u64) -> String {
    json!({"Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": 1, "Image": image, "n": n})
        .to_string()
}

const WHOAMI: &str = r"C:\Windows\System32\whoami.exe";
const NET: &str = r"C:\Windows\System32\net.exe";

fn daemon(dir: &Path, enrichers: &Path, out: &Path) -> DaemonCommand {
    DaemonCommand::new(dir)
        .arg("-r")
        .arg(rules(dir))
        .args(["--input", "http", "--include-event"])
        .arg("--enrichers")
        .arg(enrichers)
        .args(["--output", &format!("file://{}", out.display())])
}

/// Where a test's enrichers file goes: a directory of its own, so that the
/// watcher sees no other file change there (outputs and logs are elsewhere).
fn enrichers_file(dir: &Path) -> PathBuf {
    let conf = dir.join("conf");
    fs::create_dir_all(&conf).unwrap();
    conf.join("enrichers.yaml")
}

/// A YAML flow sequence running `python3 -c code args...`.
fn python_program(code: &str, args: &[&str]) -> String {
    let mut argv = vec![json!("python3"), json!("-c"), json!(code)];
    argv.extend(args.iter().map(|arg| json!(arg)));
    Value::Array(argv).to_string()
}

#[test]
fn detections_arrive_with_template_http_and_command_enrichments() {
    let dir = TempDir::new().unwrap();
    let backend = Backend::start();
    let enrichers = enrichers_file(dir.path());
    let command = python_program(
        "import json, os, sys; print(json.dumps({'arg': sys.argv[1], 'mode': os.environ.get('TOOL_MODE'), 'env': sorted(os.environ)}))",
        &["${detection.fields.Image}"],
    );
    fs::write(
        &enrichers,
        format!(
            r#"
max_concurrent_enrichments: 4
enrichers:
  - id: runbook
    kind: detection
    type: template
    inject_field: runbook_url
    template: "https://wiki.test/runbooks/${{detection.rule.id}}?level=${{detection.rule.level}}"
  - id: asset
    kind: detection
    type: http
    inject_field: owner
    url: "{url}${{detection.fields.Image}}"
    headers:
      X-Api-Key: "${{RSIGMA_TEST_API_KEY}}"
    cache_ttl: 1h
    extract: .owner
  - id: local_tool
    kind: detection
    type: command
    inject_field: tool
    command: {command}
    env:
      TOOL_MODE: "level-${{detection.rule.level}}"
    command_args_note: unused
  - id: ticket
    kind: detection
    type: http
    inject_field: ticket
    method: post
    url: "{url}tickets"
    body: '{{"rule": "${{detection.rule.id}}", "n": ${{detection.event.n}}}}'
    extract: .path
"#,
            url = backend.url("/asset/"),
        ),
    )
    .unwrap();
    // An unknown key is refused, naming it.
    let refused = daemon(dir.path(), &enrichers, &dir.path().join("x.ndjson")).run_to_exit();
    assert_eq!(refused.code, Some(3), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("command_args_note"),
        "{}",
        refused.stderr
    );
    let text = fs::read_to_string(&enrichers).unwrap();
    fs::write(
        &enrichers,
        text.replace("    command_args_note: unused\n", ""),
    )
    .unwrap();

    let out = dir.path().join("detections.ndjson");
    let mut daemon = daemon(dir.path(), &enrichers, &out)
        .env("RSIGMA_TEST_API_KEY", "secret-key-123")
        .start();
    let events = [
        process(WHOAMI, 1),
        process(r"C:\x\benign.exe", 2),
        process(WHOAMI, 3),
    ];
    daemon.post_events(events.join("\n") + "\n", 3);
    let records = daemon.wait_records(&out, 2);
    assert_eq!(records.len(), 2, "{records:?}");
    for record in &records {
        assert_eq!(rule_title(record), "Whoami Execution");
        let enrichments = &record["enrichments"];
        assert_eq!(
            enrichments["runbook_url"],
            "https://wiki.test/runbooks/11111111-2222-4333-8444-555555555555?level=high"
        );
        assert_eq!(
            enrichments["owner"],
            r"team-C%3A%5CWindows%5CSystem32%5Cwhoami.exe"
        );
        assert_eq!(
            enrichments["tool"]["arg"],
            WHOAMI,
            "{record}\n{}",
            daemon.logs()
        );
        assert_eq!(enrichments["tool"]["mode"], "level-high");
        // The program gets PATH and its env, not the daemon's variables.
        let env = enrichments["tool"]["env"].as_array().unwrap();
        assert!(
            env.contains(&json!("PATH")) && env.contains(&json!("TOOL_MODE")),
            "{env:?}"
        );
        assert!(!env.contains(&json!("RSIGMA_TEST_API_KEY")), "{env:?}");
        assert_eq!(enrichments["ticket"], "/asset/tickets");
    }
    // One GET for two detections (the cache), the secret in its header, the
    // record's value one path segment; one POST per detection.
    let seen = backend.seen();
    let gets: Vec<&Seen> = seen.iter().filter(|s| s.method == "GET").collect();
    assert_eq!(gets.len(), 1, "{seen:?}");
    assert_eq!(
        gets[0].path,
        "/asset/C%3A%5CWindows%5CSystem32%5Cwhoami.exe"
    );
    assert!(
        gets[0]
            .headers
            .contains(&("x-api-key".to_owned(), "secret-key-123".to_owned()))
    );
    let mut posted: Vec<&str> = seen
        .iter()
        .filter(|s| s.method == "POST")
        .map(|s| s.body.as_str())
        .collect();
    posted.sort();
    assert_eq!(
        posted,
        [
            r#"{"rule": "11111111-2222-4333-8444-555555555555", "n": 1}"#,
            r#"{"rule": "11111111-2222-4333-8444-555555555555", "n": 3}"#
        ]
    );
    let metrics = daemon.metrics();
    assert_eq!(
        metrics.get(r#"rsigma_enrichments_total{enricher="asset",outcome="ok"}"#),
        2.0
    );
    assert_eq!(
        metrics.get(r#"rsigma_enrichment_cache_hits_total{enricher="asset"}"#),
        1.0
    );
    assert_eq!(
        metrics.get(r#"rsigma_enrichments_total{enricher="local_tool",outcome="ok"}"#),
        2.0
    );
    assert!(metrics.has_family("rsigma_enrichment_duration_seconds"));
    daemon.stop();
    assert!(
        !daemon.logs().contains("secret-key-123"),
        "the secret was logged"
    );
}

#[test]
fn a_dead_slow_or_failing_backend_never_loses_a_detection() {
    let dir = TempDir::new().unwrap();
    let backend = Backend::start();
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let enrichers = enrichers_file(dir.path());
    fs::write(
        &enrichers,
        format!(
            r#"
enrichers:
  - {{id: slow, kind: detection, type: http, inject_field: slow, url: "{slow}", timeout: 300ms, on_error: "null"}}
  - {{id: dead, kind: detection, type: http, inject_field: dead, url: "http://127.0.0.1:{closed}/x"}}
  - {{id: failing, kind: detection, type: http, inject_field: failing, url: "{fail}", on_error: "null"}}
  - {{id: huge, kind: detection, type: http, inject_field: huge, url: "{huge}", max_response_bytes: 1024, on_error: "null"}}
  - {{id: not_json, kind: detection, type: http, inject_field: not_json, url: "{text}"}}
  - {{id: metadata, kind: detection, type: http, inject_field: metadata, url: "http://169.254.169.254/latest/meta-data/", on_error: "null"}}
  - {{id: crashing, kind: detection, type: command, inject_field: crashing, command: {crash}}}
  - {{id: missing_field, kind: detection, type: template, inject_field: user, template: "${{detection.fields.User}}", on_error: "null"}}
  - id: filter_net
    kind: detection
    type: command
    inject_field: filtered
    command: [python3, -c, "import sys; sys.exit(3)"]
    on_error: drop
    scope: {{rules: ["Net *"]}}
"#,
            slow = backend.url("/slow"),
            fail = backend.url("/fail"),
            huge = backend.url("/huge"),
            text = backend.url("/text"),
            crash = python_program("import sys; sys.stderr.write('boom'); sys.exit(2)", &[]),
        ),
    )
    .unwrap();
    let out = dir.path().join("detections.ndjson");
    let mut daemon = daemon(dir.path(), &enrichers, &out).start();
    let events: Vec<String> = (0..20)
        .map(|n| process(if n % 4 == 3 { NET } else { WHOAMI }, n))
        .collect();
    daemon.post_events(events.join("\n") + "\n", 20);
    let records = daemon.wait_records(&out, 15);
    // Every whoami detection is there; the net detections were dropped by
    // the enricher that asked for it.
    let mut numbers: Vec<u64> = records
        .iter()
        .map(|r| r["event"]["n"].as_u64().unwrap())
        .collect();
    numbers.sort();
    let expected: Vec<u64> = (0..20).filter(|n| n % 4 != 3).collect();
    assert_eq!(numbers, expected);
    for record in &records {
        assert_eq!(rule_title(record), "Whoami Execution");
        assert_eq!(
            record["enrichments"],
            json!({"slow": null, "failing": null, "huge": null, "metadata": null, "user": null}),
            "{record}"
        );
    }
    let metrics = daemon.wait_for("the drops counted", |d| {
        let m = d.try_metrics()?;
        (m.get(r#"rsigma_enrichment_dropped_records_total{enricher="filter_net"}"#) >= 5.0)
            .then_some(m)
    });
    let count = |id: &str, outcome: &str| {
        metrics.get(&format!(
            r#"rsigma_enrichments_total{{enricher="{id}",outcome="{outcome}"}}"#
        ))
    };
    assert_eq!(count("slow", "timeout"), 20.0);
    for id in [
        "dead",
        "failing",
        "huge",
        "not_json",
        "metadata",
        "crashing",
        "missing_field",
    ] {
        assert_eq!(count(id, "error"), 20.0, "{id}");
    }
    assert_eq!(count("filter_net", "error"), 5.0);
    // The metadata address was never contacted; the backend saw no /latest.
    assert!(
        backend
            .seen()
            .iter()
            .all(|s| !s.path.starts_with("/latest"))
    );
    let logs = daemon.logs();
    assert!(
        logs.contains("169.254.169.254 is a link-local or metadata address"),
        "{logs}"
    );
    assert!(
        logs.contains("boom"),
        "stderr of the failed program is quoted: {logs}"
    );
    daemon.stop();
}

#[test]
fn the_enrichers_file_is_hot_reloaded_and_a_broken_one_keeps_the_previous() {
    let dir = TempDir::new().unwrap();
    let enrichers = enrichers_file(dir.path());
    let file = |value: &str| {
        format!(
            "enrichers:\n  - {{id: label, kind: detection, type: template, inject_field: label, template: \"{value} ${{detection.rule.title}}\"}}\n"
        )
    };
    fs::write(&enrichers, file("first")).unwrap();
    let out = dir.path().join("detections.ndjson");
    let mut daemon = daemon(dir.path(), &enrichers, &out).start();
    daemon.post_events(process(WHOAMI, 1) + "\n", 1);
    let records = daemon.wait_records(&out, 1);
    assert_eq!(records[0]["enrichments"]["label"], "first Whoami Execution");

    let before = daemon.status()["last_reload"].clone();
    write_atomically(&enrichers, file("second").as_bytes());
    let reload = daemon.wait_reload_after(&before);
    assert_eq!(reload["ok"], json!(true), "{reload}");
    daemon.post_events(process(WHOAMI, 2) + "\n", 1);
    let records = daemon.wait_records(&out, 2);
    assert_eq!(
        records[1]["enrichments"]["label"],
        "second Whoami Execution"
    );

    // A detection-kind template reading a correlation reference.
    let before = daemon.status()["last_reload"].clone();
    write_atomically(
        &enrichers,
        b"enrichers:\n  - {id: bad, kind: detection, type: template, inject_field: x, template: \"${correlation.type}\"}\n",
    );
    let reload = daemon.wait_reload_after(&before);
    assert_eq!(reload["ok"], json!(false), "{reload}");
    let error = reload["error"].as_str().unwrap();
    assert!(
        error.contains("enricher \"bad\"")
            && error.contains("`template`")
            && error.contains("kind: detection"),
        "{error}"
    );
    assert_eq!(daemon.get("/readyz").status, 503);
    daemon.post_events(process(WHOAMI, 3) + "\n", 1);
    let records = daemon.wait_records(&out, 3);
    assert_eq!(
        records[2]["enrichments"]["label"],
        "second Whoami Execution"
    );

    // Fixed again: ready again.
    let before = daemon.status()["last_reload"].clone();
    write_atomically(&enrichers, file("third").as_bytes());
    assert_eq!(daemon.wait_reload_after(&before)["ok"], json!(true));
    assert_eq!(daemon.get("/readyz").status, 200);
    daemon.stop();
}

#[test]
fn invalid_enrichers_files_are_startup_errors_naming_the_enricher_and_key() {
    let dir = TempDir::new().unwrap();
    let enrichers = enrichers_file(dir.path());
    for (content, needles) in [
        (
            "enrichers:\n  - {id: c, kind: correlation, type: template, inject_field: x, template: \"${detection.rule.id}\"}\n",
            &[
                "enricher \"c\"",
                "`template`",
                "refers to detection records",
            ][..],
        ),
        (
            "enrichers:\n  - {id: t, kind: detection, type: template, inject_field: x, template: a, url: \"http://x\"}\n",
            &[
                "enricher \"t\"",
                "`url` is a key of type http, not of type template",
            ],
        ),
        (
            "enrichers:\n  - {id: h, kind: detection, type: http, inject_field: x, url: \"http://x/${NOT_SET_ANYWHERE}\"}\n",
            &["enricher \"h\"", "`url`", "${NOT_SET_ANYWHERE} is not set"],
        ),
        (
            "enrichers:\n  - {id: h, kind: detection, type: http, inject_field: x, url: \"http://x\", timeout: 10m}\n",
            &["enricher \"h\"", "`timeout: 10m` is out of range"],
        ),
        (
            "enrichers:\n  - {id: l, kind: detection, type: lookup, inject_field: x, source: assets}\n",
            &["enricher \"l\"", "type lookup"],
        ),
        (
            "enrichers:\n  - {id: a, kind: detection, type: template, inject_field: x, template: a}\n  - {id: b, kind: detection, type: template, inject_field: x, template: b}\n",
            &["enricher \"b\"", "already written by enricher \"a\""],
        ),
        (
            "max_concurrent_enrichments: 0\n",
            &["max_concurrent_enrichments: 0 is out of range"],
        ),
    ] {
        fs::write(&enrichers, content).unwrap();
        let finished = daemon(dir.path(), &enrichers, &dir.path().join("out.ndjson")).run_to_exit();
        assert_eq!(finished.code, Some(3), "{content}\n{}", finished.stderr);
        for needle in needles {
            assert!(
                finished.stderr.contains(needle),
                "{content}: {needle:?} in\n{}",
                finished.stderr
            );
        }
        assert!(finished.stderr.contains(&enrichers.display().to_string()));
    }
}
