//! Correlation rules, one test per type and per behaviour, with expected
//! outputs computed by hand from the event times in each test.

use std::path::Path;
use std::time::Duration;

use rsigma_engine::correlation::{
    CorrelationEngine, CorrelationMatch, CorrelationOptions, EventMode, FireAction,
    TimestampFallback,
};
use rsigma_engine::{Engine, parse_rules};
use serde_json::{Value, json};

/// Base rules: `login_failed` (EventID 4625), `process` (EventID 1),
/// `transfer` (EventID 5156), `step_a`/`step_b`/`step_c` (Step: a/b/c).
const BASE_RULES: &str = "\
title: Failed logon
name: login_failed
logsource: {product: windows, service: security}
detection:
  sel: {EventID: 4625}
  condition: sel
---
title: Process
name: process
logsource: {product: windows}
detection:
  sel: {EventID: 1}
  condition: sel
---
title: Transfer
name: transfer
logsource: {product: windows}
detection:
  sel: {EventID: 5156}
  condition: sel
---
title: Step A
name: step_a
logsource: {product: test}
detection:
  sel: {Step: a}
  condition: sel
---
title: Step B
name: step_b
logsource: {product: test}
detection:
  sel: {Step: b}
  condition: sel
---
title: Step C
name: step_c
logsource: {product: test}
detection:
  sel: {Step: c}
  condition: sel
";

/// No match for an event.
const NO: Vec<f64> = Vec::new();

struct Harness {
    engine: Engine,
    correlations: CorrelationEngine,
}

impl Harness {
    fn new(correlation_yaml: &str, options: CorrelationOptions) -> Harness {
        let text = format!("{BASE_RULES}---\n{correlation_yaml}");
        let loaded = parse_rules(&text, Path::new("corr.yml"));
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        let (engine, errors) = Engine::compile(&loaded.rule_set);
        assert!(errors.is_empty(), "{errors:?}");
        let correlations =
            CorrelationEngine::new(&loaded.rule_set.correlations, &engine, options).unwrap();
        Harness {
            engine,
            correlations,
        }
    }

    fn feed(&mut self, event: Value) -> Vec<CorrelationMatch> {
        let detections = self.engine.evaluate(&event);
        let mut out = Vec::new();
        self.correlations.process(&event, &detections, &mut out);
        out
    }

    /// Feeds `(seconds, event)` pairs; returns, per event, the aggregated
    /// values of the matches it produced.
    fn run(&mut self, events: &[(i64, Value)]) -> Vec<Vec<f64>> {
        events
            .iter()
            .map(|(secs, event)| {
                let mut event = event.clone();
                event["@timestamp"] = json!(at(*secs));
                self.feed(event)
                    .iter()
                    .map(|m| m.aggregated_value)
                    .collect()
            })
            .collect()
    }
}

fn at(secs: i64) -> String {
    chrono::DateTime::from_timestamp(1_700_000_000 + secs, 0)
        .unwrap()
        .to_rfc3339()
}

fn failed(user: &str) -> Value {
    json!({"EventID": 4625, "User": user})
}

const BRUTE_FORCE: &str = "\
title: Brute force
id: 9a1a0000-0000-0000-0000-000000000001
level: high
correlation:
  type: event_count
  rules: [login_failed]
  group-by: [User]
  timespan: 60s
  condition: {gte: 3}
";

#[test]
fn event_count_per_group() {
    let mut h = Harness::new(BRUTE_FORCE, CorrelationOptions::default());
    let out = h.run(&[
        (0, failed("alice")),
        (10, failed("bob")),
        (20, failed("alice")),
        (30, failed("alice")),
        (40, failed("bob")),
        (45, json!({"EventID": 1, "User": "bob"})),
    ]);
    assert_eq!(out, vec![NO, NO, NO, vec![3.0], NO, NO]);
}

