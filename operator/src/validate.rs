//! Validation with the real engine: parse, apply pipelines, compile, resolve
//! correlations, exactly as the daemon's load does, so a rule set the
//! operator accepts is one the daemon loads.
//!
//! Validation is CPU work and is cached by content hash ([`Cache`]); the
//! controller runs it on a blocking thread.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use rsigma_crds::RuleErrorStatus;
use rsigma_engine::{
    CompileOptions, CorrelationEngine, CorrelationOptions, Engine, Pipeline, PipelineSet,
    RuleError, RuleSet, parse_rules,
};

use crate::resources::{Aggregate, MaterializedRuleSet, PipelineSource, RULES_DIR};

/// The outcome of validating rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validation {
    /// Detection rules that compiled.
    pub detection_count: usize,
    /// Correlation rules.
    pub correlation_count: usize,
    /// Filter rules.
    pub filter_count: usize,
    /// Every problem, one per rule or document.
    pub errors: Vec<RuleErrorStatus>,
}

impl Validation {
    /// Whether every rule parsed and compiled.
    pub fn is_valid(&self) -> bool {
        self.errors.is_empty()
    }
}

/// A rule error located by file key.
struct Located {
    key: Option<String>,
    error: RuleErrorStatus,
}

fn from_rule_error(err: &RuleError, origins: &BTreeMap<String, String>) -> Located {
    let key = err.file.to_string_lossy().into_owned();
    let origin = origins.get(&key).cloned();
    Located {
        key: origin.is_some().then_some(key.clone()),
        error: RuleErrorStatus {
            document: Some(origin.unwrap_or(key)),
            rule: err.rule.clone(),
            reason: err.reason.clone(),
        },
    }
}

struct Checked {
    detection_count: usize,
    correlation_count: usize,
    filter_count: usize,
    errors: Vec<Located>,
}

/// Parses `files` (key, origin, text), applies `pipelines` (origin, loaded
/// pipeline or its error), compiles and resolves correlations.
fn check(
    files: &[(String, String, String)],
    pipelines: Vec<(String, Result<Pipeline, String>)>,
) -> Checked {
    let origins: BTreeMap<String, String> = files
        .iter()
        .map(|(key, origin, _)| (key.clone(), origin.clone()))
        .collect();
    let mut errors = Vec::new();
    let mut loaded = Vec::new();
    for (origin, pipeline) in pipelines {
        match pipeline {
            Ok(p) => loaded.push(p),
            Err(reason) => errors.push(Located {
                key: None,
                error: RuleErrorStatus {
                    document: Some(origin),
                    rule: None,
                    reason,
                },
            }),
        }
    }
    let pipelines = PipelineSet::new(loaded);
    let mut rule_set = RuleSet::default();
    for (key, _, text) in files {
        let parsed = parse_rules(text, Path::new(key));
        errors.extend(parsed.errors.iter().map(|e| from_rule_error(e, &origins)));
        rule_set.extend(parsed.rule_set);
    }
    let rule_set = if pipelines.is_empty() {
        rule_set
    } else {
        let (applied, pipeline_errors) = pipelines.apply(&rule_set);
        errors.extend(pipeline_errors.iter().map(|e| from_rule_error(e, &origins)));
        applied
    };
    let options = CompileOptions {
        placeholders: pipelines.placeholders(),
        ..CompileOptions::default()
    };
    let (engine, compile_errors) = Engine::compile_with(&rule_set, &options);
    errors.extend(compile_errors.iter().map(|e| from_rule_error(e, &origins)));
    if !rule_set.correlations.is_empty()
        && let Err(correlation_errors) = CorrelationEngine::new(
            &rule_set.correlations,
            &engine,
            CorrelationOptions::default(),
        )
    {
        errors.extend(
            correlation_errors
                .iter()
                .map(|e| from_rule_error(e, &origins)),
        );
    }
    Checked {
        detection_count: engine.rule_count(),
        correlation_count: rule_set.correlations.len(),
        filter_count: rule_set.filters.len(),
        errors,
    }
}

fn load_pipeline(source: &PipelineSource, origin: &str) -> Result<Pipeline, String> {
    match source {
        PipelineSource::Builtin(name) => {
            Pipeline::builtin(name).ok_or_else(|| format!("unknown builtin pipeline {name:?}"))
        }
        PipelineSource::Inline { text, .. } => {
            let trimmed = text.trim();
            if !trimmed.contains(['\n', ':']) {
                return Err(format!(
                    "{trimmed:?} is neither a builtin pipeline ({}) nor pipeline YAML",
                    Pipeline::BUILTIN_NAMES.join(", ")
                ));
            }
            Pipeline::from_yaml(text, origin).map_err(|e| e.to_string())
        }
    }
}

