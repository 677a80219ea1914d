//! Conditions, rule documents (multi-document actions, filters, correlations)
//! and detection records, through whole rules.

use std::path::Path;

use rsigma_engine::{Engine, RuleSet, parse_rules};
use serde_json::{Value, json};

fn load(yaml: &str) -> RuleSet {
    let loaded = parse_rules(yaml, Path::new("rules.yml"));
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    loaded.rule_set
}

fn compile(yaml: &str) -> Engine {
    let (engine, errors) = Engine::compile(&load(yaml));
    assert!(errors.is_empty(), "{errors:?}");
    engine
}

fn titles(engine: &Engine, event: &Value) -> Vec<String> {
    let indexed: Vec<String> = engine
        .evaluate(event)
        .into_iter()
        .map(|d| d.rule_title)
        .collect();
    let reference: Vec<String> = engine
        .evaluate_unindexed(event)
        .into_iter()
        .map(|d| d.rule_title)
        .collect();
    assert_eq!(
        indexed, reference,
        "index and reference disagree on {event}"
    );
    indexed
}

/// A rule over four selections a..d, each `X: 1` for its own field X.
fn condition_rule(condition: &str) -> Engine {
    compile(&format!(
        "title: C\nlogsource: {{product: test}}\ndetection:\n  sel_a: {{A: 1}}\n  sel_b: {{B: 1}}\n  \
         sel_c: {{C: 1}}\n  _private: {{D: 1}}\n  condition: {condition}\n"
    ))
}

/// Every combination of A, B, C, D set to 1 or absent.
fn truth_table(engine: &Engine) -> Vec<bool> {
    (0..16)
        .map(|bits: u32| {
            let mut event = serde_json::Map::new();
            for (i, field) in ["A", "B", "C", "D"].iter().enumerate() {
                if bits & (1 << i) != 0 {
                    event.insert((*field).into(), json!(1));
                }
            }
            !titles(engine, &Value::Object(event)).is_empty()
        })
        .collect()
}

fn expected(f: impl Fn(bool, bool, bool, bool) -> bool) -> Vec<bool> {
    (0..16)
        .map(|bits: u32| f(bits & 1 != 0, bits & 2 != 0, bits & 4 != 0, bits & 8 != 0))
        .collect()
}

type Truth = Box<dyn Fn(bool, bool, bool, bool) -> bool>;

#[test]
fn boolean_operators_and_precedence() {
    let cases: Vec<(&str, Truth)> = vec![
        ("sel_a and sel_b", Box::new(|a, b, _, _| a && b)),
        ("sel_a or sel_b", Box::new(|a, b, _, _| a || b)),
        ("not sel_a", Box::new(|a, _, _, _| !a)),
        (
            "sel_a or sel_b and sel_c",
            Box::new(|a, b, c, _| a || (b && c)),
        ),
        (
            "(sel_a or sel_b) and sel_c",
            Box::new(|a, b, c, _| (a || b) && c),
        ),
        (
            "sel_a and not sel_b or sel_c",
            Box::new(|a, b, c, _| (a && !b) || c),
        ),
        ("not (sel_a or sel_b)", Box::new(|a, b, _, _| !(a || b))),
        ("not not sel_a", Box::new(|a, _, _, _| a)),
        ("1 of sel_*", Box::new(|a, b, c, _| a || b || c)),
        ("any of sel_*", Box::new(|a, b, c, _| a || b || c)),
        ("all of sel_*", Box::new(|a, b, c, _| a && b && c)),
        (
            "2 of sel_*",
            Box::new(|a, b, c, _| [a, b, c].iter().filter(|x| **x).count() >= 2),
        ),
        // `them` leaves out identifiers starting with an underscore.
        ("all of them", Box::new(|a, b, c, _| a && b && c)),
        ("1 of them", Box::new(|a, b, c, _| a || b || c)),
        (
            "1 of them and _private",
            Box::new(|a, b, c, d| (a || b || c) && d),
        ),
        (
            "not 1 of sel_* and _private",
            Box::new(|a, b, c, d| !(a || b || c) && d),
        ),
        ("all of sel_a* or sel_c", Box::new(|a, _, c, _| a || c)),
    ];
    for (condition, f) in cases {
        assert_eq!(
            truth_table(&condition_rule(condition)),
            expected(f),
            "condition {condition}"
        );
    }
}

#[test]
fn a_list_of_conditions_is_an_or() {
    let engine = condition_rule("\n    - sel_a and sel_b\n    - sel_c");
    assert_eq!(truth_table(&engine), expected(|a, b, c, _| (a && b) || c));
}

#[test]
fn a_list_of_maps_is_an_or_of_selections() {
    let engine = compile(
        "title: L\nlogsource: {product: test}\ndetection:\n  sel:\n    - {A: 1, B: 1}\n    - {C: 1}\n  \
         condition: sel\n",
    );
    assert_eq!(truth_table(&engine), expected(|a, b, c, _| (a && b) || c));
}

