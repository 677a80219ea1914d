//! Property: for generated rule sets of every shape and generated events,
//! the optimized engine under every prefilter strategy (per-field automata,
//! one cross-rule automaton, Bloom-gated with a roomy and a starved budget),
//! with logsource routing on or off, gives exactly the detections of the
//! reference: the same rules compiled with `reference: true` (every value its
//! own matcher, no shared automata) and evaluated rule by rule without the
//! prefilter.
//!
//! Rules draw fields, modifiers (positions, `all`, `cased`, `re`, `exists`,
//! `neq`, `fieldref`, numbers), keyword lists of 1 to 8 values, filters
//! (`and not`), `1 of`/`all of` and logsources from small alphabets, so that
//! generated events hit them often. This is what caught keyword lists of
//! four or more values never matching.

use std::path::Path;

use proptest::prelude::*;
use rsigma_engine::{CompileOptions, Engine, Routing, parse_rules};
use serde_json::{Map, Value, json};

#[path = "support/strategies.rs"]
mod strategies;

const WORDS: &[&str] = &[
    "alpha", "beta", "gamma", "cmd.exe", "Power", "x", "-enc", "ümlaut", "42",
];
const FIELDS: &[&str] = &["Image", "CommandLine", "User", "nested.name", "EventID"];

fn word() -> impl Strategy<Value = String> {
    prop::sample::select(WORDS).prop_map(str::to_owned)
}

/// A value with optional wildcards, quoted for YAML.
fn pattern() -> impl Strategy<Value = String> {
    (
        word(),
        prop::sample::select(&["", "*", "?"][..]),
        any::<bool>(),
    )
        .prop_map(|(w, wildcard, front)| {
            let text = if front {
                format!("{wildcard}{w}")
            } else {
                format!("{w}{wildcard}")
            };
            format!("'{}'", text.replace('\'', "''"))
        })
}

/// One detection item as YAML lines (indented for a selection map).
fn item() -> impl Strategy<Value = String> {
    let field = prop::sample::select(FIELDS);
    let modifiers = prop::sample::select(
        &[
            "",
            "|contains",
            "|startswith",
            "|endswith",
            "|contains|all",
            "|contains|cased",
            "|neq",
            "|contains|neq",
        ][..],
    );
    let values = prop::collection::vec(pattern(), 1..7);
    let plain = (field, modifiers, values).prop_map(|(f, m, v)| {
        let list: String = v.iter().map(|v| format!("\n      - {v}")).collect();
        format!("    {f}{m}:{list}\n")
    });
    let special = prop_oneof![
        (prop::sample::select(FIELDS), any::<bool>())
            .prop_map(|(f, e)| format!("    {f}|exists: {e}\n")),
        (
            prop::sample::select(FIELDS),
            prop::sample::select(FIELDS),
            any::<bool>()
        )
            .prop_map(|(f, g, neq)| format!(
                "    {f}|fieldref{}: {g}\n",
                if neq { "|neq" } else { "" }
            )),
        (prop::sample::select(FIELDS), word())
            .prop_map(|(f, w)| format!("    {f}|re: '(?i){}'\n", regex::escape(&w))),
        (0u32..100).prop_map(|n| format!("    EventID: {n}\n")),
        (0u32..100).prop_map(|n| format!("    EventID|gt: {n}\n")),
    ];
    prop_oneof![4 => plain, 1 => special]
}

/// A search identifier: a selection map, or a keyword list.
fn identifier() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::collection::vec(item(), 1..3).prop_map(|items| items.concat()),
        1 => prop::collection::vec(pattern(), 1..9).prop_map(|words| {
            words.iter().map(|w| format!("    - {w}\n")).collect()
        }),
    ]
}

fn condition(identifiers: usize) -> impl Strategy<Value = String> {
    let names: Vec<String> = (0..identifiers).map(|i| format!("sel{i}")).collect();
    let first = names[0].clone();
    let all = names.clone();
    prop_oneof![
        Just(first.clone()),
        Just("1 of sel*".to_owned()),
        Just("all of sel*".to_owned()),
        Just(format!("not {first}")),
        Just(all.join(" or ")),
        Just(all.join(" and ")),
        Just(format!("{first} and not ({})", all.join(" or "))),
    ]
}

