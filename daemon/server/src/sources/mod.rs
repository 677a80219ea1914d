//! Dynamic pipeline sources (`--source FILE_OR_DIR`): values fetched from
//! files, HTTP endpoints or programs that feed pipeline `vars` through
//! `${source.ID}` references, and `lookup` enrichers.
//!
//! Every source is fetched at startup (a failure with `on_error: fail` or
//! `keep_last` is exit 3). Afterwards, by its `refresh`:
//!
//! | `refresh` | fetched again |
//! | --- | --- |
//! | `never` (default) | never |
//! | `on_reload` | at every reload (SIGHUP, `POST /api/v1/reload`, a watched file change) |
//! | `watch` (file sources) | when the file changes (its directory is watched), and at every reload |
//! | a duration (`5m`) | every interval; a changed value triggers a reload |
//!
//! A reload recompiles the rules with the values in the cache, off the hot
//! path, and swaps them in whole, like any reload. The declaration files
//! themselves are read again at every reload ([`Sources::reload_declarations`]).

pub(crate) mod config;
mod fetch;
mod include;

pub(crate) use include::load_pipelines;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use serde_json::Value;

use crate::context::{DaemonContext, ReloadRecord, ReloadTrigger};
use crate::enrich::Extractor;
use config::{FileSpec, OnError, SourceSpec, SourceType};
use fetch::Fetcher;

/// When a source is fetched again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refresh {
    Never,
    OnReload,
    Watch,
    Every(Duration),
}

/// What fetching some sources again did.
#[derive(Debug, Default)]
pub struct Refreshed {
    /// Some value changed.
    pub changed: bool,
    /// The failures of `on_error: fail` sources (they keep their value).
    pub failures: Vec<String>,
}

/// One declared source.
pub struct Source {
    id: String,
    /// The declaration file (for messages).
    declared_in: PathBuf,
    refresh: Refresh,
    on_error: OnError,
    timeout: Duration,
    fetcher: Fetcher,
}

/// The declared sources and their last values. The declarations reload
/// with the rules: see [`Sources::reload_declarations`].
pub struct Sources {
    paths: Vec<PathBuf>,
    /// The daemon's NATS settings, for `nats` sources.
    nats: crate::config::NatsConfig,
    declared: ArcSwap<Declared>,
    values: Mutex<HashMap<String, Arc<Value>>>,
    /// Sources whose last fetch failed with `on_error: fail`, and why.
    failing: Mutex<std::collections::BTreeMap<String, String>>,
    metrics: SourceMetrics,
}

/// One reading of the declaration files.
struct Declared {
    /// Content hash of the declaration files.
    digest: String,
    sources: Vec<Arc<Source>>,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let declared = self.declared.load();
        let ids: Vec<&str> = declared.sources.iter().map(|s| s.id.as_str()).collect();
        f.debug_struct("Sources").field("sources", &ids).finish()
    }
}

/// Metrics of the sources, registered with `--source`.
struct SourceMetrics {
    fetches: IntCounterVec,
    last_success: IntGaugeVec,
}

impl SourceMetrics {
    fn register(registry: &Registry) -> SourceMetrics {
        let metrics = SourceMetrics {
            fetches: IntCounterVec::new(
                Opts::new(
                    "rsigma_source_fetches_total",
                    "Fetches of dynamic pipeline sources by source and outcome (ok, error)",
                ),
                &["source", "outcome"],
            )
            .expect("valid metric"),
            last_success: IntGaugeVec::new(
                Opts::new(
                    "rsigma_source_last_success_timestamp_seconds",
                    "Unix time of each source's last successful fetch",
                ),
                &["source"],
            )
            .expect("valid metric"),
        };
        registry
            .register(Box::new(metrics.fetches.clone()))
            .and_then(|()| registry.register(Box::new(metrics.last_success.clone())))
            .expect("source metrics are registered once");
        metrics
    }
}