#[test]
fn event_count_match_record() {
    let mut h = Harness::new(BRUTE_FORCE, CorrelationOptions::default());
    h.run(&[(0, failed("alice")), (1, failed("alice"))]);
    let mut event = failed("alice");
    event["@timestamp"] = json!(at(2));
    let matches = h.feed(event);
    assert_eq!(
        serde_json::to_value(&matches).unwrap(),
        json!([{
            "rule_title": "Brute force",
            "rule_id": "9a1a0000-0000-0000-0000-000000000001",
            "level": "high",
            "tags": [],
            "correlation_type": "event_count",
            "group_key": [["User", "alice"]],
            "aggregated_value": 3.0,
            "timespan_secs": 60
        }])
    );
}

#[test]
fn window_edges_are_inclusive() {
    // An event exactly one timespan older than the newest is still inside.
    let mut h = Harness::new(BRUTE_FORCE, CorrelationOptions::default());
    let out = h.run(&[(0, failed("a")), (30, failed("a")), (60, failed("a"))]);
    assert_eq!(out[2], vec![3.0]);
    // One second more and the first event has left.
    let mut h = Harness::new(BRUTE_FORCE, CorrelationOptions::default());
    let out = h.run(&[(0, failed("a")), (30, failed("a")), (61, failed("a"))]);
    assert_eq!(out[2], Vec::<f64>::new());
}

#[test]
fn out_of_order_and_late_events() {
    let mut h = Harness::new(BRUTE_FORCE, CorrelationOptions::default());
    // 100, then 50 (out of order, inside [40, 100]): counted.
    let out = h.run(&[(100, failed("a")), (50, failed("a")), (45, failed("a"))]);
    assert_eq!(out, vec![NO, NO, vec![3.0]]);
    // 30 is older than the window [40, 100]: ignored and counted as late.
    let out = h.run(&[(30, failed("b")), (100, failed("b")), (30, failed("b"))]);
    assert_eq!(out, vec![NO, NO, NO]);
    assert_eq!(h.correlations.stats().late_events, 1);
}

#[test]
fn value_count_distinct_values() {
    let mut h = Harness::new(
        "title: Password spray\ncorrelation:\n  type: value_count\n  rules: [login_failed]\n  \
         group-by: [SourceIp]\n  timespan: 5m\n  condition: {field: User, gte: 3}\n",
        CorrelationOptions::default(),
    );
    let spray = |user: &str| json!({"EventID": 4625, "User": user, "SourceIp": "10.0.0.9"});
    let out = h.run(&[
        (0, spray("alice")),
        (10, spray("bob")),
        (20, spray("alice")),
        (30, spray("carol")),
        (40, spray("dave")),
        // 301 s after the first alice and bob, 281 after the second alice:
        // the window [31, 331] holds dave and erin only.
        (331, spray("erin")),
    ]);
    assert_eq!(out, vec![NO, NO, NO, vec![3.0], vec![4.0], NO]);
}

#[test]
fn temporal_any_order() {
    let mut h = Harness::new(
        "title: Recon chain\ncorrelation:\n  type: temporal\n  rules: [step_a, step_b, step_c]\n  \
         group-by: [Host]\n  timespan: 10s\n",
        CorrelationOptions::default(),
    );
    let step = |s: &str, host: &str| json!({"Step": s, "Host": host});
    let out = h.run(&[
        (0, step("c", "h1")),
        (1, step("a", "h1")),
        (2, step("a", "h2")),
        (5, step("b", "h1")),
        // Too late for c at 0: the window is [5, 15].
        (15, step("b", "h2")),
        (16, step("c", "h2")),
    ]);
    assert_eq!(out, vec![NO, NO, NO, vec![3.0], NO, NO]);
}

#[test]
fn temporal_ordered_requires_the_listed_order() {
    let yaml = "title: Ordered\ncorrelation:\n  type: temporal_ordered\n  rules: [step_a, step_b]\n  \
                group-by: [Host]\n  timespan: 10s\n";
    let step = |s: &str| json!({"Step": s, "Host": "h"});
    let mut h = Harness::new(yaml, CorrelationOptions::default());
    assert_eq!(h.run(&[(0, step("b")), (1, step("a"))]), vec![NO, NO]);
    // Now a (at 1) is followed by b.
    assert_eq!(h.run(&[(2, step("b"))]), vec![vec![2.0]]);
}

