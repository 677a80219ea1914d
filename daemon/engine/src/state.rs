//! Persistent correlation state: a SQLite file the daemon snapshots its
//! correlation windows into, and restores them from after a restart.
//!
//! The store is deliberately ignorant of what a window looks like: the
//! correlation engine turns its state into a [`StateSnapshot`] (one
//! [`CorrelationSnapshot`] per correlation rule, one [`GroupSnapshot`] per
//! group-by key, the state itself as JSON), the store writes it and reads it
//! back, and [`restore_filter`] drops the correlations that no longer exist
//! (or whose definition changed) before the engine takes the state back.
//!
//! Guarantees (see `docs/state.md`):
//!
//! * [`StateStore::save`] replaces the whole stored state in **one**
//!   transaction: a reader, or a restart after a crash at any moment, sees
//!   either the previous snapshot or the new one, never a mix.
//! * The file uses SQLite's WAL journal with `synchronous=FULL`: a snapshot
//!   whose `save` returned survives a `kill -9` (and a power loss); a crash
//!   loses at most the saves that had not returned yet.
//! * The schema is versioned with `PRAGMA user_version` (see
//!   [`SCHEMA_VERSION`]) and the file is marked with an `application_id`: older
//!   versions are migrated on open, a newer version or a foreign database is
//!   refused without touching the file.
//!
//! ```
//! use rsigma_engine::state::{CorrelationSnapshot, GroupSnapshot, StateSnapshot, StateStore};
//! use serde_json::json;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let mut store = StateStore::open(&dir.path().join("state.db")).unwrap();
//! assert_eq!(store.load().unwrap(), None);
//!
//! let snapshot = StateSnapshot {
//!     saved_at_ms: 1_700_000_000_000,
//!     correlations: vec![CorrelationSnapshot {
//!         correlation: "brute-force".into(),
//!         fingerprint: "v1:event_count:5m:User".into(),
//!         groups: vec![GroupSnapshot {
//!             group_key: json!([["User", "alice"]]),
//!             state: json!({"timestamps": [1, 2, 3]}),
//!         }],
//!     }],
//! };
//! let stats = store.save(&snapshot).unwrap();
//! assert_eq!((stats.correlations, stats.groups), (1, 1));
//! assert_eq!(store.load().unwrap(), Some(snapshot));
//! ```

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

/// One correlation's persisted windows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CorrelationSnapshot {
    /// Stable key of the correlation rule: its id, else name, else title.
    pub correlation: String,
    /// Fingerprint of the definition (type, timespan, group-by, condition...)
    /// computed by the correlation engine; a restore skips snapshots whose
    /// fingerprint differs from the loaded rule's (see [`restore_filter`]).
    pub fingerprint: String,
    /// Per-group state, opaque to the store.
    pub groups: Vec<GroupSnapshot>,
}

/// The state of one group of one correlation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupSnapshot {
    /// The group key: a JSON array of `[field, value]` pairs. Unique within
    /// its correlation (compared by its JSON text).
    pub group_key: serde_json::Value,
    /// The group's window state, as the correlation engine wrote it.
    pub state: serde_json::Value,
}

/// The whole persisted correlation state.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StateSnapshot {
    /// When the snapshot was taken, in milliseconds since the Unix epoch.
    pub saved_at_ms: i64,
    /// One entry per correlation rule; correlation keys are unique.
    pub correlations: Vec<CorrelationSnapshot>,
}

/// How far a replayable source (a JetStream stream) had been acknowledged
/// when a snapshot was taken: the daemon compares a replay's start with it
/// to decide whether the stored state already holds the replayed events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcePosition {
    /// The highest acknowledged stream sequence.
    pub sequence: u64,
    /// The broker's timestamp of that message, in milliseconds since the
    /// Unix epoch.
    pub time_ms: i64,
}

