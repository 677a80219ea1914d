//! Unit tests of pipeline parsing, every transformation and every condition
//! type, on the rule model (expectations derived by hand).

use std::path::Path;

use super::*;
use crate::parser::parse_rules;
use crate::rule::{DetectionItem, SigmaRule, SigmaValue};

const RULE: &str = r#"
title: Test Rule
id: 11111111-1111-1111-1111-111111111111
status: test
level: high
date: 2024-01-15
tags: [attack.execution, attack.t1059]
logsource: {category: process_creation, product: windows}
detection:
  sel:
    Image|endswith: '\cmd.exe'
    CommandLine|contains: ['/c', '/k']
  filter:
    User: null
  condition: sel and not filter
"#;

fn pipeline(yaml: &str) -> Pipeline {
    Pipeline::from_yaml(yaml, "test.yml").unwrap_or_else(|err| panic!("{err}"))
}

fn rules(yaml: &str) -> RuleSet {
    let loaded = parse_rules(yaml, Path::new("rule.yml"));
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    loaded.rule_set
}

fn apply_to(pipeline_yaml: &str, rule_yaml: &str) -> (RuleSet, Vec<RuleError>) {
    PipelineSet::new(vec![pipeline(pipeline_yaml)]).apply(&rules(rule_yaml))
}

/// Applies the pipeline to a one-rule document and returns the rule.
fn transformed(pipeline_yaml: &str, rule_yaml: &str) -> SigmaRule {
    let (set, errors) = apply_to(pipeline_yaml, rule_yaml);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(set.rules.len(), 1);
    set.rules.into_iter().next().unwrap()
}

/// The error of a pipeline that must not parse.
fn parse_error(yaml: &str) -> PipelineError {
    Pipeline::from_yaml(yaml, "bad.yml").expect_err("the pipeline must not parse")
}

fn value_text(value: &SigmaValue) -> String {
    match value {
        SigmaValue::String(s) => s.clone(),
        SigmaValue::Integer(i) => format!("{i}i"),
        SigmaValue::Float(f) => format!("{f}f"),
        SigmaValue::Bool(b) => b.to_string(),
        SigmaValue::Null => "null".into(),
    }
}

fn item_text(item: &DetectionItem) -> String {
    let mut out = item.field.clone().unwrap_or_else(|| "*".into());
    for modifier in &item.modifiers {
        out.push('|');
        out.push_str(&format!("{modifier:?}").to_lowercase());
    }
    let values: Vec<String> = item.values.iter().map(value_text).collect();
    format!("{out}={}", values.join(","))
}

/// Each identifier as `name: item & item | item & item` (selections ORed).
fn summary(rule: &SigmaRule) -> Vec<String> {
    rule.detection
        .identifiers
        .iter()
        .map(|identifier| {
            let selections: Vec<String> = identifier
                .selections
                .iter()
                .map(|items| items.iter().map(item_text).collect::<Vec<_>>().join(" & "))
                .collect();
            format!("{}: {}", identifier.name, selections.join(" | "))
        })
        .collect()
}

fn summary_of(pipeline_yaml: &str, rule_yaml: &str) -> Vec<String> {
    summary(&transformed(pipeline_yaml, rule_yaml))
}

// ---------------------------------------------------------------- parsing

#[test]
fn document_keys_and_vars() {
    let p = pipeline(
        "name: Test\npriority: 30\nvars:\n  one: a\n  many: [b, 2]\n\
         transformations: []\npostprocessing: []\nfinalizers: []\nallowed_backends: [x]\n",
    );
    assert_eq!(p.name(), Some("Test"));
    assert_eq!(p.priority(), 30);
    assert_eq!(p.vars()["one"], vec!["a"]);
    assert_eq!(p.vars()["many"], vec!["b", "2"]);
    assert_eq!(p.item_count(), 0);
    assert_eq!(p.origin(), Path::new("test.yml"));
}

#[test]
fn builtins_parse() {
    for name in Pipeline::BUILTIN_NAMES {
        let p = Pipeline::builtin(name).unwrap();
        assert!(p.item_count() > 10, "{name}");
        assert_eq!(p.origin(), Path::new(&format!("builtin:{name}")));
    }
    assert_eq!(Pipeline::builtin("ecs_windows").unwrap().priority(), 20);
    assert_eq!(Pipeline::builtin("sysmon").unwrap().priority(), 5);
    assert!(Pipeline::builtin("nope").is_none());
}

#[test]
fn unknown_transformation_names_its_line() {
    let err = parse_error(
        "name: x\ntransformations:\n  - id: a\n    type: field_name_prefix\n    prefix: p\n  - id: b\n    type: frobnicate\n",
    );
    assert_eq!(err.file.as_deref(), Some(Path::new("bad.yml")));
    assert_eq!(err.line, Some(6), "{err}");
    assert!(
        err.message
            .contains("unknown transformation type 'frobnicate'"),
        "{err}"
    );
    assert!(err.to_string().starts_with("bad.yml:6: "), "{err}");
}

