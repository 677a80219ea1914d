//! The SQLite correlation state store: round trips, replacement, clearing,
//! schema versions, refusal of foreign files, restore after a restart, and
//! crash safety against a writer process killed with SIGKILL mid-save.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rsigma_engine::state::{
    APPLICATION_ID, CorrelationSnapshot, GroupSnapshot, SCHEMA_VERSION, SourcePosition, StateError,
    StateSnapshot, StateStore, restore_filter,
};
use rusqlite::Connection;
use serde_json::{Value, json};

fn group(key: Value, state: Value) -> GroupSnapshot {
    GroupSnapshot {
        group_key: key,
        state,
    }
}

fn correlation(key: &str, fingerprint: &str, groups: Vec<GroupSnapshot>) -> CorrelationSnapshot {
    CorrelationSnapshot {
        correlation: key.into(),
        fingerprint: fingerprint.into(),
        groups,
    }
}

fn sample() -> StateSnapshot {
    StateSnapshot {
        saved_at_ms: 1_715_000_000_123,
        correlations: vec![
            correlation(
                "5f1c-brute-force",
                "event_count|5m|User|gte 5",
                vec![
                    group(
                        json!([["User", "alice"]]),
                        json!({"timestamps": [1_715_000_000_000_i64, 1_715_000_001_000_i64]}),
                    ),
                    group(
                        json!([["User", "bob"]]),
                        json!({"timestamps": [1_715_000_000_500_i64]}),
                    ),
                ],
            ),
            correlation("empty-correlation", "fp", vec![]),
            correlation(
                "value-count",
                "value_count|1h|Host|TargetUser|gt 10",
                vec![group(
                    json!([["Host", "dc01"], ["Domain", null]]),
                    json!({
                        "values": {"admin": [1, 2], "svc": [3]},
                        "big": u64::MAX,
                        "neg": i64::MIN,
                        "float": 0.1,
                        "nested": [[], {}, [null, true, false]],
                    }),
                )],
            ),
        ],
    }
}

fn open(path: &Path) -> StateStore {
    StateStore::open(path).unwrap_or_else(|e| panic!("{e}"))
}

fn raw(path: &Path) -> Connection {
    Connection::open(path).unwrap()
}

fn count(path: &Path, table: &str) -> i64 {
    raw(path)
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

#[test]
fn empty_database_loads_none() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = open(&path);
    assert_eq!(store.path(), path);
    assert_eq!(store.load().unwrap(), None);
    drop(store);
    // Reopening an initialized but never-saved file: still nothing.
    assert_eq!(open(&path).load().unwrap(), None);
}

#[test]
fn round_trip_preserves_values_and_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir.path().join("state.db"));
    let snapshot = sample();
    let stats = store.save(&snapshot).unwrap();
    assert_eq!(stats.correlations, 3);
    assert_eq!(stats.groups, 3);
    assert!(stats.bytes > 100, "{stats:?}");
    assert_eq!(store.load().unwrap(), Some(snapshot));
}

#[test]
fn empty_snapshot_is_not_none() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir.path().join("state.db"));
    let empty = StateSnapshot {
        saved_at_ms: 7,
        correlations: vec![],
    };
    store.save(&empty).unwrap();
    assert_eq!(store.load().unwrap(), Some(empty));
}

#[test]
fn save_replaces_the_whole_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let mut store = open(&path);
    store.save(&sample()).unwrap();

    let second = StateSnapshot {
        saved_at_ms: 99,
        correlations: vec![correlation(
            "5f1c-brute-force",
            "event_count|5m|User|gte 5",
            vec![group(
                json!([["User", "carol"]]),
                json!({"timestamps": [5]}),
            )],
        )],
    };
    store.save(&second).unwrap();
    assert_eq!(store.load().unwrap(), Some(second.clone()));
    // No stale rows left behind in the tables either.
    assert_eq!(count(&path, "correlations"), 1);
    assert_eq!(count(&path, "correlation_groups"), 1);

    // Saving the same snapshot again is idempotent.
    store.save(&second).unwrap();
    assert_eq!(store.load().unwrap(), Some(second));
}

#[test]
fn clear_forgets_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let mut store = open(&path);
    store.save(&sample()).unwrap();
    store.clear().unwrap();
    assert_eq!(store.load().unwrap(), None);
    assert_eq!(count(&path, "correlation_groups"), 0);
    drop(store);
    // Cleared state stays cleared across a restart, and the store is usable.
    let mut store = open(&path);
    assert_eq!(store.load().unwrap(), None);
    store.save(&sample()).unwrap();
    assert_eq!(store.load().unwrap(), Some(sample()));
    // Clearing a never-saved store is fine.
    let mut fresh = open(&dir.path().join("fresh.db"));
    fresh.clear().unwrap();
    assert_eq!(fresh.load().unwrap(), None);
}

