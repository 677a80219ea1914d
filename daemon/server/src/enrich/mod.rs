//! Post-evaluation enrichment (`--enrichers PATH`): a stage between the
//! evaluation workers and the sinks that adds context to each detection or
//! correlation record under `enrichments.<inject_field>`.
//!
//! ```text
//!  workers ──(records)──▶ enrichment stage ──(enriched records)──▶ sinks
//!                          async, off the evaluation threads
//! ```
//!
//! Only records pass through the stage, never events, and only when an
//! enrichers file is configured. Chunks of records are enriched
//! concurrently (at most [`CHUNKS_IN_FLIGHT`]), and every call to an
//! enricher holds a permit of the file's `max_concurrent_enrichments`. Each
//! call is bounded by its `timeout`; a failed or timed-out call is handled by
//! its `on_error` (`skip`, `null`, or `drop`, the only way a record is not
//! delivered, and only when asked for). A slow backend therefore delays
//! records by at most its timeout and never loses them.
//!
//! The file is reloaded with the rules; a file that fails to load keeps the
//! previous enrichers and fails the reload (readiness off), as rules do.

pub(crate) mod command;
pub(crate) mod config;
mod http;
mod lookup;
pub(crate) mod template;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::HashMap;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};
use serde_json::{Map, Value};
use tokio::sync::{Semaphore, mpsc};

use crate::context::DaemonContext;
use crate::input::extract::{JqFilter, JsonPathQuery};
use crate::sink::OutputChunk;
use crate::sources::Sources;
use command::CommandEnricher;
use config::{EnricherSpec, ExtractType, FileSpec, Kind, OnError, Primitive, ScopeSpec};
use http::{HttpEnricher, HttpSettings};
use lookup::Lookup;
use template::Template;

/// Chunks of records being enriched at once; the output queue holds the
/// rest (back-pressure reaches the workers through it).
pub const CHUNKS_IN_FLIGHT: usize = 64;

/// A loaded enrichers file.
pub struct EnricherSet {
    digest: String,
    calls: Arc<Semaphore>,
    enrichers: Vec<Enricher>,
}

impl std::fmt::Debug for EnricherSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.enrichers.iter().map(|e| e.id.as_str()).collect();
        f.debug_struct("EnricherSet")
            .field("enrichers", &ids)
            .finish()
    }
}

/// One enricher, compiled.
struct Enricher {
    id: String,
    kind: Kind,
    inject_field: String,
    timeout: Duration,
    on_error: OnError,
    scope: Scope,
    action: Action,
}

enum Action {
    Template(Template),
    Lookup(Lookup),
    Http(HttpEnricher),
    Command(CommandEnricher),
}

/// `extract` of an `http` enricher: zero results is no value, one is the
/// value, several are an array.
pub(crate) enum Extractor {
    Jq(JqFilter),
    JsonPath(JsonPathQuery),
}

impl Extractor {
    /// Compiles an `extract` expression.
    pub(crate) fn compile(kind: ExtractType, code: &str) -> Result<Extractor, String> {
        match kind {
            ExtractType::Jq => JqFilter::compile(code)
                .map(Extractor::Jq)
                .map_err(|err| format!("`extract`: {err}")),
            ExtractType::JsonPath => JsonPathQuery::compile(code)
                .map(Extractor::JsonPath)
                .map_err(|err| format!("`extract`: {err}")),
        }
    }

    pub(crate) fn apply(&self, doc: &Value) -> Result<Option<Value>, String> {
        let mut values = match self {
            Extractor::Jq(filter) => filter
                .values(doc)
                .map_err(|err| format!("extract: {err}"))?,
            Extractor::JsonPath(query) => query.values(doc),
        };
        Ok(match values.len() {
            0 => None,
            1 => values.pop(),
            _ => Some(Value::Array(values)),
        })
    }
}

/// `scope`, compiled.
#[derive(Debug, Default)]
struct Scope {
    rules: Vec<String>,
    tags: Vec<String>,
    levels: Vec<String>,
}