impl Sources {
    /// Reads the declarations of every `--source` path (a directory: its
    /// `*.yml`/`*.yaml` files in name order). Ids must be unique.
    pub fn declare(
        paths: &[PathBuf],
        nats: &crate::config::NatsConfig,
        registry: &Registry,
    ) -> Result<Sources, String> {
        Ok(Sources {
            paths: paths.to_vec(),
            nats: nats.clone(),
            declared: ArcSwap::from_pointee(read_declarations(
                paths,
                nats,
                declarations_digest(paths),
            )?),
            values: Mutex::new(HashMap::new()),
            failing: Mutex::default(),
            metrics: SourceMetrics::register(registry),
        })
    }

    /// Reads the declaration files again when their content changed: the
    /// new sources are fetched (with startup rules: a failure is an error,
    /// and the previous declarations stay), then replace the old ones.
    /// Returns whether they changed, and the new interval sources, whose
    /// refresh tasks the caller starts ([`spawn_interval`]).
    pub async fn reload_declarations(&self) -> Result<(bool, Vec<Arc<Source>>), String> {
        let digest = declarations_digest(&self.paths);
        if digest == self.declared.load().digest {
            return Ok((false, Vec::new()));
        }
        let declared = read_declarations(&self.paths, &self.nats, digest)?;
        let mut fetched = Vec::with_capacity(declared.sources.len());
        for source in &declared.sources {
            let previous = self.value(&source.id);
            fetched.push((source.id.clone(), self.fetch(source, previous).await?));
        }
        let intervals = declared
            .sources
            .iter()
            .filter(|s| matches!(s.refresh, Refresh::Every(_)))
            .cloned()
            .collect();
        {
            let mut values = self.values.lock().expect("not poisoned");
            values.clear();
            values.extend(fetched.into_iter().map(|(id, v)| (id, Arc::new(v))));
            self.declared.store(Arc::new(declared));
        }
        tracing::info!("source declarations reloaded");
        Ok((true, intervals))
    }

    /// Why each failing source (with `on_error: fail`) failed its last fetch.
    pub fn failures(&self) -> Vec<String> {
        self.failing
            .lock()
            .expect("not poisoned")
            .values()
            .cloned()
            .collect()
    }

    fn is_failing(&self, id: &str) -> bool {
        self.failing.lock().expect("not poisoned").contains_key(id)
    }

    /// Whether `source` is among the current declarations.
    fn is_current(&self, source: &Arc<Source>) -> bool {
        self.declared
            .load()
            .sources
            .iter()
            .any(|s| Arc::ptr_eq(s, source))
    }

    /// The interval sources of the current declarations.
    fn intervals(&self) -> Vec<Arc<Source>> {
        self.declared
            .load()
            .sources
            .iter()
            .filter(|s| matches!(s.refresh, Refresh::Every(_)))
            .cloned()
            .collect()
    }
}

/// The content hash of the declaration files (unreadable paths hash their
/// error, so that they differ).
fn declarations_digest(paths: &[PathBuf]) -> String {
    let mut digest = rsigma_engine::RulesDigest::default();
    match declaration_files(paths) {
        Ok(files) => {
            for file in files {
                let content =
                    std::fs::read_to_string(&file).unwrap_or_else(|err| format!("\0{err}"));
                digest.add(file.display().to_string(), &content);
            }
        }
        Err(err) => digest.add(String::new(), &format!("\0{err}")),
    }
    digest.finish()
}