/// Validates one rule set with its own pipelines.
pub fn validate_rule_set(set: &MaterializedRuleSet) -> Validation {
    let files: Vec<_> = set
        .files
        .iter()
        .map(|f| (f.key.clone(), f.origin.clone(), f.content.clone()))
        .collect();
    let pipelines = set
        .pipelines
        .iter()
        .map(|p| (p.origin.clone(), load_pipeline(&p.source, &p.origin)))
        .collect();
    let checked = check(&files, pipelines);
    let mut errors = set.missing.clone();
    errors.extend(checked.errors.into_iter().map(|l| l.error));
    // The counts are of the rules that compiled, also when others did not.
    Validation {
        detection_count: checked.detection_count,
        correlation_count: checked.correlation_count,
        filter_count: checked.filter_count,
        errors,
    }
}

/// Why an aggregate does not load.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AggregateErrors {
    /// Rule set name → reasons, for errors located in a rule set's files.
    pub by_rule_set: BTreeMap<String, Vec<String>>,
    /// Errors not located in any rule set (for example a pipeline that fails).
    pub unattributed: Vec<String>,
}

impl AggregateErrors {
    /// True when there is no error at all.
    pub fn is_empty(&self) -> bool {
        self.by_rule_set.is_empty() && self.unattributed.is_empty()
    }
}

fn describe(e: &RuleErrorStatus) -> String {
    match (&e.document, &e.rule) {
        (Some(d), Some(r)) => format!("{d}: rule '{r}': {}", e.reason),
        (Some(d), None) => format!("{d}: {}", e.reason),
        (None, Some(r)) => format!("rule '{r}': {}", e.reason),
        (None, None) => e.reason.clone(),
    }
}

/// Validates what an engine would load (every rule file with the union of
/// the pipelines) and attributes each error to the rule set it comes from.
pub fn validate_aggregate(agg: &Aggregate) -> AggregateErrors {
    let files: Vec<_> = agg
        .files
        .iter()
        .map(|(key, content)| (key.clone(), key.clone(), content.clone()))
        .collect();
    let pipelines = agg
        .pipeline_args
        .iter()
        .map(|arg| {
            let loaded = match arg.strip_prefix(&format!("{RULES_DIR}/")) {
                Some(key) => match agg.pipeline_files.get(key) {
                    Some(text) => Pipeline::from_yaml(text, key).map_err(|e| e.to_string()),
                    None => Err(format!("pipeline file {key} is missing")),
                },
                None => Pipeline::builtin(arg).ok_or_else(|| format!("unknown builtin {arg}")),
            };
            (arg.clone(), loaded)
        })
        .collect();
    let checked = check(&files, pipelines);
    let mut out = AggregateErrors::default();
    for located in checked.errors {
        let owner = located.key.as_ref().and_then(|k| agg.owners.get(k));
        match owner {
            Some(set) => out
                .by_rule_set
                .entry(set.clone())
                .or_default()
                .push(describe(&located.error)),
            None => out.unattributed.push(describe(&located.error)),
        }
    }
    out
}

/// Validation results by content hash, shared by both controllers.
#[derive(Default)]
pub struct Cache {
    rule_sets: Mutex<HashMap<String, Arc<Validation>>>,
    aggregates: Mutex<HashMap<String, Arc<AggregateErrors>>>,
}

const CACHE_LIMIT: usize = 1024;

impl Cache {
    /// The validation of `set`, computed on a blocking thread when not cached.
    pub async fn rule_set(&self, set: &MaterializedRuleSet) -> Arc<Validation> {
        let key = format!("{}/{}/{}", set.namespace, set.name, set.content_hash);
        if let Some(v) = self.rule_sets.lock().expect("cache lock").get(&key) {
            return v.clone();
        }
        let owned = set.clone();
        let validation = Arc::new(
            tokio::task::spawn_blocking(move || validate_rule_set(&owned))
                .await
                .unwrap_or_else(|err| Validation {
                    errors: vec![RuleErrorStatus {
                        document: None,
                        rule: None,
                        reason: format!("validation panicked: {err}"),
                    }],
                    ..Default::default()
                }),
        );
        let mut map = self.rule_sets.lock().expect("cache lock");
        if map.len() >= CACHE_LIMIT {
            map.clear();
        }
        map.insert(key, validation.clone());
        validation
    }

