//! End-to-end tests of `--source`: dynamic pipeline sources feeding
//! pipeline `vars` and `lookup` enrichers, from files (watched), a real HTTP
//! server on loopback (refreshed on an interval) and real programs.

mod common;
mod daemon_support;
mod http_backend;

use std::fs;
use std::path::PathBuf;

use serde_json::{Value, json};
use tempfile::TempDir;

use daemon_support::{DaemonCommand, rule_title, write_atomically};
use http_backend::Backend;

/// Matches logons of the users in `%admins%` from hosts in `%blocked%`.
const ADMIN_RULE: &str = r#"
title: Admin Logon From Blocked Host
id: aaaaaaaa-1111-4222-8333-444444444444
logsource: {product: custom}
detection:
    selection:
        User|expand: '%admins%'
        Host|expand: '%blocked%'
    condition: selection
level: high
"#;

const PIPELINE: &str = r#"
name: dynamic lists
vars:
    admins: ${source.admins}
    blocked: [static-bad-host, "${source.blocklist}"]
transformations: []
"#;

/// A test directory: rules, the pipeline, source declarations in `conf/`
/// (watched) and data files in `data/` (watched by `refresh: watch`).
struct Setup {
    dir: TempDir,
}

impl Setup {
    fn new() -> Setup {
        let dir = TempDir::new().unwrap();
        for sub in ["rules", "conf", "data"] {
            fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        fs::write(dir.path().join("rules/admin.yml"), ADMIN_RULE).unwrap();
        fs::write(dir.path().join("pipeline.yml"), PIPELINE).unwrap();
        Setup { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn out(&self) -> PathBuf {
        self.path("detections.ndjson")
    }

    fn daemon(&self) -> DaemonCommand {
        DaemonCommand::new(self.dir.path())
            .arg("-r")
            .arg(self.path("rules"))
            .arg("-p")
            .arg(self.path("pipeline.yml"))
            .args(["--input", "http", "--include-event"])
            .arg("--source")
            .arg(self.path("conf"))
            .args(["--output", &format!("file://{}", self.out().display())])
    }
}

fn logon(user: &str, host: &str, n: u64) -> String {
    json!({"User": user, "Host": host, "n": n}).to_string() + "\n"
}

fn numbers(records: &[Value]) -> Vec<u64> {
    let mut n: Vec<u64> = records
        .iter()
        .map(|r| r["event"]["n"].as_u64().unwrap())
        .collect();
    n.sort();
    n
}

#[test]
fn pipeline_vars_follow_a_watched_file_and_an_http_source_on_an_interval() {
    let setup = Setup::new();
    let backend = Backend::start();
    backend.set("/blocklist.json", r#"{"hosts": ["evil-1"]}"#);
    fs::write(setup.path("data/admins.txt"), "# admins\nalice\n").unwrap();
    fs::write(
        setup.path("conf/10-files.yaml"),
        "sources:\n  - {id: admins, type: file, path: ../data/admins.txt, format: lines, refresh: watch}\n",
    )
    .unwrap();
    fs::write(
        setup.path("conf/20-http.yml"),
        format!(
            "sources:\n  - {{id: blocklist, type: http, url: \"{}\", extract: .hosts, refresh: 1s}}\n",
            backend.url("/blocklist.json")
        ),
    )
    .unwrap();
    let out = setup.out();
    let mut daemon = setup.daemon().start();
    daemon.post_events(
        logon("alice", "evil-1", 1)
            + &logon("alice", "static-bad-host", 2)
            + &logon("carol", "evil-1", 3),
        3,
    );
    let records = daemon.wait_records(&out, 2);
    assert_eq!(numbers(&records), [1, 2]);
    assert_eq!(rule_title(&records[0]), "Admin Logon From Blocked Host");

    // The watched file gains carol: a reload, and carol matches.
    let before = daemon.status()["last_reload"].clone();
    write_atomically(&setup.path("data/admins.txt"), b"alice\ncarol\n");
    assert_eq!(daemon.wait_reload_after(&before)["ok"], json!(true));
    daemon.post_events(logon("carol", "evil-1", 4), 1);
    assert_eq!(numbers(&daemon.wait_records(&out, 3)), [1, 2, 4]);

    // The HTTP source changes; its next refresh reloads the rules.
    let before = daemon.status()["last_reload"].clone();
    backend.set("/blocklist.json", r#"{"hosts": ["evil-2"]}"#);
    let reload = daemon.wait_reload_after(&before);
    assert_eq!(reload["ok"], json!(true), "{reload}");
    assert_eq!(reload["trigger"], json!("source"), "{reload}");
    daemon.post_events(
        logon("alice", "evil-1", 5) + &logon("alice", "evil-2", 6),
        2,
    );
    assert_eq!(numbers(&daemon.wait_records(&out, 4)), [1, 2, 4, 6]);

    // The source fails (on_error: fail by default): the reload is reported
    // failed, the last values stay in use.
    let before = daemon.status()["last_reload"].clone();
    backend.set("/blocklist.json", "not json");
    let reload = daemon.wait_reload_after(&before);
    assert_eq!(reload["ok"], json!(false), "{reload}");
    assert!(
        reload["error"]
            .as_str()
            .unwrap()
            .contains("source \"blocklist\": not JSON"),
        "{reload}"
    );
    assert_eq!(daemon.get("/readyz").status, 503);
    daemon.post_events(logon("alice", "evil-2", 7), 1);
    assert_eq!(numbers(&daemon.wait_records(&out, 5)), [1, 2, 4, 6, 7]);
    // It recovers: ready again.
    let before = daemon.status()["last_reload"].clone();
    backend.set("/blocklist.json", r#"{"hosts": ["evil-2"]}"#);
    // (Other reloads, by file events of the output, may come first and
    // still fail while the source does.)
    daemon.wait_for("a good reload", |d| {
        let last = d.try_status()?["last_reload"].clone();
        (last["ok"] == json!(true) && last["at"] != before["at"]).then_some(last)
    });
    assert_eq!(daemon.get("/readyz").status, 200);
    let metrics = daemon.metrics();
    assert!(
        metrics.get(r#"rsigma_source_fetches_total{outcome="error",source="blocklist"}"#) >= 1.0
    );
    assert!(metrics.get(r#"rsigma_source_fetches_total{outcome="ok",source="admins"}"#) >= 2.0);
    daemon.stop();
}

#[test]
fn lookup_enrichers_read_sources_and_record_values_stay_data() {
    let setup = Setup::new();
    fs::write(setup.path("data/admins.txt"), "alice\nbob\n").unwrap();
    fs::write(
        setup.path("data/employees.csv"),
        "user,team,manager\nalice,red,dora\n",
    )
    .unwrap();
    fs::write(
        setup.path("conf/sources.yaml"),
        r#"
sources:
  - {id: admins, type: file, path: ../data/admins.txt, format: lines}
  - id: blocklist
    type: command
    command: [python3, -c, "print('evil-1')"]
    format: lines
  - id: employees
    type: file
    path: ../data/employees.csv
    format: csv
    extract: 'map({(.user): .}) | add'
"#,
    )
    .unwrap();
    let enrichers = setup.path("enrichers.yaml");
    fs::write(
        &enrichers,
        r#"
enrichers:
  - id: employee
    kind: detection
    type: lookup
    inject_field: employee
    source: employees
    extract: '.["${detection.fields.User}"] | select(. != null) | {team, manager}'
    default: unknown
"#,
    )
    .unwrap();
    let out = setup.out();
    let mut daemon = setup.daemon().arg("--enrichers").arg(&enrichers).start();
    // bob is an admin without a directory entry.
    daemon.post_events(logon("alice", "evil-1", 1) + &logon("bob", "evil-1", 2), 2);
    let records = daemon.wait_records(&out, 2);
    let by_user = |user: &str| {
        records
            .iter()
            .find(|r| r["event"]["User"] == user)
            .unwrap_or_else(|| panic!("no detection for {user}: {records:?}"))["enrichments"]
            ["employee"]
            .clone()
    };
    assert_eq!(by_user("alice"), json!({"team": "red", "manager": "dora"}));
    assert_eq!(by_user("bob"), json!("unknown"));
    daemon.stop();
}

#[test]
fn a_record_value_cannot_become_lookup_query_code() {
    let setup = Setup::new();
    // The user list matches anything with `*`, so a crafted user name fires.
    fs::write(setup.path("data/admins.txt"), "*\n").unwrap();
    fs::write(setup.path("data/directory.json"), r#"{"alice": "red"}"#).unwrap();
    fs::write(
        setup.path("conf/sources.yaml"),
        r#"
sources:
  - {id: admins, type: file, path: ../data/admins.txt, format: lines}
  - {id: blocklist, type: file, path: ../data/admins.txt, format: lines}
  - {id: directory, type: file, path: ../data/directory.json}
"#,
    )
    .unwrap();
    let enrichers = setup.path("enrichers.yaml");
    fs::write(
        &enrichers,
        "enrichers:\n  - {id: team, kind: detection, type: lookup, inject_field: team, source: directory, extract: '.[\"${detection.fields.User}\"]', default: none}\n",
    )
    .unwrap();
    let out = setup.out();
    let mut daemon = setup
        .daemon()
        .arg("--enrichers")
        .arg(&enrichers)
        .env("RSIGMA_TEST_SECRET", "do-not-leak")
        .start();
    let crafted = r#"x"] | env | .["y"#;
    daemon.post_events(logon(crafted, "h", 1) + &logon("alice", "h", 2), 2);
    let records = daemon.wait_records(&out, 2);
    for record in &records {
        let team = &record["enrichments"]["team"];
        let expected = if record["event"]["n"] == 2 {
            "red"
        } else {
            "none"
        };
        assert_eq!(team, expected, "{record}");
    }
    let text = fs::read_to_string(&out).unwrap();
    assert!(!text.contains("do-not-leak"), "{text}");
    daemon.stop();

    // String interpolation would run a value as code: refused at load.
    fs::write(
        &enrichers,
        "enrichers:\n  - {id: team, kind: detection, type: lookup, inject_field: team, source: directory, extract: '\"\\(${detection.fields.User})\"'}\n",
    )
    .unwrap();
    let refused = setup
        .daemon()
        .arg("--enrichers")
        .arg(&enrichers)
        .run_to_exit();
    assert_eq!(refused.code, Some(3), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("string interpolation"),
        "{}",
        refused.stderr
    );
}

#[test]
fn invalid_source_declarations_are_startup_errors_naming_file_and_source() {
    for (files, needles) in [
        (
            &[
                (
                    "conf/a.yaml",
                    "sources:\n  - {id: admins, type: file, path: x.txt, format: lines}\n",
                ),
                (
                    "conf/b.yaml",
                    "sources:\n  - {id: admins, type: file, path: y.txt, format: lines}\n",
                ),
            ][..],
            &["source \"admins\" is declared in", "a.yaml", "b.yaml"][..],
        ),
        (
            &[(
                "conf/a.yaml",
                "sources:\n  - {id: admins, type: file, path: ../data/missing.txt, format: lines}\n",
            )],
            &["source \"admins\"", "missing.txt"],
        ),
        (
            &[(
                "conf/a.yaml",
                "sources:\n  - {id: admins, type: file, path: x, url: \"http://x\"}\n",
            )],
            &[
                "a.yaml",
                "source \"admins\"",
                "`url` is a key of type http and nats, not of type file",
            ],
        ),
        (
            &[(
                "conf/a.yaml",
                "sources:\n  - {id: admins, type: http, url: \"http://169.254.169.254/x\"}\n",
            )],
            &["source \"admins\"", "link-local or metadata address"],
        ),
        (
            &[(
                "conf/a.yaml",
                "sources:\n  - {id: admins, type: file, path: ../data/admins.txt, refresh: 0s}\n",
            )],
            &["source \"admins\"", "`refresh: 0s` is out of range"],
        ),
        (
            // The pipeline refers to blocklist, which nothing declares.
            &[
                ("data/admins.txt", "alice\n"),
                (
                    "conf/a.yaml",
                    "sources:\n  - {id: admins, type: file, path: ../data/admins.txt, format: lines}\n",
                ),
            ],
            &["vars.blocked", "no source \"blocklist\" is declared"],
        ),
    ] {
        let setup = Setup::new();
        for (name, content) in files {
            fs::write(setup.path(name), content).unwrap();
        }
        let finished = setup.daemon().run_to_exit();
        assert_eq!(finished.code, Some(3), "{files:?}\n{}", finished.stderr);
        for needle in needles {
            assert!(
                finished.stderr.contains(needle),
                "{files:?}: {needle:?} in\n{}",
                finished.stderr
            );
        }
    }
}

#[test]
fn a_failing_source_with_on_error_empty_starts_with_an_empty_list() {
    let setup = Setup::new();
    fs::write(
        setup.path("conf/a.yaml"),
        "sources:\n  - {id: admins, type: command, command: [python3, -c, \"import sys; sys.exit(1)\"], format: lines, on_error: empty}\n  - {id: blocklist, type: file, path: ../data/none.txt, on_error: empty}\n",
    )
    .unwrap();
    let out = setup.out();
    let mut daemon = setup.daemon().start();
    daemon.post_events(logon("alice", "static-bad-host", 1), 1);
    daemon.wait_processed(1);
    assert!(daemon.get("/readyz").status == 200);
    assert_eq!(daemon_support::read_ndjson(&out).len(), 0);
    daemon.stop();
}

const MAPPED_RULE: &str = r#"
title: Root Logon
id: bbbbbbbb-1111-4222-8333-444444444444
logsource: {product: custom}
detection:
    selection:
        User: root
    condition: selection
level: high
"#;

#[test]
fn pipelines_include_transformations_from_sources_and_remote_ones_need_the_flag() {
    let setup = Setup::new();
    let backend = Backend::start();
    fs::remove_file(setup.path("rules/admin.yml")).unwrap();
    fs::write(setup.path("rules/root.yml"), MAPPED_RULE).unwrap();
    fs::write(
        setup.path("pipeline.yml"),
        "name: included\ntransformations:\n  - include: ${source.mapping}\n",
    )
    .unwrap();
    fs::write(
        setup.path("data/mapping.yaml"),
        "- {id: user_name, type: field_name_mapping, mapping: {User: user_name}}\n",
    )
    .unwrap();
    backend.set(
        "/mapping.json",
        r#"[{"id": "login", "type": "field_name_mapping", "mapping": {"User": "login"}}]"#,
    );
    let declare = |local: bool| {
        let source = if local {
            "{id: mapping, type: file, path: ../data/mapping.yaml, format: yaml}".to_owned()
        } else {
            format!(
                "{{id: mapping, type: http, url: \"{}\"}}",
                backend.url("/mapping.json")
            )
        };
        fs::write(
            setup.path("conf/a.yaml"),
            format!("sources:\n  - {source}\n"),
        )
        .unwrap();
    };
    let out = setup.out();

    declare(true);
    let mut daemon = setup.daemon().start();
    daemon.post_events(
        json!({"user_name": "root", "n": 1}).to_string()
            + "\n"
            + &json!({"User": "root", "n": 2}).to_string()
            + "\n",
        2,
    );
    assert_eq!(numbers(&daemon.wait_records(&out, 1)), [1]);
    daemon.stop();

    declare(false);
    let refused = setup.daemon().run_to_exit();
    assert_eq!(refused.code, Some(3), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("pipeline.yml: transformations[0]: source \"mapping\" is fetched over the network; including it needs --allow-remote-include"),
        "{}",
        refused.stderr
    );
    fs::remove_file(&out).unwrap();
    let mut daemon = setup.daemon().arg("--allow-remote-include").start();
    daemon.post_events(json!({"login": "root", "n": 3}).to_string() + "\n", 1);
    assert_eq!(numbers(&daemon.wait_records(&out, 1)), [3]);
    daemon.stop();
}

#[test]
fn source_declarations_are_hot_reloaded_and_a_broken_one_keeps_the_previous() {
    let setup = Setup::new();
    fs::write(setup.path("data/team-a.txt"), "alice\n").unwrap();
    fs::write(setup.path("data/team-b.txt"), "bob\n").unwrap();
    fs::write(setup.path("data/hosts.txt"), "evil-1\n").unwrap();
    let declare = |admins: &str| {
        format!(
            "sources:\n  - {{id: admins, type: file, path: ../data/{admins}, format: lines}}\n  - {{id: blocklist, type: file, path: ../data/hosts.txt, format: lines}}\n"
        )
    };
    fs::write(setup.path("conf/sources.yaml"), declare("team-a.txt")).unwrap();
    let out = setup.out();
    let mut daemon = setup.daemon().start();
    daemon.post_events(logon("alice", "evil-1", 1) + &logon("bob", "evil-1", 2), 2);
    assert_eq!(numbers(&daemon.wait_records(&out, 1)), [1]);

    let before = daemon.status()["last_reload"].clone();
    write_atomically(
        &setup.path("conf/sources.yaml"),
        declare("team-b.txt").as_bytes(),
    );
    assert_eq!(daemon.wait_reload_after(&before)["ok"], json!(true));
    daemon.post_events(logon("alice", "evil-1", 3) + &logon("bob", "evil-1", 4), 2);
    daemon.wait_processed(4);
    assert_eq!(numbers(&daemon.wait_records(&out, 2)), [1, 4]);

    // A declaration whose file is missing: the reload fails, team-b stays.
    let before = daemon.status()["last_reload"].clone();
    write_atomically(
        &setup.path("conf/sources.yaml"),
        declare("missing.txt").as_bytes(),
    );
    let reload = daemon.wait_reload_after(&before);
    assert_eq!(reload["ok"], json!(false), "{reload}");
    assert!(
        reload["error"].as_str().unwrap().contains("missing.txt"),
        "{reload}"
    );
    daemon.post_events(logon("bob", "evil-1", 5), 1);
    assert_eq!(numbers(&daemon.wait_records(&out, 3)), [1, 4, 5]);
    daemon.stop();
}
