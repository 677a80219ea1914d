//! Helpers shared by the integration tests.

#![allow(dead_code)] // each test crate uses a different subset

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::Value;

/// `tests/fixtures` at the workspace root.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("tests")
        .join("fixtures")
}

/// `tests/fixtures/sample`.
pub fn sample() -> PathBuf {
    fixtures().join("sample")
}

/// The sample rules directory.
pub fn sample_rules() -> PathBuf {
    sample().join("rules")
}

/// The sample events file.
pub fn sample_events() -> PathBuf {
    sample().join("events.ndjson")
}

/// `@<path>` for `-e`.
pub fn at(path: &std::path::Path) -> String {
    format!("@{}", path.display())
}

/// Keeps an `rsigma` process away from the user's environment: `HOME` and
/// `XDG_CONFIG_HOME` under `home`, so that no config file of the machine is
/// discovered, and no proxy variables, so that loopback requests go direct.
pub fn isolate<'a>(
    cmd: &'a mut std::process::Command,
    home: &Path,
) -> &'a mut std::process::Command {
    cmd.env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"));
    for var in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// A loopback port that was free a moment ago (bound to port 0, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("binding 127.0.0.1:0")
        .port()
}

/// A command running the `rsigma` binary.
pub fn rsigma() -> Command {
    Command::cargo_bin("rsigma").expect("the rsigma binary is built")
}

/// Parses a stream of JSON values (NDJSON or concatenated pretty JSON).
pub fn json_stream(bytes: &[u8]) -> Vec<Value> {
    serde_json::Deserializer::from_slice(bytes)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .expect("stdout is a stream of JSON values")
}

/// Parses NDJSON strictly: exactly one JSON object per line.
pub fn ndjson(bytes: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(bytes).expect("stdout is UTF-8");
    text.lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line).expect("each line is JSON");
            assert!(value.is_object(), "each line is an object: {line}");
            value
        })
        .collect()
}

/// The `rule_title` of a detection record.
pub fn title(record: &Value) -> &str {
    record["rule_title"]
        .as_str()
        .expect("rule_title is a string")
}

/// Groups records (which must carry `event`) by `event.EventRecordID`.
pub fn titles_by_record_id(records: &[Value]) -> BTreeMap<u64, BTreeSet<String>> {
    let mut map: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for record in records {
        let id = record["event"]["EventRecordID"]
            .as_u64()
            .expect("record has event.EventRecordID");
        let inserted = map.entry(id).or_default().insert(title(record).to_owned());
        assert!(inserted, "rule fired twice for event {id}: {record}");
    }
    map
}

/// The hand-derived expectation for the sample: which rules fire on which
/// `EventRecordID` of `tests/fixtures/sample/events.ndjson`. Events not listed
/// (3, 6, 9, 12, 15, 17, 18, 20) must not fire any rule.
pub fn expected_sample_detections() -> BTreeMap<u64, BTreeSet<String>> {
    const WHOAMI: &str = "Whoami Execution";
    const ENCODED: &str = "Hidden Encoded PowerShell Command";
    const CERTUTIL: &str = "Certutil Download";
    const OFFICE: &str = "Suspicious Office Child Process";
    const MIMIKATZ: &str = "Mimikatz Keywords";
    const RUNDLL: &str = "Rundll32 Export By Ordinal";
    const LOGON: &str = "Failed Logon Of An Admin Account";
    let table: &[(u64, &[&str])] = &[
        (1, &[WHOAMI]),                      // whoami.exe
        (2, &[WHOAMI]),                      // WHOAMI.EXE: case-insensitive endswith
        (4, &[ENCODED]),                     // -NoP -W Hidden -Enc
        (5, &[ENCODED]),                     // /nop /w hidden /enc: windash
        (7, &[ENCODED]),                     // en dash: windash, pwsh.exe
        (8, &[CERTUTIL]),                    // certutil -urlcache
        (10, &[OFFICE]),                     // cmd.exe under WINWORD.EXE
        (11, &[OFFICE]),                     // powershell under EXCEL.EXE, not encoded
        (13, &[MIMIKATZ]),                   // sekurlsa:: keyword
        (14, &[RUNDLL]),                     // payload.dll,#1 regex
        (16, &[LOGON]),                      // EventID 4625, Administrator
        (19, &[CERTUTIL, OFFICE, MIMIKATZ]), // certutil under Word fetching mimikatz.exe
    ];
    table
        .iter()
        .map(|(id, titles)| (*id, titles.iter().map(|t| t.to_string()).collect()))
        .collect()
}