#[test]
fn unknown_condition_names_its_line() {
    let err = parse_error(
        "transformations:\n  - type: drop_detection_item\n    rule_conditions:\n      - type: logsource\n        product: windows\n      - type: sometimes\n",
    );
    assert_eq!(err.line, Some(6), "{err}");
    assert!(
        err.message
            .contains("unknown rule condition type 'sometimes'"),
        "{err}"
    );
    let err = parse_error(
        "transformations:\n  - type: drop_detection_item\n    detection_item_conditions:\n      - type: is_null\n",
    );
    assert_eq!(err.line, Some(4), "{err}");
    assert!(
        err.message.contains("missing required parameter 'cond'"),
        "{err}"
    );
    let err = parse_error(
        "transformations:\n  - type: drop_detection_item\n    field_name_conditions:\n      - {type: include_fields, fields: [a], mode: glob}\n",
    );
    assert_eq!(err.line, Some(4), "{err}");
    assert!(
        err.message
            .contains("invalid field name matching mode 'glob'"),
        "{err}"
    );
}

#[test]
fn missing_and_wrong_parameters_are_errors() {
    let err = parse_error("transformations:\n  - type: field_name_mapping\n");
    assert_eq!(err.line, Some(2));
    assert!(
        err.message.contains("missing required parameter 'mapping'"),
        "{err}"
    );
    let err =
        parse_error("transformations:\n  - type: field_name_mapping\n    mapping: just-text\n");
    assert!(err.message.contains("'mapping' must be a mapping"), "{err}");
    let err =
        parse_error("transformations:\n  - type: field_name_prefix\n    prefix: a\n    prefx: b\n");
    assert!(err.message.contains("unknown parameter 'prefx'"), "{err}");
    let err = parse_error("transformations:\n  - prefix: a\n");
    assert!(err.message.contains("missing 'type'"), "{err}");
    // A value of the wrong type is reported at its own line.
    let err = parse_error(
        "transformations:\n  - type: drop_detection_item\n\n    rule_cond_not: sometimes\n",
    );
    assert_eq!(err.line, Some(4), "{err}");
    let err =
        parse_error("transformations:\n  - type: drop_detection_item\n    rule_cond_op: xor\n");
    assert_eq!(err.line, Some(3), "{err}");
    assert!(
        err.message.contains("invalid condition linking 'xor'"),
        "{err}"
    );
    let err = parse_error(
        "transformations:\n  - type: replace_string\n    regex: '('\n    replacement: x\n",
    );
    assert!(err.message.contains("invalid regular expression"), "{err}");
}

#[test]
fn unknown_top_level_key_and_syntax_errors() {
    let err = parse_error("name: x\ntransformation: []\n");
    assert_eq!(err.line, Some(2), "{err}");
    assert!(
        err.message.contains("unknown field `transformation`"),
        "{err}"
    );
    let err = parse_error("name: x\ntransformations:\n  - type: [unclosed\n");
    assert!(err.line.is_some(), "{err}");
    let err = parse_error("");
    assert_eq!(err.line, None);
    assert!(err.message.contains("empty"), "{err}");
    let err = parse_error("- a\n- b\n");
    assert!(err.message.contains("processing pipeline"), "{err}");
}

#[test]
fn condition_expressions_are_checked() {
    let err = parse_error(
        "transformations:\n  - type: drop_detection_item\n    rule_conditions:\n      a: {type: is_sigma_rule}\n      b: {type: is_sigma_rule}\n    rule_cond_expr: a\n",
    );
    assert!(
        err.message
            .contains("not referenced by 'rule_cond_expr': b"),
        "{err}"
    );
    let err = parse_error(
        "transformations:\n  - type: drop_detection_item\n    rule_conditions:\n      - {type: is_sigma_rule}\n    rule_cond_expr: a\n",
    );
    assert!(err.message.contains("as a mapping"), "{err}");
    let err = parse_error(
        "transformations:\n  - type: drop_detection_item\n    rule_conditions:\n      a: {type: is_sigma_rule}\n    rule_cond_expr: a\n    rule_cond_op: or\n",
    );
    assert!(err.message.contains("exclude each other"), "{err}");
}

#[test]
fn unsupported_transformations_say_so() {
    let err = parse_error(
        "transformations:\n  - type: query_expression_placeholders\n    expression: x\n",
    );
    assert!(err.message.contains("not supported by rsigma"), "{err}");
}

#[test]
fn load_reports_missing_files() {
    let err = Pipeline::load("/nonexistent/pipeline.yml").unwrap_err();
    assert_eq!(
        err.file.as_deref(),
        Some(Path::new("/nonexistent/pipeline.yml"))
    );
    assert!(err.message.contains("not a builtin pipeline"), "{err}");
    assert!(Pipeline::load("sysmon").is_ok());
}

// ---------------------------------------------------------- transformations

#[test]
fn field_name_mapping_one_to_one() {
    let s = summary_of(
        "transformations:\n  - type: field_name_mapping\n    mapping:\n      Image: process.executable\n      User: user.name\n",
        RULE,
    );
    assert_eq!(
        s,
        vec![
            r"sel: process.executable|endswith=\cmd.exe & CommandLine|contains=/c,/k",
            "filter: user.name=null",
        ]
    );
}