#[test]
fn source_position_is_saved_with_the_snapshot_and_cleared_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let mut store = open(&path);
    assert_eq!(store.source_position().unwrap(), None);
    // A save without a position records none.
    store.save(&sample()).unwrap();
    assert_eq!(store.source_position().unwrap(), None);
    let first = SourcePosition {
        sequence: 1_001,
        time_ms: 1_715_000_000_000,
    };
    store.save_at(&sample(), Some(first)).unwrap();
    assert_eq!(store.source_position().unwrap(), Some(first));
    // A later save without a position keeps the stored one.
    store.save(&sample()).unwrap();
    drop(store);
    let mut store = open(&path);
    assert_eq!(store.source_position().unwrap(), Some(first));
    let later = SourcePosition {
        sequence: u64::MAX,
        time_ms: -1,
    };
    store.save_at(&sample(), Some(later)).unwrap();
    assert_eq!(store.source_position().unwrap(), Some(later));
    store.clear().unwrap();
    assert_eq!(store.source_position().unwrap(), None);
}

#[test]
fn restart_restores_only_correlations_that_still_exist() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let mut store = open(&path);
        store.save(&sample()).unwrap();
    } // the daemon stops

    // The daemon restarts with another rule set: the brute-force rule is
    // unchanged, value-count was edited (new fingerprint), empty-correlation
    // was deleted, and a new rule appeared.
    let store = open(&path);
    let loaded = store.load().unwrap().expect("state was saved");
    assert_eq!(loaded, sample());
    let live = vec![
        (
            "5f1c-brute-force".to_string(),
            "event_count|5m|User|gte 5".to_string(),
        ),
        (
            "value-count".to_string(),
            "value_count|1h|Host|TargetUser|gt 20".to_string(),
        ),
        ("brand-new".to_string(), "x".to_string()),
    ];
    let restored = restore_filter(loaded, &live);
    assert_eq!(restored.saved_at_ms, sample().saved_at_ms);
    assert_eq!(
        restored.correlations,
        vec![sample().correlations[0].clone()]
    );
}

#[test]
fn unicode_group_keys_and_values() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir.path().join("état-κατάσταση-状態.db"));
    let snapshot = StateSnapshot {
        saved_at_ms: 1,
        correlations: vec![
            correlation(
                "règle-Ünïcödé-规则",
                "fp-🔥",
                vec![
                    group(json!([["Utilisateur", "Zoë"]]), json!({"n": 1})),
                    group(json!([["Пользователь", "Дмитрий"]]), json!({"n": 2})),
                    group(json!([["用户", "张伟"]]), json!({"n": 3})),
                    group(json!([["user", "עִבְרִית"]]), json!({"n": 4})),
                    group(json!([["emoji", "👩‍💻🏳️‍🌈"]]), json!({"note": "𝔘𝔫𝔦"})),
                    group(
                        json!([["ctl", "a\u{0}b\t\"q\"\\"]]),
                        json!({"s": "\u{0}\u{7f}\u{feff}"}),
                    ),
                    // Same text after Unicode normalization, different code points:
                    // distinct keys, both kept.
                    group(json!([["user", "e\u{301}"]]), json!({"n": 5})),
                    group(json!([["user", "\u{e9}"]]), json!({"n": 6})),
                ],
            ),
            correlation("", "", vec![group(json!([]), json!(null))]),
        ],
    };
    store.save(&snapshot).unwrap();
    assert_eq!(store.load().unwrap(), Some(snapshot));
}