/// Reads and checks every declaration file of `paths`. Ids must be unique.
/// `digest` is [`declarations_digest`] of `paths`, computed by the caller.
fn read_declarations(
    paths: &[PathBuf],
    nats: &crate::config::NatsConfig,
    digest: String,
) -> Result<Declared, String> {
    let mut sources: Vec<Arc<Source>> = Vec::new();
    for file in declaration_files(paths)? {
        let text = std::fs::read_to_string(&file)
            .map_err(|err| format!("source file {}: {err}", file.display()))?;
        let spec: FileSpec = yaml_serde::from_str(&text)
            .map_err(|err| format!("source file {}: {err}", file.display()))?;
        let dir = file.parent().unwrap_or(Path::new("."));
        for source in spec.sources {
            let id = source.id.clone();
            if let Some(other) = sources.iter().find(|s| s.id == id) {
                return Err(format!(
                    "source {id:?} is declared in {} and in {}",
                    other.declared_in.display(),
                    file.display()
                ));
            }
            let compiled = compile(source, dir, &file, nats)
                .map_err(|err| format!("source file {}: source {id:?}: {err}", file.display()))?;
            sources.push(Arc::new(compiled));
        }
    }
    Ok(Declared { digest, sources })
}

impl Sources {
    /// Whether `id` is declared.
    pub fn is_declared(&self, id: &str) -> bool {
        self.declared.load().sources.iter().any(|s| s.id == id)
    }

    /// Whether `id` is fetched over the network.
    pub fn is_remote(&self, id: &str) -> bool {
        self.declared
            .load()
            .sources
            .iter()
            .any(|s| s.id == id && s.fetcher.is_remote())
    }

    /// The last value of `id`.
    pub fn value(&self, id: &str) -> Option<Arc<Value>> {
        self.values.lock().expect("not poisoned").get(id).cloned()
    }