#[test]
fn field_name_mapping_one_to_many_expands_selections() {
    let s = summary_of(
        "transformations:\n  - type: field_name_mapping\n    mapping:\n      CommandLine: [a.cmd, b.cmd]\n      Image: [a.img, b.img]\n",
        RULE,
    );
    // (a.img or b.img) and (a.cmd or b.cmd): four selections.
    assert_eq!(
        s[0],
        r"sel: a.img|endswith=\cmd.exe & a.cmd|contains=/c,/k | a.img|endswith=\cmd.exe & b.cmd|contains=/c,/k | b.img|endswith=\cmd.exe & a.cmd|contains=/c,/k | b.img|endswith=\cmd.exe & b.cmd|contains=/c,/k"
    );
}

#[test]
fn field_name_mapping_maps_field_references() {
    let rule = "title: R\nlogsource: {product: windows}\ndetection:\n  sel:\n    A|fieldref: B\n  condition: sel\n";
    let s = summary_of(
        "transformations:\n  - type: field_name_mapping\n    mapping: {A: x.a, B: [x.b, y.b]}\n",
        rule,
    );
    assert_eq!(s, vec!["sel: x.a|fieldref=x.b,y.b"]);
}

#[test]
fn field_name_prefix_mapping() {
    let s = summary_of(
        "transformations:\n  - type: field_name_prefix_mapping\n    mapping:\n      Command: 'cmd.'\n      Ima: ['x.', 'y.']\n",
        RULE,
    );
    assert_eq!(
        s[0],
        r"sel: x.ge|endswith=\cmd.exe & cmd.Line|contains=/c,/k | y.ge|endswith=\cmd.exe & cmd.Line|contains=/c,/k"
    );
    assert_eq!(s[1], "filter: User=null");
}

#[test]
fn field_name_prefix_and_suffix() {
    let s = summary_of(
        "transformations:\n  - type: field_name_prefix\n    prefix: 'win.'\n    field_name_conditions:\n      - {type: include_fields, fields: [Image, User]}\n  - type: field_name_suffix\n    suffix: '.keyword'\n    field_name_conditions:\n      - {type: exclude_fields, fields: ['win\\.'], mode: re}\n",
        RULE,
    );
    assert_eq!(
        s,
        vec![
            r"sel: win.Image|endswith=\cmd.exe & CommandLine.keyword|contains=/c,/k",
            "filter: win.User=null",
        ]
    );
}

#[test]
fn drop_detection_item_prunes_emptied_identifiers() {
    let rule = transformed(
        "transformations:\n  - type: drop_detection_item\n    field_name_conditions:\n      - {type: include_fields, fields: [User]}\n",
        RULE,
    );
    assert_eq!(
        summary(&rule),
        vec![r"sel: Image|endswith=\cmd.exe & CommandLine|contains=/c,/k"]
    );
    assert_eq!(rule.detection.conditions, vec!["sel"]);
}

#[test]
fn drop_detection_item_removes_emptied_selections() {
    let rule = "title: R\nlogsource: {product: windows}\ndetection:\n  img:\n    - Image|endswith: '\\whoami.exe'\n    - OriginalFileName: whoami.exe\n  condition: img\n";
    let rule = transformed(
        "transformations:\n  - type: drop_detection_item\n    field_name_conditions:\n      - {type: include_fields, fields: [OriginalFileName]}\n",
        rule,
    );
    // The emptied alternative is gone rather than matching everything.
    assert_eq!(summary(&rule), vec![r"img: Image|endswith=\whoami.exe"]);
    assert_eq!(rule.detection.conditions, vec!["img"]);
}

#[test]
fn dropping_everything_is_an_error() {
    let (set, errors) = apply_to("transformations:\n  - type: drop_detection_item\n", RULE);
    assert!(set.rules.is_empty());
    assert!(
        errors[0].reason.contains("every detection item"),
        "{errors:?}"
    );
}

#[test]
fn add_condition() {
    let rule = transformed(
        "transformations:\n  - id: chan\n    type: add_condition\n    conditions:\n      Channel: Security\n      EventID|gte: 4000\n",
        RULE,
    );
    assert_eq!(
        summary(&rule)[2],
        "_cond_1: Channel=Security & EventID|gte=4000i"
    );
    assert_eq!(
        rule.detection.conditions,
        vec!["_cond_1 and (sel and not filter)"]
    );
    let rule = transformed(
        "transformations:\n  - type: add_condition\n    name: ls\n    negated: true\n    template: true\n    conditions:\n      Source: ['$product/$category', '${service}']\n",
        RULE,
    );
    assert_eq!(
        summary(&rule)[2],
        "ls: Source=windows/process_creation,None"
    );
    assert_eq!(
        rule.detection.conditions,
        vec!["not ls and (sel and not filter)"]
    );
    // Two unnamed conditions get distinct names.
    let rule = transformed(
        "transformations:\n  - {type: add_condition, conditions: {A: 1}}\n  - {type: add_condition, conditions: {B: 2}}\n",
        RULE,
    );
    assert_eq!(
        rule.detection.conditions,
        vec!["_cond_2 and (_cond_1 and (sel and not filter))"]
    );
}

