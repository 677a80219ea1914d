//! Processing pipelines: pySigma-compatible YAML that adapts rules to a log
//! schema before they are compiled.
//!
//! A pipeline is a list of *processing items*. Each item has a
//! transformation (rename fields, add a condition, change values, ...) and
//! optional conditions on the rule, on detection items and on field names that
//! decide where it applies. Several pipelines form a [`PipelineSet`]: they run
//! in order of their `priority` (lowest first; equal priorities keep the order
//! given), one after another on every rule, as pySigma chains them.
//!
//! ```
//! use rsigma_engine::{CompileOptions, Engine, PipelineSet, parse_rules};
//! use std::path::Path;
//!
//! let rules = parse_rules(
//!     "title: Whoami\nlogsource: {category: process_creation, product: windows}\n\
//!      detection:\n  sel:\n    Image|endswith: '\\whoami.exe'\n  condition: sel\n",
//!     Path::new("whoami.yml"),
//! );
//! let pipelines = PipelineSet::load(&["ecs_windows"]).unwrap();
//! let (rule_set, errors) = pipelines.apply(&rules.rule_set);
//! assert!(errors.is_empty());
//! let options = CompileOptions {
//!     placeholders: pipelines.placeholders(),
//!     ..CompileOptions::default()
//! };
//! let (engine, _) = Engine::compile_with(&rule_set, &options);
//! let event = serde_json::json!({"process": {"executable": r"C:\Windows\System32\whoami.exe"}});
//! assert_eq!(engine.evaluate(&event).len(), 1);
//! ```
//!
//! The YAML format, every transformation and condition, and the builtin
//! pipelines are described in `docs/pipelines.md`.

mod conditions;
mod parse;
mod transform;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use crate::compile::Placeholders;
use crate::error::RuleError;
use crate::parser::RuleSet;
use crate::rule::{CorrelationRule, LogSource};

use conditions::{CondSet, DetectionItemCondition, FieldNameCondition, RuleCondition};
use transform::{ApplyContext, Transformation, WorkRule};

/// The builtin pipelines: name and YAML source.
const BUILTINS: &[(&str, &str)] = &[
    ("ecs_windows", include_str!("builtin/ecs_windows.yml")),
    ("sysmon", include_str!("builtin/sysmon.yml")),
    ("windows", include_str!("builtin/windows.yml")),
];

/// A pipeline that could not be read or parsed: a configuration error.
///
/// Displays as `<file>:<line>: <message>` (either part left out when unknown).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render_error(self.file.as_deref(), self.line, &self.message))]
pub struct PipelineError {
    /// The pipeline file (`builtin:<name>` for a builtin pipeline).
    pub file: Option<PathBuf>,
    /// The 1-based line the problem was found at, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl PipelineError {
    fn new(file: Option<&Path>, line: Option<usize>, message: impl Into<String>) -> Self {
        PipelineError {
            file: file.map(Path::to_path_buf),
            line,
            message: message.into(),
        }
    }
}

fn render_error(file: Option<&Path>, line: Option<usize>, message: &str) -> String {
    match (file, line) {
        (Some(file), Some(line)) => format!("{}:{line}: {message}", file.display()),
        (Some(file), None) => format!("{}: {message}", file.display()),
        (None, Some(line)) => format!("line {line}: {message}"),
        (None, None) => message.to_owned(),
    }
}

/// One processing item: a transformation and where it applies.
#[derive(Debug, Clone)]
pub(crate) struct ProcessingItem {
    /// `id`: referenced by `processing_item_applied` conditions.
    pub(crate) id: Option<String>,
    /// What the item does.
    pub(crate) transformation: Transformation,
    /// `rule_conditions` with their linking.
    pub(crate) rule_conditions: CondSet<RuleCondition>,
    /// `detection_item_conditions` with their linking.
    pub(crate) detection_item_conditions: CondSet<DetectionItemCondition>,
    /// `field_name_conditions` with their linking.
    pub(crate) field_name_conditions: CondSet<FieldNameCondition>,
}

/// A parsed processing pipeline.
#[derive(Debug, Clone)]
pub struct Pipeline {
    name: Option<String>,
    priority: i64,
    vars: BTreeMap<String, Vec<String>>,
    origin: PathBuf,
    items: Vec<ProcessingItem>,
}