impl Scope {
    fn new(spec: ScopeSpec) -> Scope {
        Scope {
            rules: spec.rules,
            tags: spec.tags,
            levels: spec.levels.iter().map(|l| l.to_ascii_lowercase()).collect(),
        }
    }

    /// Rules by id, or by title with `*` and `?` wildcards; tags exactly or
    /// by a prefix ending in `*`; levels case-insensitively.
    fn admits(&self, record: &Value) -> bool {
        let text = |key: &str| record.get(key).and_then(Value::as_str);
        let rules = self.rules.is_empty()
            || self.rules.iter().any(|pattern| {
                text("rule_id") == Some(pattern.as_str())
                    || text("rule_title").is_some_and(|title| glob(pattern, title))
            });
        let tags = self.tags.is_empty()
            || record["tags"].as_array().is_some_and(|tags| {
                tags.iter().filter_map(Value::as_str).any(|tag| {
                    self.tags
                        .iter()
                        .any(|pattern| match pattern.strip_suffix('*') {
                            Some(prefix) => tag.starts_with(prefix),
                            None => tag == pattern,
                        })
                })
            });
        let levels = self.levels.is_empty()
            || text("level").is_some_and(|level| self.levels.contains(&level.to_ascii_lowercase()));
        rules && tags && levels
    }
}