#[test]
fn add_condition_leaves_filters_alone() {
    let yaml = "title: F\nlogsource: {product: windows}\nfilter:\n  rules: [x]\n  sel: {User: SYSTEM}\n  condition: sel\n";
    let (set, errors) = apply_to(
        "transformations:\n  - type: add_condition\n    conditions: {A: 1}\n  - type: field_name_mapping\n    mapping: {User: user.name}\n",
        yaml,
    );
    assert!(errors.is_empty());
    let filter = &set.filters[0];
    assert_eq!(filter.detection.conditions, vec!["sel"]);
    assert_eq!(filter.detection.identifiers.len(), 1);
    assert_eq!(
        filter.detection.identifiers[0].selections[0][0]
            .field
            .as_deref(),
        Some("user.name")
    );
}

#[test]
fn change_logsource_replaces_the_whole_logsource() {
    let rule = transformed(
        "transformations:\n  - type: change_logsource\n    product: windows\n    service: sysmon\n",
        RULE,
    );
    assert_eq!(rule.meta.logsource.category, None);
    assert_eq!(rule.meta.logsource.product.as_deref(), Some("windows"));
    assert_eq!(rule.meta.logsource.service.as_deref(), Some("sysmon"));
}

#[test]
fn replace_string() {
    let s = summary_of(
        "transformations:\n  - type: replace_string\n    regex: '^\\\\(.*)\\.exe$'\n    replacement: '\\1.bin'\n",
        RULE,
    );
    assert_eq!(
        s[0],
        r"sel: Image|endswith=cmd.bin & CommandLine|contains=/c,/k"
    );
    // skip_special leaves wildcards alone; numbers become strings only when changed.
    let rule = "title: R\nlogsource: {product: windows}\ndetection:\n  sel:\n    A: 'a*a'\n    B: [4688, 1]\n  condition: sel\n";
    let s = summary_of(
        "transformations:\n  - type: replace_string\n    regex: 'a|4'\n    replacement: '*'\n    skip_special: true\n",
        rule,
    );
    assert_eq!(s, vec![r"sel: A=\**\* & B=\*688,1i"]);
    let s = summary_of(
        "transformations:\n  - type: replace_string\n    regex: 'a'\n    replacement: '?'\n    skip_special: true\n    interpret_special: true\n",
        rule,
    );
    assert_eq!(s, vec!["sel: A=?*? & B=4688i,1i"]);
}

#[test]
fn map_string() {
    let s = summary_of(
        "transformations:\n  - type: map_string\n    mapping:\n      /c: [/C, -c]\n      /x: /y\n",
        RULE,
    );
    assert_eq!(
        s[0],
        r"sel: Image|endswith=\cmd.exe & CommandLine|contains=/C,-c,/k"
    );
}

#[test]
fn set_value() {
    let s = summary_of(
        "transformations:\n  - type: set_value\n    value: 'cmd.exe'\n    field_name_conditions:\n      - {type: include_fields, fields: [Image]}\n",
        RULE,
    );
    // The value replaces the old ones and the item becomes a plain comparison.
    assert_eq!(s[0], "sel: Image=cmd.exe & CommandLine|contains=/c,/k");
    let s = summary_of(
        "transformations:\n  - type: set_value\n    value: '42'\n    force_type: num\n    field_name_conditions:\n      - {type: include_fields, fields: [User]}\n",
        RULE,
    );
    assert_eq!(s[1], "filter: User=42i");
    let err =
        parse_error("transformations:\n  - type: set_value\n    value: abc\n    force_type: num\n");
    assert!(
        err.message.contains("can't be converted to number"),
        "{err}"
    );
}

#[test]
fn convert_type() {
    let rule = "title: R\nlogsource: {product: windows}\ndetection:\n  sel:\n    A: [1, '2', 2.5, true, null]\n  condition: sel\n";
    let s = summary_of(
        "transformations:\n  - type: convert_type\n    target_type: str\n",
        rule,
    );
    assert_eq!(s, vec!["sel: A=1,2,2.5,true,null"]);
    let rule_nums = "title: R\nlogsource: {product: windows}\ndetection:\n  sel:\n    A: ['1', '2.5', 3, null]\n  condition: sel\n";
    let s = summary_of(
        "transformations:\n  - type: convert_type\n    target_type: num\n",
        rule_nums,
    );
    assert_eq!(s, vec!["sel: A=1i,2.5f,3i,null"]);
    let (set, errors) = apply_to(
        "transformations:\n  - type: convert_type\n    target_type: num\n",
        RULE,
    );
    assert!(set.rules.is_empty());
    assert!(
        errors[0]
            .reason
            .contains(r"value '\cmd.exe' can't be converted to number"),
        "{errors:?}"
    );
}

const PLACEHOLDER_RULE: &str = "title: P\nlogsource: {product: windows}\ndetection:\n  sel:\n    User|expand: '%admins%'\n    Host|expand: 'srv-%site%-%role%'\n  condition: sel\n";

#[test]
fn value_placeholders() {
    let pipeline_yaml = "vars:\n  admins: [alice, bob]\n  site: [ber, muc]\n  role: db\ntransformations:\n  - type: value_placeholders\n";
    let s = summary_of(pipeline_yaml, PLACEHOLDER_RULE);
    // Every placeholder replaced: `expand` is no longer needed.
    assert_eq!(s, vec!["sel: User=alice,bob & Host=srv-ber-db,srv-muc-db"]);
    let s = summary_of(
        "vars:\n  admins: [alice]\ntransformations:\n  - type: value_placeholders\n    include: [admins]\n",
        PLACEHOLDER_RULE,
    );
    assert_eq!(s, vec!["sel: User=alice & Host|expand=srv-%site%-%role%"]);
    let (_, errors) = apply_to(
        "vars:\n  admins: [alice]\ntransformations:\n  - type: value_placeholders\n",
        PLACEHOLDER_RULE,
    );
    assert!(
        errors[0].reason.contains("variable 'site' doesn't exist"),
        "{errors:?}"
    );
}

