//! Processing pipelines end to end: loading (and its errors), priority
//! ordering, `vars` for the `expand` modifier, and SigmaHQ rules matching
//! ECS- and Sysmon-shaped events through the builtin pipelines.

use std::fs;
use std::path::{Path, PathBuf};

use rsigma_engine::{
    CompileOptions, Engine, Pipeline, PipelineSet, RuleSet, load_rules, parse_rules,
};
use serde_json::{Value, json};

fn corpus_root() -> Option<PathBuf> {
    let root = std::env::var_os("RSIGMA_SIGMAHQ_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/sigmahq")
        });
    root.is_dir().then_some(root)
}

const WHOAMI_RULE: &str =
    "rules/windows/process_creation/proc_creation_win_whoami_groups_discovery.yml";

/// The SigmaHQ whoami rule, or `None` (with a message) when the corpus is absent.
fn whoami_rule() -> Option<RuleSet> {
    let Some(root) = corpus_root() else {
        eprintln!(
            "SKIPPED: SigmaHQ corpus not found at ../shared/corpus/sigmahq (set RSIGMA_SIGMAHQ_DIR)"
        );
        return None;
    };
    let loaded = load_rules(&root.join(WHOAMI_RULE));
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    assert_eq!(loaded.rule_set.rules.len(), 1);
    Some(loaded.rule_set)
}

