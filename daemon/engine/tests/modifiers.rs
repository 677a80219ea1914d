//! Behaviour of every value form and modifier, through whole rules.
//!
//! Each test compiles a small rule and checks events it must and must not
//! match, through both the indexed path and the unindexed reference path.

use std::path::Path;

use rsigma_engine::{CompileOptions, Engine, parse_rules};
use serde_json::{Value, json};

fn engine_with(detection: &str, options: &CompileOptions) -> Engine {
    let yaml = format!(
        "title: Test rule\nid: 00000000-0000-0000-0000-000000000001\nlevel: high\n\
         logsource: {{product: windows}}\ndetection:\n{detection}"
    );
    let loaded = parse_rules(&yaml, Path::new("test.yml"));
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let (engine, errors) = Engine::compile_with(&loaded.rule_set, options);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(engine.rule_count(), 1);
    engine
}

fn engine(detection: &str) -> Engine {
    engine_with(detection, &CompileOptions::default())
}

fn compile_error(detection: &str) -> String {
    let yaml = format!("title: Bad rule\nlogsource: {{product: windows}}\ndetection:\n{detection}");
    let loaded = parse_rules(&yaml, Path::new("bad.yml"));
    if let Some(err) = loaded.errors.first() {
        return err.to_string();
    }
    let (_, errors) = Engine::compile(&loaded.rule_set);
    errors
        .first()
        .map(ToString::to_string)
        .expect("the rule should have been rejected")
}

fn hits(engine: &Engine, event: &Value) -> bool {
    let indexed = !engine.evaluate(event).is_empty();
    let reference = !engine.evaluate_unindexed(event).is_empty();
    assert_eq!(
        indexed, reference,
        "index and reference disagree on {event}"
    );
    indexed
}

/// Asserts which of `events` (as `(event, expected)`) match.
fn check(engine: &Engine, cases: &[(Value, bool)]) {
    for (event, expected) in cases {
        assert_eq!(hits(engine, event), *expected, "event {event}");
    }
}

#[test]
fn plain_values_are_exact_and_case_insensitive() {
    let e = engine("  sel:\n    Image: 'C:\\Windows\\System32\\cmd.exe'\n  condition: sel\n");
    check(
        &e,
        &[
            (json!({"Image": "C:\\Windows\\System32\\cmd.exe"}), true),
            (json!({"Image": "c:\\windows\\system32\\CMD.EXE"}), true),
            (json!({"Image": "C:\\Windows\\System32\\cmd.exe "}), false),
            (json!({"Other": "C:\\Windows\\System32\\cmd.exe"}), false),
            (json!({}), false),
        ],
    );
}

#[test]
fn contains_startswith_endswith() {
    let e = engine(
        "  sel:\n    CommandLine|contains: 'mimikatz'\n    Image|startswith: 'C:\\Temp\\'\n    \
         ParentImage|endswith: '\\explorer.exe'\n  condition: sel\n",
    );
    let base = json!({
        "CommandLine": "run MIMIKATZ.exe now",
        "Image": "c:\\temp\\x.exe",
        "ParentImage": "C:\\Windows\\Explorer.EXE"
    });
    check(&e, &[(base.clone(), true)]);
    for (field, value) in [
        ("CommandLine", "mimikat"),
        ("Image", "D:\\Temp\\x.exe"),
        ("ParentImage", "C:\\explorer.exe.bak"),
    ] {
        let mut event = base.clone();
        event[field] = json!(value);
        check(&e, &[(event, false)]);
    }
}

#[test]
fn wildcards_and_escapes() {
    let e = engine("  sel:\n    Name: 'a*b?c'\n  condition: sel\n");
    check(
        &e,
        &[
            (json!({"Name": "aXXXbYc"}), true),
            (json!({"Name": "abYc"}), true),
            (json!({"Name": "abc"}), false),
            (json!({"Name": "aXbYcZ"}), false),
        ],
    );
    // Escaped wildcards are literal characters.
    let e = engine("  sel:\n    Name: 'what\\?\\*'\n  condition: sel\n");
    check(
        &e,
        &[
            (json!({"Name": "what?*"}), true),
            (json!({"Name": "whatX*"}), false),
        ],
    );
    // An escaped backslash keeps the following wildcard special.
    let e = engine("  sel:\n    Path: 'C:\\\\*'\n  condition: sel\n");
    check(
        &e,
        &[
            (json!({"Path": "C:\\anything"}), true),
            (json!({"Path": "D:\\x"}), false),
        ],
    );
}