#[test]
fn wildcard_placeholders() {
    let s = summary_of(
        "transformations:\n  - type: wildcard_placeholders\n    exclude: [admins]\n",
        PLACEHOLDER_RULE,
    );
    assert_eq!(s, vec!["sel: User|expand=%admins% & Host=srv-*-*"]);
}

#[test]
fn set_state_and_processing_state() {
    let pipeline_yaml = "transformations:\n  - type: set_state\n    key: index\n    val: 3\n  - type: field_name_prefix\n    prefix: 'a.'\n    rule_conditions:\n      - {type: processing_state, key: index, val: 2, op: gt}\n  - type: field_name_prefix\n    prefix: 'b.'\n    rule_conditions:\n      - {type: processing_state, key: index, val: 3, op: ne}\n  - type: field_name_suffix\n    suffix: '.s'\n    detection_item_conditions:\n      - {type: processing_state, key: index, val: 3}\n    field_name_conditions:\n      - {type: processing_state, key: index, val: 3, op: lte}\n";
    let s = summary_of(pipeline_yaml, RULE);
    assert_eq!(s[1], "filter: a.User.s=null");
}

#[test]
fn rule_failure() {
    let (set, errors) = apply_to(
        "name: Strict\ntransformations:\n  - id: no_windows\n    type: rule_failure\n    message: Windows rules are not supported\n    rule_conditions:\n      - {type: logsource, product: windows}\n",
        RULE,
    );
    assert!(set.rules.is_empty());
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].file, Path::new("rule.yml"));
    assert_eq!(errors[0].rule.as_deref(), Some("Test Rule"));
    assert_eq!(
        errors[0].to_string(),
        "rule.yml: rule 'Test Rule': pipeline 'Strict', item 'no_windows': Windows rules are not supported"
    );
}

#[test]
fn detection_item_failure() {
    let pipeline_yaml = "transformations:\n  - type: detection_item_failure\n    message: no CommandLine here\n    field_name_conditions:\n      - {type: include_fields, fields: [CommandLine]}\n";
    let (set, errors) = apply_to(pipeline_yaml, RULE);
    assert!(set.rules.is_empty());
    assert!(errors[0].reason.ends_with("no CommandLine here"));
    let other = "title: O\nlogsource: {product: windows}\ndetection:\n  sel: {Image: x}\n  condition: sel\n";
    let (set, errors) = apply_to(pipeline_yaml, other);
    assert!(errors.is_empty());
    assert_eq!(set.rules.len(), 1);
}

#[test]
fn case_nest_and_ignored() {
    let s = summary_of(
        "transformations:\n  - type: nest\n    items:\n      - type: case\n        method: upper\n      - type: field_name_prefix\n        prefix: 'n.'\n    rule_conditions:\n      - {type: logsource, product: windows}\n  - type: add_field\n    field: X\n  - type: set_custom_attribute\n    attribute: a\n    value: 1\n",
        RULE,
    );
    assert_eq!(
        s[0],
        r"sel: n.Image|endswith=\CMD.EXE & n.CommandLine|contains=/C,/K"
    );
}

#[test]
fn pipelines_run_by_priority_and_merge_vars() {
    let a = pipeline(
        "name: a\npriority: 20\nvars: {x: [from-a], y: a}\ntransformations:\n  - type: field_name_mapping\n    mapping: {Image: Mid}\n",
    );
    let b = pipeline(
        "name: b\npriority: 10\nvars: {y: b}\ntransformations:\n  - type: field_name_mapping\n    mapping: {Mid: Last}\n",
    );
    let c = pipeline(
        "name: c\npriority: 20\ntransformations:\n  - type: field_name_mapping\n    mapping: {Mid: End}\n",
    );
    let set = PipelineSet::new(vec![a, b, c]);
    let names: Vec<_> = set.pipelines().iter().map(|p| p.name().unwrap()).collect();
    assert_eq!(names, vec!["b", "a", "c"]);
    let (out, _) = set.apply(&rules(RULE));
    // b (10) maps nothing yet, a (20) gives Mid, c (20, after a) gives End.
    assert_eq!(
        summary(&out.rules[0])[0],
        r"sel: End|endswith=\cmd.exe & CommandLine|contains=/c,/k"
    );
    let placeholders = set.placeholders();
    assert_eq!(placeholders["x"], vec!["from-a"]);
    // a runs after b: its value wins.
    assert_eq!(placeholders["y"], vec!["a"]);
}

// ----------------------------------------------------------- rule conditions

/// Whether a prefix item with these rule conditions applies to RULE.
fn rule_condition_holds(conditions: &str) -> bool {
    let yaml =
        format!("transformations:\n  - type: field_name_prefix\n    prefix: 'p.'\n{conditions}");
    summary_of(&yaml, RULE)[1].starts_with("filter: p.")
}

