//! Criterion benchmark: correlation throughput with 10,000 groups.
//!
//! Run with `cargo bench -p rsigma-engine --bench correlation`.
//!
//! One base rule matches every event; an `event_count` and a `value_count`
//! correlation group the detections by `User` over 10,000 distinct users, so
//! every event updates one of 10,000 live windows. The figure is events per
//! second through `CorrelationEngine::process` (detections precomputed, so
//! the detection engine's cost is not included), one core.

use std::hint::black_box;
use std::path::Path;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use rsigma_engine::correlation::{CorrelationEngine, CorrelationOptions};
use rsigma_engine::{Detection, Engine, parse_rules};
use serde_json::{Value, json};

const GROUPS: usize = 10_000;
const EVENTS: usize = 100_000;

type Fixture = (
    Box<dyn Fn() -> CorrelationEngine>,
    Vec<(Value, Vec<Detection>)>,
);

/// A factory of fresh correlation engines (so every iteration starts from
/// empty windows) and the events with their precomputed detections.
fn setup(correlation: &str) -> Fixture {
    let yaml = format!(
        "title: Logon\nname: logon\nlogsource: {{product: windows}}\ndetection:\n  sel: {{EventID: 4624}}\n  \
         condition: sel\n---\n{correlation}"
    );
    let loaded = parse_rules(&yaml, Path::new("bench.yml"));
    let (engine, errors) = Engine::compile(&loaded.rule_set);
    assert!(errors.is_empty() && loaded.errors.is_empty());
    let rules = loaded.rule_set.correlations.clone();
    // Users cycle so that every group is live; one event per 10 ms keeps all
    // 10,000 groups inside the 1 h window.
    let events = (0..EVENTS)
        .map(|i| {
            let event = json!({
                "EventID": 4624,
                "User": format!("user{}", i % GROUPS),
                "SourceIp": format!("10.0.{}.{}", (i / 7) % 256, i % 251),
                "@timestamp": 1_700_000_000_000_i64 + (i as i64) * 10,
            });
            let detections = engine.evaluate(&event);
            assert_eq!(detections.len(), 1);
            (event, detections)
        })
        .collect();
    let fresh = move || {
        CorrelationEngine::new(&rules, &engine, CorrelationOptions::default())
            .expect("valid correlation")
    };
    (Box::new(fresh), events)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("correlation");
    group.throughput(Throughput::Elements(EVENTS as u64));
    for (name, correlation) in [
        (
            "event_count_10k_groups",
            "title: Many logons\ncorrelation:\n  type: event_count\n  rules: [logon]\n  group-by: [User]\n  \
             timespan: 1h\n  condition: {gte: 1000000}\n",
        ),
        (
            "value_count_10k_groups",
            "title: Many sources\ncorrelation:\n  type: value_count\n  rules: [logon]\n  group-by: [User]\n  \
             timespan: 1h\n  condition: {field: SourceIp, gte: 1000000}\n",
        ),
    ] {
        let (fresh, events) = setup(correlation);
        let mut out = Vec::new();
        let mut groups = 0;
        group.bench_function(name, |b| {
            b.iter_batched(
                &fresh,
                |mut engine| {
                    for (event, detections) in &events {
                        out.clear();
                        engine.process(black_box(event), detections, &mut out);
                    }
                    groups = engine.stats().state_entries;
                    engine
                },
                BatchSize::PerIteration,
            )
        });
        eprintln!("{name}: {groups} groups held");
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = bench
}
criterion_main!(benches);
