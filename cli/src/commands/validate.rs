//! `rsigma rule validate`: load and compile rules without evaluating anything.
//!
//! Every failure is printed on stderr as `error: <file>: rule '<rule>': <reason>`,
//! followed by the summary `Validated N rules: X valid, Y failed.` (silenced by
//! `--quiet`/`--no-stats`). Exits with 2 when any rule failed.

use std::path::PathBuf;

use clap::Args;
use rsigma_engine::CompileOptions;
use rsigma_engine::correlation::CorrelationOptions;

use crate::diag::Diagnostics;
use crate::exit::{CliError, Code};
use crate::options::undefined_placeholders;

/// Arguments of `rsigma rule validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Sigma rule file, or a directory searched recursively for .yml/.yaml rules.
    #[arg(value_name = "PATH")]
    pub path: PathBuf,

    /// Processing pipeline applied before compiling: builtin name or YAML file. Repeatable.
    #[arg(short = 'p', long = "pipeline", value_name = "PIPELINE")]
    pub pipelines: Vec<String>,

    /// Accept rules whose `expand` placeholders no pipeline defines (they would load inert).
    #[arg(long)]
    pub allow_undefined_placeholders: bool,
}

/// Runs `rsigma rule validate`.
pub fn run(args: &ValidateArgs, diag: &Diagnostics) -> Result<Code, CliError> {
    let engine = CompileOptions {
        undefined_placeholders: undefined_placeholders(args.allow_undefined_placeholders),
        ..CompileOptions::default()
    };
    let compiled = super::load_and_compile(
        &args.path,
        &args.pipelines,
        &engine,
        &CorrelationOptions::default(),
    )?;
    for error in &compiled.errors {
        diag.error(error);
    }

    // Rules that failed to load never reach the rule set, so each load error
    // counts as one failed rule (or file, when the file could not be parsed at all).
    let valid = compiled.parsed.saturating_sub(compiled.compile_failed);
    let failed = compiled.load_failed + compiled.compile_failed;
    diag.stats(format_args!(
        "Validated {} rules: {valid} valid, {failed} failed.",
        valid + failed
    ));

    Ok(if compiled.errors.is_empty() {
        Code::Success
    } else {
        Code::Rules
    })
}