#[test]
fn logsource_condition() {
    assert!(rule_condition_holds(
        "    rule_conditions:\n      - {type: logsource, product: windows}\n"
    ));
    assert!(rule_condition_holds(
        "    rule_conditions:\n      - {type: logsource, category: process_creation, product: windows}\n"
    ));
    assert!(!rule_condition_holds(
        "    rule_conditions:\n      - {type: logsource, product: linux}\n"
    ));
    assert!(!rule_condition_holds(
        "    rule_conditions:\n      - {type: logsource, product: windows, service: security}\n"
    ));
}

#[test]
fn contains_detection_item_and_field_conditions() {
    assert!(rule_condition_holds(
        "    rule_conditions:\n      - {type: contains_detection_item, field: CommandLine, value: /k}\n"
    ));
    assert!(!rule_condition_holds(
        "    rule_conditions:\n      - {type: contains_detection_item, field: CommandLine, value: /x}\n"
    ));
    assert!(!rule_condition_holds(
        "    rule_conditions:\n      - {type: contains_detection_item, field: Image, value: /k}\n"
    ));
    assert!(rule_condition_holds(
        "    rule_conditions:\n      - {type: contains_field, field: User}\n"
    ));
    assert!(!rule_condition_holds(
        "    rule_conditions:\n      - {type: contains_field, field: Nope}\n"
    ));
}

#[test]
fn processing_item_applied_rule_condition() {
    let yaml = "transformations:\n  - id: first\n    type: change_logsource\n    product: linux\n    rule_conditions:\n      - {type: logsource, product: macos}\n  - type: field_name_prefix\n    prefix: 'p.'\n    rule_conditions:\n      - {type: processing_item_applied, processing_item_id: first}\n";
    assert_eq!(summary_of(yaml, RULE)[1], "filter: User=null");
    let yaml = yaml.replace("product: macos", "product: windows");
    assert_eq!(summary_of(&yaml, RULE)[1], "filter: p.User=null");
}

#[test]
fn rule_kind_conditions() {
    assert!(rule_condition_holds(
        "    rule_conditions:\n      - {type: is_sigma_rule}\n"
    ));
    assert!(!rule_condition_holds(
        "    rule_conditions:\n      - {type: is_sigma_correlation_rule}\n"
    ));
}

#[test]
fn rule_attribute_conditions() {
    let holds = |attribute: &str, value: &str, op: &str| {
        rule_condition_holds(&format!(
            "    rule_conditions:\n      - {{type: rule_attribute, attribute: {attribute}, value: '{value}', op: {op}}}\n"
        ))
    };
    assert!(holds("title", "Test Rule", "eq"));
    assert!(!holds("title", "Test Rule", "ne"));
    assert!(holds("id", "11111111-1111-1111-1111-111111111111", "eq"));
    assert!(holds("level", "medium", "gte"));
    assert!(holds("level", "high", "eq"));
    assert!(!holds("level", "critical", "gte"));
    assert!(holds("status", "experimental", "gt"));
    assert!(!holds("status", "stable", "eq"));
    assert!(holds("date", "2024-01-01", "gt"));
    assert!(!holds("date", "2024-01-15", "lt"));
    assert!(holds("tags", "attack.t1059", "in"));
    assert!(!holds("tags", "attack.t1059", "not_in"));
    assert!(!holds("tags", "attack.t1059", "eq"));
    assert!(holds("tags", "attack.t1059", "ne"));
    // Attributes the model does not keep, and absent ones, never hold.
    assert!(!holds("custom", "x", "eq"));
    assert!(!holds("author", "x", "ne"));
}

#[test]
fn tag_condition() {
    assert!(rule_condition_holds(
        "    rule_conditions:\n      - {type: tag, tag: attack.execution}\n"
    ));
    assert!(!rule_condition_holds(
        "    rule_conditions:\n      - {type: tag, tag: attack.persistence}\n"
    ));
}

#[test]
fn rule_condition_linking() {
    let linux = "{type: logsource, product: linux}";
    let windows = "{type: logsource, product: windows}";
    assert!(!rule_condition_holds(&format!(
        "    rule_conditions: [{linux}, {windows}]\n"
    )));
    assert!(rule_condition_holds(&format!(
        "    rule_conditions: [{linux}, {windows}]\n    rule_cond_op: or\n"
    )));
    assert!(rule_condition_holds(&format!(
        "    rule_conditions: [{linux}]\n    rule_cond_not: true\n"
    )));
    assert!(rule_condition_holds(&format!(
        "    rule_conditions:\n      l: {linux}\n      w: {windows}\n    rule_cond_expr: w and not l\n"
    )));
    assert!(!rule_condition_holds(&format!(
        "    rule_conditions:\n      l: {linux}\n      w: {windows}\n    rule_cond_expr: not (w or l)\n"
    )));
}

// ------------------------------------------------- detection item conditions

/// Which items of RULE's `sel` a prefix item with these conditions renames.
fn renamed_items(conditions: &str) -> String {
    let yaml =
        format!("transformations:\n  - type: field_name_prefix\n    prefix: 'p.'\n{conditions}");
    summary_of(&yaml, RULE)[0].clone()
}