/// A temporary pipeline file, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> TempFile {
        let path =
            std::env::temp_dir().join(format!("rsigma-pipelines-{}-{name}", std::process::id()));
        fs::write(&path, text).unwrap();
        TempFile(path)
    }

    fn spec(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Applies the pipelines, compiles with their vars, and returns the engine.
fn engine_with(pipelines: &PipelineSet, rule_set: &RuleSet) -> Engine {
    let (transformed, errors) = pipelines.apply(rule_set);
    assert!(errors.is_empty(), "{errors:?}");
    let options = CompileOptions {
        placeholders: pipelines.placeholders(),
        ..CompileOptions::default()
    };
    let (engine, errors) = Engine::compile_with(&transformed, &options);
    assert!(errors.is_empty(), "{errors:?}");
    engine
}

/// Titles of the rules matching `event`, checked on both evaluation paths.
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

fn ecs_whoami_event(code: &str) -> Value {
    json!({
        "@timestamp": "2024-05-01T10:00:00Z",
        "event": {"code": code},
        "host": {"name": "ws-01"},
        "process": {
            "executable": "C:\\Windows\\System32\\whoami.exe",
            "command_line": "whoami /groups",
            "pe": {"original_file_name": "whoami.exe"},
        },
        "user": {"name": "alice"},
    })
}

fn sysmon_whoami_event(event_id: u64) -> Value {
    json!({
        "EventID": event_id,
        "Image": "C:\\Windows\\System32\\whoami.exe",
        "OriginalFileName": "whoami.exe",
        "CommandLine": "whoami /groups",
        "User": "CORP\\alice",
    })
}

#[test]
fn sigmahq_rule_with_ecs_windows_matches_ecs_events() {
    let Some(rule_set) = whoami_rule() else {
        return;
    };
    let title = rule_set.rules[0].meta.title.clone();
    let event = ecs_whoami_event("1");

    let plain = engine_with(&PipelineSet::default(), &rule_set);
    assert!(
        titles(&plain, &event).is_empty(),
        "no pipeline: Windows field names only"
    );

    let ecs = engine_with(&PipelineSet::load(&["ecs_windows"]).unwrap(), &rule_set);
    assert_eq!(titles(&ecs, &event), vec![title.clone()]);
    // The mapped rule still needs the command line flag.
    let mut other = event.clone();
    other["process"]["command_line"] = json!("whoami /user");
    assert!(titles(&ecs, &other).is_empty());
    // And it no longer looks at Windows field names.
    assert!(titles(&ecs, &sysmon_whoami_event(1)).is_empty());
}

#[test]
fn sigmahq_rule_with_sysmon_needs_the_event_id() {
    let Some(rule_set) = whoami_rule() else {
        return;
    };
    let title = rule_set.rules[0].meta.title.clone();

    let plain = engine_with(&PipelineSet::default(), &rule_set);
    assert_eq!(
        titles(&plain, &sysmon_whoami_event(4688)),
        vec![title.clone()]
    );

    let pipelines = PipelineSet::load(&["sysmon"]).unwrap();
    let (transformed, _) = pipelines.apply(&rule_set);
    let logsource = &transformed.rules[0].meta.logsource;
    assert_eq!(logsource.service.as_deref(), Some("sysmon"));
    assert_eq!(logsource.product.as_deref(), Some("windows"));

    let sysmon = engine_with(&pipelines, &rule_set);
    assert_eq!(titles(&sysmon, &sysmon_whoami_event(1)), vec![title]);
    assert!(titles(&sysmon, &sysmon_whoami_event(4688)).is_empty());
    let mut text_id = sysmon_whoami_event(1);
    text_id["EventID"] = json!("1");
    assert_eq!(titles(&sysmon, &text_id).len(), 1);
}

#[test]
fn sysmon_then_ecs_windows_regardless_of_the_order_given() {
    let Some(rule_set) = whoami_rule() else {
        return;
    };
    // sysmon has priority 5 and ecs_windows 20: sysmon runs first, so the
    // EventID condition it adds is mapped to event.code and the sysmon
    // service it sets gets its channel.
    let pipelines = PipelineSet::load(&["ecs_windows", "sysmon"]).unwrap();
    let names: Vec<i64> = pipelines
        .pipelines()
        .iter()
        .map(Pipeline::priority)
        .collect();
    assert_eq!(names, vec![5, 20]);
    let engine = engine_with(&pipelines, &rule_set);
    let mut event = ecs_whoami_event("1");
    event["winlog"] = json!({"channel": "Microsoft-Windows-Sysmon/Operational"});
    assert_eq!(titles(&engine, &event).len(), 1);
    let mut wrong_code = event.clone();
    wrong_code["event"]["code"] = json!("4688");
    assert!(titles(&engine, &wrong_code).is_empty());
    let mut wrong_channel = event.clone();
    wrong_channel["winlog"]["channel"] = json!("Security");
    assert!(titles(&engine, &wrong_channel).is_empty());
}

#[test]
fn every_sigmahq_windows_rule_still_compiles_through_the_builtins() {
    let Some(root) = corpus_root() else {
        eprintln!("SKIPPED: SigmaHQ corpus not found at ../shared/corpus/sigmahq");
        return;
    };
    let loaded = load_rules(&root.join("rules/windows"));
    assert!(loaded.rule_set.rules.len() > 1000);
    let (plain, _) = Engine::compile(&loaded.rule_set);
    for specs in [
        &["ecs_windows"][..],
        &["sysmon"],
        &["sysmon", "ecs_windows"],
    ] {
        let pipelines = PipelineSet::load(specs).unwrap();
        let (transformed, errors) = pipelines.apply(&loaded.rule_set);
        assert!(
            errors.is_empty(),
            "{specs:?}: {:?}",
            &errors[..errors.len().min(5)]
        );
        assert_eq!(transformed.rules.len(), loaded.rule_set.rules.len());
        let (engine, errors) = Engine::compile(&transformed);
        assert!(
            errors.is_empty(),
            "{specs:?}: {:?}",
            &errors[..errors.len().min(5)]
        );
        assert_eq!(engine.rule_count(), plain.rule_count(), "{specs:?}");
    }
}

#[test]
fn parse_errors_name_the_file_and_line() {
    let file = TempFile::new(
        "bad-type.yml",
        "name: Bad\npriority: 10\ntransformations:\n  - id: ok\n    type: field_name_prefix\n    prefix: x.\n  - id: broken\n    type: field_name_mapping\n    mapping: [not, a, mapping]\n",
    );
    let err = Pipeline::load(file.spec()).unwrap_err();
    assert_eq!(err.file.as_deref(), Some(file.0.as_path()));
    assert_eq!(err.line, Some(7), "{err}");
    let text = err.to_string();
    assert!(text.starts_with(&format!("{}:7: ", file.spec())), "{text}");
    assert!(text.contains("'mapping' must be a mapping"), "{text}");

    let syntax = TempFile::new(
        "bad-syntax.yml",
        "name: Bad\ntransformations:\n  - type: field_name_prefix\n    prefix: 'unterminated\n",
    );
    let err = PipelineSet::load(&["sysmon", syntax.spec()]).unwrap_err();
    assert_eq!(err.file.as_deref(), Some(syntax.0.as_path()));
    assert!(err.line.is_some(), "{err}");
    assert!(
        err.to_string().starts_with(&format!("{}:", syntax.spec())),
        "{err}"
    );

    let unknown_condition = TempFile::new(
        "bad-condition.yml",
        "transformations:\n  - type: drop_detection_item\n    rule_conditions:\n      - type: logsource\n        product: windows\n      - type: is_windows\n",
    );
    let err = Pipeline::load(unknown_condition.spec()).unwrap_err();
    assert_eq!(err.line, Some(6), "{err}");
    assert!(
        err.message
            .contains("unknown rule condition type 'is_windows'"),
        "{err}"
    );

    let err = Pipeline::load("no-such-pipeline").unwrap_err();
    assert_eq!(err.line, None);
    assert!(err.to_string().starts_with("no-such-pipeline: "), "{err}");
}

#[test]
fn pipelines_run_in_priority_order() {
    let rules = parse_rules(
        "title: Renamed\nlogsource: {product: windows}\ndetection:\n  sel:\n    Image|endswith: '\\evil.exe'\n  condition: sel\n",
        Path::new("renamed.yml"),
    )
    .rule_set;
    let late = TempFile::new(
        "late.yml",
        "name: late\npriority: 50\ntransformations:\n  - type: field_name_mapping\n    mapping: {Image: proc.path}\n",
    );
    let early = TempFile::new(
        "early.yml",
        "name: early\npriority: 10\ntransformations:\n  - type: field_name_mapping\n    mapping: {proc.path: process.executable}\n",
    );
    // Given late first, but early runs first and finds no proc.path yet.
    let pipelines = PipelineSet::load(&[late.spec(), early.spec()]).unwrap();
    let order: Vec<_> = pipelines
        .pipelines()
        .iter()
        .map(|p| p.name().unwrap())
        .collect();
    assert_eq!(order, vec!["early", "late"]);
    let engine = engine_with(&pipelines, &rules);
    assert_eq!(
        titles(&engine, &json!({"proc": {"path": "C:\\evil.exe"}})).len(),
        1
    );
    assert!(titles(&engine, &json!({"process": {"executable": "C:\\evil.exe"}})).is_empty());

    // Equal priorities keep the order given: now the second mapping sees the first's output.
    let same = TempFile::new(
        "same.yml",
        "name: same\npriority: 50\ntransformations:\n  - type: field_name_mapping\n    mapping: {proc.path: process.executable}\n",
    );
    let pipelines = PipelineSet::load(&[late.spec(), same.spec()]).unwrap();
    let engine = engine_with(&pipelines, &rules);
    assert_eq!(
        titles(&engine, &json!({"process": {"executable": "C:\\evil.exe"}})).len(),
        1
    );
}

#[test]
fn vars_fill_expand_placeholders() {
    let rules = parse_rules(
        "title: Admin Logon\nlogsource: {product: windows, service: security}\ndetection:\n  sel:\n    EventID: 4624\n    TargetUserName|expand: '%admins%'\n  condition: sel\n",
        Path::new("admins.yml"),
    )
    .rule_set;
    let vars = TempFile::new(
        "vars.yml",
        "name: site vars\nvars:\n  admins: [alice, 'svc-*']\ntransformations: []\n",
    );
    let pipelines = PipelineSet::load(&[vars.spec()]).unwrap();
    assert_eq!(pipelines.placeholders()["admins"], vec!["alice", "svc-*"]);
    let engine = engine_with(&pipelines, &rules);
    let logon = |user: &str| json!({"EventID": 4624, "TargetUserName": user});
    assert_eq!(titles(&engine, &logon("alice")).len(), 1);
    assert_eq!(titles(&engine, &logon("SVC-backup")).len(), 1);
    assert!(titles(&engine, &logon("bob")).is_empty());

    // Without the vars the placeholder is undefined and matches nothing.
    let (engine, _) = Engine::compile(&rules);
    assert!(titles(&engine, &logon("alice")).is_empty());

    // value_placeholders resolves them in the rule itself, from the same vars.
    let resolve = TempFile::new(
        "resolve.yml",
        "vars:\n  admins: [alice]\ntransformations:\n  - type: value_placeholders\n",
    );
    let pipelines = PipelineSet::load(&[resolve.spec()]).unwrap();
    let (transformed, errors) = pipelines.apply(&rules);
    assert!(errors.is_empty());
    let (engine, errors) = Engine::compile(&transformed);
    assert!(errors.is_empty());
    assert_eq!(titles(&engine, &logon("alice")).len(), 1);
}

#[test]
fn rule_failures_leave_the_rule_out() {
    let rules = parse_rules(
        "title: Keep\nlogsource: {product: linux}\ndetection:\n  sel: {a: 1}\n  condition: sel\n---\ntitle: Drop\nlogsource: {product: windows}\ndetection:\n  sel: {a: 1}\n  condition: sel\n",
        Path::new("two.yml"),
    )
    .rule_set;
    let strict = TempFile::new(
        "strict.yml",
        "name: linux only\ntransformations:\n  - type: rule_failure\n    message: only Linux rules are supported\n    rule_conditions:\n      - {type: logsource, product: linux}\n    rule_cond_not: true\n",
    );
    let pipelines = PipelineSet::load(&[strict.spec()]).unwrap();
    let (transformed, errors) = pipelines.apply(&rules);
    assert_eq!(transformed.rules.len(), 1);
    assert_eq!(transformed.rules[0].meta.title, "Keep");
    assert_eq!(errors.len(), 1);
    assert_eq!(
        errors[0].to_string(),
        "two.yml: rule 'Drop': pipeline 'linux only': only Linux rules are supported"
    );
}

#[test]
fn windows_pipeline_adds_the_channel_of_each_service() {
    let security = "title: Logon\nlogsource: {product: windows, service: security}\ndetection:\n  sel:\n    EventID: 4624\n  condition: sel\n";
    let script = "title: Script\nlogsource: {product: windows, category: ps_script}\ndetection:\n  sel:\n    ScriptBlockText|contains: 'Invoke-Mimikatz'\n  condition: sel\n";
    let loaded = parse_rules(&format!("{security}---\n{script}"), Path::new("w.yml"));
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    // Routing off: the pipeline's conditions alone must tell the channels apart.
    let pipelines = PipelineSet::load(&["windows"]).unwrap();
    let (transformed, errors) = pipelines.apply(&loaded.rule_set);
    assert!(errors.is_empty(), "{errors:?}");
    let options = CompileOptions {
        routing: rsigma_engine::Routing::disabled(),
        ..CompileOptions::default()
    };
    let (engine, errors) = Engine::compile_with(&transformed, &options);
    assert!(errors.is_empty(), "{errors:?}");
    let logon = json!({"Channel": "Security", "EventID": 4624});
    let not_security = json!({"Channel": "System", "EventID": 4624});
    let block = json!({"Channel": "Microsoft-Windows-PowerShell/Operational", "EventID": 4104, "ScriptBlockText": "Invoke-Mimikatz -Dump"});
    let core = json!({"Channel": "PowerShellCore/Operational", "EventID": 4104, "ScriptBlockText": "Invoke-Mimikatz"});
    let wrong_id = json!({"Channel": "Microsoft-Windows-PowerShell/Operational", "EventID": 4103, "ScriptBlockText": "Invoke-Mimikatz"});
    assert_eq!(titles(&engine, &logon), ["Logon"]);
    assert!(titles(&engine, &not_security).is_empty());
    assert_eq!(titles(&engine, &block), ["Script"]);
    assert_eq!(titles(&engine, &core), ["Script"]);
    assert!(titles(&engine, &wrong_id).is_empty());
    // The category became service powershell, as pySigma's pipeline does.
    let script_rule = &transformed.rules[1];
    assert_eq!(
        script_rule.meta.logsource.service.as_deref(),
        Some("powershell")
    );
}

#[test]
fn windows_pipeline_combines_with_sysmon() {
    let Some(rule_set) = whoami_rule() else {
        return;
    };
    let pipelines = PipelineSet::load(&["sysmon", "windows"]).unwrap();
    let engine = engine_with(&pipelines, &rule_set);
    let event = json!({"Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": 1,
        "Image": r"C:\Windows\System32\whoami.exe", "OriginalFileName": "whoami.exe", "CommandLine": "whoami /groups"});
    assert_eq!(titles(&engine, &event).len(), 1);
    let mut elsewhere = event.clone();
    elsewhere["Channel"] = json!("Security");
    assert!(titles(&engine, &elsewhere).is_empty());
}

/// The channels the `windows` pipeline adds are the channels routing
/// derives services from: one table, two uses.
#[test]
fn windows_pipeline_and_routing_share_the_channel_table() {
    let yaml = include_str!("../src/pipeline/builtin/windows.yml");
    let doc: yaml_serde::Value = yaml_serde::from_str(yaml).unwrap();
    let mut from_pipeline: Vec<(String, String)> = Vec::new();
    for item in doc["transformations"].as_sequence().unwrap() {
        let Some(service) = item["rule_conditions"][0]["service"].as_str() else {
            continue;
        };
        let channels = &item["conditions"]["Channel"];
        let channels: Vec<&str> = match channels.as_sequence() {
            Some(list) => list.iter().map(|c| c.as_str().unwrap()).collect(),
            None => vec![channels.as_str().unwrap()],
        };
        for channel in channels {
            from_pipeline.push((channel.to_owned(), service.to_owned()));
        }
    }
    let from_routing: Vec<(String, String)> = rsigma_engine::routing::derive::WINDOWS_CHANNELS
        .iter()
        .map(|(c, s)| (c.to_string(), s.to_string()))
        .collect();
    assert_eq!(from_pipeline, from_routing);
}