#[test]
fn empty_string_null_and_absence() {
    let e = engine("  sel:\n    Description: ''\n  condition: sel\n");
    check(
        &e,
        &[
            (json!({"Description": ""}), true),
            (json!({"Description": " "}), false),
            (json!({"Description": null}), false),
            (json!({}), false),
        ],
    );
    let e = engine("  sel:\n    Description: null\n  condition: sel\n");
    check(
        &e,
        &[
            (json!({"Description": null}), true),
            (json!({}), true),
            (json!({"Description": ""}), false),
            (json!({"Description": "x"}), false),
        ],
    );
}

#[test]
fn numbers_and_numeric_strings() {
    let e = engine("  sel:\n    EventID: 4688\n  condition: sel\n");
    check(
        &e,
        &[
            (json!({"EventID": 4688}), true),
            (json!({"EventID": "4688"}), true),
            (json!({"EventID": 4688.0}), true),
            (json!({"EventID": 46880}), false),
            (json!({"EventID": "4688x"}), false),
        ],
    );
    // A quoted number in the rule matches numbers in events too.
    let e = engine("  sel:\n    EventID: '4688'\n  condition: sel\n");
    check(
        &e,
        &[
            (json!({"EventID": 4688}), true),
            (json!({"EventID": "4688"}), true),
        ],
    );
    let e = engine("  sel:\n    Port|startswith: 44\n  condition: sel\n");
    check(
        &e,
        &[(json!({"Port": 443}), true), (json!({"Port": 8443}), false)],
    );
}

#[test]
fn booleans() {
    let e = engine("  sel:\n    Elevated: true\n  condition: sel\n");
    check(
        &e,
        &[
            (json!({"Elevated": true}), true),
            (json!({"Elevated": "True"}), true),
            (json!({"Elevated": false}), false),
            (json!({"Elevated": 1}), false),
        ],
    );
}

#[test]
fn lists_are_or_and_all_is_and() {
    let e = engine(
        "  sel:\n    Image|endswith:\n      - '\\a.exe'\n      - '\\b.exe'\n  condition: sel\n",
    );
    check(
        &e,
        &[
            (json!({"Image": "x\\a.exe"}), true),
            (json!({"Image": "x\\b.exe"}), true),
            (json!({"Image": "x\\c.exe"}), false),
        ],
    );
    let e = engine(
        "  sel:\n    CommandLine|contains|all:\n      - ' -enc '\n      - 'powershell'\n  condition: sel\n",
    );
    check(
        &e,
        &[
            (json!({"CommandLine": "PowerShell -enc AAAA"}), true),
            (json!({"CommandLine": "powershell -nop"}), false),
            (json!({"CommandLine": "pwsh -enc AAAA"}), false),
        ],
    );
}

#[test]
fn many_contains_values_use_one_automaton_with_same_results() {
    let e = engine(
        "  sel:\n    CommandLine|contains:\n      - 'alpha'\n      - 'bravo'\n      - 'charlie'\n      \
         - 'delta'\n      - 'ECHO'\n      - 'fox*trot'\n  condition: sel\n",
    );
    check(
        &e,
        &[
            (json!({"CommandLine": "x ALPHA y"}), true),
            (json!({"CommandLine": "echo"}), true),
            (json!({"CommandLine": "the fox did trot"}), true),
            (json!({"CommandLine": "alph brav"}), false),
        ],
    );
}

#[test]
fn keywords_search_every_value() {
    let e = engine("  keywords:\n    - 'mimikatz'\n    - 'sekurlsa::'\n  condition: keywords\n");
    check(
        &e,
        &[
            (json!({"a": {"b": ["x", "run MimiKatz"]}}), true),
            (json!({"msg": "sekurlsa::logonpasswords"}), true),
            (json!({"mimikatz": "key names are not searched"}), false),
            (json!({"n": 5}), false),
        ],
    );
    let detection = e.evaluate(&json!({"a": {"b": ["x", "run MimiKatz"]}}));
    assert_eq!(detection[0].matched_fields[0].field, "a.b");
}