#[test]
fn condition_errors_name_the_rule_and_reason() {
    for (condition, reason) in [
        ("sel_x", "undefined search identifier 'sel_x'"),
        ("1 of nothing_*", "matches no search identifier"),
        ("4 of sel_*", "can never hold"),
        ("sel_a and", "unexpected end"),
        ("sel_a | count() > 5", "correlation rule"),
    ] {
        let yaml = format!(
            "title: Broken\nlogsource: {{product: test}}\ndetection:\n  sel_a: {{A: 1}}\n  sel_b: {{B: 1}}\n  \
             sel_c: {{C: 1}}\n  condition: {condition}\n"
        );
        let loaded = parse_rules(&yaml, Path::new("broken.yml"));
        let message = match loaded.errors.first() {
            Some(err) => err.to_string(),
            None => Engine::compile(&loaded.rule_set).1[0].to_string(),
        };
        assert!(
            message.starts_with("broken.yml: rule 'Broken': "),
            "{message}"
        );
        assert!(
            message.contains(reason),
            "{message} should contain {reason}"
        );
    }
}

#[test]
fn multi_document_global_repeat_reset() {
    let set = load(
        "action: global\ntitle: Base\nlogsource: {product: windows}\nlevel: high\ndetection:\n  \
         condition: sel\n---\ndetection:\n  sel: {Image: a.exe}\n---\ntitle: Second\ndetection:\n  \
         sel: {Image: b.exe}\n---\naction: repeat\ntitle: Third\nlevel: low\n---\naction: reset\n---\n\
         title: Alone\nlogsource: {product: linux}\ndetection:\n  sel: {Image: c}\n  condition: sel\n",
    );
    let summary: Vec<(String, Option<String>)> = set
        .rules
        .iter()
        .map(|r| (r.meta.title.clone(), r.meta.level.clone()))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("Base".into(), Some("high".into())),
            ("Second".into(), Some("high".into())),
            ("Third".into(), Some("low".into())),
            ("Alone".into(), None),
        ]
    );
    let (engine, errors) = Engine::compile(&set);
    assert!(errors.is_empty(), "{errors:?}");
    // `repeat` keeps the previous document's detection.
    assert_eq!(
        titles(&engine, &json!({"Image": "b.exe"})),
        vec!["Second", "Third"]
    );
}

#[test]
fn filters_apply_as_and_not_to_the_rules_they_name() {
    let engine = compile(
        "title: Whoami\nid: 11111111-1111-1111-1111-111111111111\nlogsource: {product: windows, category: process_creation}\n\
         detection:\n  sel: {Image|endswith: '\\whoami.exe'}\n  condition: sel\n---\n\
         title: Net\nname: net_use\nlogsource: {product: windows, category: process_creation}\n\
         detection:\n  sel: {Image|endswith: '\\net.exe'}\n  condition: sel\n---\n\
         title: Other\nlogsource: {product: windows, category: process_creation}\n\
         detection:\n  sel: {Image|endswith: '\\other.exe'}\n  condition: sel\n---\n\
         title: Admin workstations\nlogsource: {product: windows, category: process_creation}\n\
         filter:\n  rules:\n    - 11111111-1111-1111-1111-111111111111\n    - net_use\n  \
         selection: {Computer|startswith: 'ADMIN-'}\n  condition: selection\n",
    );
    assert_eq!(
        titles(
            &engine,
            &json!({"Image": "C:\\whoami.exe", "Computer": "WS-1"})
        ),
        vec!["Whoami"]
    );
    assert!(
        titles(
            &engine,
            &json!({"Image": "C:\\whoami.exe", "Computer": "ADMIN-1"})
        )
        .is_empty()
    );
    assert!(
        titles(
            &engine,
            &json!({"Image": "C:\\net.exe", "Computer": "ADMIN-1"})
        )
        .is_empty()
    );
    assert_eq!(
        titles(
            &engine,
            &json!({"Image": "C:\\other.exe", "Computer": "ADMIN-1"})
        ),
        vec!["Other"]
    );
}

#[test]
fn correlation_rules_are_parsed_and_validated() {
    let set = load(
        "title: Failed logon\nname: failed_logon\nlogsource: {product: windows, service: security}\n\
         detection:\n  sel: {EventID: 4625}\n  condition: sel\n---\n\
         title: Brute force\ncorrelation:\n  type: event_count\n  rules: [failed_logon]\n  \
         group-by: [TargetUserName]\n  timespan: 5m\n  condition: {gte: 10}\nlevel: high\n",
    );
    assert_eq!(set.detection_rule_count(), 1);
    assert_eq!(set.correlation_rule_count(), 1);
    let correlation = &set.correlations[0];
    assert_eq!(correlation.timespan_secs, 300);
    assert_eq!(correlation.group_by, vec!["TargetUserName"]);
    for (body, reason) in [
        (
            "  type: nope\n  rules: [a]\n  timespan: 5m\n",
            "unknown correlation type",
        ),
        (
            "  type: event_count\n  rules: [a]\n  timespan: 5m\n",
            "needs a 'condition'",
        ),
        (
            "  type: value_count\n  rules: [a]\n  timespan: 5m\n  condition: {gt: 3}\n",
            "condition.field",
        ),
        (
            "  type: temporal\n  rules: [a]\n  timespan: 5x\n",
            "unknown unit",
        ),
        ("  type: temporal\n  timespan: 5m\n", "at least one rule"),
    ] {
        let loaded = parse_rules(
            &format!("title: Bad corr\ncorrelation:\n{body}"),
            Path::new("c.yml"),
        );
        let message = loaded.errors[0].to_string();
        assert!(
            message.contains("Bad corr") && message.contains(reason),
            "{message}"
        );
    }
}