#[test]
fn duplicate_keys_are_rejected_and_keep_the_previous_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let mut store = open(&path);
    store.save(&sample()).unwrap();

    let mut dup_correlation = sample();
    dup_correlation
        .correlations
        .push(correlation("value-count", "other", vec![]));
    let err = store.save(&dup_correlation).unwrap_err();
    assert!(matches!(err, StateError::InvalidSnapshot { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(path.to_str().unwrap()), "{text}");
    assert!(
        text.contains("save") && text.contains("value-count"),
        "{text}"
    );
    assert_eq!(store.load().unwrap(), Some(sample()));

    let mut dup_group = sample();
    let groups = &mut dup_group.correlations[0].groups;
    groups.push(groups[0].clone());
    let err = store.save(&dup_group).unwrap_err();
    assert!(matches!(err, StateError::InvalidSnapshot { .. }), "{err:?}");
    assert!(err.to_string().contains("alice"), "{err}");
    assert_eq!(store.load().unwrap(), Some(sample()));

    // The store is still usable after a failed save.
    dup_correlation.correlations.pop();
    dup_correlation.saved_at_ms += 1;
    store.save(&dup_correlation).unwrap();
    assert_eq!(store.load().unwrap(), Some(dup_correlation));
}

#[test]
fn file_is_wal_versioned_and_tagged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let mut store = open(&path);
    store.save(&sample()).unwrap();
    let conn = raw(&path);
    let pragma = |name: &str| -> Value {
        conn.query_row(&format!("PRAGMA {name}"), [], |r| {
            Ok(match r.get_ref(0)? {
                rusqlite::types::ValueRef::Integer(i) => json!(i),
                rusqlite::types::ValueRef::Text(t) => json!(String::from_utf8_lossy(t)),
                other => panic!("{other:?}"),
            })
        })
        .unwrap()
    };
    assert_eq!(pragma("journal_mode"), json!("wal"));
    assert_eq!(pragma("user_version"), json!(SCHEMA_VERSION));
    assert_eq!(pragma("application_id"), json!(APPLICATION_ID));
    assert_eq!(pragma("integrity_check"), json!("ok"));
    let meta = |key: &str| -> String {
        conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(meta("rsigma_version"), env!("CARGO_PKG_VERSION"));
    assert_eq!(meta("saved_at_ms"), sample().saved_at_ms.to_string());
}

#[test]
fn future_schema_version_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    open(&path).save(&sample()).unwrap();
    raw(&path).pragma_update(None, "user_version", 99).unwrap();

    let err = StateStore::open(&path).unwrap_err();
    match &err {
        StateError::UnsupportedVersion {
            found, supported, ..
        } => {
            assert_eq!((*found, *supported), (99, SCHEMA_VERSION));
        }
        other => panic!("{other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains(path.to_str().unwrap()), "{text}");
    assert!(text.contains("schema version 99"), "{text}");
    assert!(text.contains(&format!("({SCHEMA_VERSION})")), "{text}");

    // Not modified: the version and the data are still there.
    let version: i64 = raw(&path)
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 99);
    assert_eq!(count(&path, "correlation_groups"), 3);
}

#[test]
fn a_file_that_is_not_sqlite_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in [
        (
            "notes.txt",
            b"these are not the droids you are looking for\n".repeat(100),
        ),
        // Shorter than a page: SQLite alone would take it for an empty db.
        ("short.db", b"x".to_vec()),
        ("header-only.db", b"SQLite format 2\0".to_vec()),
        ("zeros.db", vec![0u8; 8192]),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, &content).unwrap();
        let err = StateStore::open(&path).unwrap_err();
        assert!(matches!(err, StateError::Foreign { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains(path.to_str().unwrap()), "{text}");
        assert!(text.contains("not a SQLite database"), "{text}");
        assert_eq!(std::fs::read(&path).unwrap(), content);
    }
}

#[test]
fn another_applications_database_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("app.db");
    raw(&plain)
        .execute_batch("CREATE TABLE users (name TEXT); INSERT INTO users VALUES ('x');")
        .unwrap();
    let err = StateStore::open(&plain).unwrap_err();
    assert!(matches!(err, StateError::Foreign { .. }), "{err:?}");
    assert!(err.to_string().contains(plain.to_str().unwrap()), "{err}");
    let mode: String = raw(&plain)
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "delete", "journal mode must not be changed");

    let tagged = dir.path().join("tagged.db");
    raw(&tagged)
        .pragma_update(None, "application_id", 0x1234)
        .unwrap();
    let err = StateStore::open(&tagged).unwrap_err();
    assert!(err.to_string().contains("0x1234"), "{err}");
}

#[test]
fn empty_files_and_empty_databases_are_initialized() {
    let dir = tempfile::tempdir().unwrap();
    // A zero-byte file (e.g. created by `touch`).
    let touched = dir.path().join("touched.db");
    std::fs::write(&touched, b"").unwrap();
    let mut store = open(&touched);
    store.save(&sample()).unwrap();
    assert_eq!(store.load().unwrap(), Some(sample()));
    // A SQLite file with no schema (version 0) is migrated to the current one.
    let blank = dir.path().join("blank.db");
    raw(&blank).pragma_update(None, "page_size", 8192).unwrap();
    raw(&blank).execute_batch("VACUUM").unwrap();
    open(&blank).save(&sample()).unwrap();
    let version: i64 = raw(&blank)
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
}