const LOGSOURCES: &[&str] = &[
    "{product: windows, category: process_creation}",
    "{product: windows, service: security}",
    "{product: linux}",
    "{category: proxy}",
    "{}",
];

fn rule(index: usize) -> impl Strategy<Value = String> {
    (1usize..4, prop::sample::select(LOGSOURCES))
        .prop_flat_map(|(n, logsource)| {
            (
                prop::collection::vec(identifier(), n),
                condition(n),
                Just(logsource),
            )
        })
        .prop_map(move |(identifiers, condition, logsource)| {
            let mut yaml = format!("title: Rule {index}\nlogsource: {logsource}\ndetection:\n");
            for (i, body) in identifiers.iter().enumerate() {
                yaml.push_str(&format!("  sel{i}:\n{body}"));
            }
            yaml.push_str(&format!("  condition: {condition}\n"));
            yaml
        })
}

fn rule_set() -> impl Strategy<Value = String> {
    prop::collection::vec(0usize..1, 1..12).prop_flat_map(|slots| {
        let rules: Vec<_> = (0..slots.len()).map(rule).collect();
        rules.prop_map(|rules| rules.join("---\n"))
    })
}

fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(word(), 0..4).prop_map(|w| w.join(" "))
}

fn event() -> impl Strategy<Value = Value> {
    let value = prop_oneof![
        text().prop_map(Value::from),
        (0u32..100).prop_map(Value::from),
        prop::collection::vec(text(), 1..3).prop_map(|v| json!(v)),
    ];
    let channel = prop::sample::select(
        &[
            None,
            Some("Security"),
            Some("Microsoft-Windows-Sysmon/Operational"),
        ][..],
    );
    (
        prop::collection::vec((prop::sample::select(FIELDS), value), 0..5),
        channel,
        prop::option::of(text()),
    )
        .prop_map(|(fields, channel, note)| {
            let mut map = Map::new();
            for (field, value) in fields {
                match field.split_once('.') {
                    Some((outer, inner)) => {
                        map.insert(outer.to_owned(), json!({ inner: value }));
                    }
                    None => {
                        map.insert(field.to_owned(), value);
                    }
                }
            }
            if let Some(channel) = channel {
                map.insert("Channel".into(), json!(channel));
                map.entry("EventID").or_insert(json!(1));
            }
            if let Some(note) = note {
                map.insert("note".into(), json!({"deep": [note]}));
            }
            Value::Object(map)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

    #[test]
    fn every_strategy_equals_the_reference_path(
        yaml in rule_set(),
        events in prop::collection::vec(event(), 1..12),
        routed in any::<bool>(),
    ) {
        let loaded = parse_rules(&yaml, Path::new("generated.yml"));
        prop_assume!(loaded.errors.is_empty());
        let routing = if routed { Routing::default() } else { Routing::disabled() };
        let (reference, errors) = Engine::compile_with(
            &loaded.rule_set,
            &CompileOptions {
                routing: routing.clone(),
                reference: true,
                ..CompileOptions::default()
            },
        );
        prop_assume!(errors.is_empty());
        let expected: Vec<_> = events.iter().map(|e| reference.evaluate_unindexed(e)).collect();
        for (name, prefilter) in strategies::all() {
            let options = CompileOptions {
                prefilter,
                routing: routing.clone(),
                ..CompileOptions::default()
            };
            let (engine, errors) = Engine::compile_with(&loaded.rule_set, &options);
            prop_assert!(errors.is_empty());
            let mut scratch = engine.new_scratch();
            let mut indexed = Vec::new();
            for (event, expected) in events.iter().zip(&expected) {
                indexed.clear();
                engine.evaluate_into(event, &mut scratch, &mut indexed);
                prop_assert_eq!(&indexed, expected, "strategy {} on {}\n{}", name, event, yaml);
            }
        }
    }
}