#[test]
fn detection_records_explain_the_match() {
    let engine = compile(
        "title: Encoded PowerShell\nid: 22222222-2222-2222-2222-222222222222\nlevel: high\n\
         tags: [attack.execution, attack.t1059.001]\nlogsource: {product: windows}\n\
         detection:\n  selection_img:\n    Image|endswith: '\\powershell.exe'\n  selection_cli:\n    \
         CommandLine|contains: ' -enc '\n  filter:\n    User: SYSTEM\n  \
         condition: all of selection_* and not filter\n",
    );
    let event = json!({
        "Image": "C:\\Windows\\powershell.exe",
        "CommandLine": "powershell -enc AAAA",
        "User": "alice"
    });
    let detections = engine.evaluate(&event);
    assert_eq!(detections.len(), 1);
    let record = serde_json::to_value(&detections[0]).unwrap();
    assert_eq!(
        record,
        json!({
            "rule_title": "Encoded PowerShell",
            "rule_id": "22222222-2222-2222-2222-222222222222",
            "level": "high",
            "tags": ["attack.execution", "attack.t1059.001"],
            "matched_selections": ["selection_img", "selection_cli"],
            "matched_fields": [
                {"field": "Image", "value": "C:\\Windows\\powershell.exe"},
                {"field": "CommandLine", "value": "powershell -enc AAAA"}
            ]
        })
    );
}

#[test]
fn yaml_errors_name_the_file() {
    let loaded = parse_rules("title: x\ndetection: [unclosed\n", Path::new("broken.yml"));
    assert_eq!(loaded.errors.len(), 1);
    let message = loaded.errors[0].to_string();
    assert!(message.starts_with("broken.yml: invalid YAML"), "{message}");
    let loaded = parse_rules("title: x\nlogsource: {}\n", Path::new("nodet.yml"));
    assert!(loaded.errors[0].to_string().contains("missing 'detection'"));
}

#[test]
fn directories_skip_hidden_entries_and_hash_their_content() {
    let dir = tempfile::tempdir().unwrap();
    let rule = "title: R\nlogsource: {product: x}\ndetection:\n  sel: {A: 1}\n  condition: sel\n";
    std::fs::create_dir(dir.path().join("..data")).unwrap();
    std::fs::write(dir.path().join("..data/r.yml"), rule).unwrap();
    std::fs::write(dir.path().join("r.yml"), rule).unwrap();
    let loaded = rsigma_engine::load_rules(dir.path());
    assert_eq!(
        loaded.rule_set.len(),
        1,
        "the ..data copy is not loaded twice"
    );
    let mut digest = rsigma_engine::RulesDigest::default();
    digest.add("r.yml", rule);
    assert_eq!(loaded.digest, digest.finish());
    std::fs::write(dir.path().join("r.yml"), rule.replace("A: 1", "A: 2")).unwrap();
    assert_ne!(rsigma_engine::load_rules(dir.path()).digest, loaded.digest);
}

#[test]
fn a_symbolic_link_loop_loads_each_rule_once_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let rule = "title: R\nlogsource: {product: x}\ndetection:\n  sel: {A: 1}\n  condition: sel\n";
    std::fs::create_dir(dir.path().join("windows")).unwrap();
    std::fs::write(dir.path().join("windows/r.yml"), rule).unwrap();
    // windows/again -> .. : every lap of the loop would hold windows/r.yml.
    std::os::unix::fs::symlink("..", dir.path().join("windows/again")).unwrap();
    // A second link to the same file.
    std::os::unix::fs::symlink("windows/r.yml", dir.path().join("copy.yml")).unwrap();
    let loaded = rsigma_engine::load_rules(dir.path());
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    assert_eq!(loaded.rule_set.len(), 1, "each real file once");
    assert_eq!(loaded.warnings.len(), 2, "{:?}", loaded.warnings);
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.contains("windows/again") && w.contains("symbolic link loop")),
        "{:?}",
        loaded.warnings
    );
    // Breadth first in name order: copy.yml is met first and kept.
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.contains("windows/r.yml: skipped")),
        "{:?}",
        loaded.warnings
    );
}