#[test]
fn missing_directory_is_reported_with_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no/such/dir/state.db");
    let err = StateStore::open(&path).unwrap_err();
    assert!(
        matches!(err, StateError::MissingDirectory { .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains(path.to_str().unwrap()), "{text}");
    assert!(text.contains("does not exist"), "{text}");
}

#[test]
fn tampered_content_is_reported_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let mut store = open(&path);
    store.save(&sample()).unwrap();

    raw(&path)
        .execute("UPDATE meta SET value = '17' WHERE key = 'group_count'", [])
        .unwrap();
    let err = store.load().unwrap_err();
    assert!(matches!(err, StateError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("load"), "{err}");

    store.save(&sample()).unwrap();
    raw(&path)
        .execute(
            "UPDATE correlation_groups SET state = '{not json' WHERE position = 1",
            [],
        )
        .unwrap();
    let err = store.load().unwrap_err();
    assert!(err.to_string().contains("not JSON"), "{err}");
}

#[test]
fn a_second_connection_sees_each_complete_save() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let mut writer = open(&path);
    let reader = open(&path);
    assert_eq!(reader.load().unwrap(), None);
    writer.save(&sample()).unwrap();
    assert_eq!(reader.load().unwrap(), Some(sample()));
    writer.clear().unwrap();
    assert_eq!(reader.load().unwrap(), None);
}

// ---------------------------------------------------------------------------
// Crash safety: a writer process killed with SIGKILL in the middle of saves.
// ---------------------------------------------------------------------------

/// Environment variable that turns [`writer_process`] into an endless writer
/// of the database at the given path.
const WRITER_ENV: &str = "RSIGMA_STATE_WRITER";
/// Prefix of the writer's progress lines on stdout.
const PROGRESS: &str = "rsigma-state-writer:";
const WRITER_CORRELATIONS: usize = 8;
const WRITER_GROUPS_PER_CORRELATION: usize = 2_500;

/// The snapshot the writer saves as generation `generation`: every group's
/// state carries the generation, so a mix of two saves is detectable.
fn writer_snapshot(generation: i64) -> StateSnapshot {
    StateSnapshot {
        saved_at_ms: generation,
        correlations: (0..WRITER_CORRELATIONS)
            .map(|c| CorrelationSnapshot {
                correlation: format!("correlation-{c}"),
                fingerprint: format!("fingerprint-{c}"),
                groups: (0..WRITER_GROUPS_PER_CORRELATION)
                    .map(|g| GroupSnapshot {
                        group_key: json!([["User", format!("user-{g}")], ["Host", "ws-01"]]),
                        state: json!({
                            "generation": generation,
                            "timestamps": (0..8).map(|i| generation * 1_000 + i).collect::<Vec<_>>(),
                            "padding": "p".repeat(64),
                        }),
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// Not a test of its own: with `RSIGMA_STATE_WRITER=<db>` it saves ever newer
/// generations into `<db>` until it is killed, printing `begin N` before and
/// `saved N` after each save. Without the variable it returns at once.
#[test]
fn writer_process() {
    let Some(path) = std::env::var_os(WRITER_ENV) else {
        return;
    };
    let mut store = StateStore::open(Path::new(&path)).expect("writer: open");
    // Resume after the last generation a previous (killed) writer committed;
    // loading also checks that what it left is consistent.
    let mut generation = store
        .load()
        .expect("writer: load")
        .map_or(0, |s| s.saved_at_ms);
    // Write progress straight to the process's stdout, past libtest's capture.
    let mut out = std::io::stdout();
    loop {
        generation += 1;
        let snapshot = writer_snapshot(generation);
        writeln!(out, "{PROGRESS} begin {generation}").unwrap();
        out.flush().unwrap();
        store.save(&snapshot).expect("writer: save");
        writeln!(out, "{PROGRESS} saved {generation}").unwrap();
        out.flush().unwrap();
    }
}

/// Kills the child when dropped, so a failing parent never leaves it running.
struct Writer {
    child: Child,
    lines: mpsc::Receiver<(Instant, Event)>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Event {
    Begin(i64),
    Saved(i64),
}

impl Writer {
    fn spawn(db: &Path) -> Writer {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "writer_process",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(WRITER_ENV, db)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the writer process");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Some(rest) = line.strip_prefix(PROGRESS) else {
                    continue;
                };
                let mut words = rest.split_whitespace();
                let (Some(what), Some(n)) = (words.next(), words.next()) else {
                    continue;
                };
                let n: i64 = n.parse().unwrap();
                let event = if what == "begin" {
                    Event::Begin(n)
                } else {
                    Event::Saved(n)
                };
                if tx.send((Instant::now(), event)).is_err() {
                    break;
                }
            }
        });
        let mut stderr = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
            text
        });
        Writer {
            child,
            lines,
            stderr: Some(stderr),
        }
    }

    /// The next progress event, or a panic (with the child's stderr) at the
    /// deadline or when the child exits.
    fn next(&mut self, deadline: Instant) -> (Instant, Event) {
        let timeout = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(timeout) {
            Ok(event) => event,
            Err(e) => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let stderr = self.stderr.take().and_then(|h| h.join().ok());
                panic!(
                    "writer process: no progress ({e:?}); its stderr:\n{}",
                    stderr.unwrap_or_default()
                );
            }
        }
    }

    /// SIGKILL, then every event the child wrote before dying.
    fn kill(mut self) -> Vec<Event> {
        self.child.kill().expect("kill the writer");
        let status = self.child.wait().unwrap();
        assert!(!status.success(), "the writer was killed, not finished");
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(status.signal(), Some(9), "{status:?}");
        }
        // The reader thread ends at EOF, which comes right after the death.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut rest = Vec::new();
        while let Ok((_, event)) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            rest.push(event);
        }
        rest
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asserts the file is readable and holds one complete generation, between
/// `at_least` (the last save the writer saw return) and `at_most` (the last
/// it began); returns that generation.
fn assert_complete_generation(path: &Path, at_least: i64, at_most: i64) -> i64 {
    let store = StateStore::open(path).unwrap_or_else(|e| panic!("reopen after kill: {e}"));
    let loaded = store
        .load()
        .unwrap_or_else(|e| panic!("load after kill: {e}"))
        .expect("a snapshot was saved before the kill");
    let generation = loaded.saved_at_ms;
    let groups: Vec<&GroupSnapshot> = loaded.correlations.iter().flat_map(|c| &c.groups).collect();
    assert_eq!(
        groups.len(),
        WRITER_CORRELATIONS * WRITER_GROUPS_PER_CORRELATION,
        "a partial snapshot"
    );
    let mixed = groups
        .iter()
        .filter(|g| g.state["generation"] != json!(generation))
        .count();
    assert_eq!(mixed, 0, "groups of another generation than {generation}");
    assert!(
        loaded == writer_snapshot(generation),
        "the snapshot differs from generation {generation}"
    );
    assert!(
        (at_least..=at_most).contains(&generation),
        "generation {generation} outside [{at_least}, {at_most}]: a returned save was lost"
    );
    let integrity: String = raw(path)
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    generation
}

