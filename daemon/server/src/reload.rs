//! Hot reload (rules, pipelines, enrichers, TLS certificate). The file
//! watcher, SIGHUP and `POST /api/v1/reload` all send
//! requests to one task, which waits for a quiet period (so a burst of file
//! changes, such as a ConfigMap update, causes one reload), loads the rule set
//! off the async threads, and swaps it in atomically. A failed load keeps the
//! previous rules and marks the daemon not ready until a load succeeds.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Utc;
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::context::{DaemonContext, ReloadRecord, ReloadTrigger};
use crate::ruleset::{self, Ruleset};
use crate::sources::Refreshed;

/// Runs reloads until every request sender is gone.
pub async fn run(
    context: Arc<DaemonContext>,
    mut requests: mpsc::UnboundedReceiver<ReloadTrigger>,
) {
    while let Some(mut trigger) = requests.recv().await {
        // Debounce: wait until no request arrived for the quiet period.
        loop {
            match tokio::time::timeout(context.config.reload_debounce, requests.recv()).await {
                Ok(Some(next)) => {
                    // An explicit request names the reload better than a file event.
                    if next != ReloadTrigger::Watch {
                        trigger = next;
                    }
                }
                Ok(None) => return,
                Err(_) => break,
            }
        }
        reload_now(&context, trigger).await;
    }
}

/// Loads the rule set and swaps it in, or records why it could not.
///
/// A file event over content that is what the active rules were loaded from
/// (the kubelet touching a mounted ConfigMap's ownership, say) is no reload:
/// it is counted in `rsigma_reloads_unchanged_total` and nothing else
/// happens. Explicit reloads (API, SIGHUP) always load, since they also
/// rotate the TLS certificate.
pub async fn reload_now(context: &Arc<DaemonContext>, trigger: ReloadTrigger) {
    // Source declarations and watched source files are read first: their
    // change is a change even when no rule file changed.
    let mut refreshed = Refreshed::default();
    let mut declarations_changed = false;
    if let Some(sources) = &context.sources {
        match sources.reload_declarations().await {
            Ok((changed, intervals)) => {
                refreshed.changed = changed;
                declarations_changed = changed;
                for source in intervals {
                    crate::sources::spawn_interval(context, source);
                }
            }
            Err(err) => {
                refreshed.changed = true;
                refreshed.failures.push(err);
            }
        }
        let watched = sources.refresh_watched().await;
        refreshed.changed |= watched.changed || !watched.failures.is_empty();
    }
    if trigger == ReloadTrigger::Watch
        && !refreshed.changed
        && context.last_reload().is_none_or(|r| r.ok)
    {
        let checking = Arc::clone(context);
        let unchanged = tokio::task::spawn_blocking(move || unchanged_on_disk(&checking))
            .await
            .unwrap_or(false);
        if unchanged {
            context.metrics.reloads_unchanged.inc();
            tracing::debug!("file event without a content change: no reload");
            return;
        }
    }
    context.metrics.reloads.inc();
    if let Some(sources) = &context.sources {
        sources.refresh_on_reload().await;
        // Every source failing now (with `on_error: fail`), not only those
        // fetched by this reload: readiness stays off until each recovers.
        refreshed.failures.extend(sources.failures());
    }
    let loading = Arc::clone(context);
    let loaded = tokio::task::spawn_blocking(move || {
        ruleset::load(&loading.config, loading.sources.as_ref())
    })
    .await
    .expect("the rule loader does not panic");
    let mut companions = refreshed.failures;
    companions.extend(reload_companions(context, declarations_changed).await);
    let failure = match loaded {
        Ok(ruleset) => {
            // The rules are fine: use them, even if a companion failed.
            swap(context, ruleset);
            let active = context.ruleset.load();
            tracing::info!(
                trigger = ?trigger,
                rules = active.counts.detection,
                correlations = active.counts.correlation,
                hash = %active.digest,
                "rules reloaded"
            );
            (!companions.is_empty()).then(|| companions.join("; "))
        }
        Err(failure) => Some(
            std::iter::once(failure.to_string())
                .chain(companions)
                .collect::<Vec<_>>()
                .join("; "),
        ),
    };
    if let Some(failure) = &failure {
        context.metrics.reloads_failed.inc();
        tracing::error!(trigger = ?trigger, error = %failure, "reload failed; keeping the previous rules, certificate or enrichers");
    }
    context.record_reload(ReloadRecord {
        at: Utc::now(),
        ok: failure.is_none(),
        error: failure,
        trigger,
    });
}