    /// The files of `watch` sources, for the file watcher.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        self.declared
            .load()
            .sources
            .iter()
            .filter(|s| s.refresh == Refresh::Watch)
            .filter_map(|s| s.fetcher.file().map(Path::to_path_buf))
            .collect()
    }

    /// Fetches every source (startup). Any failure is an error naming the
    /// source, except with `on_error: empty`.
    pub async fn fetch_all(&self) -> Result<(), String> {
        for source in self.declared.load().sources.iter() {
            self.refresh(source, true).await?;
        }
        Ok(())
    }

    /// Fetches the `watch` sources again (any reload, and file events).
    pub async fn refresh_watched(&self) -> Refreshed {
        self.refresh_where(|refresh| refresh == Refresh::Watch)
            .await
    }

    /// Fetches the `on_reload` sources again (a reload).
    pub async fn refresh_on_reload(&self) -> Refreshed {
        self.refresh_where(|refresh| refresh == Refresh::OnReload)
            .await
    }

    async fn refresh_where(&self, due: impl Fn(Refresh) -> bool) -> Refreshed {
        let mut refreshed = Refreshed::default();
        let declared = self.declared.load_full();
        for source in declared.sources.iter().filter(|s| due(s.refresh)) {
            match self.refresh(source, false).await {
                Ok(changed) => refreshed.changed |= changed,
                Err(err) => refreshed.failures.push(err),
            }
        }
        refreshed
    }

    /// Fetches one source and stores its value by its `on_error`. Returns
    /// whether the stored value changed.
    async fn refresh(&self, source: &Source, startup: bool) -> Result<bool, String> {
        let previous = if startup {
            None
        } else {
            self.value(&source.id)
        };
        let fetched = self.fetch(source, previous).await;
        let mut failing = self.failing.lock().expect("not poisoned");
        let value = match fetched {
            Ok(value) => {
                failing.remove(&source.id);
                value
            }
            Err(reason) => {
                failing.insert(source.id.clone(), reason.clone());
                return Err(reason);
            }
        };
        drop(failing);
        let mut values = self.values.lock().expect("not poisoned");
        // A fetch that outlived a reload of the declarations must not write
        // over what the new declaration of its id fetched.
        if !self
            .declared
            .load()
            .sources
            .iter()
            .any(|s| std::ptr::eq(s.as_ref(), source))
        {
            return Ok(false);
        }
        let changed = values.get(&source.id).is_none_or(|old| **old != value);
        values.insert(source.id.clone(), Arc::new(value));
        Ok(changed)
    }

    /// Fetches one source; a failure is handled by its `on_error`
    /// (`keep_last` keeps `previous`, and fails without one).
    async fn fetch(&self, source: &Source, previous: Option<Arc<Value>>) -> Result<Value, String> {
        let fetched = match tokio::time::timeout(source.timeout, source.fetcher.fetch()).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "timed out after {}",
                humantime::format_duration(source.timeout)
            )),
        };
        let outcome = if fetched.is_ok() { "ok" } else { "error" };
        self.metrics
            .fetches
            .with_label_values(&[&source.id, outcome])
            .inc();
        match fetched {
            Ok(value) => {
                self.metrics
                    .last_success
                    .with_label_values(&[&source.id])
                    .set(chrono::Utc::now().timestamp());
                Ok(value)
            }
            Err(reason) => {
                let reason = format!("source {:?}: {reason}", source.id);
                match (source.on_error, previous) {
                    (OnError::Empty, _) => {
                        tracing::warn!("{reason}; using an empty value (on_error: empty)");
                        Ok(Value::Array(Vec::new()))
                    }
                    (OnError::KeepLast, Some(previous)) => {
                        tracing::warn!("{reason}; keeping the last value (on_error: keep_last)");
                        Ok((*previous).clone())
                    }
                    (OnError::KeepLast | OnError::Fail, _) => Err(reason),
                }
            }
        }
    }

    /// Puts the values of sources in place of `${source.ID}` in the
    /// pipelines' `vars`: a list element that is exactly a reference becomes
    /// the source's values (a scalar, or each scalar of a list).
    pub fn resolve_vars(
        sources: Option<&Sources>,
        pipelines: &mut rsigma_engine::pipeline::PipelineSet,
    ) -> Result<(), String> {
        for (origin, name, values) in pipelines.vars_mut() {
            if !values.iter().any(|v| v.contains("${source.")) {
                continue;
            }
            let fail =
                |reason: String| format!("pipeline {}: vars.{name}: {reason}", origin.display());
            let mut resolved = Vec::with_capacity(values.len());
            for value in values.iter() {
                let Some(id) = value
                    .strip_prefix("${source.")
                    .and_then(|rest| rest.strip_suffix('}'))
                else {
                    if value.contains("${source.") {
                        return Err(fail(format!(
                            "{value:?}: a ${{source.ID}} reference must be a whole value"
                        )));
                    }
                    resolved.push(value.clone());
                    continue;
                };
                let source_value = sources
                    .and_then(|s| s.value(id))
                    .ok_or_else(|| fail(format!("no source {id:?} is declared (--source)")))?;
                scalars(&source_value, &mut resolved)
                    .map_err(|reason| fail(format!("source {id:?}: {reason}")))?;
            }
            *values = resolved;
        }
        Ok(())
    }
}

/// Appends the scalars of a source value as strings: a scalar, or each
/// element of a list of scalars; `null` is nothing.
fn scalars(value: &Value, out: &mut Vec<String>) -> Result<(), String> {
    match value {
        Value::Null => Ok(()),
        Value::String(s) => {
            out.push(s.clone());
            Ok(())
        }
        Value::Number(_) | Value::Bool(_) => {
            out.push(value.to_string());
            Ok(())
        }
        Value::Array(items) => items.iter().try_for_each(|item| match item {
            Value::Array(_) | Value::Object(_) => Err(
                "a value for vars must be a scalar or a list of scalars (use extract to select them)"
                    .to_owned(),
            ),
            scalar => scalars(scalar, out),
        }),
        Value::Object(_) => Err(
            "a value for vars must be a scalar or a list of scalars, not an object (use extract to select them)"
                .to_owned(),
        ),
    }
}