#[test]
fn match_string_condition() {
    assert_eq!(
        renamed_items(
            "    detection_item_conditions:\n      - {type: match_string, pattern: '/', cond: any}\n"
        ),
        r"sel: Image|endswith=\cmd.exe & p.CommandLine|contains=/c,/k"
    );
    // Anchored at the start, as Python's re.match.
    assert_eq!(
        renamed_items(
            "    detection_item_conditions:\n      - {type: match_string, pattern: 'cmd', cond: any}\n"
        ),
        r"sel: Image|endswith=\cmd.exe & CommandLine|contains=/c,/k"
    );
    assert_eq!(
        renamed_items(
            "    detection_item_conditions:\n      - {type: match_string, pattern: '/c', cond: all}\n"
        ),
        r"sel: Image|endswith=\cmd.exe & CommandLine|contains=/c,/k"
    );
    assert_eq!(
        renamed_items(
            "    detection_item_conditions:\n      - {type: match_string, pattern: '/', cond: all, negate: true}\n"
        ),
        r"sel: p.Image|endswith=\cmd.exe & CommandLine|contains=/c,/k"
    );
}

#[test]
fn match_value_and_wildcard_conditions() {
    assert_eq!(
        renamed_items(
            "    detection_item_conditions:\n      - {type: match_value, value: /k, cond: any}\n"
        ),
        r"sel: Image|endswith=\cmd.exe & p.CommandLine|contains=/c,/k"
    );
    let rule = "title: R\nlogsource: {product: windows}\ndetection:\n  sel:\n    A: 'x*'\n    B: 'x\\*'\n    C: 5\n  condition: sel\n";
    let s = summary_of(
        "transformations:\n  - type: field_name_prefix\n    prefix: 'p.'\n    detection_item_conditions:\n      - {type: contains_wildcard, cond: any}\n",
        rule,
    );
    assert_eq!(s, vec![r"sel: p.A=x* & B=x\* & C=5i"]);
    let s = summary_of(
        "transformations:\n  - type: field_name_prefix\n    prefix: 'p.'\n    detection_item_conditions:\n      - {type: match_value, value: 5, cond: all}\n",
        rule,
    );
    assert_eq!(s, vec![r"sel: A=x* & B=x\* & p.C=5i"]);
}

#[test]
fn is_null_condition() {
    let s = summary_of(
        "transformations:\n  - type: field_name_prefix\n    prefix: 'p.'\n    detection_item_conditions:\n      - {type: is_null, cond: all}\n",
        RULE,
    );
    assert_eq!(s[1], "filter: p.User=null");
    assert_eq!(
        s[0],
        r"sel: Image|endswith=\cmd.exe & CommandLine|contains=/c,/k"
    );
}

#[test]
fn processing_item_applied_detection_item_condition() {
    let s = summary_of(
        "transformations:\n  - id: img\n    type: field_name_mapping\n    mapping: {Image: process.executable}\n  - type: field_name_suffix\n    suffix: '.x'\n    detection_item_conditions:\n      - {type: processing_item_applied, processing_item_id: img}\n    detection_item_cond_not: true\n",
        RULE,
    );
    assert_eq!(
        s,
        vec![
            r"sel: process.executable|endswith=\cmd.exe & CommandLine.x|contains=/c,/k",
            "filter: User.x=null",
        ]
    );
}

#[test]
fn detection_item_condition_expression() {
    assert_eq!(
        renamed_items(
            "    detection_item_conditions:\n      slash: {type: match_string, pattern: '/', cond: any}\n      nul: {type: is_null, cond: any}\n    detection_item_cond_expr: slash or nul\n"
        ),
        r"sel: Image|endswith=\cmd.exe & p.CommandLine|contains=/c,/k"
    );
}

// ----------------------------------------------------- field name conditions

#[test]
fn include_and_exclude_fields() {
    assert_eq!(
        renamed_items(
            "    field_name_conditions:\n      - {type: include_fields, fields: [Image]}\n"
        ),
        r"sel: p.Image|endswith=\cmd.exe & CommandLine|contains=/c,/k"
    );
    assert_eq!(
        renamed_items(
            "    field_name_conditions:\n      - {type: include_fields, fields: ['Comm']}\n"
        ),
        r"sel: Image|endswith=\cmd.exe & CommandLine|contains=/c,/k"
    );
    assert_eq!(
        renamed_items(
            "    field_name_conditions:\n      - {type: include_fields, fields: ['Comm'], mode: re}\n"
        ),
        r"sel: Image|endswith=\cmd.exe & p.CommandLine|contains=/c,/k"
    );
    assert_eq!(
        renamed_items(
            "    field_name_conditions:\n      - {type: exclude_fields, fields: [Image, User]}\n"
        ),
        r"sel: Image|endswith=\cmd.exe & p.CommandLine|contains=/c,/k"
    );
    assert_eq!(
        renamed_items(
            "    field_name_conditions:\n      - {type: include_fields, fields: [Image]}\n      - {type: include_fields, fields: [CommandLine]}\n    field_name_cond_op: or\n"
        ),
        r"sel: p.Image|endswith=\cmd.exe & p.CommandLine|contains=/c,/k"
    );
    assert_eq!(
        renamed_items(
            "    field_name_conditions:\n      - {type: include_fields, fields: [Image]}\n    field_name_cond_not: true\n"
        ),
        r"sel: Image|endswith=\cmd.exe & p.CommandLine|contains=/c,/k"
    );
}

