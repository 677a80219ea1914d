//! One module per subcommand, plus the rule loading they share.

#[cfg(feature = "daemon")]
pub mod daemon;
pub mod eval;
pub mod reload;
pub mod status;
pub mod tap;
pub mod validate;

use std::path::Path;

use anyhow::Context;
use rsigma_engine::correlation::{CorrelationEngine, CorrelationOptions};
use rsigma_engine::pipeline::PipelineSet;
use rsigma_engine::{CompileOptions, Engine, RuleError, load_rules};

use crate::exit::CliError;

/// The outcome of loading and compiling a rules file or directory.
pub struct CompiledRules {
    /// The engine holding every rule that loaded and compiled.
    pub engine: Engine,
    /// The correlation rules, when there are any and they all resolved.
    pub correlations: Option<CorrelationEngine>,
    /// Number of rules the loader parsed (before compilation).
    pub parsed: usize,
    /// Every load, parse and compile error, in that order.
    pub errors: Vec<RuleError>,
    /// Number of load and parse errors (the first entries of `errors`).
    pub load_failed: usize,
    /// Number of distinct parsed rules that then failed to compile.
    pub compile_failed: usize,
}

/// Loads every rule under `path` (a file or a directory, recursively) and
/// compiles them, correlation rules included.
///
/// Fails with exit code 2 only when `path` itself cannot be read; individual rule
/// failures are returned in [`CompiledRules::errors`] for the caller to report.
pub fn load_and_compile(
    path: &Path,
    pipelines: &[String],
    engine: &CompileOptions,
    correlation: &CorrelationOptions,
) -> Result<CompiledRules, CliError> {
    // A pipeline that cannot be parsed is a configuration error (exit 3).
    let pipelines = PipelineSet::load(pipelines).map_err(CliError::config)?;
    std::fs::metadata(path)
        .with_context(|| format!("the rules path '{}' could not be read", path.display()))
        .map_err(CliError::rules)?;

    let loaded = load_rules(path);
    for warning in &loaded.warnings {
        eprintln!("warning: {warning}");
    }
    let parsed = loaded.rule_set.len();
    let mut errors = loaded.errors;
    let (rule_set, pipeline_errors) = if pipelines.is_empty() {
        (loaded.rule_set, Vec::new())
    } else {
        pipelines.apply(&loaded.rule_set)
    };
    errors.extend(pipeline_errors);
    let load_failed = errors.len();
    let options = CompileOptions {
        placeholders: pipelines.placeholders(),
        ..engine.clone()
    };
    let (engine, mut compile_errors) = Engine::compile_with(&rule_set, &options);
    let correlations = if rule_set.correlations.is_empty() {
        None
    } else {
        match CorrelationEngine::new(&rule_set.correlations, &engine, correlation.clone()) {
            Ok(correlations) => Some(correlations),
            Err(errors) => {
                compile_errors.extend(errors);
                None
            }
        }
    };

    // A single rule may report several compile errors; count rules, not messages.
    let mut failed: Vec<(&Path, Option<&str>)> = compile_errors
        .iter()
        .map(|e| (e.file.as_path(), e.rule.as_deref()))
        .collect();
    failed.sort_unstable();
    failed.dedup();
    let compile_failed = failed.len();

    errors.extend(compile_errors);
    Ok(CompiledRules {
        engine,
        correlations,
        parsed,
        errors,
        load_failed,
        compile_failed,
    })
}