    /// The errors of an aggregate, computed on a blocking thread when not cached.
    pub async fn aggregate(&self, agg: &Aggregate) -> Arc<AggregateErrors> {
        let key = format!("{}/{}", agg.rules_hash, agg.pipelines_hash);
        if let Some(v) = self.aggregates.lock().expect("cache lock").get(&key) {
            return v.clone();
        }
        let owned = agg.clone();
        let errors = Arc::new(
            tokio::task::spawn_blocking(move || validate_aggregate(&owned))
                .await
                .unwrap_or_else(|err| AggregateErrors {
                    unattributed: vec![format!("validation panicked: {err}")],
                    ..Default::default()
                }),
        );
        let mut map = self.aggregates.lock().expect("cache lock");
        if map.len() >= CACHE_LIMIT {
            map.clear();
        }
        map.insert(key, errors.clone());
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{aggregate, materialize};
    use rsigma_crds::{SigmaRuleSet, SigmaRuleSetSpec};

    const GOOD: &str = "title: Whoami\nid: 11111111-1111-1111-1111-111111111111\nlogsource: {product: windows, category: process_creation}\ndetection:\n  sel:\n    Image|endswith: '\\whoami.exe'\n  condition: sel\n";
    const BAD_CONDITION: &str = "title: Broken Condition\nlogsource: {product: windows}\ndetection:\n  sel:\n    Image: x\n  condition: sel and nothere\n";

    fn set(name: &str, rules: &[&str], pipelines: &[&str]) -> MaterializedRuleSet {
        let mut rs = SigmaRuleSet::new(
            name,
            SigmaRuleSetSpec {
                rules: rules.iter().map(|s| s.to_string()).collect(),
                pipelines: pipelines.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
        );
        rs.metadata.namespace = Some("ns".to_owned());
        materialize(&rs, &BTreeMap::new())
    }

    #[test]
    fn valid_rule_set_counts() {
        let v = validate_rule_set(&set("a", &[GOOD], &["sysmon"]));
        assert!(v.is_valid(), "{:?}", v.errors);
        assert_eq!(v.detection_count, 1);
    }

    #[test]
    fn broken_rule_is_reported_with_title_and_origin() {
        let v = validate_rule_set(&set("a", &[GOOD, BAD_CONDITION], &[]));
        assert_eq!(v.errors.len(), 1, "{:?}", v.errors);
        let e = &v.errors[0];
        assert_eq!(e.document.as_deref(), Some("rules[1]"));
        assert_eq!(e.rule.as_deref(), Some("Broken Condition"));
        assert!(e.reason.contains("nothere"), "{}", e.reason);
        // ruleCount is of the rules that compiled: the good one.
        assert_eq!(v.detection_count, 1);
    }

    #[test]
    fn yaml_errors_and_bad_pipelines() {
        let v = validate_rule_set(&set("a", &["title: [unclosed"], &["nosuchbuiltin"]));
        assert_eq!(v.errors.len(), 2, "{:?}", v.errors);
        assert_eq!(v.errors[0].document.as_deref(), Some("pipelines[0]"));
        assert!(v.errors[0].reason.contains("builtin"));
        assert_eq!(v.errors[1].document.as_deref(), Some("rules[0]"));
    }

    #[test]
    fn aggregate_errors_are_attributed() {
        let fail = "name: no windows\ntransformations:\n  - type: rule_failure\n    message: no windows here\n    rule_conditions:\n      - type: logsource\n        product: windows\n";
        let a = set("a", &[GOOD], &[]);
        let linux = "title: Linux\nlogsource: {product: linux}\ndetection:\n  sel:\n    a: b\n  condition: sel\n";
        let b = set("b", &[linux], &[fail]);
        assert!(validate_rule_set(&a).is_valid());
        assert!(validate_rule_set(&b).is_valid());
        let errs = validate_aggregate(&aggregate(&[&a, &b]));
        assert_eq!(errs.by_rule_set.keys().collect::<Vec<_>>(), ["a"]);
        assert!(errs.by_rule_set["a"][0].contains("no windows here"));
        assert!(validate_aggregate(&aggregate(&[&b])).is_empty());
    }
}