#[test]
fn nested_fields_arrays_and_flat_dotted_keys() {
    let e = engine("  sel:\n    process.name: 'cmd.exe'\n  condition: sel\n");
    check(
        &e,
        &[
            (json!({"process": {"name": "CMD.EXE"}}), true),
            (json!({"process.name": "cmd.exe"}), true),
            (
                json!({"process": [{"name": "x"}, {"name": "cmd.exe"}]}),
                true,
            ),
            (json!({"process": {"name": ["a", ["b", "cmd.exe"]]}}), true),
            // The flat key wins: the nested value is not consulted.
            (
                json!({"process.name": "x", "process": {"name": "cmd.exe"}}),
                false,
            ),
            (json!({"process": "cmd.exe"}), false),
        ],
    );
}

#[test]
fn unicode_case_folding() {
    let e = engine("  sel:\n    User|contains: 'ÄRGER'\n  condition: sel\n");
    check(
        &e,
        &[
            (json!({"User": "großer ärger"}), true),
            (json!({"User": "GROSSER ÄRGER"}), true),
            (json!({"User": "arger"}), false),
        ],
    );
    let e = engine("  sel:\n    User: 'администратор'\n  condition: sel\n");
    check(&e, &[(json!({"User": "АДМИНИСТРАТОР"}), true)]);
}

#[test]
fn cased_is_case_sensitive() {
    let e = engine("  sel:\n    Name|cased: 'MaLwArE'\n  condition: sel\n");
    check(
        &e,
        &[
            (json!({"Name": "MaLwArE"}), true),
            (json!({"Name": "malware"}), false),
        ],
    );
    let e = engine("  sel:\n    Name|contains|cased: 'Evil'\n  condition: sel\n");
    check(
        &e,
        &[
            (json!({"Name": "xEvilx"}), true),
            (json!({"Name": "xevilx"}), false),
        ],
    );
}

#[test]
fn base64_and_base64offset() {
    let e = engine("  sel:\n    Data|base64: 'cmd.exe'\n  condition: sel\n");
    check(
        &e,
        &[
            (json!({"Data": "Y21kLmV4ZQ=="}), true),
            (json!({"Data": "y21kLmV4ZQ=="}), false),
        ],
    );
    let e = engine("  sel:\n    CommandLine|base64offset|contains: 'http://'\n  condition: sel\n");
    // "http://" encoded at each of the three alignments inside a longer text.
    let encode = |text: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(text)
    };
    check(
        &e,
        &[
            (json!({"CommandLine": encode("http://evil")}), true),
            (json!({"CommandLine": encode("ahttp://evil")}), true),
            (json!({"CommandLine": encode("abhttp://evil")}), true),
            (json!({"CommandLine": encode("abchttp://evil")}), true),
            (json!({"CommandLine": encode("https://evil")}), false),
        ],
    );
}

#[test]
fn wide_and_utf16_variants() {
    let e = engine("  sel:\n    Data|wide|base64offset|contains: 'ping'\n  condition: sel\n");
    use base64::Engine as _;
    let wide: Vec<u8> = "xping".encode_utf16().flat_map(u16::to_le_bytes).collect();
    let encoded = base64::engine::general_purpose::STANDARD.encode(wide);
    check(
        &e,
        &[
            (json!({ "Data": encoded }), true),
            (json!({"Data": "cGluZw=="}), false),
        ],
    );
    let e = engine("  sel:\n    Data|utf16be|base64: 'a'\n  condition: sel\n");
    check(&e, &[(json!({"Data": "AGE="}), true)]);
    let e = engine("  sel:\n    Data|utf16|base64: 'a'\n  condition: sel\n");
    check(&e, &[(json!({"Data": "//5hAA=="}), true)]);
    // Without an encoding on top, UTF-16 of ASCII is text with NULs.
    let e = engine("  sel:\n    Data|wide|contains: 'ab'\n  condition: sel\n");
    check(
        &e,
        &[
            (json!({"Data": "xa\u{0}b\u{0}y"}), true),
            (json!({"Data": "ab"}), false),
        ],
    );
}