#[test]
fn processing_item_applied_field_name_condition() {
    // The ecs_windows idiom: prefix whatever the mapping did not touch.
    let s = summary_of(
        "transformations:\n  - id: map\n    type: field_name_mapping\n    mapping: {Image: process.executable}\n  - type: field_name_prefix\n    prefix: 'data.'\n    field_name_conditions:\n      - {type: processing_item_applied, processing_item_id: map}\n      - {type: include_fields, fields: ['\\w+\\.'], mode: re}\n    field_name_cond_op: or\n    field_name_cond_not: true\n",
        RULE,
    );
    assert_eq!(
        s,
        vec![
            r"sel: process.executable|endswith=\cmd.exe & data.CommandLine|contains=/c,/k",
            "filter: data.User=null",
        ]
    );
}

// -------------------------------------------------------------- correlations

const CORRELATION: &str = r#"
title: Base
id: base-rule
logsource: {category: process_creation, product: windows}
detection:
  sel: {Image: x}
  condition: sel
---
title: Many
correlation:
  type: value_count
  rules: [base-rule]
  group-by: [User, host]
  timespan: 5m
  aliases:
    host:
      base-rule: ComputerName
  condition:
    field: Image
    gte: 3
"#;

#[test]
fn correlation_fields_are_mapped() {
    let (set, errors) = apply_to(
        "transformations:\n  - type: field_name_mapping\n    mapping: {User: user.name, ComputerName: host.name, Image: process.executable, host: nope}\n    rule_conditions:\n      - {type: logsource, product: windows}\n",
        CORRELATION,
    );
    assert!(errors.is_empty(), "{errors:?}");
    let correlation = &set.correlations[0];
    // `host` is an alias name: left alone.
    assert_eq!(correlation.group_by, vec!["user.name", "host"]);
    assert_eq!(
        correlation.aliases,
        vec![(
            "host".to_owned(),
            vec![("base-rule".to_owned(), "host.name".to_owned())]
        )]
    );
    assert_eq!(
        correlation.condition.field.as_deref(),
        Some("process.executable")
    );
    assert_eq!(
        set.rules[0].detection.identifiers[0].selections[0][0]
            .field
            .as_deref(),
        Some("process.executable")
    );
}

#[test]
fn correlation_conditions() {
    // The log source of a correlation is that of the rules it references.
    let (set, _) = apply_to(
        "transformations:\n  - type: field_name_mapping\n    mapping: {User: user.name}\n    rule_conditions:\n      - {type: logsource, product: linux}\n",
        CORRELATION,
    );
    assert_eq!(set.correlations[0].group_by, vec!["User", "host"]);
    let (set, _) = apply_to(
        "transformations:\n  - type: field_name_mapping\n    mapping: {User: user.name}\n    rule_conditions:\n      - {type: is_sigma_correlation_rule}\n",
        CORRELATION,
    );
    assert_eq!(set.correlations[0].group_by, vec!["user.name", "host"]);
    assert_eq!(
        set.rules[0].detection.identifiers[0].selections[0][0]
            .field
            .as_deref(),
        Some("Image")
    );
    // One-to-many on the condition field cannot be represented.
    let (set, errors) = apply_to(
        "transformations:\n  - type: field_name_mapping\n    mapping: {Image: [a, b]}\n",
        CORRELATION,
    );
    assert!(set.correlations.is_empty());
    assert!(
        errors[0].reason.contains("results in 2 field names"),
        "{errors:?}"
    );
}

// ------------------------------------------------------------------ builtins

#[test]
fn ecs_windows_maps_windows_fields() {
    let set = PipelineSet::load(&["ecs_windows"]).unwrap();
    let rule = "title: S\nlogsource: {product: windows, service: security}\ndetection:\n  sel:\n    EventID: 4688\n    CommandLine|contains: whoami\n    SubjectUserName: bob\n    IntegrityLevel: High\n  condition: sel\n";
    let (out, errors) = set.apply(&rules(rule));
    assert!(errors.is_empty());
    assert_eq!(
        summary(&out.rules[0]),
        vec![
            "sel: event.code=4688i & process.command_line|contains=whoami & user.name=bob & winlog.event_data.IntegrityLevel=High",
            "_cond_1: winlog.channel=Security",
        ]
    );
    assert_eq!(out.rules[0].detection.conditions, vec!["_cond_1 and (sel)"]);
}

#[test]
fn sysmon_adds_event_ids() {
    let set = PipelineSet::load(&["sysmon"]).unwrap();
    let rule = "title: R\nlogsource: {category: registry_delete, product: windows}\ndetection:\n  sel: {TargetObject|contains: Run}\n  condition: sel\n";
    let (out, _) = set.apply(&rules(rule));
    let rule = &out.rules[0];
    assert_eq!(
        summary(rule)[1],
        "_cond_1: EventID=12i & EventType=DeleteKey,DeleteValue"
    );
    assert_eq!(rule.meta.logsource.service.as_deref(), Some("sysmon"));
    assert_eq!(
        rule.meta.logsource.category.as_deref(),
        Some("registry_delete")
    );
}
