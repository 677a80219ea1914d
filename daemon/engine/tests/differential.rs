//! The indexed evaluation path must give exactly what the unindexed
//! reference path gives, on the real SigmaHQ Windows rules and a generated
//! stream of Windows-like events (benign and malicious).

use std::path::PathBuf;

use rsigma_engine::{Engine, load_rules};

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
fn indexed_path_equals_reference_path_on_sigmahq_windows_rules() {
    let Some(root) = corpus_root() else {
        eprintln!("SKIPPED: SigmaHQ corpus not found at ../shared/corpus/sigmahq");
        return;
    };
    let loaded = load_rules(&root.join("rules/windows"));
    let (engine, errors) = Engine::compile(&loaded.rule_set);
    assert!(errors.is_empty() && loaded.errors.is_empty());
    let events = windows_events::generate(7, 3_000);
    let mut scratch = engine.new_scratch();
    let mut indexed = Vec::new();
    let mut matched_events = 0;
    for event in &events {
        indexed.clear();
        engine.evaluate_into(event, &mut scratch, &mut indexed);
        let reference = engine.evaluate_unindexed(event);
        assert_eq!(indexed, reference, "paths disagree on {event}");
        matched_events += usize::from(!reference.is_empty());
    }
    eprintln!(
        "{} rules ({} evaluated for every event), {} events, {matched_events} with detections",
        engine.rule_count(),
        engine.unindexed_rule_count(),
        events.len()
    );
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
        "average candidates per event: {:.1}",
        total as f64 / events.len() as f64
    );
    let mut ranked: Vec<(usize, &String)> = counts.into_iter().zip(&titles).collect();
    ranked.sort_by_key(|r| std::cmp::Reverse(r.0));
    for (count, title) in ranked.iter().take(25) {
        eprintln!("{count:6} {title}");
    }
}
