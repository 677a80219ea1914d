//! Loading a complete rule set: rules, pipelines, compilation. A load either
//! yields a whole [`Ruleset`] or fails with every reason; the daemon swaps
//! rule sets atomically, so a failed load never touches the running one.

use std::fmt;

use crate::config::DaemonConfig;
use crate::sources::Sources;

use chrono::{DateTime, Utc};
use std::sync::Mutex;

use rsigma_engine::correlation::CorrelationEngine;
use rsigma_engine::{CompileOptions, Engine, load_rules};
use serde::Serialize;

/// How many rules of each kind a rule set holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct RuleCounts {
    /// Detection rules.
    pub detection: usize,
    /// Correlation rules.
    pub correlation: usize,
    /// Filter rules.
    pub filters: usize,
}

/// One rule as listed by `GET /api/v1/rules`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleSummary {
    /// `detection` or `correlation`.
    pub kind: &'static str,
    /// Title.
    pub title: String,
    /// Id.
    pub id: Option<String>,
    /// Level.
    pub level: Option<String>,
}

/// A loaded, compiled rule set.
pub struct Ruleset {
    /// The compiled detection rules.
    pub engine: Engine,
    /// The correlation engine for this rule set's rule indices, with its
    /// state; `None` without correlation rules.
    pub correlations: Mutex<Option<CorrelationEngine>>,
    /// Content hash of the rule files.
    pub digest: String,
    /// Content hash of the pipeline files (see [`pipelines_digest`]).
    pub pipelines_digest: String,
    /// When the load finished.
    pub loaded_at: DateTime<Utc>,
    /// Rule counts.
    pub counts: RuleCounts,
    /// Every rule, for listing.
    pub summaries: Vec<RuleSummary>,
}

impl Ruleset {
    /// No rules: what the daemon holds before its first load.
    pub fn empty() -> Ruleset {
        Ruleset {
            engine: Engine::default(),
            correlations: Mutex::new(None),
            digest: String::new(),
            pipelines_digest: String::new(),
            loaded_at: Utc::now(),
            counts: RuleCounts::default(),
            summaries: Vec::new(),
        }
    }
}

/// Why a load failed.
#[derive(Debug, Clone)]
pub struct LoadFailure {
    /// The rules path itself could not be read (exit code 2 at startup).
    pub unreadable: bool,
    /// The pipelines are invalid (a configuration error: exit code 3 at startup).
    pub pipeline: bool,
    /// Every reason, one per rule or file.
    pub reasons: Vec<String>,
}

impl fmt::Display for LoadFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reasons.join("; "))
    }
}

/// Loads the pipelines, then the rules, applies the pipelines and compiles
/// with the configured engine options.
///
/// `${source.ID}` references in the pipelines' `vars` and `include` items
/// take the values the dynamic sources hold now.
pub fn load(config: &DaemonConfig, sources: Option<&Sources>) -> Result<Ruleset, LoadFailure> {
    let pipelines_digest = pipelines_digest(config);
    let rules = config.rules.as_path();
    let correlation = &config.correlation;
    let pipeline_failure = |reason: String| LoadFailure {
        unreadable: false,
        pipeline: true,
        reasons: vec![reason],
    };
    let mut pipelines =
        crate::sources::load_pipelines(&config.pipelines, sources, config.allow_remote_include)
            .map_err(pipeline_failure)?;
    Sources::resolve_vars(sources, &mut pipelines).map_err(pipeline_failure)?;
    if let Err(err) = std::fs::metadata(rules) {
        return Err(LoadFailure {
            unreadable: true,
            pipeline: false,
            reasons: vec![format!("cannot read rules path {}: {err}", rules.display())],
        });
    }
    let loaded = load_rules(rules);
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    let mut reasons: Vec<String> = loaded.errors.iter().map(ToString::to_string).collect();
    let (rule_set, pipeline_errors) = if pipelines.is_empty() {
        (loaded.rule_set, Vec::new())
    } else {
        pipelines.apply(&loaded.rule_set)
    };
    reasons.extend(pipeline_errors.iter().map(ToString::to_string));
    let options = CompileOptions {
        placeholders: pipelines.placeholders(),
        ..config.compile.clone()
    };
    let (engine, compile_errors) = Engine::compile_with(&rule_set, &options);
    reasons.extend(compile_errors.iter().map(ToString::to_string));
    let correlations = if rule_set.correlations.is_empty() {
        None
    } else {
        match CorrelationEngine::new(&rule_set.correlations, &engine, correlation.clone()) {
            Ok(correlations) => Some(correlations),
            Err(errors) => {
                reasons.extend(errors.iter().map(ToString::to_string));
                None
            }
        }
    };
    if !reasons.is_empty() {
        return Err(LoadFailure {
            unreadable: false,
            pipeline: false,
            reasons,
        });
    }
    let mut summaries: Vec<RuleSummary> = engine
        .rules()
        .map(|info| RuleSummary {
            kind: "detection",
            title: info.title.clone(),
            id: info.id.clone(),
            level: info.level.clone(),
        })
        .collect();
    summaries.extend(rule_set.correlations.iter().map(|c| RuleSummary {
        kind: "correlation",
        title: c.meta.title.clone(),
        id: c.meta.id.clone(),
        level: c.meta.level.clone(),
    }));
    Ok(Ruleset {
        counts: RuleCounts {
            detection: engine.rule_count(),
            correlation: rule_set.correlations.len(),
            filters: rule_set.filters.len(),
        },
        engine,
        correlations: Mutex::new(correlations),
        digest: loaded.digest,
        pipelines_digest,
        loaded_at: Utc::now(),
        summaries,
    })
}

/// Content hash of the pipeline files given by path (builtin pipelines
/// have no file; an unreadable file hashes its error, so that it differs).
pub fn pipelines_digest(config: &DaemonConfig) -> String {
    let mut digest = rsigma_engine::RulesDigest::default();
    for pipeline in &config.pipelines {
        let path = std::path::Path::new(pipeline);
        if path.is_file() {
            let content = std::fs::read_to_string(path).unwrap_or_else(|err| format!("\0{err}"));
            digest.add(pipeline.clone(), &content);
        }
    }
    digest.finish()
}

/// Whether the files on disk hold exactly what `active` was loaded from.
pub fn unchanged_on_disk(config: &DaemonConfig, active: &Ruleset) -> bool {
    !active.digest.is_empty()
        && rsigma_engine::parser::rules_digest(&config.rules).is_ok_and(|d| d == active.digest)
        && pipelines_digest(config) == active.pipelines_digest
}