#[test]
fn windash() {
    let e = engine("  sel:\n    CommandLine|windash|contains: ' -decode '\n  condition: sel\n");
    check(
        &e,
        &[
            (json!({"CommandLine": "certutil -decode a b"}), true),
            (json!({"CommandLine": "certutil /decode a b"}), true),
            (json!({"CommandLine": "certutil \u{2013}decode a b"}), true),
            (json!({"CommandLine": "certutil \u{2014}decode a b"}), true),
            (json!({"CommandLine": "certutil \u{2015}decode a b"}), true),
            (json!({"CommandLine": "certutil +decode a b"}), false),
        ],
    );
    let e = engine(
        "  sel:\n    CommandLine|windash|contains|all:\n      - ' -a '\n      - ' -b '\n  condition: sel\n",
    );
    check(
        &e,
        &[
            (json!({"CommandLine": "x /a -b "}), true),
            (json!({"CommandLine": "x /a /c "}), false),
        ],
    );
}

#[test]
fn regular_expressions_and_flags() {
    let e = engine("  sel:\n    CommandLine|re: '\\s-[eE]nc\\s'\n  condition: sel\n");
    check(
        &e,
        &[
            (json!({"CommandLine": "ps -Enc AAA"}), true),
            (json!({"CommandLine": "ps -ENC AAA"}), false),
        ],
    );
    let e = engine("  sel:\n    CommandLine|re|i: '^powershell'\n  condition: sel\n");
    check(&e, &[(json!({"CommandLine": "POWERSHELL x"}), true)]);
    let e = engine("  sel:\n    Text|re|m: '^second$'\n  condition: sel\n");
    check(
        &e,
        &[
            (json!({"Text": "first\nsecond\nthird"}), true),
            (json!({"Text": "secondx"}), false),
        ],
    );
    let e = engine("  sel:\n    Text|re|s: 'a.b'\n  condition: sel\n");
    check(&e, &[(json!({"Text": "a\nb"}), true)]);
    let e = engine("  sel:\n    Text|re: 'a.b'\n  condition: sel\n");
    check(&e, &[(json!({"Text": "a\nb"}), false)]);
    assert!(
        compile_error("  sel:\n    Text|re: '(unclosed'\n  condition: sel\n")
            .contains("invalid regular expression")
    );
}

#[test]
fn cidr_v4_and_v6() {
    let e = engine(
        "  sel:\n    SourceIp|cidr:\n      - '10.0.0.0/8'\n      - 'fe80::/10'\n  condition: sel\n",
    );
    check(
        &e,
        &[
            (json!({"SourceIp": "10.1.2.3"}), true),
            (json!({"SourceIp": "11.1.2.3"}), false),
            (json!({"SourceIp": "fe80::1"}), true),
            (json!({"SourceIp": "2001:db8::1"}), false),
            (json!({"SourceIp": "not an ip"}), false),
        ],
    );
}

#[test]
fn exists() {
    let e = engine("  sel:\n    Hashes|exists: true\n  condition: sel\n");
    check(
        &e,
        &[
            (json!({"Hashes": "x"}), true),
            (json!({"Hashes": ""}), true),
            (json!({"Other": "x"}), false),
        ],
    );
    let e = engine("  sel:\n    Hashes|exists: false\n  condition: sel\n");
    check(
        &e,
        &[(json!({"Hashes": "x"}), false), (json!({"Other": 1}), true)],
    );
}

