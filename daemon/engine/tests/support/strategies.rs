//! The prefilter strategies the differential tests run, named.
//!
//! Include with `#[path = "support/strategies.rs"] mod strategies;`.

use rsigma_engine::PrefilterOptions;

/// Per-field automata, one cross-rule automaton, Bloom-gated with a roomy
/// budget, and cross-rule Bloom-gated with a budget too small for most
/// fields (so gated and ungated fields mix).
pub fn all() -> [(&'static str, PrefilterOptions); 4] {
    [
        ("per-field", PrefilterOptions::default()),
        (
            "cross-rule",
            PrefilterOptions {
                cross_rule_automaton: true,
                bloom_max_bytes: None,
            },
        ),
        (
            "bloom",
            PrefilterOptions {
                cross_rule_automaton: false,
                bloom_max_bytes: Some(1 << 20),
            },
        ),
        (
            "bloom-starved",
            PrefilterOptions {
                cross_rule_automaton: true,
                bloom_max_bytes: Some(64),
            },
        ),
    ]
}