/// Whether the rules, pipelines and enrichers on disk are what the active
/// ones were loaded from.
fn unchanged_on_disk(context: &DaemonContext) -> bool {
    ruleset::unchanged_on_disk(&context.config, &context.ruleset.load())
        && context
            .enrichment
            .as_ref()
            .is_none_or(|enrichment| enrichment.unchanged_on_disk())
}

/// Rotates what reloads with the rules: the TLS certificate and the
/// enrichers (only when their file, or the sources their lookups name,
/// changed: a rebuild empties their caches). Each failure keeps the previous
/// one and is returned.
async fn reload_companions(
    context: &Arc<DaemonContext>,
    declarations_changed: bool,
) -> Vec<String> {
    let mut failures = Vec::new();
    if let Some(tls) = &context.tls
        && let Err(err) = tls.reload()
    {
        failures.push(err);
    }
    if context.enrichment.is_some() {
        let loading = Arc::clone(context);
        let reloaded = tokio::task::spawn_blocking(move || {
            let enrichment = loading.enrichment.as_ref().expect("checked");
            if enrichment.unchanged_on_disk() && !declarations_changed {
                return Ok(());
            }
            enrichment.reload(loading.sources.as_ref())
        })
        .await
        .expect("the enrichers loader does not panic");
        failures.extend(reloaded.err());
    }
    failures
}

/// Makes `new` the active rule set, carrying over the state of correlations
/// that exist unchanged in both.
pub fn swap(context: &DaemonContext, new: Ruleset) {
    let old = context.ruleset.load();
    {
        // Held until the swap, so no update to the old state is lost after
        // the snapshot (workers still on the old set wait here).
        let old_state = old.correlations.lock().expect("not poisoned");
        if let (Some(old_engine), Some(new_engine)) = (
            old_state.as_ref(),
            new.correlations.lock().expect("not poisoned").as_mut(),
        ) {
            let restored = new_engine.restore(old_engine.snapshot());
            tracing::debug!(groups = restored.groups, "correlation state carried over");
        }
        context.ruleset.store(Arc::new(new));
    }
}

/// Watches the rules path and pipeline files; any change requests a reload.
/// The returned watcher must be kept alive.
pub fn watch(context: &Arc<DaemonContext>) -> Result<RecommendedWatcher, String> {
    let requests = context.reload_requests.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && !event.kind.is_access()
        {
            let _ = requests.send(ReloadTrigger::Watch);
        }
    })
    .map_err(|err| format!("cannot start the file watcher: {err}"))?;
    let mut paths: Vec<PathBuf> = vec![context.config.rules.clone()];
    paths.extend(
        context
            .config
            .pipelines
            .iter()
            .map(PathBuf::from)
            .filter(|p| p.is_file()),
    );
    paths.extend(context.config.enrichers.clone());
    paths.extend(context.config.sources.iter().cloned());
    if let Some(sources) = &context.sources {
        paths.extend(sources.watched_files());
    }
    for path in paths {
        // A directory is watched recursively; a file through its directory,
        // so that editors replacing it (rename over) are seen.
        let (target, mode) = if path.is_dir() {
            (path.clone(), RecursiveMode::Recursive)
        } else {
            (
                path.parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."))
                    .to_path_buf(),
                RecursiveMode::NonRecursive,
            )
        };
        watcher
            .watch(&target, mode)
            .map_err(|err| format!("cannot watch {}: {err}", target.display()))?;
    }
    Ok(watcher)
}

/// Turns SIGHUP into reload requests.
pub async fn on_sighup(context: Arc<DaemonContext>, mut hangups: tokio::signal::unix::Signal) {
    while hangups.recv().await.is_some() {
        if context.reload_requests.send(ReloadTrigger::Signal).is_err() {
            return;
        }
    }
}