/// `*` any run of characters, `?` one character.
fn glob(pattern: &str, text: &str) -> bool {
    let (pattern, text): (Vec<char>, Vec<char>) =
        (pattern.chars().collect(), text.chars().collect());
    let (mut p, mut t, mut star, mut resume) = (0, 0, None, 0);
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some(p);
            resume = t;
            p += 1;
        } else if let Some(s) = star {
            p = s + 1;
            resume += 1;
            t = resume;
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

impl EnricherSet {
    /// Reads and checks the file. The error names the file and, for an
    /// enricher's fault, its id and key.
    pub fn load(path: &Path, sources: Option<&Sources>) -> Result<EnricherSet, String> {
        let fail = |reason: String| format!("enrichers file {}: {reason}", path.display());
        let text = std::fs::read_to_string(path).map_err(|err| fail(err.to_string()))?;
        let spec: FileSpec = yaml_serde::from_str(&text).map_err(|err| fail(err.to_string()))?;
        if !(1..=config::MAX_CONCURRENCY).contains(&spec.max_concurrent_enrichments) {
            return Err(fail(format!(
                "max_concurrent_enrichments: {} is out of range (1 to {})",
                spec.max_concurrent_enrichments,
                config::MAX_CONCURRENCY
            )));
        }
        let mut enrichers: Vec<Enricher> = Vec::with_capacity(spec.enrichers.len());
        for enricher in spec.enrichers {
            let id = enricher.id.clone();
            if enrichers.iter().any(|e| e.id == id) {
                return Err(fail(format!("enricher {id:?} is declared twice")));
            }
            let compiled = compile(enricher, sources)
                .map_err(|err| fail(format!("enricher {id:?}: {err}")))?;
            if let Some(other) = enrichers
                .iter()
                .find(|e| e.kind == compiled.kind && e.inject_field == compiled.inject_field)
            {
                return Err(fail(format!(
                    "enricher {id:?}: inject_field {:?} is already written by enricher {:?}",
                    compiled.inject_field, other.id
                )));
            }
            enrichers.push(compiled);
        }
        Ok(EnricherSet {
            digest: file_digest(path),
            calls: Arc::new(Semaphore::new(spec.max_concurrent_enrichments)),
            enrichers,
        })
    }

    /// The content hash of the file it was loaded from.
    pub fn digest(&self) -> &str {
        &self.digest
    }
}

/// The content hash of an enrichers file (an unreadable file hashes its
/// error, so that it differs).
pub fn file_digest(path: &Path) -> String {
    let mut digest = rsigma_engine::RulesDigest::default();
    let content = std::fs::read_to_string(path).unwrap_or_else(|err| format!("\0{err}"));
    digest.add(path.display().to_string(), &content);
    digest.finish()
}

fn compile(spec: EnricherSpec, sources: Option<&Sources>) -> Result<Enricher, String> {
    spec.check_keys()?;
    if spec.inject_field.is_empty() {
        return Err("inject_field is empty".into());
    }
    let kind = spec.kind;
    let timeout = config::timeout(
        spec.timeout.as_deref(),
        config::DEFAULT_TIMEOUT,
        config::MAX_TIMEOUT,
    )?;
    let parse = |key: &str, text: &str| {
        Template::parse(text, kind).map_err(|err| format!("`{key}`: {err}"))
    };
    let required = |key: &str, value: &Option<String>| {
        value
            .clone()
            .ok_or_else(|| format!("type {} needs `{key}`", spec.primitive.as_str()))
    };
    let action = match spec.primitive {
        Primitive::Template => {
            Action::Template(parse("template", &required("template", &spec.template)?)?)
        }
        Primitive::Lookup => Action::Lookup(Lookup::new(
            required("source", &spec.source)?,
            spec.extract
                .map(|text| (spec.extract_type.unwrap_or_default(), text)),
            spec.default,
            kind,
            sources,
        )?),
        Primitive::Http => {
            let url = parse("url", &required("url", &spec.url)?)?;
            let mut headers = Vec::new();
            for (name, value) in spec.headers.unwrap_or_default() {
                headers.push((name.clone(), parse(&format!("headers.{name}"), &value)?));
            }
            let extract = spec
                .extract
                .as_deref()
                .map(|code| Extractor::compile(spec.extract_type.unwrap_or_default(), code))
                .transpose()?;
            let cache_ttl = spec
                .cache_ttl
                .as_deref()
                .map(|ttl| {
                    config::duration("cache_ttl", ttl, Duration::ZERO, config::MAX_CACHE_TTL)
                })
                .transpose()?
                .filter(|ttl| !ttl.is_zero());
            Action::Http(HttpEnricher::new(HttpSettings {
                method: spec.method,
                url,
                headers,
                body: spec.body.as_deref().map(|b| parse("body", b)).transpose()?,
                extract,
                cache_ttl,
                max_response_bytes: config::byte_limit(
                    "max_response_bytes",
                    spec.max_response_bytes,
                )?,
                allow_link_local: spec.allow_link_local.unwrap_or(false),
            })?)
        }
        Primitive::Command => {
            let argv = spec.command.unwrap_or_default();
            if argv.is_empty() || argv[0].is_empty() {
                return Err("type command needs `command`: the program and its arguments".into());
            }
            // A record chooses arguments, never the program.
            if argv[0].contains("${detection.") || argv[0].contains("${correlation.") {
                return Err("`command[0]`: the program cannot come from the record".into());
            }
            let argv = argv
                .iter()
                .enumerate()
                .map(|(n, arg)| parse(&format!("command[{n}]"), arg))
                .collect::<Result<_, _>>()?;
            let mut env = Vec::new();
            for (name, value) in spec.env.unwrap_or_default() {
                env.push((name.clone(), parse(&format!("env.{name}"), &value)?));
            }
            Action::Command(CommandEnricher {
                argv,
                env,
                output: spec.output.unwrap_or_default(),
                max_output_bytes: config::byte_limit("max_output_bytes", spec.max_output_bytes)?,
            })
        }
    };
    Ok(Enricher {
        id: spec.id,
        kind,
        inject_field: spec.inject_field,
        timeout,
        on_error: spec.on_error,
        scope: Scope::new(spec.scope),
        action,
    })
}

/// Metrics of the enrichment stage, registered when an enrichers file is
/// configured.
pub struct EnrichmentMetrics {
    calls: IntCounterVec,
    cache_hits: IntCounterVec,
    duration: HistogramVec,
    dropped: IntCounterVec,
    in_flight: IntGauge,
    /// Each enricher's series, resolved once (a label lookup per call
    /// hashes and locks).
    handles: std::sync::Mutex<HashMap<String, Arc<EnricherMetrics>>>,
}

/// One enricher's series.
struct EnricherMetrics {
    ok: IntCounter,
    error: IntCounter,
    timeout: IntCounter,
    cache_hits: IntCounter,
    duration: Histogram,
    dropped: IntCounter,
}

impl EnrichmentMetrics {
    /// The series of `enricher`.
    fn of(&self, enricher: &Enricher) -> Arc<EnricherMetrics> {
        let mut handles = self.handles.lock().expect("not poisoned");
        let id = enricher.id.as_str();
        Arc::clone(handles.entry(enricher.id.clone()).or_insert_with(|| {
            Arc::new(EnricherMetrics {
                ok: self.calls.with_label_values(&[id, "ok"]),
                error: self.calls.with_label_values(&[id, "error"]),
                timeout: self.calls.with_label_values(&[id, "timeout"]),
                cache_hits: self.cache_hits.with_label_values(&[id]),
                duration: self.duration.with_label_values(&[id]),
                dropped: self.dropped.with_label_values(&[id]),
            })
        }))
    }
}

impl EnrichmentMetrics {
    /// Registers the enrichment metrics in `registry`.
    pub fn register(registry: &Registry) -> EnrichmentMetrics {
        let metrics = EnrichmentMetrics {
            calls: IntCounterVec::new(
                Opts::new(
                    "rsigma_enrichments_total",
                    "Enricher calls by enricher and outcome (ok, error, timeout)",
                ),
                &["enricher", "outcome"],
            )
            .expect("valid metric"),
            cache_hits: IntCounterVec::new(
                Opts::new(
                    "rsigma_enrichment_cache_hits_total",
                    "Enrichments answered from an http enricher's cache",
                ),
                &["enricher"],
            )
            .expect("valid metric"),
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "rsigma_enrichment_duration_seconds",
                    "Time of one enricher call, timeouts included",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0,
                ]),
                &["enricher"],
            )
            .expect("valid metric"),
            dropped: IntCounterVec::new(
                Opts::new(
                    "rsigma_enrichment_dropped_records_total",
                    "Records not delivered because an enricher with on_error: drop failed",
                ),
                &["enricher"],
            )
            .expect("valid metric"),
            in_flight: IntGauge::new("rsigma_enrichment_in_flight", "Enricher calls running now")
                .expect("valid metric"),
            handles: std::sync::Mutex::default(),
        };
        registry
            .register(Box::new(metrics.calls.clone()))
            .and_then(|()| registry.register(Box::new(metrics.cache_hits.clone())))
            .and_then(|()| registry.register(Box::new(metrics.duration.clone())))
            .and_then(|()| registry.register(Box::new(metrics.dropped.clone())))
            .and_then(|()| registry.register(Box::new(metrics.in_flight.clone())))
            .expect("enrichment metrics are registered once");
        metrics
    }
}