/// What one [`StateStore::save`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SaveStats {
    /// Correlations written.
    pub correlations: usize,
    /// Groups written, over all correlations.
    pub groups: usize,
    /// Payload bytes written: the correlation keys and fingerprints plus the
    /// JSON text of every group key and state (SQLite's page overhead not
    /// included).
    pub bytes: usize,
}

/// An error of the state store. Every message names the database path and
/// the operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// SQLite reported an error.
    #[error("state db {path}: {operation}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// What the store was doing.
        operation: &'static str,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// The file is not an rsigma state database (not SQLite at all, or a
    /// SQLite database of another application). The file is left untouched.
    #[error(
        "state db {path}: open: not an rsigma state database ({reason}); \
         point --state-db at a new or rsigma-created file"
    )]
    Foreign {
        /// The database file.
        path: PathBuf,
        /// Why the file was refused.
        reason: String,
    },
    /// The file was written by a newer rsigma with a schema this one does not
    /// know. The file is left untouched.
    #[error(
        "state db {path}: open: schema version {found} is newer than the newest this rsigma \
         supports ({supported}); upgrade rsigma, or use another --state-db / --clear-state \
         with a fresh file"
    )]
    UnsupportedVersion {
        /// The database file.
        path: PathBuf,
        /// The version found in the file.
        found: i64,
        /// The newest version this build knows ([`SCHEMA_VERSION`]).
        supported: i64,
    },
    /// SQLite could not switch the file to the WAL journal (a file system
    /// without shared-memory support, such as some network file systems).
    #[error(
        "state db {path}: open: cannot enable the WAL journal (journal_mode stayed {mode}); \
         put the state db on a local file system"
    )]
    NoWal {
        /// The database file.
        path: PathBuf,
        /// The journal mode SQLite kept.
        mode: String,
    },
    /// Reading the file failed before SQLite opened it.
    #[error("state db {path}: {operation}: {source}")]
    Io {
        /// The database file.
        path: PathBuf,
        /// What the store was doing.
        operation: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The directory meant to hold the database does not exist.
    #[error("state db {path}: open: directory {dir} does not exist")]
    MissingDirectory {
        /// The database file.
        path: PathBuf,
        /// The missing directory.
        dir: PathBuf,
    },
    /// The snapshot given to [`StateStore::save`] is not storable (duplicate
    /// keys). Nothing was written; the previous snapshot is intact.
    #[error("state db {path}: save: invalid snapshot: {detail}")]
    InvalidSnapshot {
        /// The database file.
        path: PathBuf,
        /// What is wrong with the snapshot.
        detail: String,
    },
    /// The stored data is inconsistent (edited by hand, or damaged).
    #[error("state db {path}: {operation}: corrupt state: {detail}")]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What the store was doing.
        operation: &'static str,
        /// What is inconsistent.
        detail: String,
    },
}

/// The schema version this build writes (`PRAGMA user_version`). Files with
/// an older version are migrated on open; newer ones are refused.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// `PRAGMA application_id` of rsigma state files ("RSIG").
pub const APPLICATION_ID: i32 = 0x5253_4947;

/// `MIGRATIONS[v]` upgrades a file from schema version `v` to `v + 1`
/// (version 0 is the empty file). Append, never edit.
const MIGRATIONS: &[&str] = &[
    // 0 -> 1: the initial schema.
    "CREATE TABLE meta (
         key   TEXT PRIMARY KEY NOT NULL,
         value TEXT NOT NULL
     ) WITHOUT ROWID;
     CREATE TABLE correlations (
         correlation TEXT PRIMARY KEY NOT NULL,
         fingerprint TEXT NOT NULL,
         position    INTEGER NOT NULL
     );
     CREATE TABLE correlation_groups (
         correlation TEXT NOT NULL REFERENCES correlations (correlation),
         group_key   TEXT NOT NULL,
         position    INTEGER NOT NULL,
         state       TEXT NOT NULL,
         PRIMARY KEY (correlation, group_key)
     );",
];