#[test]
fn sigkill_mid_save_never_corrupts_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("state.db");
    // Where in a save the kill lands, as a fraction of the measured save time.
    let fractions = [0.05, 0.2, 0.35, 0.5, 0.65, 0.8, 0.95];
    let started = Instant::now();
    let mut mid_save = 0;
    let mut last_generation = 0;
    for (round, fraction) in fractions.into_iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut writer = Writer::spawn(&path);
        // Wait for a few complete saves, timing them.
        let mut begun_at = None;
        let mut durations = Vec::new();
        let mut last_saved = 0;
        while durations.len() < 3 {
            match writer.next(deadline) {
                (at, Event::Begin(_)) => begun_at = Some(at),
                (at, Event::Saved(n)) => {
                    if let Some(begun) = begun_at.take() {
                        durations.push(at - begun);
                    }
                    last_saved = n;
                }
            }
        }
        assert!(
            last_saved > last_generation,
            "the writer resumed after generation {last_generation}"
        );
        let save_time = durations.iter().sum::<Duration>() / durations.len() as u32;
        // Kill `fraction` of a save after the next one begins.
        let mut last_begun = loop {
            match writer.next(deadline) {
                (_, Event::Begin(n)) => break n,
                (_, Event::Saved(n)) => last_saved = n,
            }
        };
        std::thread::sleep(save_time.mul_f64(fraction));
        for event in writer.kill() {
            match event {
                Event::Begin(n) => last_begun = n,
                Event::Saved(n) => last_saved = n,
            }
        }
        if last_begun > last_saved {
            mid_save += 1;
        }
        last_generation = assert_complete_generation(&path, last_saved, last_begun);
        eprintln!(
            "round {round}: save takes {save_time:?}, killed {:.0}% in, \
             last saved {last_saved}, last begun {last_begun}, restored {last_generation}",
            fraction * 100.0
        );
    }
    assert!(
        mid_save >= 1,
        "no kill landed inside a save; the test proved nothing"
    );
    eprintln!(
        "{mid_save}/{} kills landed mid-save; {:?} in all",
        fractions.len(),
        started.elapsed()
    );
}