/// Runs the stage: enriches the chunks of `records` and passes them to
/// `enriched`, until `records` closes and every chunk in flight is done.
pub async fn run(
    context: Arc<DaemonContext>,
    mut records: mpsc::Receiver<OutputChunk>,
    enriched: mpsc::Sender<OutputChunk>,
) {
    let Some(enrichment) = context.enrichment.as_ref() else {
        return;
    };
    let slots = Arc::new(Semaphore::new(CHUNKS_IN_FLIGHT));
    let mut in_flight = tokio::task::JoinSet::new();
    while let Some(chunk) = records.recv().await {
        let slot = Arc::clone(&slots)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let set = enrichment.set.load_full();
        let (context, enriched) = (Arc::clone(&context), enriched.clone());
        in_flight.spawn(async move {
            let chunk = enrich_chunk(&context, &set, chunk).await;
            if chunk.records() > 0
                && let Err(unsent) = enriched.send(chunk).await
            {
                tracing::error!("sink queue closed; enriched records not delivered");
                unsent
                    .0
                    .receipts
                    .iter()
                    .for_each(crate::source::Receipt::fail);
            }
            drop(slot);
        });
        // Reap finished chunks so the set does not grow.
        while in_flight.try_join_next().is_some() {}
    }
    while in_flight.join_next().await.is_some() {}
}