#[test]
fn expand_placeholders() {
    let mut options = CompileOptions::default();
    options
        .placeholders
        .insert("admins".into(), vec!["alice".into(), "bob".into()]);
    // `\\` is an escaped backslash: a domain prefix, then the placeholder.
    let e = engine_with(
        "  sel:\n    User|expand: 'CORP\\\\%admins%'\n  condition: sel\n",
        &options,
    );
    check(
        &e,
        &[
            (json!({"User": "corp\\Alice"}), true),
            (json!({"User": "CORP\\bob"}), true),
            (json!({"User": "CORP\\eve"}), false),
        ],
    );
    // `\%` is a literal `%` (the specification's `\%plain%name%`).
    let e = engine_with(
        "  sel:\n    User|expand: '\\%plain%admins%'\n  condition: sel\n",
        &options,
    );
    check(
        &e,
        &[
            (json!({"User": "%plainalice"}), true),
            (json!({"User": "%plain%admins%"}), false),
            (json!({"User": "alice"}), false),
        ],
    );
}

#[test]
fn undefined_placeholders_reject_the_rule_unless_allowed() {
    let detection =
        "  sel:\n    User|expand: '%admins%'\n  filter:\n    User: x\n  condition: sel or filter\n";
    let error = compile_error(detection);
    assert!(error.contains("bad.yml"), "{error}");
    assert!(error.contains("Bad rule"), "{error}");
    assert!(
        error.contains("placeholder '%admins%' is not defined"),
        "{error}"
    );
    assert!(error.contains("--allow-undefined-placeholders"), "{error}");
    // Opted out, the rule loads and the placeholder matches nothing.
    let options = CompileOptions {
        undefined_placeholders: rsigma_engine::UndefinedPlaceholders::MatchNothing,
        ..CompileOptions::default()
    };
    let e = engine_with(detection, &options);
    check(
        &e,
        &[
            (json!({"User": "%admins%"}), false),
            (json!({"User": "x"}), true),
        ],
    );
}

#[test]
fn keyword_lists_of_every_size_match() {
    let words = [
        "mimikatz",
        "sekurlsa::",
        "kerberos::",
        "lsadump::",
        "privilege::debug",
        "crypto::",
    ];
    for size in 1..=words.len() {
        let list: String = words[..size]
            .iter()
            .map(|w| format!("    - '{w}'\n"))
            .collect();
        let e = engine(&format!("  keywords:\n{list}  condition: keywords\n"));
        for (i, word) in words.iter().enumerate() {
            let event = json!({"CommandLine": format!("x.exe {}", word.to_uppercase()), "n": 1});
            assert_eq!(hits(&e, &event), i < size, "list of {size}, word {word}");
        }
        assert!(!hits(&e, &json!({"CommandLine": "notepad.exe"})));
        // Nested values are searched too.
        let nested = json!({"a": {"b": [format!("run {}", words[size - 1])]}});
        assert!(hits(&e, &nested), "list of {size}: nested");
    }
    // A filter of four or more keywords excludes what it names.
    let e = engine(
        "  sel:\n    Image|endswith: '\\cmd.exe'\n  filter:\n    - 'alpha'\n    - 'beta'\n    - 'gamma'\n    - 'delta'\n  condition: sel and not filter\n",
    );
    check(
        &e,
        &[
            (
                json!({"Image": "C:\\cmd.exe", "CommandLine": "cmd /c echo"}),
                true,
            ),
            (
                json!({"Image": "C:\\cmd.exe", "CommandLine": "cmd /c GAMMA"}),
                false,
            ),
        ],
    );
}

#[test]
fn fieldref() {
    let e = engine("  sel:\n    SourceUser|fieldref: TargetUser\n  condition: sel\n");
    check(
        &e,
        &[
            (json!({"SourceUser": "Alice", "TargetUser": "alice"}), true),
            (json!({"SourceUser": "alice", "TargetUser": "bob"}), false),
            (json!({"SourceUser": "alice"}), false),
        ],
    );
    let e = engine("  sel:\n    CommandLine|fieldref|contains: Image\n  condition: sel\n");
    check(
        &e,
        &[
            (
                json!({"CommandLine": "\"C:\\a.exe\" -x", "Image": "C:\\a.exe"}),
                true,
            ),
            (json!({"CommandLine": "b.exe", "Image": "C:\\a.exe"}), false),
        ],
    );
    // `neq`: the field must differ from the other field.
    let e = engine("  sel:\n    SourceUser|fieldref|neq: TargetUser\n  condition: sel\n");
    check(
        &e,
        &[
            (json!({"SourceUser": "alice", "TargetUser": "bob"}), true),
            (json!({"SourceUser": "Alice", "TargetUser": "alice"}), false),
            (json!({"SourceUser": "alice"}), true),
            (json!({"TargetUser": "bob"}), false),
        ],
    );
}