impl Pipeline {
    /// Names of the builtin pipelines, accepted by [`Pipeline::load`].
    pub const BUILTIN_NAMES: &'static [&'static str] = &["ecs_windows", "sysmon", "windows"];

    /// Loads a pipeline: `spec` is a builtin name (`ecs_windows`, `sysmon`, `windows`)
    /// or the path of a pipeline YAML file.
    pub fn load(spec: &str) -> Result<Pipeline, PipelineError> {
        if let Some(pipeline) = Pipeline::builtin(spec) {
            return Ok(pipeline);
        }
        let path = Path::new(spec);
        let text = fs::read_to_string(path).map_err(|err| {
            let message = if err.kind() == std::io::ErrorKind::NotFound {
                format!(
                    "no such pipeline file, and not a builtin pipeline (builtins: {})",
                    Pipeline::BUILTIN_NAMES.join(", ")
                )
            } else {
                format!("cannot read pipeline: {err}")
            };
            PipelineError::new(Some(path), None, message)
        })?;
        Pipeline::from_yaml(&text, path)
    }

    /// A builtin pipeline by name, or `None` when there is no such builtin.
    pub fn builtin(name: &str) -> Option<Pipeline> {
        let (_, text) = BUILTINS.iter().find(|(builtin, _)| *builtin == name)?;
        let origin = PathBuf::from(format!("builtin:{name}"));
        // The builtins are parsed by the tests; a failure here is a bug.
        Some(Pipeline::from_yaml(text, &origin).expect("builtin pipelines parse"))
    }

    /// Parses pipeline YAML; `origin` names the file in errors.
    pub fn from_yaml(text: &str, origin: impl AsRef<Path>) -> Result<Pipeline, PipelineError> {
        let origin = origin.as_ref();
        let doc = parse::parse_document(text)
            .map_err(|(line, message)| PipelineError::new(Some(origin), line, message))?;
        Ok(Pipeline {
            name: doc.name,
            priority: doc.priority,
            vars: doc.vars,
            origin: origin.to_path_buf(),
            items: doc.items,
        })
    }

    /// `name`, when the pipeline has one.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// `priority`: pipelines run lowest first (default 0).
    pub fn priority(&self) -> i64 {
        self.priority
    }

    /// `vars`: each variable's values, as text.
    pub fn vars(&self) -> &BTreeMap<String, Vec<String>> {
        &self.vars
    }

    /// Where the pipeline was read from (`builtin:<name>` for builtins).
    pub fn origin(&self) -> &Path {
        &self.origin
    }

    /// Number of processing items (`transformations` entries).
    pub fn item_count(&self) -> usize {
        self.items.len()
    }

    /// The name used in messages: `name`, else the origin.
    fn label(&self) -> String {
        match &self.name {
            Some(name) => name.clone(),
            None => self.origin.display().to_string(),
        }
    }
}

impl fmt::Display for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (priority {}, {} items)",
            self.label(),
            self.priority,
            self.items.len()
        )
    }
}

/// Pipelines in the order they run: by priority, lowest first, keeping the
/// given order among equal priorities.
#[derive(Debug, Clone, Default)]
pub struct PipelineSet {
    pipelines: Vec<Pipeline>,
}

impl PipelineSet {
    /// Orders `pipelines` by priority (stable).
    pub fn new(mut pipelines: Vec<Pipeline>) -> PipelineSet {
        pipelines.sort_by_key(Pipeline::priority);
        PipelineSet { pipelines }
    }

