//! Every rule of the SigmaHQ corpus (read from `../shared/corpus/sigmahq`,
//! never copied here) must load and compile.

use std::path::PathBuf;

use rsigma_engine::{Engine, load_rules};

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
    let mut failures = Vec::new();
    let mut total = 0;
    for dir in ["rules", "rules-emerging-threats", "rules-threat-hunting"] {
        let loaded = load_rules(&root.join(dir));
        let (engine, compile_errors) = Engine::compile(&loaded.rule_set);
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
        "SigmaHQ corpus: {total} rules loaded, {} failures",
        failures.len()
    );
    assert!(
        total > 3000,
        "expected the whole corpus, found {total} rules"
    );
    assert!(failures.is_empty(), "{} rules failed", failures.len());
}
