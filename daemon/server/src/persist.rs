//! Correlation state persistence: restore at startup, snapshots every
//! `--state-save-interval` and at shutdown. A snapshot is taken under the
//! correlation lock (fast) and written on a blocking thread (an fsync'd
//! SQLite transaction), so evaluation never waits on the disk.

use std::sync::{Arc, Mutex};

use rsigma_engine::state::{SourcePosition, StateStore};
use tokio_util::sync::CancellationToken;

use crate::config::{ReplayStart, StateConfig};
use crate::context::DaemonContext;

/// What happens to the stored state at startup, and why (docs/nats.md has
/// the table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartupState {
    /// Restore it.
    Restore(&'static str),
    /// Discard it.
    Clear(&'static str),
}

/// Decides between restoring and clearing the stored state. A replay that
/// starts at or before the position the state was saved at would count
/// its events twice, so it starts clean; one that starts after it catches
/// up and keeps the windows. A replay with no stored position to compare
/// against starts clean too. `--clear-state` and `--keep-state` override.
pub fn startup_state(
    config: &StateConfig,
    replay: ReplayStart,
    stored: Option<SourcePosition>,
) -> StartupState {
    use StartupState::{Clear, Restore};
    if config.clear {
        return Clear("--clear-state");
    }
    if config.keep {
        return Restore("--keep-state");
    }
    match (replay, stored) {
        (ReplayStart::Resume, _) => Restore("resuming"),
        (ReplayStart::Latest, _) => Restore("the replay starts at the latest message"),
        (ReplayStart::Sequence(_) | ReplayStart::Time(_), None) => {
            Clear("a replay with no stored source position")
        }
        (ReplayStart::Sequence(start), Some(stored)) if start <= stored.sequence => {
            Clear("the replay starts at or before the stored sequence")
        }
        (ReplayStart::Time(start), Some(stored)) if start.timestamp_millis() <= stored.time_ms => {
            Clear("the replay starts at or before the stored time")
        }
        (ReplayStart::Sequence(_) | ReplayStart::Time(_), Some(_)) => {
            Restore("the replay starts after the stored position")
        }
    }
}

/// An open state store.
#[derive(Clone)]
pub struct Persistence {
    store: Arc<Mutex<StateStore>>,
}

impl Persistence {
    /// Opens the store, then clears it or restores from it into the active
    /// rule set's correlations, as [`startup_state`] decides.
    pub fn open(config: &StateConfig, context: &DaemonContext) -> Result<Persistence, String> {
        let mut store = StateStore::open(&config.db).map_err(|err| err.to_string())?;
        let stored = store.source_position().map_err(|err| err.to_string())?;
        match startup_state(config, context.config.nats.replay, stored) {
            StartupState::Clear(why) => {
                store.clear().map_err(|err| err.to_string())?;
                tracing::info!(db = %config.db.display(), why, "stored correlation state cleared");
            }
            StartupState::Restore(why) => {
                if let Some(position) = stored {
                    context.advance_source_position(position);
                }
                if let Some(snapshot) = store.load().map_err(|err| err.to_string())? {
                    restore(context, snapshot, why);
                }
            }
        }
        Ok(Persistence {
            store: Arc::new(Mutex::new(store)),
        })
    }

    /// Snapshots the active correlations and writes them, with how far the
    /// source had been acknowledged.
    pub async fn save(&self, context: &DaemonContext) {
        // The position is read before the snapshot: every event acknowledged
        // by then was evaluated before its acknowledgement, so the snapshot
        // holds its part of the state (the other order could record as done
        // an event the snapshot missed).
        let position = context.source_position();
        let snapshot = {
            let ruleset = context.ruleset.load();
            let correlations = ruleset.correlations.lock().expect("not poisoned");
            match correlations.as_ref() {
                Some(engine) => engine.snapshot(),
                // Without correlations there is no window to keep, but the
                // source position still decides what a replay does.
                None if position.is_some() => rsigma_engine::state::StateSnapshot {
                    saved_at_ms: chrono::Utc::now().timestamp_millis(),
                    correlations: Vec::new(),
                },
                None => return,
            }
        };
        let store = Arc::clone(&self.store);
        let saved = tokio::task::spawn_blocking(move || {
            store
                .lock()
                .expect("not poisoned")
                .save_at(&snapshot, position)
        })
        .await
        .expect("saving does not panic");
        match saved {
            Ok(stats) => {
                context.metrics.state_saves.inc();
                tracing::debug!(
                    groups = stats.groups,
                    bytes = stats.bytes,
                    "correlation state saved"
                );
            }
            Err(err) => {
                context.metrics.state_save_failures.inc();
                tracing::error!(error = %err, "saving correlation state failed");
            }
        }
    }

    /// Saves every interval until cancelled.
    pub async fn run(self, context: Arc<DaemonContext>, stop: CancellationToken) {
        let period = context
            .config
            .state
            .as_ref()
            .map(|s| s.save_interval)
            .unwrap_or(std::time::Duration::from_secs(30));
        let mut ticks = tokio::time::interval(period);
        ticks.tick().await;
        loop {
            tokio::select! {
                _ = ticks.tick() => self.save(&context).await,
                _ = stop.cancelled() => return,
            }
        }
    }
}

fn restore(context: &DaemonContext, snapshot: rsigma_engine::state::StateSnapshot, why: &str) {
    let ruleset = context.ruleset.load();
    let mut correlations = ruleset.correlations.lock().expect("not poisoned");
    if let Some(engine) = correlations.as_mut() {
        let restored = engine.restore(snapshot);
        // The gauge would otherwise read 0 until the next event.
        context
            .metrics
            .correlation_state_entries
            .set(engine.stats().state_entries as i64);
        tracing::info!(
            groups = restored.groups,
            skipped_correlations = restored.skipped_correlations,
            why,
            "correlation state restored"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn config(clear: bool, keep: bool) -> StateConfig {
        StateConfig {
            db: "state.db".into(),
            save_interval: std::time::Duration::from_secs(30),
            clear,
            keep,
        }
    }

    const STORED: SourcePosition = SourcePosition {
        sequence: 1_000,
        time_ms: 1_800_000_000_000,
    };

    fn at_ms(ms: i64) -> ReplayStart {
        ReplayStart::Time(chrono::Utc.timestamp_millis_opt(ms).unwrap())
    }

    fn restores(config: &StateConfig, replay: ReplayStart, stored: Option<SourcePosition>) -> bool {
        matches!(
            startup_state(config, replay, stored),
            StartupState::Restore(_)
        )
    }

    #[test]
    fn the_state_table() {
        let plain = config(false, false);
        for stored in [None, Some(STORED)] {
            assert!(restores(&plain, ReplayStart::Resume, stored));
            assert!(restores(&plain, ReplayStart::Latest, stored));
        }
        assert!(!restores(&plain, ReplayStart::Sequence(1), Some(STORED)));
        assert!(!restores(
            &plain,
            ReplayStart::Sequence(1_000),
            Some(STORED)
        ));
        assert!(restores(&plain, ReplayStart::Sequence(1_001), Some(STORED)));
        assert!(!restores(&plain, ReplayStart::Sequence(5_000), None));
        assert!(!restores(&plain, at_ms(STORED.time_ms), Some(STORED)));
        assert!(restores(&plain, at_ms(STORED.time_ms + 1), Some(STORED)));
        assert!(!restores(&plain, at_ms(STORED.time_ms + 1), None));
    }

    #[test]
    fn flags_override_the_table() {
        for replay in [
            ReplayStart::Resume,
            ReplayStart::Latest,
            ReplayStart::Sequence(1),
            ReplayStart::Sequence(5_000),
            at_ms(0),
        ] {
            for stored in [None, Some(STORED)] {
                assert!(!restores(&config(true, false), replay, stored));
                assert!(restores(&config(false, true), replay, stored));
            }
        }
    }
}