#[test]
fn value_sum_avg_median_percentile() {
    let bytes = |n: i64| json!({"EventID": 5156, "Host": "h", "Bytes": n});
    let events = [
        (0, bytes(400)),
        (1, bytes(100)),
        (2, bytes(700)),
        (3, bytes(300)),
    ];
    let cases = [
        (
            "value_sum",
            "{field: Bytes, gt: 1000}",
            vec![NO, NO, vec![1200.0], vec![1500.0]],
        ),
        (
            "value_avg",
            "{field: Bytes, gte: 375}",
            vec![vec![400.0], NO, vec![400.0], vec![375.0]],
        ),
        // Medians: 400, 250, 400, 350.
        (
            "value_median",
            "{field: Bytes, gte: 350}",
            vec![vec![400.0], NO, vec![400.0], vec![350.0]],
        ),
        // 90th percentile of [100, 300, 400, 700]: rank 2.7, 400 + 0.7 * 300 = 610.
        (
            "value_percentile",
            "{field: Bytes, percentile: 90, gt: 600}",
            vec![NO, NO, vec![640.0], vec![610.0]],
        ),
    ];
    for (kind, condition, expected) in cases {
        let mut h = Harness::new(
            &format!(
                "title: Volume\ncorrelation:\n  type: {kind}\n  rules: [transfer]\n  group-by: [Host]\n  \
                 timespan: 1m\n  condition: {condition}\n"
            ),
            CorrelationOptions::default(),
        );
        let out = h.run(&events);
        assert_eq!(out.len(), expected.len());
        for (got, want) in out.iter().zip(&expected) {
            assert_eq!(got.len(), want.len(), "{kind}: {out:?}");
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() < 1e-9, "{kind}: {out:?} != {expected:?}");
            }
        }
    }
}

#[test]
fn suppression_and_reset() {
    let yaml = BRUTE_FORCE.replace("gte: 3", "gte: 2");
    let events: Vec<(i64, Value)> = [0, 1, 2, 3, 40]
        .into_iter()
        .map(|t| (t, failed("a")))
        .collect();
    // Alert (default): fires on every event from the second on.
    let mut h = Harness::new(&yaml, CorrelationOptions::default());
    assert_eq!(
        h.run(&events),
        vec![NO, vec![2.0], vec![3.0], vec![4.0], vec![5.0]]
    );
    // Suppressed for 30 s after each alert (event time).
    let options = CorrelationOptions {
        suppress: Some(Duration::from_secs(30)),
        ..CorrelationOptions::default()
    };
    let mut h = Harness::new(&yaml, options);
    assert_eq!(h.run(&events), vec![NO, vec![2.0], NO, NO, vec![5.0]]);
    assert_eq!(h.correlations.stats().suppressed, 2);
    // Reset: the window starts over after each alert.
    let options = CorrelationOptions {
        action: FireAction::Reset,
        ..CorrelationOptions::default()
    };
    let mut h = Harness::new(&yaml, options);
    assert_eq!(h.run(&events), vec![NO, vec![2.0], NO, vec![2.0], NO]);
}