/// Enriches every record of `chunk` (its records concurrently).
async fn enrich_chunk(
    context: &DaemonContext,
    set: &EnricherSet,
    chunk: OutputChunk,
) -> OutputChunk {
    let records: Vec<&[u8]> = chunk.each_record().collect();
    let enriched = futures_util::future::join_all(
        records
            .iter()
            .map(|record| enrich_record(context, set, record)),
    )
    .await;
    let mut out = OutputChunk::default();
    for (record, result) in records.iter().zip(enriched) {
        match result {
            Enriched::Unchanged => out.push_record(record),
            Enriched::Changed(value) => out.write_record(&value, context.config.pretty),
            Enriched::Dropped => {}
        }
    }
    let OutputChunk { receipts, .. } = chunk;
    out.receipts = receipts;
    out
}

enum Enriched {
    Unchanged,
    Changed(Value),
    Dropped,
}

/// What one enricher made of one record.
enum Outcome {
    Value(Value),
    Skip,
    Drop,
}

async fn enrich_record(context: &DaemonContext, set: &EnricherSet, bytes: &[u8]) -> Enriched {
    let Ok(mut record) = serde_json::from_slice::<Value>(bytes) else {
        return Enriched::Unchanged;
    };
    let kind = if record.get("correlation_type").is_some() {
        Kind::Correlation
    } else {
        Kind::Detection
    };
    let applicable: Vec<&Enricher> = set
        .enrichers
        .iter()
        .filter(|e| e.kind == kind && e.scope.admits(&record))
        .collect();
    if applicable.is_empty() {
        return Enriched::Unchanged;
    }
    let outcomes = futures_util::future::join_all(
        applicable
            .iter()
            .map(|enricher| call(context, set, enricher, &record)),
    )
    .await;
    let mut enrichments = match record.get_mut("enrichments").map(Value::take) {
        Some(Value::Object(existing)) => existing,
        _ => Map::new(),
    };
    for (enricher, outcome) in applicable.iter().zip(outcomes) {
        match outcome {
            Outcome::Value(value) => {
                enrichments.insert(enricher.inject_field.clone(), value);
            }
            Outcome::Skip => {}
            Outcome::Drop => return Enriched::Dropped,
        }
    }
    if enrichments.is_empty() {
        // Every enricher skipped: the record as it came.
        return Enriched::Unchanged;
    }
    if let Value::Object(map) = &mut record {
        map.insert("enrichments".to_owned(), Value::Object(enrichments));
    }
    Enriched::Changed(record)
}

/// One enricher call: a permit, the timeout, metrics and `on_error`.
/// Templates do no I/O and are cheap: they run at once, without a permit
/// or a timer.
async fn call(
    context: &DaemonContext,
    set: &EnricherSet,
    enricher: &Enricher,
    record: &Value,
) -> Outcome {
    let metrics = &context.enrichment.as_ref().expect("configured").metrics;
    let sources = context.sources.as_ref();
    let started = Instant::now();
    let result = if matches!(enricher.action, Action::Template(_)) {
        Ok(invoke(enricher, record, sources).await)
    } else {
        let _permit = set
            .calls
            .acquire()
            .await
            .expect("the semaphore is never closed");
        metrics.in_flight.inc();
        let result =
            tokio::time::timeout(enricher.timeout, invoke(enricher, record, sources)).await;
        metrics.in_flight.dec();
        result
    };
    let handles = metrics.of(enricher);
    handles.duration.observe(started.elapsed().as_secs_f64());
    let (outcome, failure) = match result {
        Ok(Ok((value, cached))) => {
            if cached {
                handles.cache_hits.inc();
            }
            match value {
                Some(value) => (&handles.ok, Ok(value)),
                None => (&handles.error, Err("extract selected nothing".to_owned())),
            }
        }
        Ok(Err(reason)) => (&handles.error, Err(reason)),
        Err(_) => (
            &handles.timeout,
            Err(format!(
                "timed out after {}",
                humantime::format_duration(enricher.timeout)
            )),
        ),
    };
    outcome.inc();
    match failure {
        Ok(value) => Outcome::Value(value),
        Err(reason) => {
            tracing::warn!(enricher = %enricher.id, on_error = ?enricher.on_error, "enrichment failed: {reason}");
            match enricher.on_error {
                OnError::Skip => Outcome::Skip,
                OnError::Null => Outcome::Value(Value::Null),
                OnError::Drop => {
                    handles.dropped.inc();
                    Outcome::Drop
                }
            }
        }
    }
}

