//! Correlation state persistence: restore at startup, snapshots every
//! `--state-save-interval` and at shutdown. A snapshot is taken under the
//! correlation lock (fast) and written on a blocking thread (an fsync'd
//! SQLite transaction), so evaluation never waits on the disk.

use std::sync::{Arc, Mutex};

use rsigma_engine::state::StateStore;
use tokio_util::sync::CancellationToken;

use crate::config::StateConfig;
use crate::context::DaemonContext;

/// An open state store.
#[derive(Clone)]
pub struct Persistence {
    store: Arc<Mutex<StateStore>>,
}

impl Persistence {
    /// Opens the store; clears it (`--clear-state`) or restores from it into
    /// the active rule set's correlations.
    pub fn open(config: &StateConfig, context: &DaemonContext) -> Result<Persistence, String> {
        let mut store = StateStore::open(&config.db).map_err(|err| err.to_string())?;
        if config.clear {
            store.clear().map_err(|err| err.to_string())?;
            tracing::info!(db = %config.db.display(), "stored correlation state cleared");
        } else if let Some(snapshot) = store.load().map_err(|err| err.to_string())? {
            let ruleset = context.ruleset.load();
            let mut correlations = ruleset.correlations.lock().expect("not poisoned");
            if let Some(engine) = correlations.as_mut() {
                let restored = engine.restore(snapshot);
                tracing::info!(
                    groups = restored.groups,
                    skipped_correlations = restored.skipped_correlations,
                    "correlation state restored"
                );
            }
        }
        Ok(Persistence {
            store: Arc::new(Mutex::new(store)),
        })
    }

    /// Snapshots the active correlations and writes them.
    pub async fn save(&self, context: &DaemonContext) {
        let snapshot = {
            let ruleset = context.ruleset.load();
            let correlations = ruleset.correlations.lock().expect("not poisoned");
            match correlations.as_ref() {
                Some(engine) => engine.snapshot(),
                None => return,
            }
        };
        let store = Arc::clone(&self.store);
        let saved = tokio::task::spawn_blocking(move || {
            store.lock().expect("not poisoned").save(&snapshot)
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