#[test]
fn numeric_comparisons() {
    for (modifier, value, expected) in [
        ("gt", 10, [false, false, true]),
        ("gte", 10, [false, true, true]),
        ("lt", 10, [true, false, false]),
        ("lte", 10, [true, true, false]),
    ] {
        let e = engine(&format!(
            "  sel:\n    Count|{modifier}: {value}\n  condition: sel\n"
        ));
        for (count, want) in [9, 10, 11].into_iter().zip(expected) {
            check(&e, &[(json!({ "Count": count }), want)]);
            check(&e, &[(json!({ "Count": count.to_string() }), want)]);
        }
        check(&e, &[(json!({"Count": "many"}), false)]);
    }
}

#[test]
fn neq() {
    let e = engine("  sel:\n    User|neq: 'SYSTEM'\n  condition: sel\n");
    check(
        &e,
        &[
            (json!({"User": "alice"}), true),
            (json!({"User": "system"}), false),
            // An absent field is not "different": use `not` for absence.
            (json!({}), false),
        ],
    );
    let e = engine("  sel:\n    Port|neq: 443\n  condition: sel\n");
    check(
        &e,
        &[(json!({"Port": 80}), true), (json!({"Port": 443}), false)],
    );
}

#[test]
fn time_parts() {
    let e = engine("  sel:\n    '@timestamp|hour': 3\n  condition: sel\n");
    check(
        &e,
        &[
            (json!({"@timestamp": "2024-05-01T03:15:00Z"}), true),
            (json!({"@timestamp": "2024-05-01T05:15:00+02:00"}), true),
            (json!({"@timestamp": "2024-05-01T04:15:00Z"}), false),
            (json!({"@timestamp": "not a time"}), false),
        ],
    );
    let event = json!({"t": "2024-02-29T23:59:30Z"});
    for (part, value) in [
        ("minute", 59),
        ("hour", 23),
        ("day", 29),
        ("week", 9),
        ("month", 2),
        ("year", 2024),
    ] {
        let e = engine(&format!(
            "  sel:\n    t|{part}: {value}\n  condition: sel\n"
        ));
        check(&e, &[(event.clone(), true)]);
        let e = engine(&format!(
            "  sel:\n    t|{part}: {}\n  condition: sel\n",
            value + 1
        ));
        check(&e, &[(event.clone(), false)]);
    }
    let e = engine("  sel:\n    t|hour|gte: 22\n  condition: sel\n");
    check(
        &e,
        &[(event.clone(), true), (json!({"t": 1714532100}), false)],
    );
}

#[test]
fn modifier_errors_name_the_field_and_reason() {
    for (detection, reason) in [
        (
            "  sel:\n    A|nope: x\n  condition: sel\n",
            "unknown modifier 'nope'",
        ),
        (
            "  sel:\n    A|i: x\n  condition: sel\n",
            "need the 're' modifier",
        ),
        (
            "  sel:\n    A|base64: 'x*'\n  condition: sel\n",
            "wildcards",
        ),
        (
            "  sel:\n    A|cidr: 'nonsense'\n  condition: sel\n",
            "invalid network",
        ),
        (
            "  sel:\n    A|gt: many\n  condition: sel\n",
            "take a number",
        ),
        (
            "  sel:\n    A|exists: maybe\n  condition: sel\n",
            "one boolean",
        ),
        ("  sel:\n    A: []\n  condition: sel\n", "empty value list"),
        (
            "  sel:\n    A|contains|startswith: x\n  condition: sel\n",
            "only one of",
        ),
    ] {
        let message = compile_error(detection);
        assert!(message.contains("bad.yml"), "{message}");
        assert!(message.contains("Bad rule"), "{message}");
        assert!(
            message.contains(reason),
            "{message} should contain {reason}"
        );
    }
}