/// `meta` keys.
const META_SAVED_AT: &str = "saved_at_ms";
const META_VERSION: &str = "rsigma_version";
const META_CORRELATIONS: &str = "correlation_count";
const META_GROUPS: &str = "group_count";
const META_SOURCE_SEQUENCE: &str = "source_sequence";
const META_SOURCE_TIME: &str = "source_time_ms";

/// How long a statement waits for another connection's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A SQLite file holding the last saved [`StateSnapshot`].
///
/// One daemon should own a file at a time; other connections (a second
/// store, the `sqlite3` shell) may read it concurrently.
#[derive(Debug)]
pub struct StateStore {
    conn: Connection,
    path: PathBuf,
}

impl StateStore {
    /// Opens the state database at `path`, creating the file and its schema if
    /// needed, and migrating an older schema version.
    ///
    /// The connection uses the WAL journal with `synchronous=FULL`. A file
    /// that is not SQLite, a SQLite database of another application, or a
    /// schema version newer than [`SCHEMA_VERSION`] is an error, and such a
    /// file is not modified.
    pub fn open(path: &Path) -> Result<StateStore, StateError> {
        let path = path.to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.is_dir()
        {
            return Err(StateError::MissingDirectory {
                dir: dir.to_path_buf(),
                path,
            });
        }
        check_header(&path)?;
        // No SQLITE_OPEN_URI: the path is a file name, never a `file:` URI.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn =
            Connection::open_with_flags(&path, flags).map_err(|source| StateError::Sqlite {
                path: path.clone(),
                operation: "open",
                source,
            })?;
        let mut store = StateStore { conn, path };
        store
            .conn
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| store.sqlite("open", e))?;
        store.check_identity()?;
        store.configure()?;
        store.migrate()?;
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the stored state with `snapshot`, in one transaction, and
    /// records `saved_at_ms` and the rsigma version in the `meta` table.
    ///
    /// When this returns `Ok` the snapshot is durable. On error nothing
    /// changed: the previous snapshot is still the stored one.
    pub fn save(&mut self, snapshot: &StateSnapshot) -> Result<SaveStats, StateError> {
        self.save_at(snapshot, None)
    }

    /// [`save`](Self::save), recording in the same transaction how far the
    /// source had been acknowledged (when given; else the stored position
    /// stays as it was).
    pub fn save_at(
        &mut self,
        snapshot: &StateSnapshot,
        position: Option<SourcePosition>,
    ) -> Result<SaveStats, StateError> {
        const OP: &str = "save";
        let path = &self.path;
        let sqlite = |source| StateError::Sqlite {
            path: path.clone(),
            operation: OP,
            source,
        };
        let mut stats = SaveStats::default();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite)?;
        tx.execute("DELETE FROM correlation_groups", [])
            .map_err(sqlite)?;
        tx.execute("DELETE FROM correlations", []).map_err(sqlite)?;
        {
            let mut insert_correlation = tx
                .prepare_cached(
                    "INSERT INTO correlations (correlation, fingerprint, position) \
                     VALUES (?1, ?2, ?3)",
                )
                .map_err(sqlite)?;
            let mut insert_group = tx
                .prepare_cached(
                    "INSERT INTO correlation_groups (correlation, group_key, position, state) \
                     VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(sqlite)?;
            let mut group_position: i64 = 0;
            for (position, correlation) in snapshot.correlations.iter().enumerate() {
                let key = correlation.correlation.as_str();
                insert_correlation
                    .execute(params![key, correlation.fingerprint, position as i64])
                    .map_err(|e| {
                        if is_constraint(&e) {
                            StateError::InvalidSnapshot {
                                path: path.clone(),
                                detail: format!("correlation key {key:?} appears twice"),
                            }
                        } else {
                            sqlite(e)
                        }
                    })?;
                stats.correlations += 1;
                stats.bytes += key.len() + correlation.fingerprint.len();
                for group in &correlation.groups {
                    let group_key = group.group_key.to_string();
                    let state = group.state.to_string();
                    insert_group
                        .execute(params![key, group_key, group_position, state])
                        .map_err(|e| {
                            if is_constraint(&e) {
                                StateError::InvalidSnapshot {
                                    path: path.clone(),
                                    detail: format!(
                                        "group key {group_key} appears twice in correlation {key:?}"
                                    ),
                                }
                            } else {
                                sqlite(e)
                            }
                        })?;
                    group_position += 1;
                    stats.groups += 1;
                    stats.bytes += group_key.len() + state.len();
                }
            }
            let mut put_meta = tx
                .prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")
                .map_err(sqlite)?;
            for (key, value) in [
                (META_SAVED_AT, snapshot.saved_at_ms.to_string()),
                (META_VERSION, env!("CARGO_PKG_VERSION").to_string()),
                (META_CORRELATIONS, stats.correlations.to_string()),
                (META_GROUPS, stats.groups.to_string()),
            ] {
                put_meta.execute(params![key, value]).map_err(sqlite)?;
            }
            if let Some(position) = position {
                put_meta
                    .execute(params![META_SOURCE_SEQUENCE, position.sequence.to_string()])
                    .map_err(sqlite)?;
                put_meta
                    .execute(params![META_SOURCE_TIME, position.time_ms.to_string()])
                    .map_err(sqlite)?;
            }
        }
        tx.commit().map_err(sqlite)?;
        self.checkpoint();
        Ok(stats)
    }