    /// Loads every spec with [`Pipeline::load`] (builtin names or files) and
    /// orders them. The first pipeline that cannot be loaded is the error.
    pub fn load<S: AsRef<str>>(specs: &[S]) -> Result<PipelineSet, PipelineError> {
        let pipelines = specs
            .iter()
            .map(|spec| Pipeline::load(spec.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PipelineSet::new(pipelines))
    }

    /// The pipelines in the order they run.
    pub fn pipelines(&self) -> &[Pipeline] {
        &self.pipelines
    }

    /// Every pipeline's `vars`, to rewrite (the daemon puts the values of
    /// dynamic sources in place of `${source.ID}` references): the pipeline's
    /// origin, the variable's name and its values.
    pub fn vars_mut(&mut self) -> impl Iterator<Item = (&Path, &str, &mut Vec<String>)> {
        self.pipelines.iter_mut().flat_map(|pipeline| {
            let origin = pipeline.origin.as_path();
            pipeline
                .vars
                .iter_mut()
                .map(move |(name, values)| (origin, name.as_str(), values))
        })
    }

    /// True when the set holds no pipeline.
    pub fn is_empty(&self) -> bool {
        self.pipelines.is_empty()
    }

    /// The `vars` of every pipeline merged (a later pipeline's variable
    /// replaces an earlier one of the same name), as placeholder values for
    /// the `expand` modifier: pass them in
    /// [`CompileOptions::placeholders`](crate::CompileOptions::placeholders).
    pub fn placeholders(&self) -> Placeholders {
        self.merged_vars()
    }

    fn merged_vars(&self) -> HashMap<String, Vec<String>> {
        let mut vars = HashMap::new();
        for pipeline in &self.pipelines {
            for (name, values) in &pipeline.vars {
                vars.insert(name.clone(), values.clone());
            }
        }
        vars
    }

    /// Applies every pipeline to every rule document of `rule_set`: detection
    /// rules, filters (like detection rules, except that `add_condition`
    /// leaves them alone) and correlation rules (field name mappings of
    /// `group-by`, `aliases` and `condition.field`; log source conditions look
    /// at the rules they reference).
    ///
    /// A document that hits `rule_failure` or `detection_item_failure`, or
    /// that a transformation cannot be applied to, is left out and reported
    /// as a [`RuleError`] naming its file, the rule and the reason.
    pub fn apply(&self, rule_set: &RuleSet) -> (RuleSet, Vec<RuleError>) {
        let vars = self.merged_vars();
        let context = ApplyContext { vars: &vars };
        let mut out = RuleSet::default();
        let mut errors = Vec::new();
        for rule in &rule_set.rules {
            match self.process(WorkRule::from_rule(rule), &context) {
                Ok(work) => out.rules.push(work.into_rule()),
                Err(err) => errors.push(err),
            }
        }
        for filter in &rule_set.filters {
            match self.process(WorkRule::from_filter(filter), &context) {
                Ok(work) => out.filters.push(work.into_filter()),
                Err(err) => errors.push(err),
            }
        }
        let references = References::new(rule_set);
        for correlation in &rule_set.correlations {
            let logsources = references.logsources_of(correlation);
            match self.process(
                WorkRule::from_correlation(correlation, logsources),
                &context,
            ) {
                Ok(work) => out.correlations.push(work.into_correlation()),
                Err(err) => errors.push(err),
            }
        }
        (out, errors)
    }

    fn process(
        &self,
        mut work: WorkRule,
        context: &ApplyContext<'_>,
    ) -> Result<WorkRule, RuleError> {
        for pipeline in &self.pipelines {
            for item in &pipeline.items {
                if let Err(reason) = item.apply(&mut work, context) {
                    let item_label = item
                        .id
                        .as_ref()
                        .map(|id| format!(", item '{id}'"))
                        .unwrap_or_default();
                    return Err(RuleError::new(
                        &work.meta.origin.file,
                        work.meta.label(),
                        format!("pipeline '{}'{item_label}: {reason}", pipeline.label()),
                    ));
                }
            }
        }
        Ok(work)
    }
}

/// Resolves the rules a correlation references, for `logsource` conditions
/// on correlation rules (which hold when a referenced rule's log source does).
struct References<'a> {
    rule_set: &'a RuleSet,
}

impl<'a> References<'a> {
    fn new(rule_set: &'a RuleSet) -> Self {
        References { rule_set }
    }

    /// The log sources of every detection rule `correlation` references,
    /// directly or through other correlations.
    fn logsources_of(&self, correlation: &CorrelationRule) -> Vec<LogSource> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        self.collect(correlation, &mut seen, &mut out);
        out
    }

    fn collect(
        &self,
        correlation: &'a CorrelationRule,
        seen: &mut HashSet<*const CorrelationRule>,
        out: &mut Vec<LogSource>,
    ) {
        if !seen.insert(correlation as *const _) {
            return;
        }
        for reference in &correlation.rules {
            for rule in &self.rule_set.rules {
                if rule.meta.is_referenced_by(reference) && !out.contains(&rule.meta.logsource) {
                    out.push(rule.meta.logsource.clone());
                }
            }
            for nested in &self.rule_set.correlations {
                if nested.meta.is_referenced_by(reference) {
                    self.collect(nested, seen, out);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
