//! The optimized engine (every prefilter strategy, logsource routing on)
//! must give exactly what the reference gives (the rules compiled with
//! `reference: true`, evaluated rule by rule without the prefilter), on the
//! real SigmaHQ Windows rules and a generated stream of Windows-like events
//! (benign and malicious). `tests/proptest.rs` does the same for generated
//! rules of every shape.

use std::path::PathBuf;

use rsigma_engine::{CompileOptions, Engine, load_rules};

#[path = "support/strategies.rs"]
mod strategies;
#[path = "../benches/support/windows_events.rs"]
#[allow(dead_code)]
mod windows_events;

fn corpus_root() -> Option<PathBuf> {
    let root = std::env::var_os("RSIGMA_SIGMAHQ_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/sigmahq")
        });
    root.is_dir().then_some(root)
}

#[test]
fn every_strategy_equals_the_reference_on_sigmahq_windows_rules() {
    let Some(root) = corpus_root() else {
        eprintln!("SKIPPED: SigmaHQ corpus not found at ../shared/corpus/sigmahq");
        return;
    };
    let loaded = load_rules(&root.join("rules/windows"));
    assert!(loaded.errors.is_empty());
    let reference_options = CompileOptions {
        reference: true,
        ..CompileOptions::default()
    };
    let (reference, errors) = Engine::compile_with(&loaded.rule_set, &reference_options);
    assert!(errors.is_empty(), "{errors:?}");
    let events = windows_events::generate(7, 1_500);
    let expected: Vec<_> = events
        .iter()
        .map(|e| reference.evaluate_unindexed(e))
        .collect();
    let matched_events = expected.iter().filter(|d| !d.is_empty()).count();
    for (name, prefilter) in strategies::all() {
        let options = CompileOptions {
            prefilter,
            ..CompileOptions::default()
        };
        let (engine, errors) = Engine::compile_with(&loaded.rule_set, &options);
        assert!(errors.is_empty());
        let mut scratch = engine.new_scratch();
        let mut indexed = Vec::new();
        for (event, expected) in events.iter().zip(&expected) {
            indexed.clear();
            engine.evaluate_into(event, &mut scratch, &mut indexed);
            assert_eq!(
                &indexed, expected,
                "{name} disagrees with the reference on {event}"
            );
        }
        eprintln!(
            "{name}: {} rules, {} route indexes of {} KiB, {} events, {matched_events} with detections",
            engine.rule_count(),
            engine.routes_built(),
            engine.index_memory_usage() / 1024,
            events.len()
        );
        assert!(
            engine.routes_built() > 1,
            "the Windows channels make several routes"
        );
    }
    // The comparison means little unless both paths found something.
    assert!(
        matched_events > 0,
        "the generated stream should trigger some rules"
    );
}

/// Prefilter selectivity on the generated stream (run with --ignored --nocapture).
#[test]
#[ignore]
fn prefilter_selectivity() {
    let Some(root) = corpus_root() else { return };
    let loaded = load_rules(&root.join("rules/windows"));
    let (engine, _) = Engine::compile(&loaded.rule_set);
    let events = windows_events::generate(7, 5_000);
    let mut scratch = engine.new_scratch();
    let titles: Vec<String> = engine.rules().map(|r| r.title.clone()).collect();
    let mut counts = vec![0usize; titles.len()];
    for event in &events {
        for rule in engine.candidate_rules(event, &mut scratch) {
            counts[rule] += 1;
        }
    }
    let total: usize = counts.iter().sum();
    eprintln!(
        "average candidates per event: {:.1} ({} rules evaluated for every event without routing)",
        total as f64 / events.len() as f64,
        engine.unindexed_rule_count()
    );
    let mut ranked: Vec<(usize, &String)> = counts.into_iter().zip(&titles).collect();
    ranked.sort_by_key(|r| std::cmp::Reverse(r.0));
    for (count, title) in ranked.iter().take(25) {
        eprintln!("{count:6} {title}");
    }
}