/// The enricher's own work: its value (none when `extract` selected
/// nothing) and whether it came from a cache.
async fn invoke(
    enricher: &Enricher,
    record: &Value,
    sources: Option<&Sources>,
) -> Result<(Option<Value>, bool), String> {
    match &enricher.action {
        Action::Lookup(lookup) => lookup
            .call(record, sources.expect("checked when the file loaded"))
            .await
            .map(|value| (value, false)),
        Action::Template(template) => template
            .render_plain(record)
            .map(|text| (Some(Value::String(text)), false)),
        Action::Http(http) => http.call(record).await,
        Action::Command(command) => command.call(record).await.map(|value| (Some(value), false)),
    }
}

/// The daemon's enrichment: the active enrichers (swapped on reload) and
/// their metrics.
pub struct Enrichment {
    /// The file.
    pub path: PathBuf,
    /// The enrichers in use.
    pub set: arc_swap::ArcSwap<EnricherSet>,
    /// Metrics.
    pub metrics: EnrichmentMetrics,
}

impl Enrichment {
    /// Loads the file (at startup: an error is a configuration error) and
    /// registers the metrics.
    pub fn start(
        path: &Path,
        sources: Option<&Sources>,
        registry: &Registry,
    ) -> Result<Enrichment, String> {
        let set = EnricherSet::load(path, sources)?;
        Ok(Enrichment {
            path: path.to_path_buf(),
            set: arc_swap::ArcSwap::from_pointee(set),
            metrics: EnrichmentMetrics::register(registry),
        })
    }

    /// Whether the file on disk is what the active enrichers came from.
    pub fn unchanged_on_disk(&self) -> bool {
        file_digest(&self.path) == self.set.load().digest
    }

    /// Loads the file again; on success the new enrichers replace the old
    /// (calls in flight finish with the old), on failure nothing changes.
    pub fn reload(&self, sources: Option<&Sources>) -> Result<(), String> {
        let set = EnricherSet::load(&self.path, sources)?;
        tracing::info!(enrichers = set.enrichers.len(), "enrichers reloaded");
        self.set.store(Arc::new(set));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn globs() {
        assert!(glob("Suspicious *", "Suspicious PowerShell"));
        assert!(glob("*Power?hell*", "Suspicious PowerShell Use"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exactly"));
        assert!(!glob("a*b", "acd"));
        assert!(glob("*", ""));
    }

    #[test]
    fn scope_axes_are_anded_and_values_ored() {
        let record = json!({"rule_title": "Suspicious Whoami", "rule_id": "r-1", "level": "High",
            "tags": ["attack.discovery", "attack.t1033"]});
        let scope = |rules: &[&str], tags: &[&str], levels: &[&str]| {
            Scope::new(ScopeSpec {
                rules: rules.iter().map(|s| s.to_string()).collect(),
                tags: tags.iter().map(|s| s.to_string()).collect(),
                levels: levels.iter().map(|s| s.to_string()).collect(),
            })
        };
        assert!(scope(&[], &[], &[]).admits(&record));
        assert!(scope(&["r-1"], &[], &[]).admits(&record));
        assert!(scope(&["other", "Suspicious *"], &[], &[]).admits(&record));
        assert!(!scope(&["r-2"], &[], &[]).admits(&record));
        assert!(scope(&[], &["attack.t10*"], &["high", "critical"]).admits(&record));
        assert!(!scope(&[], &["attack.t1059*"], &[]).admits(&record));
        assert!(!scope(&["r-1"], &["attack.discovery"], &["low"]).admits(&record));
    }
}