/// The declaration files of the `--source` paths, in order.
fn declaration_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|err| format!("--source {}: {err}", path.display()))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && p.extension()
                            .is_some_and(|ext| ext == "yml" || ext == "yaml")
                })
                .collect();
            found.sort();
            files.extend(found);
        } else if path.is_file() {
            files.push(path.clone());
        } else {
            return Err(format!(
                "--source {}: no such file or directory",
                path.display()
            ));
        }
    }
    Ok(files)
}

fn compile(
    spec: SourceSpec,
    dir: &Path,
    file: &Path,
    nats: &crate::config::NatsConfig,
) -> Result<Source, String> {
    if spec.id.is_empty() || spec.id.contains(['}', ' ']) {
        return Err("the id must be non-empty, without spaces or `}`".into());
    }
    let refresh = match spec.refresh.as_deref() {
        None | Some("never") => Refresh::Never,
        Some("on_reload") => Refresh::OnReload,
        Some("watch") => {
            if spec.source_type != SourceType::File {
                return Err("refresh: watch is for file sources".into());
            }
            Refresh::Watch
        }
        Some(interval) => Refresh::Every(
            crate::enrich::config::duration(
                "refresh",
                interval,
                config::MIN_INTERVAL,
                Duration::from_secs(7 * 24 * 3600),
            )
            .map_err(|err| format!("{err} (or never, on_reload, watch)"))?,
        ),
    };
    let timeout = crate::enrich::config::timeout(
        spec.timeout.as_deref(),
        config::DEFAULT_TIMEOUT,
        config::MAX_TIMEOUT,
    )?;
    let extract = spec
        .extract
        .as_deref()
        .map(|code| Extractor::compile(spec.extract_type.unwrap_or_default(), code))
        .transpose()?;
    let fetcher = Fetcher::new(&spec, dir, extract, nats)?;
    Ok(Source {
        id: spec.id,
        declared_in: file.to_path_buf(),
        refresh,
        on_error: spec.on_error,
        timeout,
        fetcher,
    })
}

/// Starts the refresh tasks of the interval sources at startup.
pub async fn run_intervals(context: Arc<DaemonContext>) {
    let Some(sources) = context.sources.as_ref() else {
        return;
    };
    for source in sources.intervals() {
        spawn_interval(&context, source);
    }
}

/// Refreshes `source` on its interval while it is declared (a reload of the
/// declarations ends the task of a source it replaced); a changed value
/// requests a reload.
pub fn spawn_interval(context: &Arc<DaemonContext>, source: Arc<Source>) {
    let Refresh::Every(interval) = source.refresh else {
        return;
    };
    let context = Arc::clone(context);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        loop {
            ticks.tick().await;
            let sources = context.sources.as_ref().expect("started with sources");
            if !sources.is_current(&source) {
                return;
            }
            let was_failing = sources.is_failing(&source.id);
            match sources.refresh(&source, false).await {
                // A recovered source reloads even if its value is the same,
                // so that readiness comes back.
                Ok(changed) if changed || was_failing => {
                    tracing::info!(source = %source.id, "source refreshed: reloading");
                    if context.reload_requests.send(ReloadTrigger::Source).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                // Recorded once per failure, not at every tick.
                Err(reason) if !was_failing => {
                    tracing::error!("{reason}; keeping the last value (on_error: fail)");
                    context.metrics.reloads_failed.inc();
                    context.record_reload(ReloadRecord {
                        at: chrono::Utc::now(),
                        ok: false,
                        error: Some(reason),
                        trigger: ReloadTrigger::Source,
                    });
                }
                Err(reason) => tracing::debug!("{reason}; still failing"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scalars_of_source_values() {
        let mut out = Vec::new();
        scalars(&json!(["a", 1, true, null]), &mut out).unwrap();
        scalars(&json!("b"), &mut out).unwrap();
        assert_eq!(out, ["a", "1", "true", "b"]);
        assert!(scalars(&json!([{"a": 1}]), &mut out).is_err());
        assert!(scalars(&json!({"a": 1}), &mut out).is_err());
    }
}
