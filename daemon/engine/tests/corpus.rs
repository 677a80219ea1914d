//! Every rule of the SigmaHQ corpus (read from `../shared/corpus/sigmahq`,
//! never copied here) must load and compile.

use std::path::PathBuf;

use rsigma_engine::{CompileOptions, Engine, UndefinedPlaceholders, load_rules};

/// Rules that need a feature this engine does not support, with the reason.
/// The goal is for this list to stay empty.
const UNSUPPORTED: &[(&str, &str)] = &[];

fn corpus_root() -> Option<PathBuf> {
    let root = std::env::var_os("RSIGMA_SIGMAHQ_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/sigmahq")
        });
    root.is_dir().then_some(root)
}

#[test]
fn sigmahq_corpus_loads_and_compiles() {
    let Some(root) = corpus_root() else {
        eprintln!(
            "SKIPPED: SigmaHQ corpus not found at ../shared/corpus/sigmahq (set RSIGMA_SIGMAHQ_DIR)"
        );
        return;
    };
    // Rules with placeholders no pipeline defines are rejected by default
    // (the specification's rule), naming the placeholder; the opt-out loads
    // them inert. Every other rule must compile either way.
    let inert = CompileOptions {
        undefined_placeholders: UndefinedPlaceholders::MatchNothing,
        ..CompileOptions::default()
    };
    let mut failures = Vec::new();
    let mut placeholder_rejections = 0;
    let mut total = 0;
    for dir in ["rules", "rules-emerging-threats", "rules-threat-hunting"] {
        let loaded = load_rules(&root.join(dir));
        let (_, strict_errors) = Engine::compile(&loaded.rule_set);
        for error in &strict_errors {
            assert!(
                error.to_string().contains("placeholder '%")
                    && error.to_string().contains("is not defined"),
                "unexpected compile error: {error}"
            );
        }
        placeholder_rejections += strict_errors.len();
        let (engine, compile_errors) = Engine::compile_with(&loaded.rule_set, &inert);
        let documents = loaded.rule_set.len();
        total += documents;
        eprintln!(
            "{dir}: {documents} documents, {} compiled detection rules, {} load errors, {} compile errors",
            engine.rule_count(),
            loaded.errors.len(),
            compile_errors.len()
        );
        failures.extend(loaded.errors);
        failures.extend(compile_errors);
    }
    failures.retain(|err| !UNSUPPORTED.iter().any(|(file, _)| err.file.ends_with(file)));
    for failure in &failures {
        eprintln!("FAILED: {failure}");
    }
    eprintln!(
        "SigmaHQ corpus: {total} rules loaded, {} failures, {placeholder_rejections} rejected \
         by default for undefined placeholders",
        failures.len()
    );
    assert!(
        total > 3000,
        "expected the whole corpus, found {total} rules"
    );
    assert!(failures.is_empty(), "{} rules failed", failures.len());
}
