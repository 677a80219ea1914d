//! Logsource routing through whole rule sets: past the route limit events
//! are still routed correctly, and routing is counted.

use std::path::Path;

use rsigma_engine::{CompileOptions, Engine, Routing, parse_rules};
use serde_json::json;

/// 300 products, one rule each, all matching any event with `Image`: more
/// route keys than an engine remembers (256), so the last ones overflow.
#[test]
fn events_past_the_route_limit_are_still_routed() {
    let yaml: Vec<String> = (0..300)
        .map(|i| {
            format!(
                "title: Rule {i}\nlogsource: {{product: p{i}}}\ndetection:\n  sel:\n    Image|exists: true\n  condition: sel\n"
            )
        })
        .collect();
    let loaded = parse_rules(&yaml.join("---\n"), Path::new("many.yml"));
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let options = CompileOptions {
        routing: Routing {
            field_map: Routing::parse_pairs("product=os").unwrap(),
            ..Routing::default()
        },
        ..CompileOptions::default()
    };
    let (engine, errors) = Engine::compile_with(&loaded.rule_set, &options);
    assert!(errors.is_empty());
    let mut scratch = engine.new_scratch();
    let mut out = Vec::new();
    let mut labels = Vec::new();
    for round in 0..2 {
        for i in 0..300 {
            let event = json!({"os": format!("P{i}"), "Image": "x"});
            out.clear();
            let stats = engine.evaluate_into(&event, &mut scratch, &mut out);
            let titles: Vec<&str> = out.iter().map(|d| d.rule_title.as_str()).collect();
            assert_eq!(titles, [format!("Rule {i}")], "round {round}, event {i}");
            assert_eq!(engine.evaluate_unindexed(&event), out);
            if round == 0 {
                labels.push(stats.logsource.to_owned());
                if i < 256 {
                    assert_eq!(stats.skipped_rules, 299, "event {i}");
                }
            }
        }
    }
    assert_eq!(labels[0], "product=p0");
    assert_eq!(labels[299], "overflow");
    // Nothing known: every rule applies.
    out.clear();
    let stats = engine.evaluate_into(&json!({"Image": "x"}), &mut scratch, &mut out);
    assert_eq!(out.len(), 300);
    assert_eq!((stats.logsource, stats.skipped_rules), ("unknown", 0));
}