    /// Reads the stored snapshot, in the order it was saved; `None` when
    /// nothing was ever saved (or the state was cleared).
    pub fn load(&self) -> Result<Option<StateSnapshot>, StateError> {
        const OP: &str = "load";
        let sqlite = |e| self.sqlite(OP, e);
        let corrupt = |detail: String| StateError::Corrupt {
            path: self.path.clone(),
            operation: OP,
            detail,
        };
        // One read transaction, so the three tables are read from one
        // consistent snapshot even if another connection saves meanwhile.
        let tx = self.conn.unchecked_transaction().map_err(sqlite)?;
        let Some(saved_at) = read_meta(&tx, META_SAVED_AT).map_err(sqlite)? else {
            return Ok(None);
        };
        let saved_at_ms = saved_at
            .parse::<i64>()
            .map_err(|_| corrupt(format!("meta {META_SAVED_AT} is {saved_at:?}")))?;

        let mut correlations = Vec::new();
        let mut index = HashMap::new();
        {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT correlation, fingerprint FROM correlations ORDER BY position",
                )
                .map_err(sqlite)?;
            let mut rows = stmt.query([]).map_err(sqlite)?;
            while let Some(row) = rows.next().map_err(sqlite)? {
                let correlation: String = row.get(0).map_err(sqlite)?;
                let fingerprint: String = row.get(1).map_err(sqlite)?;
                index.insert(correlation.clone(), correlations.len());
                correlations.push(CorrelationSnapshot {
                    correlation,
                    fingerprint,
                    groups: Vec::new(),
                });
            }
        }
        let mut group_count = 0usize;
        {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT correlation, group_key, state FROM correlation_groups \
                     ORDER BY position",
                )
                .map_err(sqlite)?;
            let mut rows = stmt.query([]).map_err(sqlite)?;
            while let Some(row) = rows.next().map_err(sqlite)? {
                let correlation = row
                    .get_ref(0)
                    .map_err(sqlite)?
                    .as_str()
                    .map_err(|e| corrupt(format!("a group's correlation is not text: {e}")))?;
                let &slot = index.get(correlation).ok_or_else(|| {
                    corrupt(format!(
                        "groups of correlation {correlation:?}, which has no correlations row"
                    ))
                })?;
                let parse = |column: usize, what: &str| {
                    let text = row.get_ref(column).map_err(sqlite)?.as_str().map_err(|e| {
                        corrupt(format!("a {what} of {correlation:?} is not text: {e}"))
                    })?;
                    serde_json::from_str::<serde_json::Value>(text).map_err(|e| {
                        corrupt(format!("a {what} of {correlation:?} is not JSON: {e}"))
                    })
                };
                let group_key = parse(1, "group key")?;
                let state = parse(2, "group state")?;
                correlations[slot]
                    .groups
                    .push(GroupSnapshot { group_key, state });
                group_count += 1;
            }
        }
        // Belt and braces: the counts written with the snapshot must match.
        for (key, found) in [
            (META_CORRELATIONS, correlations.len()),
            (META_GROUPS, group_count),
        ] {
            let recorded = read_meta(&tx, key).map_err(sqlite)?;
            if recorded.as_deref() != Some(found.to_string().as_str()) {
                return Err(corrupt(format!(
                    "meta {key} is {recorded:?} but the tables hold {found}"
                )));
            }
        }
        Ok(Some(StateSnapshot {
            saved_at_ms,
            correlations,
        }))
    }

    /// The source position saved with the stored snapshot, if any.
    pub fn source_position(&self) -> Result<Option<SourcePosition>, StateError> {
        const OP: &str = "load";
        let read = |key: &str| read_meta(&self.conn, key).map_err(|e| self.sqlite(OP, e));
        let (Some(sequence), Some(time_ms)) =
            (read(META_SOURCE_SEQUENCE)?, read(META_SOURCE_TIME)?)
        else {
            return Ok(None);
        };
        let corrupt = |key: &str, value: &str| StateError::Corrupt {
            path: self.path.clone(),
            operation: OP,
            detail: format!("meta {key} is {value:?}"),
        };
        Ok(Some(SourcePosition {
            sequence: sequence
                .parse()
                .map_err(|_| corrupt(META_SOURCE_SEQUENCE, &sequence))?,
            time_ms: time_ms
                .parse()
                .map_err(|_| corrupt(META_SOURCE_TIME, &time_ms))?,
        }))
    }

    /// Deletes the stored state (for `--clear-state`): [`load`](Self::load)
    /// returns `None` afterwards. The schema stays.
    pub fn clear(&mut self) -> Result<(), StateError> {
        const OP: &str = "clear";
        let path = &self.path;
        let sqlite = |source| StateError::Sqlite {
            path: path.clone(),
            operation: OP,
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite)?;
        tx.execute_batch(
            "DELETE FROM correlation_groups; DELETE FROM correlations; DELETE FROM meta;",
        )
        .map_err(sqlite)?;
        tx.commit().map_err(sqlite)?;
        self.checkpoint();
        Ok(())
    }

    fn sqlite(&self, operation: &'static str, source: rusqlite::Error) -> StateError {
        StateError::Sqlite {
            path: self.path.clone(),
            operation,
            source,
        }
    }

    fn foreign(&self, reason: impl Into<String>) -> StateError {
        StateError::Foreign {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    /// Refuses files that are not ours before anything writes to them.
    fn check_identity(&self) -> Result<(), StateError> {
        let read = |pragma: &str| -> Result<i64, StateError> {
            self.conn
                .pragma_query_value(None, pragma, |row| row.get(0))
                .map_err(|e| {
                    if e.sqlite_error_code() == Some(ErrorCode::NotADatabase) {
                        self.foreign("the file is not a SQLite database")
                    } else {
                        self.sqlite("open", e)
                    }
                })
        };
        let application_id = read("application_id")?;
        let version = read("user_version")?;
        if application_id != 0 && application_id != i64::from(APPLICATION_ID) {
            return Err(self.foreign(format!(
                "SQLite application_id is {application_id:#x}, rsigma's is {APPLICATION_ID:#x}"
            )));
        }
        if version > SCHEMA_VERSION {
            return Err(StateError::UnsupportedVersion {
                path: self.path.clone(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        if application_id == 0 {
            let objects: i64 = self
                .conn
                .query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get(0))
                .map_err(|e| self.sqlite("open", e))?;
            if objects > 0 {
                return Err(self.foreign(format!(
                    "a SQLite database with {objects} schema objects and no rsigma application_id"
                )));
            }
        }
        Ok(())
    }

    /// WAL journal and `synchronous=FULL`: see `docs/state.md` for why.
    fn configure(&self) -> Result<(), StateError> {
        let mode: String = self
            .conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(|e| self.sqlite("open (set journal_mode=WAL)", e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StateError::NoWal {
                path: self.path.clone(),
                mode,
            });
        }
        self.conn
            .pragma_update(None, "synchronous", "FULL")
            .map_err(|e| self.sqlite("open (set synchronous=FULL)", e))?;
        Ok(())
    }

    /// Brings the schema to [`SCHEMA_VERSION`] in one transaction.
    fn migrate(&mut self) -> Result<(), StateError> {
        const OP: &str = "open (migrate schema)";
        let path = &self.path;
        let sqlite = |source| StateError::Sqlite {
            path: path.clone(),
            operation: OP,
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite)?;
        // Re-read under the write lock: another process may have migrated
        // the file since `check_identity`.
        let version: i64 = tx
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(sqlite)?;
        if version > SCHEMA_VERSION {
            return Err(StateError::UnsupportedVersion {
                path: path.clone(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        if version == SCHEMA_VERSION {
            return Ok(());
        }
        for migration in &MIGRATIONS[version as usize..] {
            tx.execute_batch(migration).map_err(sqlite)?;
        }
        tx.pragma_update(None, "application_id", APPLICATION_ID)
            .map_err(sqlite)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(sqlite)?;
        tx.commit().map_err(sqlite)
    }

    /// Copies the WAL back into the main file and truncates it, so the `.db`
    /// file alone holds the last save and the WAL does not stay as large as
    /// the largest save. Best effort, like SQLite's own auto-checkpoint: the
    /// data is already durable in the WAL, and an interrupted or failed
    /// checkpoint is finished by the next one (or by recovery on open).
    fn checkpoint(&self) {
        let _ = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
    }
}

/// The first 16 bytes of every SQLite database file.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Refuses an existing non-empty file that does not start with the SQLite
/// header. SQLite itself would take a file shorter than one page for an empty
/// database and overwrite it.
fn check_header(path: &Path) -> Result<(), StateError> {
    use std::io::Read;
    let io = |source| StateError::Io {
        path: path.to_path_buf(),
        operation: "open",
        source,
    };
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(e)),
    };
    let mut header = Vec::with_capacity(SQLITE_HEADER.len());
    file.take(SQLITE_HEADER.len() as u64)
        .read_to_end(&mut header)
        .map_err(io)?;
    if header.is_empty() || header == SQLITE_HEADER {
        Ok(())
    } else {
        Err(StateError::Foreign {
            path: path.to_path_buf(),
            reason: "the file is not a SQLite database".into(),
        })
    }
}

fn read_meta(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row([key], |row| row.get(0))
        .optional()
}

fn is_constraint(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation)
}

/// Keeps only the correlations of `snapshot` that still exist with the same
/// definition: those whose `(correlation key, fingerprint)` pair is in `live`
/// (the pairs of the currently loaded correlation rules).
///
/// This is the restore rule for a state file written by another rule set: a
/// correlation that was removed, or whose definition (and so fingerprint)
/// changed, is dropped with its windows; the others are restored unchanged.
/// `saved_at_ms` and the order of the kept correlations are preserved.
pub fn restore_filter(snapshot: StateSnapshot, live: &[(String, String)]) -> StateSnapshot {
    let live: HashSet<(&str, &str)> = live
        .iter()
        .map(|(key, fingerprint)| (key.as_str(), fingerprint.as_str()))
        .collect();
    StateSnapshot {
        saved_at_ms: snapshot.saved_at_ms,
        correlations: snapshot
            .correlations
            .into_iter()
            .filter(|c| live.contains(&(c.correlation.as_str(), c.fingerprint.as_str())))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn correlation(key: &str, fingerprint: &str, groups: usize) -> CorrelationSnapshot {
        CorrelationSnapshot {
            correlation: key.into(),
            fingerprint: fingerprint.into(),
            groups: (0..groups)
                .map(|i| GroupSnapshot {
                    group_key: json!([["User", format!("user{i}")]]),
                    state: json!({"count": i}),
                })
                .collect(),
        }
    }

    fn snapshot() -> StateSnapshot {
        StateSnapshot {
            saved_at_ms: 42,
            correlations: vec![
                correlation("a", "fa", 2),
                correlation("b", "fb", 1),
                correlation("c", "fc", 3),
            ],
        }
    }

    fn live(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, f)| (k.to_string(), f.to_string()))
            .collect()
    }

    fn keys(s: &StateSnapshot) -> Vec<&str> {
        s.correlations
            .iter()
            .map(|c| c.correlation.as_str())
            .collect()
    }

    #[test]
    fn restore_filter_keeps_everything_when_all_live() {
        let s = snapshot();
        let kept = restore_filter(s.clone(), &live(&[("c", "fc"), ("a", "fa"), ("b", "fb")]));
        assert_eq!(kept, s);
    }

    #[test]
    fn restore_filter_drops_removed_correlations() {
        let kept = restore_filter(
            snapshot(),
            &live(&[("a", "fa"), ("c", "fc"), ("new", "fn")]),
        );
        assert_eq!(keys(&kept), ["a", "c"]);
        assert_eq!(kept.saved_at_ms, 42);
        assert_eq!(kept.correlations[1].groups.len(), 3, "windows kept whole");
    }

    #[test]
    fn restore_filter_drops_changed_definitions() {
        let kept = restore_filter(
            snapshot(),
            &live(&[("a", "fa"), ("b", "fb-changed"), ("c", "fc")]),
        );
        assert_eq!(keys(&kept), ["a", "c"]);
    }

    #[test]
    fn restore_filter_does_not_match_key_against_other_fingerprint() {
        // The pair must match, not the key and fingerprint separately.
        let kept = restore_filter(snapshot(), &live(&[("a", "fb"), ("b", "fa")]));
        assert!(kept.correlations.is_empty());
    }

    #[test]
    fn restore_filter_with_no_live_rules_keeps_nothing() {
        let kept = restore_filter(snapshot(), &[]);
        assert_eq!(kept.correlations, []);
        assert_eq!(kept.saved_at_ms, 42);
    }

    #[test]
    fn schema_version_matches_migrations() {
        assert_eq!(SCHEMA_VERSION, 1);
    }

    #[test]
    fn save_stats_count_payload_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::open(&dir.path().join("s.db")).unwrap();
        let stats = store
            .save(&StateSnapshot {
                saved_at_ms: 1,
                correlations: vec![CorrelationSnapshot {
                    correlation: "k".into(),
                    fingerprint: "fp".into(),
                    groups: vec![GroupSnapshot {
                        group_key: json!([["a", "b"]]),
                        state: json!({"n": 1}),
                    }],
                }],
            })
            .unwrap();
        let expected = "k".len() + "fp".len() + r#"[["a","b"]]"#.len() + r#"{"n":1}"#.len();
        assert_eq!(
            stats,
            SaveStats {
                correlations: 1,
                groups: 1,
                bytes: expected
            }
        );
    }

    #[test]
    fn errors_name_path_and_operation() {
        let e = StateError::Sqlite {
            path: PathBuf::from("/x/state.db"),
            operation: "save",
            source: rusqlite::Error::InvalidQuery,
        };
        let text = e.to_string();
        assert!(text.starts_with("state db /x/state.db: save: "), "{text}");
    }
}