#[test]
fn chained_correlations() {
    let yaml = "title: Burst\nname: burst\ncorrelation:\n  type: event_count\n  rules: [login_failed]\n  \
                group-by: [User]\n  timespan: 10s\n  condition: {gte: 2}\n---\n\
                title: Repeated bursts\ncorrelation:\n  type: event_count\n  rules: [burst]\n  \
                group-by: [User]\n  timespan: 10m\n  condition: {gte: 2}\n";
    let options = CorrelationOptions {
        action: FireAction::Reset,
        ..CorrelationOptions::default()
    };
    let mut h = Harness::new(yaml, options);
    let mut titles = Vec::new();
    for t in [0, 1, 100, 101] {
        let mut event = failed("alice");
        event["@timestamp"] = json!(at(t));
        titles.push(
            h.feed(event)
                .into_iter()
                .map(|m| m.rule_title)
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(
        titles,
        vec![
            vec![],
            vec!["Burst".to_owned()],
            vec![],
            vec!["Burst".to_owned(), "Repeated bursts".to_owned()]
        ]
    );
}

#[test]
fn aliases_map_group_fields_per_rule() {
    let yaml = "title: Logon then process\ncorrelation:\n  type: temporal\n  rules: [login_failed, process]\n  \
                group-by: [account]\n  timespan: 1m\n  aliases:\n    account:\n      login_failed: TargetUserName\n      \
                process: User\n";
    let mut h = Harness::new(yaml, CorrelationOptions::default());
    let out = h.run(&[
        (0, json!({"EventID": 4625, "TargetUserName": "eve"})),
        (1, json!({"EventID": 1, "User": "bob"})),
        (2, json!({"EventID": 1, "User": "eve"})),
    ]);
    assert_eq!(out, vec![NO, NO, vec![2.0]]);
}

#[test]
fn reference_errors_and_cycles() {
    let loaded = parse_rules(
        &format!(
            "{BASE_RULES}---\ntitle: X\nname: x\ncorrelation:\n  type: event_count\n  rules: [y]\n  \
             timespan: 1m\n  condition: {{gte: 1}}\n---\ntitle: Y\nname: y\ncorrelation:\n  type: event_count\n  \
             rules: [x]\n  timespan: 1m\n  condition: {{gte: 1}}\n"
        ),
        Path::new("cycle.yml"),
    );
    let (engine, _) = Engine::compile(&loaded.rule_set);
    let errors = CorrelationEngine::new(
        &loaded.rule_set.correlations,
        &engine,
        CorrelationOptions::default(),
    )
    .unwrap_err();
    assert!(errors[0].to_string().contains("cycle"), "{errors:?}");
    let loaded = parse_rules(
        "title: Z\ncorrelation:\n  type: event_count\n  rules: [nowhere]\n  timespan: 1m\n  condition: {gte: 1}\n",
        Path::new("z.yml"),
    );
    let errors = CorrelationEngine::new(
        &loaded.rule_set.correlations,
        &engine,
        CorrelationOptions::default(),
    )
    .unwrap_err();
    assert_eq!(
        errors[0].to_string(),
        "z.yml: rule 'Z': references unknown rule 'nowhere'"
    );
}

#[test]
fn event_modes_full_and_refs() {
    let yaml = BRUTE_FORCE.replace("gte: 3", "gte: 2");
    let options = CorrelationOptions {
        event_mode: EventMode::Full,
        max_events: 2,
        ..CorrelationOptions::default()
    };
    let mut h = Harness::new(&yaml, options);
    let events: Vec<Value> = (0..3)
        .map(|i| json!({"EventID": 4625, "User": "a", "n": i, "@timestamp": at(i)}))
        .collect();
    h.feed(events[0].clone());
    h.feed(events[1].clone());
    let last = h.feed(events[2].clone());
    // The newest two, in time order.
    assert_eq!(
        last[0].events,
        Some(vec![events[1].clone(), events[2].clone()])
    );
    let options = CorrelationOptions {
        event_mode: EventMode::Refs,
        ..CorrelationOptions::default()
    };
    let mut h = Harness::new(&yaml, options);
    h.feed(json!({"EventID": 4625, "User": "a", "EventRecordID": 7, "@timestamp": at(0)}));
    let out =
        h.feed(json!({"EventID": 4625, "User": "a", "EventRecordID": 8, "@timestamp": at(1)}));
    let refs = out[0].event_refs.as_ref().unwrap();
    assert_eq!(refs.len(), 2);
    assert_eq!(refs[1].id, Some(json!(8)));
    assert_eq!(refs[0].timestamp, "2023-11-14T22:13:20+00:00");
}

#[test]
fn timestamps_fields_and_fallback() {
    let options = CorrelationOptions {
        timestamp_fields: vec!["when".into()],
        timestamp_fallback: TimestampFallback::Skip,
        ..CorrelationOptions::default()
    };
    let mut h = Harness::new(&BRUTE_FORCE.replace("gte: 3", "gte: 2"), options);
    // Epoch milliseconds in a custom field.
    h.feed(json!({"EventID": 4625, "User": "a", "when": 1_700_000_000_000_i64}));
    let out = h.feed(json!({"EventID": 4625, "User": "a", "when": 1_700_000_001_000_i64}));
    assert_eq!(out.len(), 1);
    // No timestamp: skipped, not counted.
    h.feed(json!({"EventID": 4625, "User": "b"}));
    h.feed(json!({"EventID": 4625, "User": "b"}));
    assert_eq!(h.correlations.stats().skipped_no_timestamp, 2);
}

#[test]
fn state_is_capped_evicting_the_stalest() {
    let options = CorrelationOptions {
        max_state_entries: 100,
        ..CorrelationOptions::default()
    };
    let mut h = Harness::new(BRUTE_FORCE, options);
    for i in 0..250 {
        let mut event = failed(&format!("user{i}"));
        event["@timestamp"] = json!(at(i));
        h.feed(event);
    }
    let stats = h.correlations.stats();
    assert!(stats.state_entries <= 100, "{stats:?}");
    assert_eq!(stats.evicted as usize + stats.state_entries, 250);
    // The most recent group survived: two more events for it fire.
    let out = h.run(&[(250, failed("user249")), (251, failed("user249"))]);
    assert_eq!(out[1], vec![3.0]);
}

#[test]
fn correlation_only_rules() {
    let h = Harness::new(BRUTE_FORCE, CorrelationOptions::default());
    let index = |title: &str| {
        h.engine
            .rules()
            .find(|r| r.title == title)
            .map(|r| r.index)
            .unwrap()
    };
    assert!(h.correlations.is_correlation_only(index("Failed logon")));
    assert!(!h.correlations.is_correlation_only(index("Process")));
    let h = Harness::new(
        &format!("{BRUTE_FORCE}  generate: true\n"),
        CorrelationOptions::default(),
    );
    let first = h.engine.rules().next().unwrap().index;
    assert!(!h.correlations.is_correlation_only(first));
}

#[test]
fn snapshot_and_restore_keep_only_unchanged_correlations() {
    let mut h = Harness::new(BRUTE_FORCE, CorrelationOptions::default());
    h.run(&[(0, failed("alice")), (1, failed("alice"))]);
    let snapshot = h.correlations.snapshot();
    // Same rules: the window continues where it stopped.
    let mut restored = Harness::new(BRUTE_FORCE, CorrelationOptions::default());
    let stats = restored.correlations.restore(snapshot.clone());
    assert_eq!((stats.groups, stats.skipped_correlations), (1, 0));
    assert_eq!(restored.run(&[(2, failed("alice"))]), vec![vec![3.0]]);
    // A changed definition (another timespan) does not take old windows.
    let mut changed = Harness::new(
        &BRUTE_FORCE.replace("60s", "90s"),
        CorrelationOptions::default(),
    );
    let stats = changed.correlations.restore(snapshot);
    assert_eq!((stats.groups, stats.skipped_correlations), (0, 1));
    assert_eq!(
        changed.run(&[(2, failed("alice"))]),
        vec![Vec::<f64>::new()]
    );
}

#[test]
fn state_survives_a_restart_through_the_sqlite_store() {
    use rsigma_engine::state::StateStore;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    {
        let mut h = Harness::new(BRUTE_FORCE, CorrelationOptions::default());
        h.run(&[
            (0, failed("alice")),
            (1, failed("alice")),
            (2, failed("bob")),
        ]);
        let mut store = StateStore::open(&db).unwrap();
        let saved = store.save(&h.correlations.snapshot()).unwrap();
        assert_eq!((saved.correlations, saved.groups), (1, 2));
    }
    // A new process: open the file again and continue the windows.
    let mut h = Harness::new(BRUTE_FORCE, CorrelationOptions::default());
    let snapshot = StateStore::open(&db).unwrap().load().unwrap().unwrap();
    let stats = h.correlations.restore(snapshot);
    assert_eq!(stats.groups, 2);
    assert_eq!(
        h.run(&[(3, failed("alice")), (4, failed("bob"))]),
        vec![vec![3.0], NO]
    );
}
